// FP8 products (layers/fp8.h) through their CPU twin: E4M3 rounding as CUDA's
// saturating conversion does it, per-tensor scales, the product of the FP8
// values, and the models and renders that use them. On a GPU with FP8 units
// the product is cuBLAS's scaled matmul of the same values; test_device
// compares the two there.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "diffusion/flux_dit.h"
#include "diffusion/wan_dit.h"
#include "fp8_files.h"
#include "io/safetensors.h"
#include "layers/fp8.h"
#include "layers/linear.h"
#include "lora/lora.h"
#include "pipeline/pipeline.h"
#include "pipeline/preset.h"
#include "random_wan.h"
#include "test_util.h"
#include "tiny_preset.h"

using kinora::test::error_of;
using kinora::test::fixture;
using kinora::test::random_wan;
using kinora::test::TempDir;
using kinora::test::wan_forward;
using ::testing::HasSubstr;
using namespace kinora;

namespace {

// The value of E4M3 code `c`.
float e4m3_value(int c) {
  return io::widen_fp8(torch::tensor({c}, torch::kUInt8), io::DType::F8_E4M3, torch::kFloat32)
      .item<float>();
}

double relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
  const auto fa = a.to(torch::kFloat64), fb = b.to(torch::kFloat64);
  return (fa - fb).norm().item<double>() / fb.norm().item<double>();
}

std::vector<layers::LinearImpl*> block_linears(layers::Model& m) {
  std::vector<layers::LinearImpl*> out;
  for (const auto& b : m.swappable_blocks())
    for (const auto& mod : b->modules(true))
      if (auto* l = dynamic_cast<layers::LinearImpl*>(mod.get())) out.push_back(l);
  return out;
}

}  // namespace

TEST(Fp8, EveryCodeRoundsToItself) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7F) == 0x7F) continue;  // NaN
    const float v = e4m3_value(c);
    EXPECT_EQ(layers::e4m3_from_float(v), c) << v;
    EXPECT_EQ(layers::round_to_e4m3(torch::tensor({v})).item<float>(), v) << c;
  }
  EXPECT_EQ(e4m3_value(0x7E), 448.0f);
  EXPECT_EQ(e4m3_value(0x01), std::ldexp(1.0f, -9));
}

// Halfway between two codes goes to the even one; past 448 saturates; NaN stays NaN.
TEST(Fp8, RoundsToNearestTiesToEvenAndSaturates) {
  for (int c = 0; c < 0x7E; ++c) {
    const float lo = e4m3_value(c), hi = e4m3_value(c + 1);
    const float mid = (lo + hi) / 2;  // exact in float32
    const int even = c % 2 == 0 ? c : c + 1;
    EXPECT_EQ(layers::e4m3_from_float(mid), even) << mid;
    EXPECT_EQ(layers::e4m3_from_float(std::nextafter(mid, hi)), c + 1) << mid;
    EXPECT_EQ(layers::e4m3_from_float(std::nextafter(mid, lo)), c) << mid;
    EXPECT_EQ(layers::e4m3_from_float(-mid), even | 0x80) << mid;
  }
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(layers::e4m3_from_float(460.0f), 0x7E);
  EXPECT_EQ(layers::e4m3_from_float(1e6f), 0x7E);
  EXPECT_EQ(layers::e4m3_from_float(-inf), 0xFE);
  EXPECT_EQ(layers::e4m3_from_float(std::nanf("")), 0x7F);
  EXPECT_EQ(layers::e4m3_from_float(-0.0f), 0x80);
  EXPECT_EQ(layers::e4m3_from_float(std::ldexp(1.0f, -11)), 0x00);  // under half the least
  EXPECT_EQ(layers::e4m3_from_float(std::ldexp(1.5f, -10)), 0x01);
}

