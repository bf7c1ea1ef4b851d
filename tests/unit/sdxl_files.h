#pragma once
// Tiny SDXL files for end-to-end tests, with seeded random weights and no
// metadata (as real files have), sized so that every convention a real file
// relies on holds: 32 GroupNorm groups, 64-wide attention heads, six size
// embeddings of 256, start and end tokens 998 and 999 (the tokenizer of
// flux_files.h). The UNet takes CLIP-L (64) + bigG (64) states and bigG's
// pooled vector (64): label_emb in = 64 + 6·256.
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "diffusion/sdxl_unet.h"
#include "io/safetensors.h"
#include "text/clip.h"
#include "vae/kl_autoencoder.h"

namespace kinora::test {

using Tensors = std::vector<std::pair<std::string, torch::Tensor>>;

inline Tensors random_tensors(torch::nn::Module& m, int seed) {
  torch::manual_seed(seed);
  Tensors t;
  for (const auto& p : m.named_parameters()) {
    const auto& v = p.value();
    const bool norm = p.key().find("norm") != std::string::npos ||
                      p.key().find("ln_") != std::string::npos ||
                      p.key().find("layer_norm") != std::string::npos;
    t.emplace_back(p.key(), norm && p.key().find("weight") != std::string::npos
                                ? torch::ones(v.sizes())
                                : torch::randn(v.sizes()) * (v.dim() >= 2 ? 0.1 : 0.02));
  }
  return t;
}

inline diffusion::SDXLUNetConfig tiny_sdxl_unet_config() {
  diffusion::SDXLUNetConfig c;
  c.model_channels = 32;
  c.channel_mult = {1, 2};
  c.num_res_blocks = 1;
  c.transformer_depth = {0, 1};
  c.transformer_depth_middle = 1;
  c.transformer_depth_output = {1, 1, 0, 0};
  c.context_dim = 128;
  c.adm_in_channels = 64 + 6 * 256;
  return c;
}

inline Tensors tiny_sdxl_unet() {
  diffusion::SDXLUNet m(tiny_sdxl_unet_config());
  return random_tensors(m.module(), 11);
}

inline Tensors tiny_sdxl_vae() {
  vae::KLAutoencoderConfig c;
  c.ch = 32;
  c.ch_mult = {1, 2};
  c.num_res_blocks = 1;
  c.z_channels = 4;
  c.quant_conv = true;
  c.scale_factor = 0.13025;
  c.shift_factor = 0;
  vae::KLAutoencoder m(c);
  return random_tensors(m.module(), 12);
}

inline text::CLIPTextConfig tiny_clip_config(bool big_g) {
  text::CLIPTextConfig c;
  c.vocab_size = 1000;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 1;
  c.quick_gelu = !big_g;
  c.bos_token_id = 998;
  c.eos_token_id = 999;
  if (big_g) {
    c.projection_dim = 64;
    c.pool_at_argmax = true;
  }
  return c;
}

// CLIP-L in transformers' names (encoder.layers.N.…).
inline Tensors tiny_clip_l() {
  text::CLIPTextModel m(tiny_clip_config(false));
  return random_tensors(m.module(), 13);
}

// bigG in transformers' names with its projection (diffusers' text_encoder_2/).
inline Tensors tiny_clip_g_hf() {
  text::CLIPTextModel m(tiny_clip_config(true));
  return random_tensors(m.module(), 14);
}

// The same bigG in OpenCLIP's names, as single-file checkpoints hold it.
inline Tensors openclip_names(const Tensors& hf) {
  std::map<std::string, torch::Tensor> in(hf.begin(), hf.end());
  auto take = [&](const std::string& k) { return in.at(k); };
  Tensors out = {{"token_embedding.weight", take("embeddings.token_embedding.weight")},
                 {"positional_embedding", take("embeddings.position_embedding.weight")},
                 {"ln_final.weight", take("final_layer_norm.weight")},
                 {"ln_final.bias", take("final_layer_norm.bias")},
                 {"text_projection", take("text_projection.weight").t().contiguous()}};
  for (int i = 0; i < 2; ++i) {
    const std::string h = "encoder.layers." + std::to_string(i) + ".",
                      o = "transformer.resblocks." + std::to_string(i) + ".";
    for (const char* part : {"weight", "bias"}) {
      const std::string p = part;
      out.emplace_back(o + "attn.in_proj_" + p, torch::cat({take(h + "self_attn.q_proj." + p),
                                                            take(h + "self_attn.k_proj." + p),
                                                            take(h + "self_attn.v_proj." + p)}));
      out.emplace_back(o + "attn.out_proj." + p, take(h + "self_attn.out_proj." + p));
      out.emplace_back(o + "ln_1." + p, take(h + "layer_norm1." + p));
      out.emplace_back(o + "ln_2." + p, take(h + "layer_norm2." + p));
      out.emplace_back(o + "mlp.c_fc." + p, take(h + "mlp.fc1." + p));
      out.emplace_back(o + "mlp.c_proj." + p, take(h + "mlp.fc2." + p));
    }
  }
  return out;
}

inline Tensors prefixed(const std::string& prefix, const Tensors& t) {
  Tensors out;
  for (const auto& [k, v] : t) out.emplace_back(prefix + k, v);
  return out;
}

struct TinySdxlFiles {
  std::filesystem::path unet, vae, clip_l, clip_g, checkpoint;
};

// The four parts as separate files, and the same four in one checkpoint under
// the names SDXL checkpoints use.
inline TinySdxlFiles write_tiny_sdxl(const std::filesystem::path& dir) {
  TinySdxlFiles f{dir / "sdxl_unet.safetensors", dir / "sdxl_vae.safetensors",
                  dir / "clip_l.safetensors", dir / "clip_g.safetensors",
                  dir / "sdxl_tiny_checkpoint.safetensors"};
  const auto unet = tiny_sdxl_unet(), vae = tiny_sdxl_vae(), clip_l = tiny_clip_l(),
             clip_g = tiny_clip_g_hf();
  io::save_safetensors(f.unet, unet);
  io::save_safetensors(f.vae, vae);
  io::save_safetensors(f.clip_l, clip_l);
  io::save_safetensors(f.clip_g, openclip_names(clip_g));
  Tensors all = prefixed("model.diffusion_model.", unet);
  for (auto&& part : {prefixed("first_stage_model.", vae),
                      prefixed("conditioner.embedders.0.transformer.text_model.", clip_l),
                      prefixed("conditioner.embedders.1.model.", openclip_names(clip_g))})
    all.insert(all.end(), part.begin(), part.end());
  io::save_safetensors(f.checkpoint, all);
  return f;
}

}  // namespace kinora::test
