#pragma once
// A preset: everything that defines one render. The CLI, batch files and the
// app read and write the same JSON, and every output embeds the preset that made
// it (so `kinora restore` gives it back and `kinora render` makes it again).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kinora::pipeline {

inline constexpr int kPresetSchema = 1;
inline constexpr int64_t kRandomSeed = -1;
inline constexpr int64_t kMaxSeed = int64_t{1} << 53;  // exact in every JSON reader

// The one seed rule, for presets, --seed and the studio: an integer from 0 to
// kMaxSeed, or -1 for a random one. `text` as typed (a JSON number or the
// command line's word); throws kinora::Error "WHAT must be …" otherwise, WHAT
// naming where the seed came from ("--seed", "fox.json: key 'seed'").
int64_t parse_seed(const std::string& text, const std::string& source);
// A seed for a render: `seed` itself, or a random one for kRandomSeed.
int64_t resolve_seed(int64_t seed);

// The largest LoRA strength either way (past it a LoRA only makes noise).
inline constexpr double kMaxLoraStrength = 100;

struct LoraRef {
  LoraRef() = default;
  LoraRef(std::string file, double s = 1.0, std::optional<double> low = std::nullopt)
      : path(std::move(file)), strength(s), strength_low(low) {}
  std::string path;
  double strength = 1.0;
  // A Wan 2.2 A14B pair's low-noise expert (model2) at its own strength;
  // unset: `strength`, like the high-noise expert. A LoRA for one expert only
  // sets the other's strength to 0 (it is then not applied to that one).
  std::optional<double> strength_low;
  double strength_for(bool low_noise_expert) const {
    return low_noise_expert && strength_low ? *strength_low : strength;
  }
};

struct Preset {
  // What to make.
  std::string prompt;
  std::string negative_prompt;  // empty: Wan's default negative prompt
  // 0 … kMaxSeed; kRandomSeed (-1, or the key left out) picks a random seed at
  // render time, which the output records.
  int64_t seed = kRandomSeed;
  int width = 832, height = 480, frames = 81, fps = 16;
  // How to sample (Wan 2.1 defaults).
  int steps = 50;
  std::string sampler = "flow_unipc";
  double shift = 5.0;
  double guidance = 5.0;
  std::string precision = "auto";  // "auto" (bf16 where the device computes it) | "fp32" | "bf16"
  std::string device = "auto";     // "auto" (the first CUDA device, else the CPU) | "cpu" |
                                   // "cuda" | "cuda:N"
  // Block swap on a GPU (layers/block_swap.h): "auto" keeps some of a
  // denoiser's blocks in host memory only where the models and the render's
  // activations would not fit in the device's free memory; a count ("0",
  // "20") keeps that many there. Ignored on the CPU; the frames are the same
  // either way. An output records the count that ran ("0" on the CPU).
  std::string block_swap = "auto";
  // FP8 products (layers/fp8.h): the denoiser's block layers multiply E4M3
  // weights (an E4M3 checkpoint's as stored, others quantized at load, per
  // tensor) by E4M3 inputs: one FP8 product on GPUs with FP8 tensor cores
  // (Ada, Hopper), elsewhere the same numbers in the precision's dtype. Half the weight
  // memory of bf16; the frames differ slightly from bf16's.
  bool fp8 = false;
  // The model family ("wan"); "" when the model file says (pipeline/family.h).
  std::string family;
  // Models: file paths, or names under models_dir (ComfyUI's folder layout).
  std::string models_dir;
  std::string model;   // the DiT (the high-noise expert of a Wan 2.2 A14B pair)
  std::string model2;  // the low-noise expert, or ""
  std::string vae, text_encoder, tokenizer;
  // A family's second text encoder (FLUX: CLIP-L) and its tokenizer folder
  // (vocab.json and merges.txt; found beside the encoder or under models_dir
  // when empty).
  std::string clip, clip_tokenizer;
  std::vector<LoraRef> loras;
  // How the LoRAs are applied: "merged" (into copies of the weights they
  // touch; the fastest sampling) or "runtime" (their low-rank products added
  // in the forward, weights untouched: less memory for large LoRA stacks).
  // The two give the same frames (within float rounding).
  std::string lora_mode = "merged";
  // Output.
  std::string output;  // path; its extension picks the format unless `format` is set
  std::string format;  // "" | mp4 | mp4-h265 | webm | mov | png-seq | png
  int crf = 18;

