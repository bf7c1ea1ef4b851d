#pragma once
// `kinora lora inspect FILE [--model M]` and `kinora lora merge --model M
// --lora FILE[:STRENGTH] ... --out FILE`.
#include <CLI/CLI.hpp>

#include <functional>

#include "pipeline/preset.h"

namespace kinora::cli {

// "FILE[:STRENGTH[:LOW]]" → a LoRA (strength 1 when none is given; LOW: the
// strength on a Wan 2.2 pair's low-noise expert, STRENGTH then the high-noise
// one's; a colon followed
// by something that is not a decimal number is part of the name, unless the
// part before it is a file: then the strength is wrong). Throws kinora::Error
// for a strength outside −100 … 100.
pipeline::LoraRef parse_lora_arg(const std::string& arg);

// Registers the subcommand; the returned function runs it when it was given
// (its exit status) and returns −1 otherwise.
std::function<int()> add_lora_command(CLI::App& app);

}  // namespace kinora::cli
