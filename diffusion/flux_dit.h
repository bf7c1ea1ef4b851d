#pragma once
// The FLUX.1 image DiT (dev and schnell), with its modules registered under
// Black Forest Labs' names (double_blocks.N.img_attn.qkv …). Reference: BFL
// flux src/flux/model.py and modules/layers.py; the facts are in the FLUX spec
// (§1 the DiT, §2 the key names).
#include <torch/torch.h>

#include <array>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "diffusion/denoiser.h"
#include "io/checkpoint.h"
#include "layers/model.h"
#include "layers/precision.h"

namespace kinora::diffusion {

struct FluxConfig {
  int64_t in_channels = 64;  // the 2×2-packed 16-channel latent
  int64_t out_channels = 64;
  int64_t vec_in_dim = 768;       // pooled CLIP-L
  int64_t context_in_dim = 4096;  // T5-XXL
  int64_t hidden_size = 3072;
  int64_t mlp_hidden = 12288;
  int64_t num_heads = 24;
  int64_t depth = 19;  // double-stream blocks
  int64_t depth_single_blocks = 38;
  std::vector<int64_t> axes_dim = {16, 56, 56};
  double theta = 10000;
  bool guidance_embed = true;  // dev: a distilled guidance input; schnell: none

  int64_t head_dim() const { return hidden_size / num_heads; }
  // "FLUX.1-dev", "FLUX.1-schnell" (the released sizes), or "FLUX-style DiT
  // (…)" for other sizes.
  std::string variant() const;

  // From the file's metadata "config" (BFL's FluxParams as JSON) when it has
  // one, else from tensor names and shapes of any layout: blocks counted,
  // widths from img_in / txt_in / vector_in, heads from the q/k norm width,
  // guidance from guidance_in. Refuses, naming the file, the image-conditioned
  // variants (Fill, Canny, Depth: more input than output channels).
  static FluxConfig from_checkpoint(const io::Checkpoint& ck);
};

class FluxModelImpl;

class FluxModel : public layers::Model, public Denoiser {
 public:
  explicit FluxModel(const FluxConfig& config);
  ~FluxModel() override;
  FluxModel(FluxModel&&) noexcept;
  FluxModel& operator=(FluxModel&&) noexcept;

  // Loads any layout (BFL, ComfyUI, diffusers), weights in their stored dtype
  // (FP8 kept as bytes); diffusers' separate q/k/v are fused back (a copy of
  // those weights only).
  static FluxModel load(const std::filesystem::path& path,
                        layers::Precision precision = layers::Precision::F32);

  const FluxConfig& config() const;

  // BFL's forward on packed tokens.
  //   img [B, N, in_channels], img_ids [B, N, 3], txt [B, L, context_in_dim],
  //   txt_ids [B, L, 3], timesteps [B] in 0..1, y [B, vec_in_dim],
  //   guidance [B] (dev; undefined for schnell)
  // → [B, N, out_channels] float32
  torch::Tensor forward(const torch::Tensor& img, const torch::Tensor& img_ids,
                        const torch::Tensor& txt, const torch::Tensor& txt_ids,
                        const torch::Tensor& timesteps, const torch::Tensor& y,
                        const torch::Tensor& guidance = {});

  // As a Denoiser: x [B, 16, 1, h, w] (h, w even), t [B] the sampler's σ·1000,
  // c.context the T5 states, c.pooled the CLIP vector, c.guidance (dev) → the
  // flow velocity [B, 16, 1, h, w]: packed 2×2, positions (0, row, col) with
  // the text at 0, unpacked.
  Prediction prediction() const override { return Prediction::FlowVelocity; }
  torch::Tensor denoise(const torch::Tensor& x, const torch::Tensor& t,
                        const layers::Conditioning& c) override;
  int64_t latent_channels() const override;
  std::array<int64_t, 3> latent_patch() const override { return {1, 2, 2}; }
  int64_t context_dim() const override;
  void to(torch::Device device) override { layers::Model::to(device); }
  // Its double-stream then single-stream blocks (block swap).
  std::vector<std::shared_ptr<torch::nn::Module>> swappable_blocks() override;

 private:
  std::shared_ptr<FluxModelImpl> impl_;
};

// Packing of a latent [B, C, h, w] into tokens [B, (h/2)(w/2), 4C] ("b c (h 2)
// (w 2) → b (h w) (c 2 2)"), its inverse, and the image position ids
// [B, (h/2)(w/2), 3] = (0, row, col).
torch::Tensor flux_pack(const torch::Tensor& latent);
torch::Tensor flux_unpack(const torch::Tensor& tokens, int64_t h, int64_t w);
torch::Tensor flux_image_ids(int64_t batch, int64_t h, int64_t w);

// A diffusers key (prefix stripped) → BFL's name, for the keys that map one to
// one; "" for the split q/k/v (and single blocks' proj_mlp), which the loader
// fuses, and for the final norm, whose halves it swaps.
std::string flux_diffusers_to_original(const std::string& key);

}  // namespace kinora::diffusion