// The vectorised rounding (the twin of activations) and the byte loop agree
// over the whole range, subnormals and saturation included.
TEST(Fp8, TheTensorRoundingAgreesWithTheBytes) {
  torch::manual_seed(1);
  const auto mag = torch::exp2(torch::rand({200000}) * 24 - 14);  // 2^-14 … 2^10
  const auto x = mag * (torch::rand({200000}) < 0.5).to(torch::kFloat32).mul(2).sub(1);
  const auto bytes = layers::quantize_e4m3(x, torch::ones({}));
  const auto widened = io::widen_fp8(bytes, io::DType::F8_E4M3, torch::kFloat32);
  EXPECT_TRUE(torch::equal(layers::round_to_e4m3(x), widened));
  // And a bf16 input rounds as its float32 value does.
  const auto xb = x.to(torch::kBFloat16);
  EXPECT_TRUE(torch::equal(layers::quantize_e4m3(xb, torch::ones({})),
                           layers::quantize_e4m3(xb.to(torch::kFloat32), torch::ones({}))));
}

// The one-pass rounding of an input by its scale (the CPU twin's) is the
// tensor rounding's, from float32 and bf16, into float32 and bf16.
TEST(Fp8, TheInputsRoundInOnePassAsTheTensorRoundingDoes) {
  torch::manual_seed(6);
  const auto mag = torch::exp2(torch::rand({100000}) * 30 - 20);
  const auto x = mag * (torch::rand({100000}) < 0.5).to(torch::kFloat32).mul(2).sub(1);
  for (const auto in : {torch::kFloat32, torch::kBFloat16}) {
    const auto xi = x.to(in);
    const auto s = torch::tensor(0.37f);
    const auto expected = layers::round_to_e4m3(xi.to(torch::kFloat32) / s);
    EXPECT_TRUE(torch::equal(layers::e4m3_values(xi, s, torch::kFloat32), expected)) << in;
    EXPECT_TRUE(
        torch::equal(layers::e4m3_values(xi, s, torch::kBFloat16).to(torch::kFloat32), expected))
        << in;
  }
  // Zeros keep their sign; past ±448 saturates.
  const auto edge = layers::e4m3_values(torch::tensor({-0.0f, 0.0f, 1e9f, -1e9f}),
                                        torch::tensor(1.0f), torch::kFloat32);
  EXPECT_TRUE(std::signbit(edge[0].item<float>()));
  EXPECT_FALSE(std::signbit(edge[1].item<float>()));
  EXPECT_EQ(edge[2].item<float>(), 448.0f);
  EXPECT_EQ(edge[3].item<float>(), -448.0f);
  // NaN stays NaN, whatever its payload (a bf16 NaN of all ones included).
  const auto nan = torch::tensor({0x7FFF, 0xFFFF, 0x7FC0}, torch::kInt32)
                       .to(torch::kInt16)
                       .view(torch::kBFloat16);
  EXPECT_TRUE(
      layers::e4m3_values(nan, torch::tensor(1.0f), torch::kFloat32).isnan().all().item<bool>());
}

// The CPU's widening of FP8 bytes (a table lookup) gives the decoded values.
TEST(Fp8, BytesWidenToTheirValues) {
  const auto codes = torch::arange(256, torch::kInt32).to(torch::kUInt8).view({16, 16});
  for (const auto fp8 : {io::DType::F8_E4M3, io::DType::F8_E5M2}) {
    const auto f = io::widen_fp8(codes, fp8, torch::kFloat32);
    const auto b = io::widen_fp8(codes, fp8, torch::kBFloat16);
    const auto d = io::widen_fp8(codes, fp8, torch::kFloat64);  // the table's own path
    EXPECT_TRUE(torch::equal(f.to(torch::kFloat64).nan_to_num(0, 1e300, -1e300),
                             d.nan_to_num(0, 1e300, -1e300)));
    EXPECT_TRUE(torch::equal(b.to(torch::kFloat64).nan_to_num(0, 1e300, -1e300),
                             d.nan_to_num(0, 1e300, -1e300)));
    EXPECT_EQ(f.isnan().sum().item<int64_t>(), d.isnan().sum().item<int64_t>());
  }
  EXPECT_EQ(
      io::widen_fp8(torch::tensor({0x7E}, torch::kUInt8), io::DType::F8_E4M3, torch::kBFloat16)
          .item<float>(),
      448.0f);
}

