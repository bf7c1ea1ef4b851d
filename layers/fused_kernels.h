#pragma once
// The CUDA kernels behind layers/fused.h, launched on `stream` (a cudaStream_t)
// over contiguous buffers; built with nvcc in the CUDA build only. `bf16`
// says whether the buffers named so hold bfloat16 (else float32). Shapes and
// arithmetic are fused.h's.
#include <cstdint>

namespace kinora::layers::cuda {

// out[r, :] = LN(x[r, :]) · (1 + scale[r / rows_per_batch, :]) + shift[...]
void modulated_layer_norm(const float* x, const float* shift, const float* scale, void* out,
                          bool out_bf16, int64_t rows, int64_t rows_per_batch, int64_t dim,
                          float eps, void* stream);
// x[i] += y[i] · gate[batch of i, channel of i] (gate null: x[i] += y[i])
void gated_add(float* x, const void* y, bool y_bf16, const float* gate, int64_t rows,
               int64_t rows_per_batch, int64_t dim, void* stream);
// out[r, :] = rope(round(round(y[r, :] / rms(y[r, :])) · weight)), pairs rotated
// by cos/sin[r % tokens, pair within the head] (cos null: not rotated)
void rms_norm_rope(const void* y, const void* weight, const float* cos, const float* sin, void* out,
                   bool bf16, int64_t rows, int64_t tokens, int64_t dim, int64_t head_dim,
                   float eps, void* stream);

// x [batch, channels, positions] contiguous: each position's channels divided
// by their L2 norm (at least 1e-12), times scale and gamma[c]; then, with
// `silu`, rounded to x's dtype and SiLU (fused.h's channel_rms_norm).
void channel_rms_norm(const void* x, const float* gamma, void* out, bool bf16, int64_t batch,
                      int64_t channels, int64_t positions, float scale, bool silu, void* stream);

// out[i] = the E4M3 byte nearest x[i] / *scale (ties to even, saturating at
// ±448), x float32 or bf16: layers/fp8.h's quantize_e4m3.
void quantize_e4m3(const void* x, bool bf16, const float* scale, uint8_t* out, int64_t n,
                   void* stream);

}  // namespace kinora::layers::cuda
