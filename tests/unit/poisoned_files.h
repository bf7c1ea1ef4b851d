#pragma once
// A fixture's copy with one tensor filled with NaN, or stored with the wrong
// shape: a model file "with such weights", for the tests of what a render
// says about it.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "test_util.h"

namespace kinora::test {

// A copy of the fixture `name` at `out` with the first tensor whose name
// `poison` accepts filled with NaN.
inline void write_poisoned(const std::string& name, const std::filesystem::path& out,
                           const std::function<bool(const std::string&)>& poison) {
  const auto ck = io::SafetensorsFile::open(fixture(name));
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  bool poisoned = false;
  for (const auto& t : ck->tensors()) {
    auto v = ck->get(t.name).clone();
    if (!poisoned && poison(t.name)) {
      v.fill_(std::numeric_limits<float>::quiet_NaN());
      poisoned = true;
    }
    tensors.emplace_back(t.name, v);
  }
  ASSERT_TRUE(poisoned) << name;
  io::save_safetensors(out, tensors, ck->metadata());
}

// A copy of the fixture `name` at `out` with the tensor `tensor` stored
// transposed (its first two sizes swapped, the same bytes): a file whose
// header reads as the model's, that fails when that tensor loads.
inline void write_misshaped(const std::string& name, const std::filesystem::path& out,
                            const std::string& tensor) {
  const auto ck = io::SafetensorsFile::open(fixture(name));
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  bool changed = false;
  for (const auto& t : ck->tensors()) {
    auto v = ck->get(t.name).clone();
    if (t.name == tensor) {
      ASSERT_GE(v.dim(), 2) << tensor;
      ASSERT_NE(v.size(0), v.size(1)) << tensor;
      v = v.transpose(0, 1).contiguous();
      changed = true;
    }
    tensors.emplace_back(t.name, v);
  }
  ASSERT_TRUE(changed) << name << " has no " << tensor;
  io::save_safetensors(out, tensors, ck->metadata());
}

}  // namespace kinora::test
