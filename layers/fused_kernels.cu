// CUDA kernels for layers/fused.h: one block of threads per row, the row's
// statistics reduced in shared memory, each element read and written once.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "layers/fused_kernels.h"

namespace kinora::layers::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float load(const float* p, int64_t i) {
  return p[i];
}
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void store(float* p, int64_t i, float v) {
  p[i] = v;
}
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16(v);
}
// v rounded to T (what a tensor of dtype T would hold), back as float.
template <typename T>
__device__ __forceinline__ float round_to(float v);
template <>
__device__ __forceinline__ float round_to<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float round_to<__nv_bfloat16>(float v) {
  return __bfloat162float(__float2bfloat16(v));
}

// The sum of v over the block (every thread gets it).
__device__ float block_sum(float v) {
  __shared__ float part[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // part[] free from an earlier call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = lane < kThreads / 32 ? part[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename Out>
__global__ void modulated_layer_norm_kernel(const float* __restrict__ x,
                                            const float* __restrict__ shift,
                                            const float* __restrict__ scale, Out* __restrict__ out,
                                            int64_t rows_per_batch, int64_t dim, float eps) {
  const int64_t row = blockIdx.x;
  const float* xr = x + row * dim;
  const int64_t m = (row / rows_per_batch) * dim;
  float s = 0;
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) s += xr[i];
  const float mean = block_sum(s) / static_cast<float>(dim);
  float q = 0;
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
    const float d = xr[i] - mean;
    q += d * d;
  }
  const float rstd = rsqrtf(block_sum(q) / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += kThreads)
    store(out, row * dim + i, (xr[i] - mean) * rstd * (1.f + scale[m + i]) + shift[m + i]);
}

// One block per row (strided over the rows): the gate's row is found once per
// row, not by a 64-bit division per element. No gate: x += y.
template <typename Y>
__global__ void gated_add_kernel(float* __restrict__ x, const Y* __restrict__ y,
                                 const float* __restrict__ gate, int64_t rows,
                                 int64_t rows_per_batch, int64_t dim) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    float* xr = x + row * dim;
    const Y* yr = y + row * dim;
    if (gate) {
      const float* g = gate + (row / rows_per_batch) * dim;
      for (int64_t i = threadIdx.x; i < dim; i += kThreads) xr[i] += load(yr, i) * g[i];
    } else {
      for (int64_t i = threadIdx.x; i < dim; i += kThreads) xr[i] += load(yr, i);
    }
  }
}

template <typename T>
__global__ void rms_norm_rope_kernel(const T* __restrict__ y, const T* __restrict__ w,
                                     const float* __restrict__ cos, const float* __restrict__ sin,
                                     T* __restrict__ out, int64_t tokens, int64_t dim,
                                     int64_t head_dim, float eps) {
  const int64_t row = blockIdx.x;
  const T* yr = y + row * dim;
  float q = 0;
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
    const float v = load(yr, i);
    q += v * v;
  }
  const float rstd = rsqrtf(block_sum(q) / static_cast<float>(dim) + eps);
  if (!cos) {  // no rotation
    for (int64_t i = threadIdx.x; i < dim; i += kThreads)
      store(out, row * dim + i, round_to<T>(load(yr, i) * rstd) * load(w, i));
    return;
  }
  const int pairs = static_cast<int>(head_dim / 2);
  const int64_t table = (row % tokens) * pairs;
  for (int j = threadIdx.x; j < dim / 2; j += kThreads) {
    const int64_t i = 2 * static_cast<int64_t>(j);
    const int p = j % pairs;
    const float a = round_to<T>(round_to<T>(load(yr, i) * rstd) * load(w, i));
    const float b = round_to<T>(round_to<T>(load(yr, i + 1) * rstd) * load(w, i + 1));
    const float c = cos[table + p], s = sin[table + p];
    store(out, row * dim + i, a * c - b * s);
    store(out, row * dim + i + 1, a * s + b * c);
  }
}