TEST(Fp8, AWeightKeepsItsLargestValueAtTheTopOfTheRange) {
  torch::manual_seed(2);
  const auto w = torch::randn({48, 64}) * 0.02;
  const auto q = layers::quantize_weight_e4m3(w);
  ASSERT_EQ(q.bytes.scalar_type(), torch::kUInt8);
  EXPECT_FLOAT_EQ(q.scale, w.abs().max().item<float>() / 448.0f);
  const auto back = io::widen_fp8(q.bytes, io::DType::F8_E4M3, torch::kFloat32) * q.scale;
  EXPECT_FLOAT_EQ(back.abs().max().item<float>(), w.abs().max().item<float>());
  // Three mantissa bits: within 1/16 of each value (normal codes).
  const auto normal = w.abs() >= q.scale * std::ldexp(1.0f, -6);
  EXPECT_LE(((back - w).abs() / w.abs()).masked_select(normal).max().item<float>(), 1.0f / 16);
  // An all-zero weight stays zero.
  const auto z = layers::quantize_weight_e4m3(torch::zeros({16, 16}));
  EXPECT_EQ(z.bytes.count_nonzero().item<int64_t>(), 0);
}

// The product of the FP8 values, scaled: as computed in float64 from the bytes.
TEST(Fp8, TheLinearMultipliesTheQuantizedValues) {
  torch::manual_seed(4);
  const auto x = torch::randn({3, 5, 64});
  const auto w = torch::randn({48, 64}) * 0.05;
  const auto bias = torch::randn({48});
  const auto q = layers::quantize_weight_e4m3(w);
  const auto y = layers::fp8_linear(x, q.bytes, q.scale, bias, torch::kFloat32);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{3, 5, 48}));
  const float sx = x.abs().max().item<float>() / 448.0f;
  EXPECT_FLOAT_EQ(layers::e4m3_scale(x).item<float>(), sx);
  const auto xq = io::widen_fp8(layers::quantize_e4m3(x, torch::tensor(sx)), io::DType::F8_E4M3,
                                torch::kFloat64);
  const auto wq = io::widen_fp8(q.bytes, io::DType::F8_E4M3, torch::kFloat64);
  const auto expected =
      torch::matmul(xq, wq.t()) * (static_cast<double>(sx) * q.scale) + bias.to(torch::kFloat64);
  EXPECT_TRUE(torch::allclose(y.to(torch::kFloat64), expected, 1e-5, 1e-5));
  // Close to the float product, but not it.
  const auto exact = torch::matmul(x, w.t()) + bias;
  const double d = relative_difference(y, exact);
  EXPECT_GT(d, 1e-4);
  EXPECT_LT(d, 0.05);
  // In bf16 the same, to bf16's rounding; without a bias too.
  EXPECT_LT(relative_difference(layers::fp8_linear(x, q.bytes, q.scale, bias, torch::kBFloat16),
                                expected),
            1e-2);
  EXPECT_LT(relative_difference(layers::fp8_linear(x, q.bytes, q.scale, {}, torch::kFloat32),
                                expected - bias.to(torch::kFloat64)),
            1e-6);
  EXPECT_THROW(layers::fp8_linear(x, q.bytes.narrow(1, 0, 32), 1, {}, torch::kFloat32), c10::Error);
}

