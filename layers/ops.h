#pragma once
// Small numerical blocks shared by the models. Each states the dtype it computes in.
#include <torch/torch.h>

namespace kinora::layers {

// x / rms(x) over the last dim, in float32, times weight (T5 and Wan q/k norms).
inline torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  const auto xf = x.to(torch::kFloat32);
  auto y = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight.defined() ? y * weight.to(torch::kFloat32) : y;
}

// LayerNorm over the last dim in float32 (weight/bias optional).
inline torch::Tensor layer_norm(const torch::Tensor& x, const torch::Tensor& weight,
                                const torch::Tensor& bias, double eps) {
  const auto xf = x.to(torch::kFloat32);
  return torch::layer_norm(xf, {xf.size(-1)},
                           weight.defined() ? weight.to(torch::kFloat32) : weight,
                           bias.defined() ? bias.to(torch::kFloat32) : bias, eps);
}

// GELU, tanh form; bf16 on the CPU through layers/fused.h's faster kernel
// when no gradient is recorded.
torch::Tensor gelu_tanh(const torch::Tensor& x);

// Multi-head attention on [B, L, H, D] tensors → [B, Lq, H, D], scaled by 1/√D,
// computed in the dtype of q; `key_mask` [B, Lk] bool (true: attend) or
// undefined.
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& key_mask = {});

}  // namespace kinora::layers
