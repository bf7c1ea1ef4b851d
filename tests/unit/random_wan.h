#pragma once
// A narrow Wan DiT with seeded random weights and a fixed forward over it, for
// the tests of what runs a model's blocks (block swap, FP8 products).
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "diffusion/wan_dit.h"
#include "io/safetensors.h"

namespace kinora::test {

// A Wan DiT of `layers` narrow blocks (width 64, FFN 96, text 32).
inline std::unique_ptr<diffusion::WanModel> random_wan(int64_t layers) {
  diffusion::WanConfig c;
  c.dim = 64, c.ffn_dim = 96, c.text_dim = 32, c.num_heads = 2, c.num_layers = layers;
  c.freq_dim = 32;
  auto m = std::make_unique<diffusion::WanModel>(c);
  torch::NoGradGuard g;
  torch::manual_seed(3);
  for (auto& p : m->module().parameters()) p.normal_(0, 0.1);
  return m;
}

// A guided pair's forward over seeded inputs.
inline torch::Tensor wan_forward(diffusion::WanModel& m) {
  torch::manual_seed(9);
  const auto x = torch::randn({2, 16, 2, 4, 6});
  const auto ctx = torch::randn({2, 5, 32});
  return m.forward(x, torch::tensor({600.0, 600.0}), ctx);
}

// A rank-2 LoRA of the q projection of each of `blocks` blocks (ComfyUI's
// names), its factors seeded normals times `size`, written to `path`.
inline void write_q_lora(const std::filesystem::path& path, int blocks, double size) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  torch::manual_seed(11);
  for (int b = 0; b < blocks; ++b) {
    const std::string o = "diffusion_model.blocks." + std::to_string(b) + ".self_attn.q.";
    tensors.emplace_back(o + "lora_down.weight", torch::randn({2, 64}) * size);
    tensors.emplace_back(o + "lora_up.weight", torch::randn({64, 2}) * size);
  }
  io::save_safetensors(path, tensors);
}

}  // namespace kinora::test
