#pragma once
// `kinora train tokenizer|vae|dit`: the embedded model's training stages.
#include <CLI/CLI.hpp>

#include <functional>

namespace kinora::cli {

// Registers the command; the returned function runs it when it was chosen and
// returns its exit status, or −1 when another command was chosen.
std::function<int()> add_train_command(CLI::App& app);

}  // namespace kinora::cli
