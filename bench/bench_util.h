#pragma once
// Shared by the benchmark programs: peak memory and random "trained-like" weights.
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace kinora::bench {

// The process's resident high-water mark (VmHWM), MiB.
inline double peak_rss_mib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return -1;
}
// Resets the high-water mark to the current RSS (Linux ≥ 4.0).
inline void reset_peak_rss() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

// A random value for parameter `name` shaped like `like`: norm weights 1,
// matrices and kernels N(0, 1/fan-in), vectors N(0, 0.02²); float32.
inline torch::Tensor random_like(const std::string& name, const torch::Tensor& like) {
  if (name.find("norm") != std::string::npos && like.numel() == like.size(0))
    return torch::ones(like.sizes());
  if (like.dim() >= 2)
    return torch::randn(like.sizes()) / std::sqrt(static_cast<double>(like.numel() / like.size(0)));
  return torch::randn(like.sizes()) * 0.02;
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

// The mean seconds of `repeat` calls of `fn` on `device` (after one untimed
// call when `warm_up`), the peak-RSS mark reset before them.
inline double mean_seconds(const std::function<void()>& fn, int repeat, torch::Device device,
                           bool warm_up) {
  if (warm_up) fn();
  sync(device);
  reset_peak_rss();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < repeat; ++i) fn();
  sync(device);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / repeat;
}

// Random weights in `dtype` on `device` (random_like per parameter); the
// parameters never exist in float32 when dtype is bf16.
inline void randomise(torch::nn::Module& m, torch::ScalarType dtype, torch::Device device) {
  torch::NoGradGuard g;
  for (auto& p : m.named_parameters())
    p.value().set_data(random_like(p.key(), p.value()).to(device, dtype));
}

}  // namespace kinora::bench
