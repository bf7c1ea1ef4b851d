#pragma once
// Where a render computes: "auto", "cpu", "cuda" or "cuda:N", as presets, the
// command line (--device) and the studio's picker name it.
#include <torch/torch.h>

#include <string>
#include <vector>

namespace kinora {

// "auto": the first CUDA device when LibTorch sees one, else the CPU. Asking
// for CUDA where there is none, or for a device index past the last, is a
// kinora::Error saying what there is.
torch::Device resolve_device(const std::string& name);
// "cpu", "cuda:0": the name outputs record.
std::string device_name(const torch::Device& device);
// Whether `name` is one of the forms above (not whether the device exists).
bool is_device_name(const std::string& name);

struct DeviceInfo {
  std::string name;         // "cpu", "cuda:0"
  std::string description;  // "CPU, 2 threads", "NVIDIA H100 80GB HBM3, 79.1 GiB"
};
// The CPU and every CUDA device LibTorch sees (with name and memory in a CUDA
// build).
std::vector<DeviceInfo> available_devices();

}  // namespace kinora
