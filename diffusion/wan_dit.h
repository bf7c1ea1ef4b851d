#pragma once
// The Wan 2.1 / 2.2 video DiT (WanModel), with its modules registered under
// the original checkpoint's names. Reference: Wan2.1 wan/modules/model.py.
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <string>

#include "diffusion/denoiser.h"
#include "io/checkpoint.h"
#include "layers/model.h"
#include "layers/precision.h"

namespace kinora::diffusion {

struct WanConfig {
  std::string model_type = "t2v";  // "t2v" or "i2v" (the 2.1 image branch: img_emb, k_img, v_img)
  int64_t patch_t = 1, patch_h = 2, patch_w = 2;
  int64_t text_len = 512;
  int64_t in_dim = 16;
  int64_t dim = 1536;
  int64_t ffn_dim = 8960;
  int64_t freq_dim = 256;
  int64_t text_dim = 4096;
  int64_t out_dim = 16;
  int64_t num_heads = 12;
  int64_t num_layers = 30;
  double eps = 1e-6;

  int64_t head_dim() const { return dim / num_heads; }
  // "Wan 2.1 T2V 1.3B", … from the shapes, or "custom size".
  std::string variant() const;

  // From the file's metadata "config" when it has one, else from tensor names and
  // shapes of any layout (heads = width / 128, as in every released model).
  // Throws kinora::Error naming the file.
  static WanConfig from_checkpoint(const io::Checkpoint& ck);
  // The metadata "config" that from_checkpoint() reads back (the original
  // WanModel's constructor arguments).
  std::string to_json() const;
};

class WanModelImpl;

class WanModel : public layers::Model, public Denoiser {
 public:
  explicit WanModel(const WanConfig& config);
  ~WanModel() override;
  WanModel(WanModel&&) noexcept;
  WanModel& operator=(WanModel&&) noexcept;

  // Loads any layout (original, ComfyUI, diffusers), weights in their stored dtype.
  static WanModel load(const std::filesystem::path& path,
                       layers::Precision precision = layers::Precision::F32);

  const WanConfig& config() const;

  // As a Denoiser: the flow velocity, from the conditioning's context.
  Prediction prediction() const override { return Prediction::FlowVelocity; }
  torch::Tensor denoise(const torch::Tensor& x, const torch::Tensor& t,
                        const layers::Conditioning& c) override;
  int64_t latent_channels() const override;
  std::array<int64_t, 3> latent_patch() const override;
  int64_t context_dim() const override;
  void to(torch::Device device) override { layers::Model::to(device); }
  // Its transformer blocks, in order (block swap).
  std::vector<std::shared_ptr<torch::nn::Module>> swappable_blocks() override;

  // The flow prediction.
  //   x       [B, in_dim, F, H, W] latent (with the i2v condition already concatenated)
  //   t       [B] timesteps in 0..1000
  //   context [B, L ≤ text_len, text_dim] text encoder output (zero-padded to
  //           text_len here and attended unmasked, as the reference does)
  //   clip    [B, 257, 1280] CLIP image features (i2v only), or undefined
  // → [B, out_dim, F, H, W] float32
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t,
                        const torch::Tensor& context, const torch::Tensor& clip = {});

 private:
  std::shared_ptr<WanModelImpl> impl_;
};

// Wan 2.2 A14B ships two experts with identical shapes; the file's place tells
// them apart (the official `high_noise_model/` and `low_noise_model/` folders,
// ComfyUI's `*high_noise*` / `*low_noise*` file names). Returns
// "high-noise expert", "low-noise expert", or "".
std::string wan22_expert_role(const std::filesystem::path& path);

// The timestep at which a Wan 2.2 A14B pair switches from the high-noise to the
// low-noise expert: 875 for text-to-video, 900 for image-to-video (spec §4.6).
inline int64_t wan22_expert_boundary(bool image_to_video) {
  return image_to_video ? 900 : 875;
}

// Checkpoint key (any layout, prefix already stripped) → original name; "" to ignore.
std::string wan_diffusers_to_original(const std::string& key);

}  // namespace kinora::diffusion
