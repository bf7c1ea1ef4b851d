#pragma once
// The components the conformance runner can exercise, by the case's `component`.
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "conformance/case.h"
#include "layers/precision.h"

namespace kinora::conformance {

using Precision = layers::Precision;

struct RunOptions {
  Precision precision = Precision::F32;
  // Where the models run: their inputs go there, their outputs come back.
  torch::Device device = torch::kCPU;
  // The DiTs' block layers multiply in FP8 (layers/fp8.h).
  bool fp8 = false;
  // The case's input `name` on the device.
  torch::Tensor in(const Case& k, const std::string& name) const {
    return k.input(name).to(device);
  }
};

using Outputs = std::map<std::string, torch::Tensor>;

struct Component {
  std::string name;
  bool needs_weights = false;
  // Runs the case's inputs through the component (with the given weights file
  // when needs_weights) and returns outputs named like the case's outputs.
  std::function<Outputs(const Case&, const std::filesystem::path& weights, const RunOptions&)> run;
  bool fp8 = false;  // multiplies in FP8 when RunOptions::fp8 asks
};

// The component for a case's `component` string, or nullopt when Kinora does not
// implement it yet (the runner reports SKIP).
std::optional<Component> find_component(const std::string& name);

// Registration lists, one per module family (sched_components.cpp, …).
void add_scheduler_components(std::map<std::string, Component>& out);
void add_text_components(std::map<std::string, Component>& out);
void add_wan_components(std::map<std::string, Component>& out);
void add_flux_components(std::map<std::string, Component>& out);
void add_sdxl_components(std::map<std::string, Component>& out);

}  // namespace kinora::conformance
