#pragma once
// A fixture's copy with one tensor filled with NaN: a model file "with such
// weights", for the tests of what a render says about it.
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

}  // namespace kinora::test
