#pragma once
// What a text conditioner (text/conditioner.h) hands a denoiser
// (diffusion/denoiser.h): the prompt's per-token states and, for the families
// that take them, a pooled vector, a token mask and a distilled guidance value.
// Rows along dim 0 are samples.
#include <torch/torch.h>

namespace kinora::layers {

struct Conditioning {
  torch::Tensor context;   // [B, L, D] per-token states
  torch::Tensor pooled;    // [B, P], or undefined
  torch::Tensor mask;      // [B, L], 1 for real tokens, or undefined
  torch::Tensor guidance;  // [B] distilled guidance scale (FLUX-dev), or undefined

  int64_t batch() const { return context.defined() ? context.size(0) : 0; }
  Conditioning to(torch::Device device) const;
  // The rows of `a`, then of `b` (the batch of a classifier-free guided step):
  // contexts and masks zero-padded to a common length.
  static Conditioning cat(const Conditioning& a, const Conditioning& b);
};

}  // namespace kinora::layers
