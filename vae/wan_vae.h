#pragma once
// The Wan 2.1 causal 3D VAE: 4× in time, 8×8 in space, 16 latent channels.
// Encodes in chunks of 1, 4, 4, … frames and decodes one latent frame at a time,
// each causal convolution carrying the last two frames it saw (its cache), so
// memory holds a few frames of activations whatever the video's length.
// Reference: Wan2.1 wan/modules/vae.py.
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <vector>

#include "io/checkpoint.h"
#include "layers/model.h"
#include "layers/precision.h"
#include "vae/autoencoder.h"

namespace kinora::vae {

struct WanVAEConfig {
  int64_t dim = 96;
  int64_t z_dim = 16;
  std::vector<int64_t> dim_mult = {1, 2, 4, 4};
  int64_t num_res_blocks = 2;
  std::vector<bool> temporal_downsample = {false, true, true};
  std::vector<double> latents_mean = {-0.7571, -0.7089, -0.9113, 0.1075,  -0.1745, 0.9653,
                                      -0.1517, 1.5508,  0.4134,  -0.0715, 0.5517,  -0.3632,
                                      -0.1922, -0.9497, 0.2503,  -0.2921};
  std::vector<double> latents_std = {2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708,
                                     2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
                                     1.6382, 1.1253, 2.8251, 1.9160};

  // Frames per latent frame after the first: 4 for the released VAE (2 stages
  // that halve time), 1 for a VAE configured without temporal downsampling.
  int64_t time_compression() const {
    int64_t t = 1;
    for (bool b : temporal_downsample) t *= b ? 2 : 1;
    return t;
  }

  // Pixels per latent cell along each side: 8 for the released VAE (three
  // stages that halve height and width), 4 for a VAE configured with two.
  int64_t spatial_compression() const { return int64_t{1} << (dim_mult.size() - 1); }

  // Metadata "config" when present, else names and shapes (original or diffusers).
  static WanVAEConfig from_checkpoint(const io::Checkpoint& ck);
  // The metadata "config" that from_checkpoint() reads back (the reference's
  // spelling "temperal_downsample" kept).
  std::string to_json() const;
};

// How many of the Wan VAE's causal convolutions have run as 2D convolutions of
// channels-last frames (bf16 on the CPU) in this process: for the tests.
int64_t convolutions_by_frames();

class WanVAEImpl;

class WanVAE : public layers::Model, public Autoencoder {
 public:
  explicit WanVAE(const WanVAEConfig& config);
  ~WanVAE() override;
  WanVAE(WanVAE&&) noexcept;
  WanVAE& operator=(WanVAE&&) noexcept;

  static WanVAE load(const std::filesystem::path& path,
                     layers::Precision precision = layers::Precision::F32);

  const WanVAEConfig& config() const;

  // As an Autoencoder.
  int64_t latent_channels() const override { return config().z_dim; }
  int64_t spatial_compression() const override { return config().spatial_compression(); }
  int64_t temporal_compression() const override { return config().time_compression(); }
  std::vector<double> latents_mean() const override { return config().latents_mean; }
  std::vector<double> latents_std() const override { return config().latents_std; }
  torch::Tensor decode_video(const torch::Tensor& latent,
                             const FrameProgress& progress = {}) override;
  void to(torch::Device device) override { layers::Model::to(device); }
  // The per-channel statistics encode() normalises with (from the training set).
  void set_latent_statistics(std::vector<double> mean, std::vector<double> std);

  // Training: video → the posterior's (μ, log σ²) [B, z, k+1, h, w], not
  // normalised; and an un-normalised latent → video.
  std::pair<torch::Tensor, torch::Tensor> posterior(const torch::Tensor& video);
  torch::Tensor decode_unnormalised(const torch::Tensor& z);
  // An un-normalised latent (a posterior's μ) → normalised, (z − mean)/std, as
  // encode() returns it: float32.
  torch::Tensor normalise(const torch::Tensor& z) const;

  // video [B, 3, 4k+1, H, W] in [−1, 1] → normalised latent (μ − mean)/std
  // [B, z, k+1, H/8, W/8], float32.
  torch::Tensor encode(const torch::Tensor& video) override;
  // normalised latent [B, z, T, h, w] → video [B, 3, 4T−3, 8h, 8w], float32, not
  // clamped. `on_frames` (optional) receives each decoded chunk as it is made.
  torch::Tensor decode(const torch::Tensor& latent,
                       const std::function<void(const torch::Tensor& frames)>& on_frames = {});

 private:
  void on_precision(layers::Precision p) override;
  std::shared_ptr<WanVAEImpl> impl_;
};

// diffusers AutoencoderKLWan key → original key ("" to ignore).
std::string wan_vae_diffusers_to_original(const std::string& key, int64_t num_res_blocks);

}  // namespace kinora::vae
