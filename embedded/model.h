#pragma once
// The embedded default model: a small Wan 2.1 model (DiT, causal 3D VAE, umT5
// and its tokenizer) that the project trains on procedural clips
// (docs/training.md) and ships in assets/, so that a fresh machine makes a
// real video with no download. This module says what it is and how it is run
// (its files, its sampling defaults, the one sentence form it knows) and, in
// embedded/clips.h and embedded/semantic.h, how its videos are judged from
// their pixels. It sits below the pipeline; the trainer (training/) is above.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace kinora::embedded {

// Its four files, in assets/ and in every training run's folder.
inline constexpr const char* kTokenizerFile = "kinora-tiny-spm.model";
inline constexpr const char* kVaeFile = "kinora-tiny-wan-vae.safetensors";
inline constexpr const char* kTextEncoderFile = "kinora-tiny-umt5.safetensors";
inline constexpr const char* kDitFile = "kinora-tiny-wan-dit.safetensors";
// The project's LoRA on it (`kinora train lora`): the word "big", objects at
// twice the size the base model ever drew. Shipped in the model folder's loras/.
inline constexpr const char* kBigLoraFile = "kinora-tiny-big.safetensors";

// How it is sampled by default: the size and length it was trained on, flow
// UniPC at shift 3 (the shift its training drew noise levels with), 20 steps
// and guidance 1.5. At guidance 4 it caricatures its shapes (sides drawn
// concave, corners pulled out) and the semantic measure reads fewer of them
// right; 1.5 reads best (docs/training.md). It computes in float32: its layers
// are narrow, and on CPUs without bf16 arithmetic bf16 is emulated.
struct Defaults {
  int width = 64, height = 64, frames = 17, fps = 16;
  int steps = 20;
  const char* sampler = "flow_unipc";
  double shift = 3.0;
  double guidance = 1.5;
  const char* precision = "fp32";
};
inline constexpr Defaults kDefaults{};

// The folders searched, in order: $KINORA_ASSETS, <prefix>/share/kinora/assets
// next to an installed program, and the source tree's assets/ (a build).
std::vector<std::filesystem::path> model_search_path();
// The first of them that holds all four files, if any. KINORA_ASSETS, when
// set, is the only one: throws kinora::Error naming it when it is no folder or
// lacks a file.
std::optional<std::filesystem::path> model_dir();

// The model knows one sentence form; for a prompt outside it, a note for the
// user saying so and what the form is (the render still goes ahead).
std::optional<std::string> prompt_note(const std::string& prompt);

}  // namespace kinora::embedded
