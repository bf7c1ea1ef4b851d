#pragma once
// A preset: everything that defines one render. The CLI, batch files and the
// app read and write the same JSON, and every output embeds the preset that made
// it (so `kinora restore` gives it back and `kinora render` makes it again).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace kinora::pipeline {

inline constexpr int kPresetSchema = 1;

struct LoraRef {
  std::string path;
  double strength = 1.0;
};

struct Preset {
  // What to make.
  std::string prompt;
  std::string negative_prompt;  // empty: Wan's default negative prompt
  int64_t seed = 0;
  int width = 832, height = 480, frames = 81, fps = 16;
  // How to sample (Wan 2.1 defaults).
  int steps = 50;
  std::string sampler = "flow_unipc";
  double shift = 5.0;
  double guidance = 5.0;
  std::string precision = "auto";  // "auto" (bf16 where the device computes it) | "fp32" | "bf16"
  // Models: file paths, or names under models_dir (ComfyUI's folder layout).
  std::string models_dir;
  std::string model;   // the DiT (the high-noise expert of a Wan 2.2 A14B pair)
  std::string model2;  // the low-noise expert, or ""
  std::string vae, text_encoder, tokenizer;
  std::vector<LoraRef> loras;
  // Output.
  std::string output;  // path; its extension picks the format unless `format` is set
  std::string format;  // "" | mp4 | mp4-h265 | webm | mov | png-seq | png
  int crf = 18;

  // No model keys at all (model, model2, vae, text_encoder, tokenizer, models_dir):
  // the embedded default model (assets/), which needs no download.
  bool uses_embedded_model() const;
  // The embedded model's own defaults (the size and sampling it was trained
  // and tuned for, docs/training.md), which a preset without model keys starts from.
  static Preset embedded_defaults();

  nlohmann::json to_json() const;
  // Validates every key: an unknown key, a wrong type or a value out of range is
  // a kinora::Error naming the key and `source` (a file name, or "preset").
  static Preset from_json(const nlohmann::json& j, const std::string& source = "preset");
  static Preset load(const std::filesystem::path& path);
  // `key=value` as from --set; the value is parsed as JSON when it is JSON
  // (numbers, true/false, quoted strings), else taken as a string.
  void set(const std::string& assignment, const std::string& source = "--set");
};

// Wan's default negative prompt (spec/wan.md §3), used when none is given.
extern const char* const kWanDefaultNegativePrompt;

}  // namespace kinora::pipeline
