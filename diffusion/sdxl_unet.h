#pragma once
// The latent-diffusion UNet of SDXL (Stability's generative-models UNetModel;
// diffusers' UNet2DConditionModel), with its modules registered under the
// original names: time_embed, label_emb, input_blocks.N.M, middle_block,
// output_blocks.N.M, out. Residual blocks take the time embedding; spatial
// transformers (self-attention, cross-attention on the text states, a GEGLU
// feed-forward) sit at the levels the file has them, with the depth the file
// has; the "text_time" conditioning (the pooled text vector and six size and
// crop numbers) is added to the time embedding through label_emb.
//
// SD 1.x and 2.x UNets are the same architecture without label_emb; they are
// recognised (io/layout.h) and refused by the SDXL family, whose text
// encoders they do not take.
#include <torch/torch.h>

#include <array>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "diffusion/denoiser.h"
#include "io/checkpoint.h"
#include "layers/model.h"
#include "layers/precision.h"

namespace kinora::diffusion {

struct SDXLUNetConfig {
  int64_t in_channels = 4, out_channels = 4;
  int64_t model_channels = 320;
  std::vector<int64_t> channel_mult = {1, 2, 4};
  int64_t num_res_blocks = 2;
  // Transformer blocks in each input block's spatial transformer (0: none),
  // per level; in the middle block; in each output block, in order.
  std::vector<int64_t> transformer_depth = {0, 2, 10};
  int64_t transformer_depth_middle = 10;
  std::vector<int64_t> transformer_depth_output = {10, 10, 10, 2, 2, 2, 0, 0, 0};
  // Attention heads per level: the transformer width / head_width, unless
  // `heads` gives a count per level (SD 1.x: 8 heads everywhere).
  int64_t head_width = 64;
  std::vector<int64_t> heads;
  int64_t context_dim = 2048;
  bool linear_projection = true;  // SDXL; SD 1.x projects with 1×1 convolutions
  // label_emb's input: the pooled text vector and six sinusoidal embeddings of
  // `size_embed_dim` each (SDXL: 1280 + 6·256 = 2816); 0 without label_emb.
  int64_t adm_in_channels = 2816;
  int64_t size_embed_dim = 256;
  int64_t groups = 32;  // GroupNorm groups (not stored in checkpoints)

  int64_t time_embed_dim() const { return 4 * model_channels; }
  int64_t pooled_dim() const { return adm_in_channels - 6 * size_embed_dim; }
  int64_t heads_at(std::size_t level, int64_t width) const {
    return heads.empty() ? width / head_width : heads[level];
  }
  // "SDXL" (the released base), "SD 1.x", "SD 2.x", or "SDXL-style UNet (…)".
  std::string variant() const;

  // From names and shapes (original or diffusers names, bare or under a
  // prefix); the group count, the heads and the size-embedding width from the
  // metadata "config" (diffusers' or generative-models' arguments, as the
  // fixtures carry them) when present, else SDXL's 32, 64-wide heads and 256.
  static SDXLUNetConfig from_checkpoint(const io::Checkpoint& ck);
};

class SDXLUNetImpl;

class SDXLUNet : public layers::Model, public Denoiser {
 public:
  explicit SDXLUNet(const SDXLUNetConfig& config);
  ~SDXLUNet() override;
  SDXLUNet(SDXLUNet&&) noexcept;
  SDXLUNet& operator=(SDXLUNet&&) noexcept;

  // Any layout: original names bare or under model.diffusion_model. (ComfyUI,
  // single-file checkpoints), diffusers. Weights stay in their stored dtype.
  static SDXLUNet load(const std::filesystem::path& path,
                       layers::Precision precision = layers::Precision::F32);

  const SDXLUNetConfig& config() const;

  // The UNet's forward, as the reference calls it:
  //   x [B, C, H, W], timesteps [B] (float, 0..999), context [B, L, context_dim],
  //   pooled [B, pooled_dim], size_ids [B, 6] (original h, w; crop top, left;
  //   target h, w), context_mask [B, L] (1: attend; undefined: all)
  // → the prediction [B, out_channels, H, W], float32.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& timesteps,
                        const torch::Tensor& context, const torch::Tensor& pooled,
                        const torch::Tensor& size_ids, const torch::Tensor& context_mask = {});

  // As a Denoiser: x [B, 4, 1, h, w], t [B] the discrete timestep, c.context
  // the two CLIP encoders' states, c.pooled bigG's pooled vector, c.mask the
  // real tokens → ε (eps-prediction models) [B, 4, 1, h, w]. The size
  // conditioning is SDXL's default for a fresh image: original and target size
  // the image's (8h, 8w), crop (0, 0).
  Prediction prediction() const override { return prediction_; }
  void set_prediction(Prediction p) { prediction_ = p; }
  torch::Tensor denoise(const torch::Tensor& x, const torch::Tensor& t,
                        const layers::Conditioning& c) override;
  int64_t latent_channels() const override;
  std::array<int64_t, 3> latent_patch() const override;
  int64_t context_dim() const override;
  void to(torch::Device device) override { layers::Model::to(device); }

 private:
  std::shared_ptr<SDXLUNetImpl> impl_;
  Prediction prediction_ = Prediction::Epsilon;
};

// A diffusers UNet2DConditionModel key (prefix stripped) → the original name,
// given the blocks per level and which down/up levels have attentions;
// the key unchanged when it has no counterpart.
struct UNetDiffusersLayout {
  int64_t layers_per_block = 2;
  std::vector<bool> down_attention, up_attention;
  static UNetDiffusersLayout from_shapes(const std::map<std::string, std::vector<int64_t>>& m);
};
std::string unet_diffusers_to_original(const std::string& key, const UNetDiffusersLayout& l);

// The sinusoidal embedding of generative-models' timestep_embedding: [N] →
// [N, dim], cos half first, max period 10000, float32.
torch::Tensor sinusoidal_embedding(const torch::Tensor& t, int64_t dim);

}  // namespace kinora::diffusion
