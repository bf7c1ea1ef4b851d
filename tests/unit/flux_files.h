#pragma once
// Tiny FLUX files that fit the tiny T5 (t5_enc_tiny, width 64), CLIP
// (clip_l_tiny, width 64, ids below 998) and autoencoder (flux1_ae_tiny)
// fixtures, for end-to-end tests: a FLUX-dev DiT with seeded random weights and
// no metadata (as real files have), and a hand-written CLIP tokenizer.
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "diffusion/flux_dit.h"
#include "io/safetensors.h"

namespace kinora::test {

inline std::filesystem::path write_tiny_flux(const std::filesystem::path& dir,
                                             const std::string& name = "flux1-dev-tiny") {
  diffusion::FluxConfig c;
  c.vec_in_dim = 64;
  c.context_in_dim = 64;
  c.hidden_size = 96;
  c.mlp_hidden = 384;
  c.num_heads = 2;
  c.depth = 1;
  c.depth_single_blocks = 1;
  c.axes_dim = {16, 16, 16};
  diffusion::FluxModel m(c);
  torch::manual_seed(7);
  std::vector<std::pair<std::string, torch::Tensor>> t;
  for (const auto& p : m.module().named_parameters())
    t.emplace_back(p.key(), torch::randn(p.value().sizes()) * 0.05);
  const auto path = dir / (name + ".safetensors");
  io::save_safetensors(path, t);
  return path;
}

// vocab.json and merges.txt for clip_l_tiny (998 and 999 are its start and
// end tokens): every printable ASCII byte stands for itself with its own value
// as id, 256 + value with `</w>`; "re" and "red</w>" merged.
inline std::filesystem::path write_clip_tokenizer(const std::filesystem::path& dir) {
  nlohmann::json v = nlohmann::json::object();
  for (int b = 33; b <= 126; ++b) {
    v[std::string(1, static_cast<char>(b))] = b;
    v[std::string(1, static_cast<char>(b)) + "</w>"] = 256 + b;
  }
  v["\xC3\x83"] = 195;            // Ã: byte 0xC3 stands for itself
  v["\xC2\xA9</w>"] = 256 + 169;  // ©: byte 0xA9, ending the word
  v["re"] = 600;
  v["red</w>"] = 601;
  v["<|startoftext|>"] = 998;
  v["<|endoftext|>"] = 999;
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "vocab.json") << v.dump();
  std::ofstream(dir / "merges.txt") << "#version: 0.2\nr e\nre d</w>\n";
  return dir;
}

}  // namespace kinora::test
