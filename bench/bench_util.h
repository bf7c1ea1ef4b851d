#pragma once
// Shared by the benchmark programs: peak memory and random "trained-like" weights.
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <string>

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

}  // namespace kinora::bench
