#include "base/device.h"

#include <torch/cuda.h>

#include <regex>

#include "base/error.h"
#include "base/torch_compat.h"

namespace kinora {

bool is_device_name(const std::string& name) {
  static const std::regex form(R"(auto|cpu|cuda(:[0-9]{1,3})?)");
  return std::regex_match(name, form);
}

torch::Device resolve_device(const std::string& name) {
  if (!is_device_name(name))
    throw Error("device '" + name + "': expected auto, cpu, cuda or cuda:N");
  const int64_t gpus = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
  if (name == "cpu") return torch::kCPU;
  if (name == "auto") return gpus > 0 ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (gpus == 0)
    throw Error("device '" + name + "': this LibTorch sees no CUDA device (" +
                (compat::kCudaBuild ? "no GPU, or its driver is not loaded"
                                    : "it was built for the CPU only") +
                "); use --device cpu or auto");
  const int index = name.size() > 5 ? std::stoi(name.substr(5)) : 0;
  if (index >= gpus)
    throw Error("device '" + name + "': there " +
                (gpus == 1 ? "is 1 CUDA device" : "are " + std::to_string(gpus) + " CUDA devices") +
                " (cuda:0 … cuda:" + std::to_string(gpus - 1) + ")");
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

std::string device_name(const torch::Device& device) {
  if (device.is_cuda()) return "cuda:" + std::to_string(device.has_index() ? device.index() : 0);
  return "cpu";
}

std::vector<DeviceInfo> available_devices() {
  const int threads = at::get_num_threads();
  std::vector<DeviceInfo> out{
      {"cpu", "CPU, " + std::to_string(threads) + (threads == 1 ? " thread" : " threads")}};
  const int64_t gpus = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
  for (int64_t i = 0; i < gpus; ++i)
    out.push_back({"cuda:" + std::to_string(i), compat::cuda_device_description(i)});
  return out;
}

}  // namespace kinora