// A DiT's block layers switch to FP8: weights quantized once (a quarter of
// float32's bytes), embeddings and head untouched, the forward close to the
// float one; switching again changes nothing.
TEST(Fp8, AWanModelMultipliesItsBlocksInFp8) {
  auto m = random_wan(3);
  const auto reference = wan_forward(*m);
  const int64_t before = m->weight_bytes(), block_before = m->block_bytes();
  EXPECT_EQ(layers::use_fp8_matmuls(*m, torch::kCPU), 30);  // 3 blocks × (4 + 4 + 2)
  EXPECT_LT(m->block_bytes(), block_before / 3);
  EXPECT_EQ(before - m->weight_bytes(), 3 * (block_before - m->block_bytes()));
  for (auto* l : block_linears(*m)) {
    EXPECT_TRUE(l->fp8_matmul);
    EXPECT_EQ(l->weight.scalar_type(), torch::kUInt8);
  }
  for (const auto& item : m->module().named_modules()) {
    auto* l = dynamic_cast<layers::LinearImpl*>(item.value().get());
    if (l && item.key().rfind("blocks.", 0) != 0) {
      EXPECT_FALSE(l->fp8_matmul) << item.key();
    }
  }
  const auto y = wan_forward(*m);
  const double d = relative_difference(y, reference);
  EXPECT_GT(d, 1e-4);
  EXPECT_LT(d, 0.05);
  std::vector<torch::Tensor> bytes;
  for (auto* l : block_linears(*m)) bytes.push_back(l->weight);
  EXPECT_EQ(layers::use_fp8_matmuls(*m, torch::kCPU), 30);
  const auto again = block_linears(*m);
  for (std::size_t i = 0; i < again.size(); ++i) EXPECT_TRUE(again[i]->weight.is_same(bytes[i]));
  EXPECT_TRUE(torch::equal(wan_forward(*m), y));
}

// An E4M3 checkpoint's bytes are multiplied as stored (no copy, no new scale).
TEST(Fp8, AnE4m3CheckpointIsUsedAsStored) {
  TempDir dir;
  ASSERT_GT(test::write_fp8_copy(fixture("wan21_dit_tiny.safetensors"), dir / "fp8.safetensors",
                                 dir / "f32.safetensors"),
            0);
  auto m = diffusion::WanModel::load(dir / "fp8.safetensors");
  std::vector<const void*> stored;
  for (auto* l : block_linears(m)) {
    ASSERT_EQ(l->fp8, io::DType::F8_E4M3);
    stored.push_back(l->weight.data_ptr());
  }
  EXPECT_GT(layers::use_fp8_matmuls(m, torch::kCPU), 0);
  const auto after = block_linears(m);
  for (std::size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i]->weight.data_ptr(), stored[i]);
    EXPECT_FALSE(after[i]->scale.has_value());
  }
}

TEST(Fp8, FluxMultipliesItsDoubleAndSingleBlocksInFp8) {
  auto m = diffusion::FluxModel::load(fixture("flux1_dev_tiny.safetensors"));
  const auto& c = m.config();
  torch::manual_seed(5);
  const int64_t n = 8, l = 3;
  const auto img = torch::randn({1, n, c.in_channels});
  const auto img_ids = torch::zeros({1, n, 3});
  const auto txt = torch::randn({1, l, c.context_in_dim});
  const auto txt_ids = torch::zeros({1, l, 3});
  const auto y = torch::randn({1, c.vec_in_dim});
  const auto t = torch::tensor({0.5}), guidance = torch::tensor({3.5});
  const auto reference = m.forward(img, img_ids, txt, txt_ids, t, y, guidance);
  EXPECT_EQ(layers::use_fp8_matmuls(m, torch::kCPU), static_cast<int64_t>(block_linears(m).size()));
  EXPECT_GT(block_linears(m).size(), 0U);
  const double d =
      relative_difference(m.forward(img, img_ids, txt, txt_ids, t, y, guidance), reference);
  EXPECT_GT(d, 1e-4);
  EXPECT_LT(d, 0.1);
}

// Block swap moves the FP8 bytes: the same numbers as the whole model.
TEST(Fp8, BlockSwapCarriesTheFp8Weights) {
  auto whole = random_wan(3);
  auto swapped = random_wan(3);
  layers::use_fp8_matmuls(*whole, torch::kCPU);
  layers::use_fp8_matmuls(*swapped, torch::kCPU);
  swapped->set_block_swap(2);
  swapped->to(torch::kCPU);
  EXPECT_TRUE(torch::equal(wan_forward(*swapped), wan_forward(*whole)));
}

