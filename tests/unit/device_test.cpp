// Rendering on a GPU against rendering on the CPU. Skipped where LibTorch sees
// no CUDA device (CI); bench/cuda.sh runs them on a GPU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "io/safetensors.h"
#include "layers/fp8.h"
#include "pipeline/pipeline.h"
#include "test_util.h"
#include "tiny_preset.h"

using namespace kinora;

namespace {
pipeline::Preset tiny(const std::string& device, const std::string& precision) {
  auto p = test::tiny_wan_preset();
  p.device = device;
  p.precision = precision;
  return p;
}

// ‖a − b‖ / ‖b‖ over the 8-bit frames.
double relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
  const auto fa = a.to(torch::kFloat64), fb = b.to(torch::kFloat64);
  return (fa - fb).norm().item<double>() / fb.norm().item<double>();
}
}  // namespace

// The noise is drawn on the CPU from the seed whatever the device, so a seed
// renders the same video on both, to the precision's rounding.
TEST(Device, ASeedRendersTheSameVideoOnTheGpuAsOnTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const std::string precision : {"fp32", "bf16"}) {
    pipeline::Pipeline cpu, gpu;
    const auto a = cpu.generate(tiny("cpu", precision));
    const auto b = gpu.generate(tiny("cuda", precision));
    EXPECT_EQ(b.preset.device, "cuda:0");
    ASSERT_EQ(a.frames.sizes(), b.frames.sizes());
    const double d = relative_difference(b.frames, a.frames);
    EXPECT_LT(d, precision == "fp32" ? 2e-3 : 2e-2) << precision;
    std::printf("%s: frames differ by %.2e (relative)\n", precision.c_str(), d);
  }
}

// A render on the GPU leaves the text encoder's weights on the CPU (they visit
// the GPU only to encode), and a second job with another prompt encodes it.
TEST(Device, TheTextEncoderVisitsTheGpuOnlyToEncode) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  pipeline::Pipeline gpu;
  auto p = tiny("cuda", "fp32");
  const auto a = gpu.generate(p);
  p.prompt = "a blue square moving right on a red background";
  const auto b = gpu.generate(p);
  EXPECT_FALSE(torch::equal(a.frames, b.frames));
  pipeline::Pipeline cpu;
  auto q = tiny("cpu", "fp32");
  q.prompt = p.prompt;
  EXPECT_LT(relative_difference(b.frames, cpu.generate(q).frames), 2e-3);
}

// Block swap on the GPU: the tiny DiT's blocks kept in pinned host memory,
// copied on a side stream ahead of use; the same video as the whole model's,
// twice (the second render reuses the placed models).
TEST(Device, BlockSwapRendersWhatTheWholeModelRenders) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const std::string precision : {"fp32", "bf16"}) {
    pipeline::Pipeline whole, swapped;
    auto p = tiny("cuda", precision);
    const auto a = whole.generate(p);
    p.block_swap.assign(1, '2');  // "2" (GCC 12 warns, wrongly, on assigning the literal)
    std::vector<std::string> msgs;
    pipeline::RunCallbacks cb;
    cb.on_message = [&](const std::string& m) { msgs.push_back(m); };
    for (int run = 0; run < 2; ++run) {
      const auto b = swapped.generate(p, cb);
      // The same kernels on the same data; a copy not waited for would show.
      EXPECT_LT(relative_difference(b.frames, a.frames), 1e-3) << precision << ", run " << run;
      EXPECT_EQ(b.preset.block_swap, "2");
    }
    EXPECT_THAT(msgs, ::testing::Contains(::testing::HasSubstr("block swap: 2 of the denoiser")))
        << precision;
  }
}

// FP8: the CUDA kernel rounds to E4M3 as the CPU loop does, bit for bit (the
// same division, ties to even, saturating).
TEST(Device, Fp8QuantizesAsTheCpuDoes) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(1);
  const auto x = torch::randn({1000, 512}) * torch::exp2(torch::rand({1000, 1}) * 20 - 10);
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    const auto xc = x.to(dtype);
    const auto sx = layers::e4m3_scale(xc);
    EXPECT_EQ(layers::e4m3_scale(xc.cuda()).cpu().item<float>(), sx.item<float>());
    EXPECT_TRUE(torch::equal(layers::quantize_e4m3(xc.cuda(), sx.cuda()).cpu(),
                             layers::quantize_e4m3(xc, sx)))
        << dtype;
  }
}

// The FP8 product on the GPU (cuBLAS's scaled matmul where the card has FP8
// units, else the twin's arithmetic on the GPU) against the CPU twin.
TEST(Device, Fp8ProductMatchesItsCpuTwin) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device gpu(torch::kCUDA, 0);
  std::printf("FP8 units: %s\n", layers::device_has_fp8_matmul(gpu) ? "yes" : "no");
  torch::manual_seed(2);
  const auto x = torch::randn({2, 300, 1536}).to(torch::kBFloat16);
  const auto w = torch::randn({8960, 1536}) * 0.02;
  const auto bias = torch::randn({8960}).to(torch::kBFloat16);
  const auto q = layers::quantize_weight_e4m3(w);
  for (const auto out : {torch::kBFloat16, torch::kFloat32}) {
    const auto cpu = layers::fp8_linear(x, q.bytes, q.scale, bias, out);
    const auto cuda = layers::fp8_linear(x.cuda(), q.bytes.cuda(), q.scale, bias.cuda(), out).cpu();
    ASSERT_EQ(cuda.sizes(), cpu.sizes());
    const double d = relative_difference(cuda, cpu);
    EXPECT_LT(d, out == torch::kFloat32 ? 1e-4 : 1e-2) << out;
    std::printf("FP8 product, %s out: GPU and CPU differ by %.2e (relative)\n",
                out == torch::kFloat32 ? "fp32" : "bf16", d);
  }
}

// An FP8 render: the same video on both devices, to FP8's and bf16's rounding.
TEST(Device, Fp8RendersTheSameVideoOnTheGpuAsOnTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  pipeline::Pipeline cpu, gpu;
  auto p = tiny("cpu", "bf16");
  p.fp8 = true;
  const auto a = cpu.generate(p);
  p.device = "cuda";
  const auto b = gpu.generate(p);
  EXPECT_TRUE(b.preset.fp8);
  const double d = relative_difference(b.frames, a.frames);
  EXPECT_LT(d, 5e-2);
  std::printf("fp8: frames differ by %.2e (relative)\n", d);
}
