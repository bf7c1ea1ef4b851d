#include "base/runtime.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "base/version.h"

namespace kinora {

int configure_threads() {
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  if (const char* env = std::getenv("KINORA_THREADS")) {
    const int requested = std::atoi(env);
    if (requested > 0) threads = requested;
  }
  if (threads < 1) threads = 1;
  if (at::get_num_threads() != threads) at::set_num_threads(threads);
  return at::get_num_threads();
}

std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

std::string version_string() {
  const bool cuda = torch::cuda::is_available();
  return std::string("Kinora ") + kVersion + ", LibTorch " + torch_version() +
         (cuda ? " (CUDA)" : " (CPU)");
}

std::filesystem::path executable_dir() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path() : exe.parent_path();
}

}  // namespace kinora