  // Not a key: the folder relative paths (models, models_dir, loras, output)
  // resolve against; the preset file's own folder for a loaded preset, empty
  // (the current folder) for one from the command line.
  std::filesystem::path base_dir;
  // Not a key: where the preset came from ("fox.json", "command line"), for
  // messages about it.
  std::string source;

  // No model files at all (model, model2, vae, text_encoder, tokenizer, clip,
  // clip_tokenizer; models_dir may be set, for LoRAs) and no family but Wan's:
  // the embedded default model (assets/), which needs no download.
  bool uses_embedded_model() const;
  // The embedded model's own defaults (the size and sampling it was trained
  // and tuned for, docs/training.md), which a preset without model keys starts from.
  static Preset embedded_defaults();

  nlohmann::json to_json() const;
  // Validates every key: an unknown key, a wrong type or a value out of range is
  // a kinora::Error naming the key and `source` (a file name, or "preset").
  // `base`, when given, holds the defaults the keys apply over (a family's
  // defaults for the preset's model file).
  static Preset from_json(const nlohmann::json& j, const std::string& source = "preset",
                          const Preset* base = nullptr);
  // `output` resolved: as it is when absolute, else inside base_dir.
  std::filesystem::path output_path() const;
  // The preset with base_dir applied: relative paths that name files in
  // base_dir, a relative models_dir and a relative output made absolute, and
  // base_dir cleared (for a preset that travels as JSON, as the studio's
  // queue does). Names of models under models_dir stay names.
  Preset absolutized() const;
  // Puts the output inside `dir`: a relative output resolves in it, and one
  // that would land outside it (an absolute path, "..", a link out of it) is
  // refused with an Error naming `origin`.
  void place_output_in(const std::filesystem::path& dir, const std::string& origin);
  // The preset embedded in a render made anywhere (media's parameters JSON),
  // validated, with nothing that points into that machine: model and LoRA
  // paths become file names, models_dir and output are cleared (a new render
  // gets a new name), and the device is "auto" again.
  static Preset restored(const nlohmann::json& parameters, const std::string& source);
  // Reads a preset file (bounded: base/json.h); base_dir is its folder;
  // `models_dir` as with_family_defaults takes it (render's --models-dir).
  static Preset load(const std::filesystem::path& path, const std::string& models_dir = "");
  // `p`, read from `j`, read again over the defaults of its model file's
  // family when it names a model but no family (FLUX's and SDXL's size,
  // steps, sampler and guidance are not Wan's); `models_dir` stands in for
  // the preset's own when it has none (a batch's --models-dir). Unchanged for
  // the embedded model and a model file that cannot be read (reported when it
  // renders).
  static Preset with_family_defaults(const nlohmann::json& j, Preset p, const std::string& source,
                                     const std::string& models_dir = "");
  // `key=value` as from --set; the value is parsed as JSON when it is JSON
  // (numbers, true/false, quoted strings), else taken as a string.
  void set(const std::string& assignment, const std::string& origin = "--set");
};

// The blocks block_swap keeps in host memory: nullopt for "auto", else its
// count; a kinora::Error naming `source` for anything else.
std::optional<int64_t> block_swap_count(const std::string& value, const std::string& source);

// Wan's default negative prompt (the reference's shared_config.py), used when none is given.
extern const char* const kWanDefaultNegativePrompt;

}  // namespace kinora::pipeline
