#pragma once
#include <torch/torch.h>

#include <string>

namespace kinora::layers {

// How a model computes. F32: everything in float32 (the reference numbers).
// BF16: matmuls and attention in bfloat16 as the references run under autocast;
// norms, modulation and the time path stay float32.
enum class Precision { F32, BF16 };

inline torch::ScalarType matmul_dtype(Precision p) {
  return p == Precision::BF16 ? torch::kBFloat16 : torch::kFloat32;
}
Precision parse_precision(const std::string& s);  // "fp32" | "bf16"; throws kinora::Error
const char* precision_name(Precision p);

}  // namespace kinora::layers
