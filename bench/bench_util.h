#pragma once
// Shared by the benchmark programs: peak memory and random "trained-like" weights.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "base/cpu_blas.h"
#include "io/safetensors.h"

#ifdef KINORA_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace kinora::bench {

// "; OpenBLAS 0.3.21 …, kernels SkylakeX" for a report's first line: float32
// figures on the CPU depend on it; "" where the BLAS is not OpenBLAS.
inline std::string blas_note() {
  const auto d = cpu_blas_description();
  return d.empty() ? "" : "; " + d;
}

// A memory figure of /proc/self/status ("VmHWM:", "VmRSS:"), MiB; -1 if absent.
inline double status_mib(const std::string& field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field, 0) == 0) return std::stod(line.substr(field.size())) / 1024.0;
  return -1;
}
// The process's resident high-water mark (VmHWM), MiB.
inline double peak_rss_mib() {
  return status_mib("VmHWM:");
}
// Resets the high-water mark to the current RSS (Linux ≥ 4.0).
inline void reset_peak_rss() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

// The process's resident memory now (VmRSS), MiB.
inline double rss_mib() {
  return status_mib("VmRSS:");
}

// A random value for parameter `name` shaped like `like`: norm weights 1,
// matrices and kernels N(0, 1/fan-in), vectors N(0, 0.02²); made with
// `options` (float32 on the CPU by default).
inline torch::Tensor random_like(const std::string& name, const torch::Tensor& like,
                                 const torch::TensorOptions& options = {}) {
  if (name.find("norm") != std::string::npos && like.numel() == like.size(0))
    return torch::ones(like.sizes(), options);
  if (like.dim() >= 2)
    return torch::randn(like.sizes(), options) /
           std::sqrt(static_cast<double>(like.numel() / like.size(0)));
  return torch::randn(like.sizes(), options) * 0.02;
}

// Random weights (random_like) for every parameter of `m`, written to `path` in
// `dtype` one tensor at a time, so that a model's float32 values never exist
// whole; `metadata` as the file's __metadata__.
inline void save_random(torch::nn::Module& m, const std::filesystem::path& path,
                        torch::ScalarType dtype,
                        const std::map<std::string, std::string>& metadata = {}) {
  std::vector<io::TensorSpec> specs;
  std::vector<torch::Tensor> like;
  for (const auto& p : m.named_parameters()) {
    specs.push_back({p.key(), p.value().sizes().vec(), dtype});
    like.push_back(p.value());
  }
  io::save_safetensors(
      path, specs, [&](std::size_t i) { return random_like(specs[i].name, like[i]).to(dtype); },
      metadata);
}

// Waits for a CUDA device's queued work (a no-op on the CPU).
inline void sync(torch::Device d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

// Random weights in `dtype` on `device` (random_like per parameter), drawn
// there: the parameters never exist in float32 when dtype is bf16, nor on the
// CPU when the device is a GPU.
inline void randomise(torch::nn::Module& m, torch::ScalarType dtype, torch::Device device) {
  torch::NoGradGuard g;
  const auto options = torch::TensorOptions().device(device).dtype(dtype);
  for (auto& p : m.named_parameters()) p.value().set_data(random_like(p.key(), p.value(), options));
}

// The seconds of each of `repeat` calls of `fn` after `warm_up` untimed ones:
// CUDA events around each call on a GPU (the queue's time, not the host's),
// the steady clock with the device drained on the CPU.
inline std::vector<double> timed_runs(const std::function<void()>& fn, torch::Device device,
                                      int warm_up, int repeat) {
  for (int i = 0; i < warm_up; ++i) fn();
  sync(device);
  std::vector<double> out;
  for (int i = 0; i < repeat; ++i) {
#ifdef KINORA_CUDA
    if (device.is_cuda()) {
      at::cuda::CUDAEvent start(cudaEventDefault), end(cudaEventDefault);
      start.record();
      fn();
      end.record();
      end.synchronize();
      out.push_back(start.elapsed_time(end) / 1e3);
      continue;
    }
#endif
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    sync(device);
    out.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return out;
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The mean seconds of `repeat` calls of `fn` on `device` (after one untimed
// call when `warm_up`), the peak-RSS mark reset before them.
inline double mean_seconds(const std::function<void()>& fn, int repeat, torch::Device device,
                           bool warm_up) {
  if (warm_up) fn();
  sync(device);
  reset_peak_rss();
  const auto runs = timed_runs(fn, device, 0, repeat);
  return std::accumulate(runs.begin(), runs.end(), 0.0) / repeat;
}

#ifdef KINORA_CUDA
inline c10::DeviceIndex cuda_index(torch::Device device) {
  return device.has_index() ? device.index() : static_cast<c10::DeviceIndex>(0);
}
// The caching allocator's allocated-bytes statistic (0: all pools together).
inline auto cuda_allocated(torch::Device device) {
  return c10::cuda::CUDACachingAllocator::getDeviceStats(cuda_index(device)).allocated_bytes[0];
}
#endif

// Memory in use on `device`, bytes: the CUDA caching allocator's allocated
// bytes on a GPU, the process's resident memory on the CPU; and its peak since
// reset_peak_memory().
inline double memory_in_use(torch::Device device) {
#ifdef KINORA_CUDA
  if (device.is_cuda()) return static_cast<double>(cuda_allocated(device).current);
#endif
  (void)device;
  return rss_mib() * 1048576.0;
}
inline double peak_memory(torch::Device device) {
#ifdef KINORA_CUDA
  if (device.is_cuda()) return static_cast<double>(cuda_allocated(device).peak);
#endif
  (void)device;
  return peak_rss_mib() * 1048576.0;
}
inline void reset_peak_memory(torch::Device device) {
#ifdef KINORA_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(cuda_index(device));
    return;
  }
#endif
  (void)device;
  reset_peak_rss();
}

}  // namespace kinora::bench
