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

// Whether this CPU has bfloat16 arithmetic (AVX512-BF16 or AMX-BF16 in
// /proc/cpuinfo; false where that cannot be read). Without it LibTorch
// emulates bf16, tens of times slower than float32 (bench/RESULTS.md: 21-33×
// for the embedded model's default clip on an AVX2-only EPYC).
bool cpu_has_native_bf16();
// The same from one "flags : fpu vme …" line of /proc/cpuinfo.
bool cpu_flags_have_native_bf16(const std::string& flags_line);
// Whether a CUDA device has bf16 units (compute capability 8.0, Ampere, or
// later); false where there is no CUDA. Older GPUs run bf16 slower than fp32.
bool cuda_has_native_bf16(const torch::Device& device);
// A preset's precision ("auto" | "fp32" | "bf16") for a model on `device`:
// "auto" is bf16 where the device has bf16 arithmetic (a CUDA GPU from Ampere
// on, a CPU with AVX512-BF16 or AMX), fp32 elsewhere.
Precision resolve_precision(const std::string& s, const torch::Device& device);
// For bf16 on a device without bf16 arithmetic: a warning to show the user; else "".
std::string precision_warning(Precision p, const torch::Device& device);

}  // namespace kinora::layers