// One thread per position (b, s) of x [B, C, S]: its C values, S apart (a
// warp's neighbouring positions read neighbouring values), summed in squares,
// then written scaled.
template <typename T>
__global__ void channel_rms_norm_kernel(const T* __restrict__ x, const float* __restrict__ gamma,
                                        T* __restrict__ out, int64_t channels, int64_t positions,
                                        int64_t total, float scale, bool silu) {
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < total;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = p / positions, at = b * channels * positions + (p - b * positions);
    float ss = 0;
    for (int64_t c = 0; c < channels; ++c) {
      const float v = load(x, at + c * positions);
      ss += v * v;
    }
    const float q = scale / fmaxf(sqrtf(ss), 1e-12f);
    for (int64_t c = 0; c < channels; ++c) {
      const float y = load(x, at + c * positions) * q * gamma[c];
      if (silu) {
        const float r = round_to<T>(y);
        store(out, at + c * positions, r / (1.f + expf(-r)));
      } else {
        store(out, at + c * positions, y);
      }
    }
  }
}

void check(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 * 16 ? b : 65535 * 16);
}

}  // namespace

void modulated_layer_norm(const float* x, const float* shift, const float* scale, void* out,
                          bool out_bf16, int64_t rows, int64_t rows_per_batch, int64_t dim,
                          float eps, void* stream) {
  if (rows == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  if (out_bf16)
    modulated_layer_norm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(
        x, shift, scale, static_cast<__nv_bfloat16*>(out), rows_per_batch, dim, eps);
  else
    modulated_layer_norm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(
        x, shift, scale, static_cast<float*>(out), rows_per_batch, dim, eps);
  check("modulated_layer_norm");
}

void gated_add(float* x, const void* y, bool y_bf16, const float* gate, int64_t rows,
               int64_t rows_per_batch, int64_t dim, void* stream) {
  if (rows == 0 || dim == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  const auto grid = static_cast<unsigned>(rows < (int64_t{1} << 30) ? rows : int64_t{1} << 30);
  if (y_bf16)
    gated_add_kernel<<<grid, kThreads, 0, s>>>(x, static_cast<const __nv_bfloat16*>(y), gate, rows,
                                               rows_per_batch, dim);
  else
    gated_add_kernel<<<grid, kThreads, 0, s>>>(x, static_cast<const float*>(y), gate, rows,
                                               rows_per_batch, dim);
  check("gated_add");
}

void rms_norm_rope(const void* y, const void* weight, const float* cos, const float* sin, void* out,
                   bool bf16, int64_t rows, int64_t tokens, int64_t dim, int64_t head_dim,
                   float eps, void* stream) {
  if (rows == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  if (bf16)
    rms_norm_rope_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(
        static_cast<const __nv_bfloat16*>(y), static_cast<const __nv_bfloat16*>(weight), cos, sin,
        static_cast<__nv_bfloat16*>(out), tokens, dim, head_dim, eps);
  else
    rms_norm_rope_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(
        static_cast<const float*>(y), static_cast<const float*>(weight), cos, sin,
        static_cast<float*>(out), tokens, dim, head_dim, eps);
  check("rms_norm_rope");
}

void channel_rms_norm(const void* x, const float* gamma, void* out, bool bf16, int64_t batch,
                      int64_t channels, int64_t positions, float scale, bool silu, void* stream) {
  const int64_t total = batch * positions;
  if (total == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  if (bf16)
    channel_rms_norm_kernel<<<blocks_for(total), kThreads, 0, s>>>(
        static_cast<const __nv_bfloat16*>(x), gamma, static_cast<__nv_bfloat16*>(out), channels,
        positions, total, scale, silu);
  else
    channel_rms_norm_kernel<<<blocks_for(total), kThreads, 0, s>>>(
        static_cast<const float*>(x), gamma, static_cast<float*>(out), channels, positions, total,
        scale, silu);
  check("channel_rms_norm");
}

namespace {
template <typename T>
__global__ void quantize_e4m3_kernel(const T* __restrict__ x, const float* __restrict__ scale,
                                     uint8_t* __restrict__ out, int64_t n) {
  const float s = *scale;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = __nv_cvt_float_to_fp8(load(x, i) / s, __NV_SATFINITE, __NV_E4M3);
}
}  // namespace

void quantize_e4m3(const void* x, bool bf16, const float* scale, uint8_t* out, int64_t n,
                   void* stream) {
  if (n == 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  if (bf16)
    quantize_e4m3_kernel<<<blocks_for(n), kThreads, 0, s>>>(static_cast<const __nv_bfloat16*>(x),
                                                            scale, out, n);
  else
    quantize_e4m3_kernel<<<blocks_for(n), kThreads, 0, s>>>(static_cast<const float*>(x), scale,
                                                            out, n);
  check("quantize_e4m3");
}

}  // namespace kinora::layers::cuda
