#pragma once
// FP8 (E4M3, the "fn" variant: no infinities, ±448 at most) matrix products
// with per-tensor scales, for a model's linear layers.
//
// A weight is stored as E4M3 bytes with one float32 scale (the checkpoint's
// own, for an E4M3 checkpoint; amax/448 for one quantized here); the input of
// each product is quantized per call with the scale amax(|x|)/448. The
// product is x₈·w₈ᵀ·(sx·sw) + bias, summed in float32. On a GPU with FP8
// tensor cores (CUDA compute capability 8.9 or later: Ada, Hopper) it is one
// scaled matmul of the FP8 operands; on any other device the same FP8 values
// are multiplied in the compute dtype (every E4M3 value and every product of
// two is exact in bf16 and float32): the same numbers, without the speed.
//
// Rounding is to nearest, ties to even, saturating at ±448, as CUDA's
// conversion with __NV_SATFINITE.
#include <torch/torch.h>

#include <cstdint>

namespace kinora::layers {

class Model;

inline constexpr float kE4M3Max = 448.0f;

// The E4M3 byte nearest to f (NaN: 0x7F).
uint8_t e4m3_from_float(float f);

// x (any float dtype) rounded to the nearest E4M3 values, as float32.
torch::Tensor round_to_e4m3(const torch::Tensor& x);

// x / scale rounded to the nearest E4M3 values, as `out` (float32 or bf16):
// round_to_e4m3(x / scale), in one pass over x on the CPU.
torch::Tensor e4m3_values(const torch::Tensor& x, const torch::Tensor& scale,
                          torch::ScalarType out);

// The per-tensor scale of x: amax(|x|)/448 (at least 1e-12/448), a float32
// scalar tensor on x's device.
torch::Tensor e4m3_scale(const torch::Tensor& x);

// x / scale as E4M3 bytes (uint8, x's shape, on x's device): the CUDA kernel
// on a GPU (the CUDA build), a loop over e4m3_from_float on the CPU.
torch::Tensor quantize_e4m3(const torch::Tensor& x, const torch::Tensor& scale);

// A weight quantized to E4M3 with its per-tensor scale.
struct E4M3Weight {
  torch::Tensor bytes;  // uint8, the weight's shape
  float scale = 1;
};
E4M3Weight quantize_weight_e4m3(const torch::Tensor& w);

// Whether `device` multiplies FP8 operands natively (see above).
bool device_has_fp8_matmul(const torch::Device& device);

// x [..., in] · (w₈·w_scale)ᵀ + bias → [..., out] in `out` dtype (float32 or
// bf16), with x quantized per call; w8: E4M3 bytes [out, in] on x's device.
torch::Tensor fp8_linear(const torch::Tensor& x, const torch::Tensor& w8, float w_scale,
                         const torch::Tensor& bias, torch::ScalarType out);

// Turns on FP8 products for every Linear of the model's swappable blocks (a
// DiT's transformer blocks; embeddings, time path and head keep their dtype):
// E4M3 weights are used as stored, others quantized once, on `work` (the
// device the model will run on; the result stays where the weight was).
// Returns the number of layers; 0 where the model has no blocks.
int64_t use_fp8_matmuls(Model& model, const torch::Device& work);

}  // namespace kinora::layers
