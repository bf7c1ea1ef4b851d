// The benchmarks' FLOP counts against the model families' published
// derivations (Wan: 283 TFLOP for 1.3B at 832×480×81, 1.68 PFLOP for 14B;
// FLUX.1-dev: 74.4 TFLOP at 1024²), and the floor they give at a card's rates.
#include <gtest/gtest.h>

#include "bench/flops.h"

using namespace kinora;

namespace {

diffusion::WanConfig wan_14b() {
  diffusion::WanConfig c;
  c.dim = 5120;
  c.ffn_dim = 13824;
  c.num_heads = 40;
  c.num_layers = 40;
  return c;
}

// 832×480×81: latent 21 × 60 × 104, patches of 1 × 2 × 2.
constexpr int64_t kWanTokens = 21 * 30 * 52;

}  // namespace

TEST(Flops, Wan13BForwardIs283Teraflop) {
  const auto f = bench::wan_forward_flops(diffusion::WanConfig{}, kWanTokens, 512);
  EXPECT_EQ(kWanTokens, 32760);
  EXPECT_NEAR(f.total() / 1e12, 283.0, 0.5);
  // Self-attention's products: 30 × 4·L²·d = 198 TFLOP, 70 % of the forward.
  EXPECT_NEAR(30 * 4.0 * kWanTokens * kWanTokens * 1536 / f.total(), 0.70, 0.01);
  // The embeddings and the head: 2.2e10.
  diffusion::WanConfig no_blocks;
  no_blocks.num_layers = 0;
  EXPECT_NEAR(bench::wan_forward_flops(no_blocks, kWanTokens, 512).total() / 1e10, 2.2, 0.05);
}

TEST(Flops, Wan14BForwardIs1678Teraflop) {
  EXPECT_NEAR(bench::wan_forward_flops(wan_14b(), kWanTokens, 512).total() / 1e12, 1678, 3);
  // 1280×720×81: 75,600 tokens, 6.52 PFLOP.
  EXPECT_NEAR(bench::wan_forward_flops(wan_14b(), 21 * 45 * 80, 512).total() / 1e15, 6.52, 0.01);
}

TEST(Flops, FluxDevAt1024Is74Teraflop) {
  const auto f = bench::flux_forward_flops(diffusion::FluxConfig{}, 4096, 512);
  EXPECT_NEAR(f.linear / 1e12, 59.49 + 0.02, 0.05);
  EXPECT_NEAR(f.attention / 1e12, 14.87, 0.01);
  EXPECT_NEAR(f.total() / 1e12, 74.4, 0.1);
  // schnell with 256 text tokens: 69.5 TFLOP.
  diffusion::FluxConfig schnell;
  schnell.guidance_embed = false;
  EXPECT_NEAR(bench::flux_forward_flops(schnell, 4096, 256).total() / 1e12, 69.5, 0.1);
}

TEST(Flops, Umt5XxlLinearWorkIs386MegaflopPerTokenAndLayer) {
  text::T5Config c;  // umT5-XXL
  const auto one = bench::t5_encoder_flops(c, 1);
  EXPECT_NEAR(one.linear / c.num_layers / 1e6, 2 * (4 * 4096.0 * 4096 + 3 * 4096.0 * 10240) / 1e6,
              1e-6);
  // Attention grows with the square of the length, the rest linearly.
  const auto a = bench::t5_encoder_flops(c, 256), b = bench::t5_encoder_flops(c, 512);
  EXPECT_DOUBLE_EQ(b.linear, 2 * a.linear);
  EXPECT_DOUBLE_EQ(b.attention, 4 * a.attention);
}

TEST(Flops, FloorAtAnH100sRatesIs433MillisecondsForWan13B) {
  // bf16 matmul at 785 TFLOP/s and flash attention at 612 TFLOP/s.
  const auto f = bench::wan_forward_flops(diffusion::WanConfig{}, kWanTokens, 512);
  EXPECT_NEAR(bench::floor_seconds(f, 785e12, 612e12), 0.433, 0.003);
  const auto flux = bench::flux_forward_flops(diffusion::FluxConfig{}, 4096, 512);
  EXPECT_NEAR(bench::floor_seconds(flux, 785e12, 612e12), 0.101, 0.002);
  EXPECT_NEAR(
      bench::floor_seconds(bench::wan_forward_flops(wan_14b(), kWanTokens, 512), 785e12, 612e12),
      2.46, 0.02);
}
