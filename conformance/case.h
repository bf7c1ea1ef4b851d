#pragma once
// A reference case (`*.case.safetensors`): inputs, expected outputs, and the
// metadata that says what to run (see tests/fixtures/README.md).
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <string>

namespace kinora::conformance {

struct Case {
  std::filesystem::path path;
  std::string component;  // "sched.wan_unipc", "wan21.dit", …
  std::string weights;    // weights file name in the original layout; empty for samplers
  nlohmann::json config;
  double rtol = 1e-4;
  std::string note;
  std::map<std::string, torch::Tensor> inputs;   // "x", "t", … (prefix "input." removed)
  std::map<std::string, torch::Tensor> outputs;  // expected, prefix "output." removed

  const torch::Tensor& input(const std::string& name) const;
};

// Throws kinora::Error naming the file when it is not a valid case.
Case load_case(const std::filesystem::path& path);

}  // namespace kinora::conformance
