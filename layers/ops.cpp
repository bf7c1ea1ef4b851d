#include "layers/ops.h"

#include "base/torch_compat.h"
#include "layers/fused.h"

namespace kinora::layers {

torch::Tensor gelu_tanh(const torch::Tensor& x) {
  if (x.is_cpu() && x.scalar_type() == torch::kBFloat16 && !torch::GradMode::is_enabled())
    return gelu_tanh_bf16_cpu(x);
  return torch::gelu(x, "tanh");
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& key_mask) {
  // [B, L, H, D] → [B, H, L, D] for the kernel, and back.
  const auto out = compat::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                        v.transpose(1, 2), key_mask);
  return out.transpose(1, 2);
}

}  // namespace kinora::layers
