#pragma once
// Text to video with Wan: the one place where the denoising loop is written out.
//
//   prompt → tokenizer → umT5 → DiT (classifier-free guidance, cond and uncond in
//   one batch) → sampler, step by step → VAE decode → frames → file.
#include <torch/torch.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "base/error.h"
#include "pipeline/preset.h"

namespace kinora::pipeline {

struct StepEvent {
  int step = 0;  // 1-based: steps done
  int total = 0;
  double seconds_per_step = 0;
  double eta_seconds = 0;
  torch::Tensor preview;  // [T, h, w, 3] uint8 latent preview, when asked for
};

struct RunCallbacks {
  std::function<void(const std::string&)> on_message;  // adjustments, stages
  std::function<void(const StepEvent&)> on_step;
  bool want_preview = false;
  const std::atomic<bool>* cancel =
      nullptr;  // polled every step (and between frames while writing)
};

struct Timings {
  double text_s = 0, sampling_s = 0, decode_s = 0, encode_s = 0;
  std::vector<double> step_s;
};

struct Result {
  torch::Tensor frames;  // [F, H, W, 3] uint8
  Preset preset;         // as rendered: sizes snapped, models resolved
  Timings timings;
  std::string metadata_json;  // what the output embeds
  std::filesystem::path output;
};

struct ModelPaths {
  std::filesystem::path model, model2, vae, text_encoder, tokenizer;
};
// Resolves the preset's model entries: a path as it is, or a name looked up in
// models_dir's ComfyUI folders (diffusion_models/, vae/, text_encoders/).
// Throws kinora::Error naming the entry and where it looked.
ModelPaths resolve_models(const Preset& p);

// Frames to 4k+1, sizes to multiples of 16; returns the messages for what changed.
std::vector<std::string> snap_sizes(Preset& p);

class WanPipeline {
 public:
  explicit WanPipeline(torch::Device device = torch::kCPU);
  ~WanPipeline();

  // Samples and decodes; models stay loaded for the next call.
  Result generate(const Preset& preset, const RunCallbacks& callbacks = {});
  // generate(), then writes preset.output_path() with the parameters embedded
  // (media::write_output). The destination is checked first
  // (media::prepare_output): an existing output is replaced only with
  // `overwrite`. A cancelled render throws kinora::Cancelled.
  Result render(const Preset& preset, const RunCallbacks& callbacks = {}, bool overwrite = false);

  // The JSON an output embeds: the preset, model fingerprints and versions.
  std::string metadata_for(const Preset& p, const ModelPaths& paths) const;

 private:
  struct Models;
  torch::Device device_;
  std::unique_ptr<Models> models_;
};

// The seeded noise of a render: float32 standard normal drawn on the CPU with
// LibTorch's CPU generator (mt19937) seeded with `seed`, so that one seed gives
// the same video on every device.
torch::Tensor initial_noise(int64_t seed, const std::vector<int64_t>& shape);

}  // namespace kinora::pipeline
