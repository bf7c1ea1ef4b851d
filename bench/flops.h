#pragma once
// Floating-point operations of one forward of each model, counted from its
// configuration the way the model families' FLOP figures are (2 per
// multiply-add; norms, softmax and elementwise work left out), split into the
// matmuls of the linear layers and the attention products (QKᵀ and AV), since
// the two run at different rates. The floor of a workload on a device is its
// linear FLOPs at that device's matmul rate plus its attention FLOPs at its
// attention rate.
#include <cstdint>

#include "diffusion/flux_dit.h"
#include "diffusion/wan_dit.h"
#include "text/t5.h"

namespace kinora::bench {

struct Flops {
  double linear = 0, attention = 0;
  double total() const { return linear + attention; }
  Flops operator*(double k) const { return {linear * k, attention * k}; }
};

// Seconds at `linear_rate` and `attention_rate` (FLOP/s).
inline double floor_seconds(const Flops& f, double linear_rate, double attention_rate) {
  return f.linear / linear_rate + f.attention / attention_rate;
}

// One Wan DiT forward, batch 1, on `tokens` patched latent tokens (frames ×
// (height / 16) × (width / 16) for the released models) and `text_tokens`
// context tokens (the model pads the prompt to text_len).
inline Flops wan_forward_flops(const diffusion::WanConfig& c, int64_t tokens, int64_t text_tokens) {
  const double L = static_cast<double>(tokens), Lc = static_cast<double>(text_tokens);
  const double d = static_cast<double>(c.dim), f = static_cast<double>(c.ffn_dim);
  Flops block;
  block.linear = 8 * L * d * d         // self-attention q, k, v, o
                 + 4 * L * d * d       // cross-attention q, o
                 + 4 * Lc * d * d      // cross-attention k, v
                 + 4 * L * d * f;      // feed-forward
  block.attention = 4 * L * L * d      // self-attention
                    + 4 * L * Lc * d;  // cross-attention
  if (c.model_type == "i2v") {         // the 257 CLIP image tokens' k, v and attention
    const double Li = 257;
    block.linear += 4 * Li * d * d;
    block.attention += 4 * L * Li * d;
  }
  Flops all = block * static_cast<double>(c.num_layers);
  const double patch = static_cast<double>(c.patch_t * c.patch_h * c.patch_w);
  const double fd = static_cast<double>(c.freq_dim);
  all.linear += 2 * L * c.in_dim * patch * d                           // patch embedding
                + 2 * Lc * (c.text_dim * d + d * d)                    // text embedding
                + 2 * (fd * d + d * d + 6 * d * d)                     // time embedding, projection
                + 2 * L * d * static_cast<double>(c.out_dim) * patch;  // head
  return all;
}

// One FLUX DiT forward, batch 1: `image_tokens` (the 2×2-packed latent:
// (height / 16) × (width / 16)) and `text_tokens` T5 tokens.
inline Flops flux_forward_flops(const diffusion::FluxConfig& c, int64_t image_tokens,
                                int64_t text_tokens) {
  const double Li = static_cast<double>(image_tokens), Lt = static_cast<double>(text_tokens);
  const double L = Li + Lt, H = static_cast<double>(c.hidden_size);
  const double M = static_cast<double>(c.mlp_hidden);
  const double D = static_cast<double>(c.depth), S = static_cast<double>(c.depth_single_blocks);
  Flops f;
  // Every token passes one stream's weights in a double block: qkv, proj, MLP.
  const double per_token_double = H * 3 * H + H * H + 2 * H * M;
  // Single blocks: linear1 (qkv and the MLP's input), linear2 (attention and MLP out).
  const double per_token_single = H * (3 * H + M) + (H + M) * H;
  f.linear = 2 * L * (D * per_token_double + S * per_token_single);
  f.attention = 4 * L * L * H * (D + S);
  // Modulation (from the pooled vector: two streams × 6H per double block, 3H
  // per single block, 2H for the last layer), embedders and the final linear.
  f.linear += 2 * (D * 12 * H + S * 3 * H + 2 * H) * H;
  f.linear += 2 * Lt * static_cast<double>(c.context_in_dim) * H + 2 * Li * c.in_channels * H +
              2 * Li * H * static_cast<double>(c.out_channels);
  const double embedders = c.guidance_embed ? 2 : 1;  // time (and guidance): 256 → H → H
  f.linear += 2 * (embedders * (256 * H + H * H) + c.vec_in_dim * H + H * H);
  return f;
}

// One T5 encoder forward over `tokens` tokens (batch 1).
inline Flops t5_encoder_flops(const text::T5Config& c, int64_t tokens) {
  const double L = static_cast<double>(tokens), d = static_cast<double>(c.dim);
  const double a = static_cast<double>(c.dim_attn), ff = static_cast<double>(c.dim_ffn);
  Flops layer;
  layer.linear = 2 * L * 4 * d * a      // q, k, v, o
                 + 2 * L * 3 * d * ff;  // gated feed-forward: two in, one out
  layer.attention = 4 * L * L * a;
  return layer * static_cast<double>(c.num_layers);
}

}  // namespace kinora::bench
