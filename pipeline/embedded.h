#pragma once
// Where the embedded default model lives: the small Wan-architecture model the
// project trains itself (docs/training.md), shipped in assets/ so that a fresh
// machine makes a real video with no download.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace kinora::pipeline {

// The folders searched, in order: $KINORA_ASSETS, <prefix>/share/kinora/assets
// next to an installed program, and the source tree's assets/ (a build).
std::vector<std::filesystem::path> embedded_model_search_path();
// The first of them that holds all four files, if any.
std::optional<std::filesystem::path> embedded_model_dir();

// The embedded model knows one sentence form; for a prompt outside it, a note
// for the user saying so and what the form is (the render still goes ahead).
std::optional<std::string> embedded_prompt_note(const std::string& prompt);

}  // namespace kinora::pipeline
