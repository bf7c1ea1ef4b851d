#pragma once
// A cheap look at a latent while it is being sampled: each latent pixel mapped
// to RGB by a fixed linear map (16 → 3, plus a bias), no VAE involved.
#include <torch/torch.h>

namespace kinora::pipeline {

// The Wan 2.1 VAE's map, applied to the un-normalised latent (z·std + mean);
// [16, 3] and [3]. The values are the least-squares fit published with
// ComfyUI's Wan21 latent format, made against Wan2.1_VAE. For another VAE of
// the same latent width (the embedded model's) the colours are only roughly
// right: a preview, not a decode.
torch::Tensor wan21_preview_factors();
torch::Tensor wan21_preview_bias();

// latent [16, T, h, w] (normalised, as sampled) → [T, h, w, 3] uint8.
torch::Tensor latent_preview(const torch::Tensor& latent, const torch::Tensor& factors,
                             const torch::Tensor& bias, const std::vector<double>& mean,
                             const std::vector<double>& std);

}  // namespace kinora::pipeline

namespace kinora::pipeline {
// The FLUX autoencoder's map, for the un-normalised latent like Wan's: the
// least-squares fit published with ComfyUI's Flux latent format (made for
// the scaled latent, (z − 0.1159)·0.3611) carried over to z.
torch::Tensor flux_preview_factors();
torch::Tensor flux_preview_bias();
}  // namespace kinora::pipeline
