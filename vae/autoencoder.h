#pragma once
// The autoencoder of a latent diffusion model, as the pipeline sees it: pixels
// to the normalised latent the denoiser works on and back, decoding in chunks
// that it reports as they are made. The Wan 2.1 causal 3D VAE is the first
// (vae/wan_vae.h); an image autoencoder has a time compression of 1.
#include <torch/torch.h>

#include <functional>
#include <vector>

namespace kinora::vae {

class Autoencoder {
 public:
  virtual ~Autoencoder() = default;

  virtual int64_t latent_channels() const = 0;
  // Pixels per latent cell along height and width, and frames per latent frame
  // after the first (1 for image autoencoders).
  virtual int64_t spatial_compression() const = 0;
  virtual int64_t temporal_compression() const = 0;
  int64_t latent_frames(int64_t frames) const { return (frames - 1) / temporal_compression() + 1; }
  int64_t frames(int64_t latent_frames) const {
    return (latent_frames - 1) * temporal_compression() + 1;
  }
  // The latent normalisation: normalised = (z − mean) / std per channel (a
  // scale and shift for image autoencoders), what encode() returns, decode()
  // takes and the latent preview un-does.
  virtual std::vector<double> latents_mean() const = 0;
  virtual std::vector<double> latents_std() const = 0;

  // video [B, 3, F, H, W] in [−1, 1] → normalised latent [B, C, f, h, w], float32.
  virtual torch::Tensor encode(const torch::Tensor& video) = 0;
  // Called after each decoded chunk with the frames decoded so far and in all.
  using FrameProgress = std::function<void(int64_t done, int64_t total)>;
  // normalised latent → video [B, 3, F, H, W] float32, not clamped.
  virtual torch::Tensor decode_video(const torch::Tensor& latent,
                                     const FrameProgress& progress = {}) = 0;
  virtual void to(torch::Device device) = 0;
};

}  // namespace kinora::vae
