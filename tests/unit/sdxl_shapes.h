#pragma once
// A real-shape SDXL single-file checkpoint (sd_xl_base_1.0.safetensors's
// names and shapes) as a sparse file: the SDXL base UNet under
// model.diffusion_model., the VAE under first_stage_model., CLIP-L under
// conditioner.embedders.0.transformer.text_model. and OpenCLIP bigG under
// conditioner.embedders.1.model. The key list follows generative-models'
// UNetModel (320 channels, levels [1, 2, 4], two residual blocks a level,
// transformer depth [0, 2, 10], 64-wide heads, context 2048, label_emb 2816),
// the LDM autoencoder and the two text towers, written out here
// independently of the module code that must load them.
#include <string>
#include <vector>

#include "wan_shapes.h"

namespace kinora::test {

inline KeyShapes sdxl_checkpoint_keys() {
  KeyShapes k;
  std::string prefix;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    k.emplace_back(prefix + name, std::move(shape));
  };
  auto linear = [&](const std::string& name, int64_t out, int64_t in, bool bias = true) {
    add(name + ".weight", {out, in});
    if (bias) add(name + ".bias", {out});
  };
  auto conv = [&](const std::string& name, int64_t out, int64_t in, int64_t kernel) {
    add(name + ".weight", {out, in, kernel, kernel});
    add(name + ".bias", {out});
  };
  auto norm = [&](const std::string& name, int64_t ch) {
    add(name + ".weight", {ch});
    add(name + ".bias", {ch});
  };

  // The UNet.
  prefix = "model.diffusion_model.";
  const int64_t mc = 320, ted = 1280, context = 2048;
  linear("time_embed.0", ted, mc);
  linear("time_embed.2", ted, ted);
  linear("label_emb.0.0", ted, 2816);
  linear("label_emb.0.2", ted, ted);
  auto res = [&](const std::string& p, int64_t in, int64_t out) {
    norm(p + ".in_layers.0", in);
    conv(p + ".in_layers.2", out, in, 3);
    linear(p + ".emb_layers.1", out, ted);
    norm(p + ".out_layers.0", out);
    conv(p + ".out_layers.3", out, out, 3);
    if (in != out) conv(p + ".skip_connection", out, in, 1);
  };
  auto transformer = [&](const std::string& p, int64_t ch, int depth) {
    norm(p + ".norm", ch);
    linear(p + ".proj_in", ch, ch);
    for (int d = 0; d < depth; ++d) {
      const std::string b = p + ".transformer_blocks." + std::to_string(d);
      for (const char* a : {".attn1", ".attn2"}) {
        const int64_t kv = std::string(a) == ".attn1" ? ch : context;
        linear(b + a + ".to_q", ch, ch, false);
        linear(b + a + ".to_k", ch, kv, false);
        linear(b + a + ".to_v", ch, kv, false);
        linear(b + a + ".to_out.0", ch, ch);
      }
      linear(b + ".ff.net.0.proj", 8 * ch, ch);
      linear(b + ".ff.net.2", ch, 4 * ch);
      for (const char* n : {".norm1", ".norm2", ".norm3"}) norm(b + n, ch);
    }
    linear(p + ".proj_out", ch, ch);
  };
  const std::vector<int64_t> mult = {1, 2, 4};
  const std::vector<int> depth = {0, 2, 10};
  conv("input_blocks.0.0", mc, 4, 3);
  int block = 1;
  int64_t ch = mc;
  std::vector<int64_t> skips = {mc};
  for (std::size_t level = 0; level < mult.size(); ++level) {
    for (int i = 0; i < 2; ++i) {
      const std::string b = "input_blocks." + std::to_string(block++);
      res(b + ".0", ch, mc * mult[level]);
      ch = mc * mult[level];
      if (depth[level]) transformer(b + ".1", ch, depth[level]);
      skips.push_back(ch);
    }
    if (level + 1 < mult.size()) {
      conv("input_blocks." + std::to_string(block++) + ".0.op", ch, ch, 3);
      skips.push_back(ch);
    }
  }
  res("middle_block.0", ch, ch);
  transformer("middle_block.1", ch, 10);
  res("middle_block.2", ch, ch);
  block = 0;
  for (std::size_t level = mult.size(); level-- > 0;) {
    for (int i = 0; i < 3; ++i) {
      const std::string b = "output_blocks." + std::to_string(block++);
      res(b + ".0", ch + skips.back(), mc * mult[level]);
      skips.pop_back();
      ch = mc * mult[level];
      int next = 1;
      if (depth[level]) transformer(b + "." + std::to_string(next++), ch, depth[level]);
      if (level > 0 && i == 2) conv(b + "." + std::to_string(next) + ".conv", ch, ch, 3);
    }
  }
  norm("out.0", mc);
  conv("out.2", 4, mc, 3);

