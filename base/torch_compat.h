#pragma once
// The few places where LibTorch 1.13 (Debian, CPU) and 2.x (the GPU machine)
// differ, kept in one header so that the rest of the code is version-free.
#include <torch/torch.h>
#include <torch/version.h>

#include <c10/core/Allocator.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>

#ifdef KINORA_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

#include <string>

namespace kinora::compat {

inline constexpr bool kHasSdpa = TORCH_VERSION_MAJOR >= 2;

// Built against a CUDA LibTorch (the cuda preset, KINORA_CUDA).
#ifdef KINORA_CUDA
inline constexpr bool kCudaBuild = true;
#else
inline constexpr bool kCudaBuild = false;
#endif

// "NVIDIA H100 80GB HBM3, 79.1 GiB" for CUDA device `index`: its name and
// memory where the CUDA headers are there to ask, else "CUDA device N".
inline std::string cuda_device_description(int64_t index) {
#ifdef KINORA_CUDA
  const auto* p = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(index));
  char mem[32];
  std::snprintf(mem, sizeof mem, "%.1f GiB", static_cast<double>(p->totalGlobalMem) / (1 << 30));
  return std::string(p->name) + ", " + mem;
#else
  return "CUDA device " + std::to_string(index);
#endif
}

// The free memory of CUDA device `device` as the driver reports it, once
// LibTorch's allocator has handed back what it holds unused; -1 where the CUDA
// headers are not there to ask.
inline int64_t cuda_free_bytes(const torch::Device& device) {
#ifdef KINORA_CUDA
  const c10::cuda::CUDAGuard on(device.index());
  c10::cuda::CUDACachingAllocator::emptyCache();
  std::size_t free = 0, total = 0;
  C10_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return static_cast<int64_t>(free);
#else
  (void)device;
  return -1;
#endif
}

// `bytes` of page-locked host memory as a uint8 tensor, registered with CUDA
// at exactly that size (LibTorch's pinned allocator rounds each allocation up
// to a power of two: up to twice the memory); undefined where it cannot be
// had (no CUDA headers, or the driver refuses).
inline torch::Tensor pinned_host_bytes(int64_t bytes) {
#ifdef KINORA_CUDA
  void* p = nullptr;
  if (bytes <= 0 || posix_memalign(&p, 4096, static_cast<std::size_t>(bytes)) != 0) return {};
  if (cudaHostRegister(p, static_cast<std::size_t>(bytes), cudaHostRegisterDefault) !=
      cudaSuccess) {
    (void)cudaGetLastError();  // clear it: the caller goes on without pinning
    std::free(p);
    return {};
  }
  return torch::from_blob(
      p, {bytes},
      [](void* q) {
        (void)cudaHostUnregister(q);
        std::free(q);
      },
      torch::kUInt8);
#else
  (void)bytes;
  return {};
#endif
}

#ifdef KINORA_CUDA
// The stream LibTorch queues work on for `device` now (a cudaStream_t), where
// Kinora's own kernels go so that they stay in order with it (and inside a
// CUDA graph being captured).
inline void* current_cuda_stream(const torch::Device& device) {
  return c10::cuda::getCurrentCUDAStream(device.index()).stream();
}
#endif

// FP8 products through LibTorch's scaled matmul: LibTorch 2.5 or later (where
// at::_scaled_mm returns the product alone), built with CUDA.
#if defined(KINORA_CUDA) && \
    (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5))
#define KINORA_FP8_MATMUL 1
#endif

// Whether `device` is a GPU whose tensor cores multiply FP8 (compute
// capability 8.9 or later: Ada, Hopper and newer) and this build can ask it to.
inline bool has_fp8_matmul(const torch::Device& device) {
#ifdef KINORA_FP8_MATMUL
  if (!device.is_cuda()) return false;
  const auto* p = at::cuda::getDeviceProperties(device.has_index() ? device.index()
                                                                   : c10::cuda::current_device());
  return p->major > 8 || (p->major == 8 && p->minor >= 9);
#else
  (void)device;
  return false;
#endif
}

// a8 [M, K] · b8 [N, K]ᵀ, both E4M3 bytes (uint8, contiguous), times the
// float32 scalar tensors sa·sb, plus `bias` [N] (optional; bf16 with a bf16
// `out` only), summed in float32, in `out` dtype; where has_fp8_matmul().
inline torch::Tensor scaled_mm_e4m3(const torch::Tensor& a8, const torch::Tensor& b8,
                                    const torch::Tensor& sa, const torch::Tensor& sb,
                                    const torch::Tensor& bias, torch::ScalarType out) {
#ifdef KINORA_FP8_MATMUL
  return at::_scaled_mm(a8.view(c10::ScalarType::Float8_e4m3fn),
                        b8.view(c10::ScalarType::Float8_e4m3fn).t(), sa, sb,
                        bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt,
                        std::nullopt, out, /*use_fast_accum=*/false);
#else
  (void)a8, (void)b8, (void)sa, (void)sb, (void)bias, (void)out;
  TORCH_CHECK(false, "FP8 matmul: not in this build (a CUDA build with LibTorch 2.5 or later)");
#endif
}

