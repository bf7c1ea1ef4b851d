#pragma once
// Text to video (or image), for every model family: the one place where the
// denoising loop is written out.
//
//   prompt → text conditioner → denoiser, step by step under the family's
//   guidance → sampler → autoencoder decode → frames + the parameters to embed
//
// The pipeline returns frames and metadata; writing them to a file is media/'s
// (render/render.h does both). It runs on any device: noise is drawn on the
// CPU, so one seed gives the same video everywhere.
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "layers/conditioning.h"
#include "pipeline/family.h"
#include "pipeline/preset.h"

namespace kinora::diffusion {
class Denoiser;
}

namespace kinora::pipeline {

// The most outputs one generate_batch() samples together.
inline constexpr int kMaxBatch = 64;

struct StepEvent {
  int step = 0;  // 1-based: steps done
  int total = 0;
  double seconds_per_step = 0;
  double eta_seconds = 0;
  torch::Tensor preview;  // [T, h, w, 3] uint8 latent preview, when asked for
};

// A stage that is not a sampling step: "load" (`what` names the file being
// loaded, and what it is), "text" (the prompts being encoded, or read from the
// cache), "sample" (sampling begins: `total` steps), "decode" (frames decoded so
// far, of `total`).
struct Progress {
  std::string stage;
  std::string what;
  int64_t done = 0, total = 0;
};

struct RunCallbacks {
  std::function<void(const std::string&)> on_message;  // adjustments, notes
  std::function<void(const StepEvent&)> on_step;
  std::function<void(const Progress&)> on_progress;
  bool want_preview = false;
  // Polled every step, between decoded frames and while writing; a set token
  // ends the render with kinora::Cancelled.
  const std::atomic<bool>* cancel = nullptr;
};

struct Timings {
  double load_s = 0, text_s = 0, sampling_s = 0, decode_s = 0, encode_s = 0;
  std::vector<double> step_s;
};

struct Result {
  torch::Tensor frames;  // [F, H, W, 3] uint8, on the CPU
  Preset preset;         // as rendered: seed, sizes, precision and device that ran
  Timings timings;
  nlohmann::json metadata;       // what the output embeds: the preset (file names only),
                                 // the models' fingerprints, the versions
  std::filesystem::path output;  // where render() wrote it
};

// Resolves the preset's model entries for `family`: a path as it is (relative
// ones against the preset's folder), or a name in models_dir's ComfyUI
// subfolders; the embedded model's files when the preset names none. Throws
// kinora::Error naming the key and every place it looked.
ModelFiles resolve_models(const Preset& p, const Family& family);
// The same, each file on its own: every one that cannot be found adds its
// error to `errors` (rather than the first ending the resolve) and stays empty.
ModelFiles resolve_models_each(const Preset& p, const Family& family,
                               std::vector<std::string>* errors);
// Every file (or tokenizer folder) a render of the preset reads that can be
// found: its models, tokenizers and LoRAs (the preset's and its prompt's
// tags); those that cannot be found are left out (the render says so). For
// checks that an output never goes over one of them.
std::vector<std::filesystem::path> input_files(const Preset& p);
// A diffusers pipeline folder named by the preset's `model` (a path, or a name
// under models_dir's diffusion_models/ or top; it holds model_index.json): its
// files by role (transformer/, vae/, text_encoder/ and tokenizer/ for Wan;
// FLUX's T5 in text_encoder_2/ and tokenizer_2/, CLIP in text_encoder/ and
// tokenizer/), or nullopt when `model` names no such folder.
std::optional<ModelFiles> diffusers_folder_files(const Preset& p);
// The DiT file of a preset: its `model` file, or a diffusers folder's
// transformer. Throws like resolve_model_file.
std::filesystem::path resolve_dit_file(const Preset& p);

// A preset's LoRA entry: a path (relative to the preset's folder) or a name in
// a loras/ folder (with or without .safetensors): models_dir's, else the
// embedded model's (assets/loras/) for a preset of the embedded model, else
// the one beside the model file; a bare name also in that folder's
// subfolders (a few levels; one match, else an error naming them). Throws
// kinora::Error naming every place it looked.
std::filesystem::path resolve_lora_file(const Preset& p, const std::string& entry);

// A prompt's `<lora:NAME>` / `<lora:NAME:STRENGTH>` tags (as A1111 writes
// them): the text without them, and the LoRAs they name.
struct PromptLoras {
  std::string text;
  std::vector<LoraRef> loras;
};
PromptLoras prompt_loras(const std::string& prompt);
// A LoRA named in a prompt: a file in that loras/ folder or its subfolders
// (with or without .safetensors), never a path. Throws kinora::Error.
std::filesystem::path resolve_lora_tag(const Preset& p, const std::string& name);

// The preset's models_dir as a path (relative to its folder), or empty.
std::filesystem::path models_dir_path(const Preset& p);
// One of them: the entry of preset key `key` ("model", "vae" …): a path, or a
// name in models_dir's `subfolder` (for "model" also checkpoints/) or at its
// top, and a bare name also in the subfolders of those (as for LoRAs).
std::filesystem::path resolve_model_file(const Preset& p, const std::string& key,
                                         const char* subfolder, bool required);

// Sizes and frame counts snapped to what the preset's family makes, with a
// message for each change (Family::snap).
std::vector<std::string> snap_sizes(Preset& p);
// The preset's sampler among those of its model's kind (flow-matching for
// Wan and FLUX, noise-prediction for SDXL): a kinora::Error naming that kind's
// samplers when it is unknown or of the other kind, before any model loads.
void check_sampler(const Preset& p);

// What a render that failed inside LibTorch tells the user: the first line of
// LibTorch's message `what`, and for memory what to change: on a GPU, besides
// the size, bf16 where the preset asks for fp32, more blocks in host memory
// where `more_blocks_swappable`, FP8 products where `fp8_available` (named as
// the command line and the studio call them); ends with "nothing was written".
std::string libtorch_failure_message(std::string what, const Preset& p,
                                     bool more_blocks_swappable = false,
                                     bool fp8_available = false);

// The seeded noise of a render: float32 standard normal drawn on the CPU with
// LibTorch's CPU generator (mt19937) seeded with `seed`, so that one seed gives
// the same video on every device.
torch::Tensor initial_noise(int64_t seed, const std::vector<int64_t>& shape);

// One guided prediction, the step every sampler takes: the denoiser at `x`,
// timestep `t`, with `cond`; under classifier-free guidance (`uncond` given and
// scale ≠ 1) cond and uncond rows in one batch, mixed as u + scale·(c − u).
torch::Tensor guided_prediction(diffusion::Denoiser& denoiser, const torch::Tensor& x,
                                const torch::Tensor& t, const layers::Conditioning& cond,
                                const layers::Conditioning* uncond, double scale);

class Pipeline {
 public:
  Pipeline();
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Samples and decodes; the models stay loaded for the next call while the
  // files, precision and device stay the same.
  Result generate(const Preset& preset, const RunCallbacks& callbacks = {});
  // `count` outputs of one prompt sampled together in one batch, seeds seed …
  // seed + count − 1 (the preset's seed resolved first when random), each
  // result with its own seed in its preset and metadata, so each restores on
  // its own. Decoded one by one.
  std::vector<Result> generate_batch(const Preset& preset, int count,
                                     const RunCallbacks& callbacks = {});

 private:
  std::vector<Result> generate_rows(const Preset& preset, int count, const RunCallbacks& callbacks);
  struct Cache;
  std::unique_ptr<Cache> cache_;
};

}  // namespace kinora::pipeline
