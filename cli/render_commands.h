#pragma once
// The rendering commands of the CLI: generate, render, restore, batch.
#include <CLI/CLI.hpp>

namespace kinora::cli {
// Adds the subcommands to `app`; returns a function that runs whichever was
// chosen (exit code), or −1 when none of them was.
std::function<int()> add_render_commands(CLI::App& app);
}  // namespace kinora::cli