// FP8 bytes (uint8) widened to `to` through LibTorch's own float8 dtypes
// (LibTorch 2.1 or later: a kernel on any device); undefined before them.
inline torch::Tensor widen_fp8_native(const torch::Tensor& bytes, bool e4m3, torch::ScalarType to) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  return bytes.view(e4m3 ? c10::ScalarType::Float8_e4m3fn : c10::ScalarType::Float8_e5m2).to(to);
#else
  (void)bytes, (void)e4m3, (void)to;
  return {};
#endif
}

// A c10::Allocator for either LibTorch: allocate() is const in 1.x and not in
// 2.3+, where copy_data() joined it as a pure virtual. Both signatures are
// declared (neither marked override), so whichever the base has is the one
// overridden; subclasses implement allocate_bytes().
struct AllocatorBase : c10::Allocator {
  virtual c10::DataPtr allocate_bytes(std::size_t n) const = 0;
  // NOLINTNEXTLINE(modernize-use-override): virtual in 1.x only
  c10::DataPtr allocate(std::size_t n) const { return allocate_bytes(n); }
  // NOLINTNEXTLINE(modernize-use-override): virtual in 2.3+ only
  c10::DataPtr allocate(std::size_t n) { return allocate_bytes(n); }
  // NOLINTNEXTLINE(modernize-use-override): virtual in 2.3+ only
  void copy_data(void* dest, const void* src, std::size_t count) const {
    std::memcpy(dest, src, count);
  }
};

// softmax(q·kᵀ/√d)·v over the last two dims; q [B, H, Lq, d], k/v [B, H, Lk, d];
// `key_mask` [B, Lk] (bool, true: attend) leaves out the keys it marks false.
// LibTorch 2.x has a fused kernel (flash / memory-efficient on CUDA); 1.13 gets
// the same result through the explicit product, its scores taking at most
// `score_bytes` at a time.
inline torch::Tensor scaled_dot_product_attention(const torch::Tensor& q, const torch::Tensor& k,
                                                  const torch::Tensor& v,
                                                  const torch::Tensor& key_mask = {},
                                                  int64_t score_bytes = int64_t{256} << 20) {
#if TORCH_VERSION_MAJOR >= 2
  (void)score_bytes;
  if (key_mask.defined())
    return at::scaled_dot_product_attention(q, k, v, key_mask.unsqueeze(1).unsqueeze(1));
  return at::scaled_dot_product_attention(q, k, v);
#else
  // q·kᵀ scaled inside the batched matmul (a separate pass over the scores
  // costs as much as the product in bf16). The scores of all the queries at
  // once grow with the square of the tokens (51 GB for Wan 1.3B's guided step
  // at 832×480×81), so the queries go in blocks whose scores take at most
  // score_bytes: the same rows (in float32 bit for bit; bf16 products may
  // round a row otherwise among fewer rows).
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const int64_t lq = q.size(-2), lk = k.size(-2);
  const auto q3 = q.reshape({-1, lq, q.size(-1)});
  const auto k3t = k.reshape({-1, lk, k.size(-1)}).transpose(1, 2);
  const auto v3 = v.reshape({-1, lk, v.size(-1)});
  const int64_t heads = q3.size(0);
  const int64_t block = std::max<int64_t>(
      1, score_bytes / std::max<int64_t>(1, heads * lk * static_cast<int64_t>(q.element_size())));
  const auto mask = key_mask.defined() ? key_mask.logical_not().unsqueeze(1).unsqueeze(1)
                                       : torch::Tensor();  // [B, 1, 1, Lk]
  // softmax(q·kᵀ)·v for queries [r0, r0 + n), [heads, n, dv].
  const auto rows = [&](int64_t r0, int64_t n) {
    auto shape = q.sizes().vec();
    shape[shape.size() - 2] = n;
    shape.back() = lk;
    const auto qn = q3.narrow(1, r0, n);
    // At small sizes (under 400 multiply-adds a matrix) LibTorch 1.13's
    // baddbmm multiplies its result's new memory by beta = 0, and NaN left
    // there by an earlier tensor stays NaN: there, the product, then the scale.
    auto scores = n * lk * q.size(-1) < 4096
                      ? torch::bmm(qn, k3t).mul_(scale)
                      : torch::baddbmm(torch::empty({heads, n, lk}, q.options()), qn, k3t,
                                       /*beta=*/0.0, /*alpha=*/scale);
    if (mask.defined())
      scores.view(shape).masked_fill_(mask, -std::numeric_limits<float>::infinity());
    return torch::bmm(scores.softmax(-1), v3);
  };
  auto shape = q.sizes().vec();
  shape.back() = v.size(-1);
  if (block >= lq) return rows(0, lq).view(shape);  // [..., Lq, dv]
  auto out = torch::empty({heads, lq, v.size(-1)}, q.options());
  for (int64_t r0 = 0; r0 < lq; r0 += block) {
    const int64_t n = std::min(block, lq - r0);
    out.narrow(1, r0, n).copy_(rows(r0, n));
  }
  return out.view(shape);
#endif
}

}  // namespace kinora::compat