// LoRAs on FP8 layers apply at run time even when asked to merge (a merge
// into E4M3 would round most of a small update away): the weights keep their
// bytes, the result is the run-time one, and removing the LoRA restores it.
TEST(Fp8, LorasOnFp8LayersApplyAtRunTime) {
  TempDir dir;
  auto m = random_wan(2);
  layers::use_fp8_matmuls(*m, torch::kCPU);
  const auto base = wan_forward(*m);
  std::vector<torch::Tensor> bytes;
  for (auto* l : block_linears(*m)) bytes.push_back(l->weight);
  // A small update (about 1 % of a weight): what a merge into E4M3 would lose.
  test::write_q_lora(dir / "q.safetensors", 2, 0.03);
  const auto r = lora::resolve(dir / "q.safetensors", *m, {});
  torch::Tensor merged, runtime;
  {
    lora::Applied a;
    a.apply(*m, {{&r, 1.0}}, lora::Mode::Merged);
    const auto now = block_linears(*m);
    for (std::size_t i = 0; i < now.size(); ++i) EXPECT_TRUE(now[i]->weight.is_same(bytes[i]));
    merged = wan_forward(*m);
  }
  EXPECT_TRUE(torch::equal(wan_forward(*m), base));
  {
    lora::Applied a;
    a.apply(*m, {{&r, 1.0}}, lora::Mode::RunTime);
    runtime = wan_forward(*m);
  }
  EXPECT_FALSE(torch::equal(merged, base));
  EXPECT_TRUE(torch::equal(merged, runtime));
  EXPECT_TRUE(torch::equal(wan_forward(*m), base));
}

TEST(Fp8, ThePresetKeyIsTrueOrFalseAndRestores) {
  using pipeline::Preset;
  EXPECT_FALSE(Preset::from_json({{"prompt", "x"}}).fp8);
  EXPECT_TRUE(Preset::from_json({{"fp8", true}}).fp8);
  for (const auto& bad : {nlohmann::json(1), nlohmann::json("true"), nlohmann::json(nullptr)})
    EXPECT_THAT(error_of([&] {
                  Preset::from_json({{"fp8", bad}}, "a.json");
                }),
                HasSubstr("a.json: key 'fp8' must be true or false"))
        << bad.dump();
  auto p = Preset::from_json({{"fp8", true}});
  EXPECT_EQ(p.to_json()["fp8"], true);
  // It changes the numbers: a restored output renders with it again.
  EXPECT_TRUE(Preset::restored({{"preset", p.to_json()}}, "out.mp4").fp8);
}

// On the CPU an FP8 render says it runs without FP8 units, records fp8, and
// differs a little from the bf16/fp32 render; the same pipeline renders
// without FP8 again after it (the models loaded again).
TEST(Fp8, ARenderOnTheCpuComputesTheFp8Numbers) {
  auto p = test::tiny_wan_preset();
  p.device = "cpu";
  pipeline::Pipeline plain, pipe;
  const auto reference = plain.generate(p);
  p.fp8 = true;
  std::vector<std::string> msgs;
  pipeline::RunCallbacks cb;
  cb.on_message = [&](const std::string& m) { msgs.push_back(m); };
  const auto a = pipe.generate(p, cb);
  EXPECT_TRUE(a.preset.fp8);
  EXPECT_THAT(msgs, testing::Contains(HasSubstr("has no FP8 matrix units")));
  EXPECT_FALSE(torch::equal(a.frames, reference.frames));
  EXPECT_LT(relative_difference(a.frames, reference.frames), 0.1);
  EXPECT_TRUE(torch::equal(pipe.generate(p).frames, a.frames));
  p.fp8 = false;
  EXPECT_TRUE(torch::equal(pipe.generate(p).frames, reference.frames));
}
