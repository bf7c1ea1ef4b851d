#pragma once
// Real-shape Wan checkpoints for tests and benchmarks, written as sparse files:
// the header is real, the data section is a hole, so a 14B "checkpoint" costs
// no disk and no memory. The key list follows the released checkpoints' key
// list (Wan2.1 wan/modules/model.py), independently of the module code that
// must load it.
#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace kinora::test {

using KeyShapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;

inline KeyShapes wan_original_keys(int64_t dim, int64_t ffn, int64_t in_dim, int64_t out_dim,
                                   int layers, bool i2v, const std::string& prefix = "") {
  KeyShapes k;
  auto add = [&](const std::string& n, std::vector<int64_t> s) {
    k.emplace_back(prefix + n, std::move(s));
  };
  add("patch_embedding.weight", {dim, in_dim, 1, 2, 2});
  add("patch_embedding.bias", {dim});
  add("text_embedding.0.weight", {dim, 4096});
  add("text_embedding.0.bias", {dim});
  add("text_embedding.2.weight", {dim, dim});
  add("text_embedding.2.bias", {dim});
  add("time_embedding.0.weight", {dim, 256});
  add("time_embedding.0.bias", {dim});
  add("time_embedding.2.weight", {dim, dim});
  add("time_embedding.2.bias", {dim});
  add("time_projection.1.weight", {6 * dim, dim});
  add("time_projection.1.bias", {6 * dim});
  add("head.head.weight", {4 * out_dim, dim});
  add("head.head.bias", {4 * out_dim});
  add("head.modulation", {1, 2, dim});
  for (int i = 0; i < layers; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    add(b + "modulation", {1, 6, dim});
    for (const char* a : {"self_attn.", "cross_attn."}) {
      for (const char* p : {"q", "k", "v", "o"}) {
        add(b + a + p + ".weight", {dim, dim});
        add(b + a + p + ".bias", {dim});
      }
      add(b + a + "norm_q.weight", {dim});
      add(b + a + "norm_k.weight", {dim});
    }
    add(b + "norm3.weight", {dim});
    add(b + "norm3.bias", {dim});
    add(b + "ffn.0.weight", {ffn, dim});
    add(b + "ffn.0.bias", {ffn});
    add(b + "ffn.2.weight", {dim, ffn});
    add(b + "ffn.2.bias", {dim});
    if (i2v) {
      for (const char* p : {"k_img", "v_img"}) {
        add(b + "cross_attn." + p + ".weight", {dim, dim});
        add(b + "cross_attn." + p + ".bias", {dim});
      }
      add(b + "cross_attn.norm_k_img.weight", {dim});
    }
  }
  if (i2v) {
    add("img_emb.proj.0.weight", {1280});
    add("img_emb.proj.0.bias", {1280});
    add("img_emb.proj.1.weight", {1280, 1280});
    add("img_emb.proj.1.bias", {1280});
    add("img_emb.proj.3.weight", {dim, 1280});
    add("img_emb.proj.3.bias", {dim});
    add("img_emb.proj.4.weight", {dim});
    add("img_emb.proj.4.bias", {dim});
  }
  return k;
}

// A safetensors file whose data section is a sparse hole of the right size.
inline void write_sparse(const std::filesystem::path& path, const KeyShapes& keys,
                         const std::string& dtype = "BF16", std::size_t elem = 2) {
  nlohmann::json h = nlohmann::json::object();
  uint64_t off = 0;
  for (const auto& [name, shape] : keys) {
    uint64_t n = elem;
    for (auto d : shape) n *= static_cast<uint64_t>(d);
    h[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string text = h.dump();
  while ((8 + text.size()) % 8) text += ' ';
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    const uint64_t len = text.size();
    f.write(reinterpret_cast<const char*>(&len), 8);
    f << text;
  }
  std::filesystem::resize_file(path, 8 + text.size() + off);
}

}  // namespace kinora::test
