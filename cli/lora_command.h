#pragma once
// `kinora lora inspect FILE [--model M]` and `kinora lora merge --model M
// --lora FILE[:STRENGTH] ... --out FILE`.
#include <CLI/CLI.hpp>

#include <functional>

namespace kinora::cli {

// Registers the subcommand; the returned function runs it when it was given
// (its exit status) and returns −1 otherwise.
std::function<int()> add_lora_command(CLI::App& app);

}  // namespace kinora::cli
