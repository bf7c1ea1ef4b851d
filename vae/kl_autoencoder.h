#pragma once
// The 2D KL autoencoder of latent image models (the "AutoencoderKL" of the
// latent-diffusion code): a ResNet encoder and decoder with one attention block
// in the middle, 8× per side. FLUX's ae.safetensors is one (16 latent
// channels, scale 0.3611 and shift 0.1159, no quant convs; FLUX spec §3); the
// SD/SDXL VAE is the same architecture with 4 channels and quant convs.
// Large images decode in overlapping tiles blended together, so memory past
// the output itself stays that of one tile.
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <vector>

#include "io/checkpoint.h"
#include "layers/model.h"
#include "layers/precision.h"
#include "vae/autoencoder.h"

namespace kinora::vae {

struct KLAutoencoderConfig {
  int64_t in_channels = 3, out_ch = 3;
  int64_t ch = 128;
  std::vector<int64_t> ch_mult = {1, 2, 4, 4};
  int64_t num_res_blocks = 2;
  int64_t z_channels = 16;
  int64_t groups = 32;      // GroupNorm groups
  bool quant_conv = false;  // SD/SDXL: 1×1 convs around the latent
  double scale_factor = 0.3611, shift_factor = 0.1159;

  int64_t spatial_compression() const { return int64_t{1} << (ch_mult.size() - 1); }
  // Metadata "config" when present (BFL's AutoEncoderParams as JSON), else
  // names and shapes (BFL/LDM or diffusers layout); FLUX's scale and shift for
  // 16 channels, SDXL's 0.13025 otherwise.
  static KLAutoencoderConfig from_checkpoint(const io::Checkpoint& ck);
};

class KLAutoencoderImpl;

class KLAutoencoder : public layers::Model, public Autoencoder {
 public:
  explicit KLAutoencoder(const KLAutoencoderConfig& config);
  ~KLAutoencoder() override;
  KLAutoencoder(KLAutoencoder&&) noexcept;
  KLAutoencoder& operator=(KLAutoencoder&&) noexcept;

  // Any layout: BFL/LDM names (bare, or under first_stage_model. / vae.),
  // diffusers.
  static KLAutoencoder load(const std::filesystem::path& path,
                            layers::Precision precision = layers::Precision::F32);

  const KLAutoencoderConfig& config() const;

  // image [B, 3, H, W] in [−1, 1] → latent scale·(mean − shift) [B, z, H/8, W/8],
  // float32 (the posterior's mean, no sampling).
  torch::Tensor encode_image(const torch::Tensor& image);
  // latent (scaled) → image [B, 3, 8h, 8w] float32, not clamped, in one piece.
  torch::Tensor decode_image(const torch::Tensor& latent);
  // The same in tiles of `tile` latent cells a side overlapping by `overlap`,
  // blended linearly across the overlap; `progress` after each tile.
  torch::Tensor decode_tiled(const torch::Tensor& latent, int64_t tile, int64_t overlap,
                             const std::function<void(int64_t done, int64_t total)>& progress = {});

  // As an Autoencoder: one frame (F = 1). Latents larger than 64×64 cells
  // (512 px a side) decode tiled.
  int64_t latent_channels() const override { return config().z_channels; }
  int64_t spatial_compression() const override { return config().spatial_compression(); }
  int64_t temporal_compression() const override { return 1; }
  std::vector<double> latents_mean() const override;
  std::vector<double> latents_std() const override;
  torch::Tensor encode(const torch::Tensor& video) override;
  torch::Tensor decode_video(const torch::Tensor& latent,
                             const FrameProgress& progress = {}) override;
  void to(torch::Device device) override { layers::Model::to(device); }

  static constexpr int64_t kTile = 64, kOverlap = 16;

 private:
  void on_precision(layers::Precision p) override;
  std::shared_ptr<KLAutoencoderImpl> impl_;
};

// A diffusers AutoencoderKL key (prefix stripped) → the LDM name; keys that
// map one to one only (attention weights change shape: the loader reshapes).
std::string kl_diffusers_to_original(const std::string& key, int64_t levels);

}  // namespace kinora::vae
