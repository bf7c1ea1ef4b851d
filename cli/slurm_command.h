#pragma once
// `kinora slurm submit PATH... --tasks N [resources] [--wait] [--dry-run]`.
#include <CLI/CLI.hpp>

#include <functional>

namespace kinora::cli {

// Registers the subcommand; the returned function runs it when it was given
// (its exit status) and returns −1 otherwise.
std::function<int()> add_slurm_command(CLI::App& app);

}  // namespace kinora::cli
