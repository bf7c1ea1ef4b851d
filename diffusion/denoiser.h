#pragma once
// The denoising network of a diffusion model (a DiT or a UNet), as the sampling
// loop sees it: a noisy latent, the sampler's timestep and the conditioning in,
// the model's prediction out. Wan's DiT is the first (diffusion/wan_dit.h).
#include <torch/torch.h>

#include <array>

#include "layers/conditioning.h"

namespace kinora::diffusion {

// What forward() predicts, which the sampling loop turns into the sampler's
// input: the flow velocity (noise − data: Wan, FLUX), the noise ε or the
// velocity v of noise-prediction models (SD, SDXL).
enum class Prediction { FlowVelocity, Epsilon, VPrediction };

class Denoiser {
 public:
  virtual ~Denoiser() = default;

  virtual Prediction prediction() const = 0;
  // x [B, C, F, h, w] latent (F = 1 for an image model), t [B] the sampler's
  // timesteps (flow samplers: σ·1000), c the conditioning of B rows → the
  // prediction, x's shape, float32.
  virtual torch::Tensor denoise(const torch::Tensor& x, const torch::Tensor& t,
                                const layers::Conditioning& c) = 0;
  virtual int64_t latent_channels() const = 0;
  // Latent cells per token along time, height and width: the latent's sizes
  // must be multiples.
  virtual std::array<int64_t, 3> latent_patch() const = 0;
  // The width of the per-token text states it takes (Conditioning::context).
  virtual int64_t context_dim() const = 0;
  virtual void to(torch::Device device) = 0;
};

}  // namespace kinora::diffusion