  // The VAE (base 128, [1, 2, 4, 4], 4 latent channels).
  prefix = "first_stage_model.";
  const std::vector<int64_t> vmult = {1, 2, 4, 4};
  auto vblock = [&](const std::string& p, int64_t in, int64_t out) {
    norm(p + ".norm1", in);
    conv(p + ".conv1", out, in, 3);
    norm(p + ".norm2", out);
    conv(p + ".conv2", out, out, 3);
    if (in != out) conv(p + ".nin_shortcut", out, in, 1);
  };
  auto mid = [&](const std::string& p, int64_t c) {
    vblock(p + ".block_1", c, c);
    norm(p + ".attn_1.norm", c);
    for (const char* n : {".q", ".k", ".v", ".proj_out"}) conv(p + ".attn_1" + n, c, c, 1);
    vblock(p + ".block_2", c, c);
  };
  conv("encoder.conv_in", 128, 3, 3);
  int64_t vch = 128;
  for (std::size_t i = 0; i < vmult.size(); ++i) {
    for (int j = 0; j < 2; ++j) {
      vblock("encoder.down." + std::to_string(i) + ".block." + std::to_string(j), vch,
             128 * vmult[i]);
      vch = 128 * vmult[i];
    }
    if (i + 1 < vmult.size())
      conv("encoder.down." + std::to_string(i) + ".downsample.conv", vch, vch, 3);
  }
  mid("encoder.mid", vch);
  norm("encoder.norm_out", vch);
  conv("encoder.conv_out", 8, vch, 3);
  conv("quant_conv", 8, 8, 1);
  conv("post_quant_conv", 4, 4, 1);
  conv("decoder.conv_in", 512, 4, 3);
  mid("decoder.mid", 512);
  vch = 512;
  for (std::size_t i = vmult.size(); i-- > 0;) {
    for (int j = 0; j < 3; ++j) {
      vblock("decoder.up." + std::to_string(i) + ".block." + std::to_string(j), vch,
             128 * vmult[i]);
      vch = 128 * vmult[i];
    }
    if (i > 0) conv("decoder.up." + std::to_string(i) + ".upsample.conv", vch, vch, 3);
  }
  norm("decoder.norm_out", 128);
  conv("decoder.conv_out", 3, 128, 3);

  // CLIP-L, in transformers' names.
  prefix = "conditioner.embedders.0.transformer.text_model.";
  add("embeddings.token_embedding.weight", {49408, 768});
  add("embeddings.position_embedding.weight", {77, 768});
  for (int i = 0; i < 12; ++i) {
    const std::string l = "encoder.layers." + std::to_string(i);
    for (const char* p : {".q_proj", ".k_proj", ".v_proj", ".out_proj"})
      linear(l + ".self_attn" + p, 768, 768);
    norm(l + ".layer_norm1", 768);
    norm(l + ".layer_norm2", 768);
    linear(l + ".mlp.fc1", 3072, 768);
    linear(l + ".mlp.fc2", 768, 3072);
  }
  norm("final_layer_norm", 768);

  // OpenCLIP bigG, in its own names.
  prefix = "conditioner.embedders.1.model.";
  add("token_embedding.weight", {49408, 1280});
  add("positional_embedding", {77, 1280});
  add("text_projection", {1280, 1280});
  add("logit_scale", {});
  for (int i = 0; i < 32; ++i) {
    const std::string r = "transformer.resblocks." + std::to_string(i);
    add(r + ".attn.in_proj_weight", {3840, 1280});
    add(r + ".attn.in_proj_bias", {3840});
    linear(r + ".attn.out_proj", 1280, 1280);
    norm(r + ".ln_1", 1280);
    norm(r + ".ln_2", 1280);
    linear(r + ".mlp.c_fc", 5120, 1280);
    linear(r + ".mlp.c_proj", 1280, 5120);
  }
  norm("ln_final", 1280);
  return k;
}

}  // namespace kinora::test
