#pragma once
// A preset of the tiny Wan fixture chain as JSON, for the tests that write
// preset files: random weights, one 32×32 frame in a fraction of a second.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

#include "test_util.h"

namespace kinora::test {

inline nlohmann::json chain_preset() {
  return {{"prompt", "x"},
          {"seed", 1},
          {"model", fixture("wan21_dit_tiny.safetensors")},
          {"vae", fixture("wan21_vae_tiny.safetensors")},
          {"text_encoder", fixture("umt5_enc_tiny.safetensors")},
          {"tokenizer", fixture("spm_tiny.model")},
          {"width", 32},
          {"height", 32},
          {"frames", 1},
          {"steps", 1}};
}

// A list of `n` of them: prompt "item I", seed I, output DIR/outI.png.
inline nlohmann::json chain_list(const std::filesystem::path& dir, int n) {
  auto list = nlohmann::json::array();
  for (int i = 0; i < n; ++i) {
    auto p = chain_preset();
    p["prompt"] = "item " + std::to_string(i);
    p["seed"] = i;
    p["output"] = (dir / ("out" + std::to_string(i) + ".png")).string();
    list.push_back(p);
  }
  return list;
}

}  // namespace kinora::test
