// The fused passes (layers/fused.h) against the tensor-op compositions they
// replace, on the CPU (their twin of the CUDA kernels); on a GPU, the kernels
// against the twin; and the Wan DiT with them against the DiT without.
#include <gtest/gtest.h>

#include <torch/cuda.h>
#include <limits>

#include "base/torch_compat.h"
#include "diffusion/flux_dit.h"
#include "diffusion/wan_dit.h"
#include "layers/fused.h"
#include "layers/linear.h"
#include "layers/ops.h"
#include "test_util.h"
#include "vae/wan_vae.h"

using namespace kinora;

namespace {

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kCPU, torch::kFloat32) - b.to(torch::kCPU, torch::kFloat32))
      .abs()
      .max()
      .item<double>();
}

// The largest spacing of bf16 values in t's range: one rounding step.
double bf16_step(const torch::Tensor& t) {
  return t.abs().max().item<double>() / 128;
}

// Wan's q/k path unfused: rms_norm in float32, back to y's dtype, times the
// weight in that dtype, pairs rotated in float32.
torch::Tensor reference_qk(const torch::Tensor& y, const torch::Tensor& w, int64_t heads,
                           const torch::Tensor& cos, const torch::Tensor& sin, double eps) {
  const auto n =
      layers::rms_norm(y, torch::Tensor(), eps).to(y.scalar_type()) * w.to(y.scalar_type());
  const auto xs = n.unflatten(-1, {heads, -1}).to(torch::kFloat32).unflatten(-1, {-1, 2});
  const auto a = xs.select(-1, 0), b = xs.select(-1, 1);
  const auto c = cos.unsqueeze(1), s = sin.unsqueeze(1);
  return torch::stack({a * c - b * s, a * s + b * c}, -1).flatten(-2).to(y.scalar_type());
}

struct Inputs {
  torch::Tensor x, shift, scale, y, gate, w, cos, sin;
};
Inputs inputs(torch::Device d, int64_t B = 2, int64_t L = 37, int64_t D = 96, int64_t heads = 3) {
  torch::manual_seed(3);
  Inputs in;
  in.x = torch::randn({B, L, D}) * 3 + 0.5;
  in.shift = torch::randn({B, 1, D}) * 0.1;
  in.scale = torch::randn({B, 1, D}) * 0.1;
  in.y = torch::randn({B, L, D}) * 2;
  in.gate = torch::randn({B, 1, D});
  in.w = torch::rand({D}) + 0.5;
  const auto angles = torch::rand({L, D / heads / 2}) * 6.28;
  in.cos = angles.cos();
  in.sin = angles.sin();
  for (auto* t : {&in.x, &in.shift, &in.scale, &in.y, &in.gate, &in.w, &in.cos, &in.sin})
    *t = t->to(d);
  return in;
}

// `forward` of model `m` with the fused passes forced on, against it with
// them off, in float32 (within 1e-5, and not identical: float32 tells the two
// apart; `f32_bound` tighter where a case needs it), and in bf16 against the
// float32 result (see below).
void expect_fused_unchanged(layers::Model& m, const std::function<torch::Tensor()>& forward,
                            double f32_bound = 1e-5) {
  torch::Tensor reference;  // float32, composed
  const auto rel = [](const torch::Tensor& a, const torch::Tensor& b) {
    return (a - b).norm().item<double>() / b.norm().item<double>();
  };
  for (auto p : {layers::Precision::F32, layers::Precision::BF16}) {
    m.set_precision(p);
    layers::set_fused(layers::Fused::Off);
    const auto plain = forward();
    layers::set_fused(layers::Fused::On);
    const auto fused = forward();
    layers::set_fused(layers::Fused::Auto);
    if (p == layers::Precision::F32) {
      EXPECT_LT(rel(fused, plain), f32_bound);
      EXPECT_GT(rel(fused, plain), 0.0) << "the fused passes did not run";
      reference = plain;
    } else {
      // In bf16 the two round at different places: each as close to float32
      // as the conformance cases require, the fused no further than the
      // composed by more than a quarter.
      EXPECT_LT(rel(fused, reference), 2e-2);
      EXPECT_LT(rel(fused, reference), 1.25 * rel(plain, reference));
    }
  }
}

}  // namespace

// LibTorch 1.13's baddbmm at small sizes (contraction × rows × columns under
// 400) multiplies what its result's new memory held by beta, 0: memory left
// holding NaN by the tensor it last belonged to must not reach the scores.
TEST(Attention, ScoresFromReusedMemoryHoldNoNaN) {
  torch::manual_seed(5);
  const auto q = torch::randn({1, 2, 7, 8}), k = torch::randn({1, 2, 7, 8}),
             v = torch::randn({1, 2, 7, 8});
  int with_nan = 0;
  for (int i = 0; i < 50; ++i) {
    {  // freed blocks of the scores' size, holding NaN, for the next ones asked for
      const auto nan = std::numeric_limits<float>::quiet_NaN();
      auto a = torch::full({2, 7, 7}, nan), b = torch::full({2, 7, 7}, nan);
    }
    with_nan += compat::scaled_dot_product_attention(q, k, v).isnan().any().item<bool>();
  }
  EXPECT_EQ(with_nan, 0);
}

// Attention over blocks of queries (LibTorch 1.13's explicit product, bounded
// scores) gives the rows the whole product gives, with and without a key mask.
TEST(Attention, BlocksOfQueriesAreTheWholeProduct) {
  torch::manual_seed(3);
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    const auto q = torch::randn({2, 3, 37, 16}).to(dtype);
    const auto k = torch::randn({2, 3, 29, 16}).to(dtype);
    const auto v = torch::randn({2, 3, 29, 8}).to(dtype);
    auto mask = torch::ones({2, 29}, torch::kBool);
    mask.slice(1, 20).select(0, 1).fill_(false);
    for (const auto& m : {torch::Tensor(), mask}) {
      const auto whole = compat::scaled_dot_product_attention(q, k, v, m);
      // 6 heads × 29 keys × (2 or 4) bytes: 5 queries a block, the last of 2.
      const int64_t five_rows = 5 * 6 * 29 * static_cast<int64_t>(q.element_size());
      const auto blocks = compat::scaled_dot_product_attention(q, k, v, m, five_rows);
      ASSERT_EQ(blocks.sizes(), whole.sizes());
      // float32 to its rounding: OpenBLAS's AVX2 kernels ("Haswell", which
      // it picks on Zen EPYCs) round a row otherwise when it is multiplied
      // among fewer rows; bf16 to its own.
      if (dtype == torch::kFloat32)
        EXPECT_LE((blocks - whole).abs().max().item<float>(), 1e-6)
            << (m.defined() ? "masked" : "");
      else
        EXPECT_LE(
            (blocks.to(torch::kFloat32) - whole.to(torch::kFloat32)).abs().max().item<float>(),
            1.6e-2)
            << (m.defined() ? "masked" : "");
    }
  }
}

TEST(Fused, ModulatedLayerNormIsTheComposition) {
  torch::NoGradGuard g;
  const auto in = inputs(torch::kCPU);
  const auto ref = layers::layer_norm(in.x, {}, {}, 1e-6) * (1 + in.scale) + in.shift;
  const auto f32 = layers::modulated_layer_norm(in.x, in.shift, in.scale, 1e-6, torch::kFloat32);
  EXPECT_EQ(f32.scalar_type(), torch::kFloat32);
  EXPECT_LT(max_diff(f32, ref), 1e-5);
  const auto bf16 = layers::modulated_layer_norm(in.x, in.shift, in.scale, 1e-6, torch::kBFloat16);
  EXPECT_EQ(bf16.scalar_type(), torch::kBFloat16);
  EXPECT_LE(max_diff(bf16, ref), bf16_step(ref));
  // A strided [B, 1, D] chunk (the model's modulation rows) is read as such.
  const auto six = torch::randn({2, 6, 96});
  const auto e = six.chunk(6, 1);
  EXPECT_LT(max_diff(layers::modulated_layer_norm(in.x, e[0], e[1], 1e-6, torch::kFloat32),
                     layers::layer_norm(in.x, {}, {}, 1e-6) * (1 + e[1]) + e[0]),
            1e-5);
  EXPECT_THROW(
      layers::modulated_layer_norm(in.x, in.shift.squeeze(1), in.scale, 1e-6, torch::kFloat32),
      c10::Error);
}

TEST(Fused, GatedAddIsTheComposition) {
  torch::NoGradGuard g;
  const auto in = inputs(torch::kCPU);
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    const auto y = in.y.to(dt);
    auto x = in.x.clone();
    layers::gated_add_(x, y, in.gate);
    EXPECT_LT(max_diff(x, in.x + y.to(torch::kFloat32) * in.gate), 1e-5) << dt;
  }
  // Without a gate: x += y (the cross-attention's residual).
  auto x = in.x.clone();
  layers::gated_add_(x, in.y.to(torch::kBFloat16), torch::Tensor());
  EXPECT_TRUE(torch::equal(x, in.x + in.y.to(torch::kBFloat16).to(torch::kFloat32)));
  EXPECT_THROW(layers::gated_add_(x, in.y.slice(1, 0, 5), in.gate), c10::Error);
  EXPECT_THROW(layers::gated_add_(x, in.y, in.gate.squeeze(1)), c10::Error);
}

TEST(Fused, RmsNormRopeIsTheComposition) {
  torch::NoGradGuard g;
  const auto in = inputs(torch::kCPU);
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    const auto y = in.y.to(dt);
    const auto out = layers::rms_norm_rope(y, in.w, 3, in.cos, in.sin, 1e-6);
    EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 37, 3, 32}));
    EXPECT_EQ(out.scalar_type(), dt);
    const auto ref = reference_qk(y, in.w, 3, in.cos, in.sin, 1e-6);
    EXPECT_LE(max_diff(out, ref), dt == torch::kFloat32 ? 1e-5 : bf16_step(ref)) << dt;
    // Without cos and sin: the norm alone, as the cross-attention's q/k.
    const torch::Tensor none;
    const auto plain = layers::rms_norm_rope(y, in.w, 3, none, none, 1e-6);
    EXPECT_EQ(plain.sizes(), out.sizes());
    const auto norm_ref =
        (layers::rms_norm(y, {}, 1e-6).to(dt) * in.w.to(dt)).unflatten(-1, {3, -1});
    EXPECT_LE(max_diff(plain, norm_ref), dt == torch::kFloat32 ? 1e-5 : bf16_step(norm_ref)) << dt;
  }
  EXPECT_THROW(layers::rms_norm_rope(in.y, in.w, 3, in.cos, torch::Tensor(), 1e-6), c10::Error);
  EXPECT_THROW(layers::rms_norm_rope(in.y, in.w, 5, in.cos, in.sin, 1e-6), c10::Error);
  EXPECT_THROW(layers::rms_norm_rope(in.y, in.w, 3, in.cos.slice(0, 0, 4), in.sin, 1e-6),
               c10::Error);
}

// The Wan VAE's norm over channels (+ SiLU), as its composed form computes
// it: in float32, rounded to x's dtype before the SiLU.
TEST(Fused, ChannelRmsNormIsTheComposition) {
  torch::NoGradGuard g;
  torch::manual_seed(9);
  auto x = torch::randn({2, 40, 3, 5, 7}) * 3;
  x.select(1, 0).fill_(1e3);                                  // large values
  x.index_put_({0, torch::indexing::Slice(), 1, 2, 3}, 0.0);  // a zero vector: 0, not NaN
  const auto gamma = torch::rand({40, 1, 1, 1}) + 0.5;
  const double scale = std::sqrt(40.0);
  for (auto dt : {torch::kFloat32, torch::kBFloat16})
    for (bool silu : {false, true})
      for (int layout : {0, 1, 2}) {
        // 1: the channels of a [B, T, C, H, W] tensor seen as [B, C, T, H, W];
        // 2: channels-last ([B, T, H, W, C] in memory), kept in the output.
        const auto in = layout == 1   ? x.transpose(1, 2).contiguous().transpose(1, 2).to(dt)
                        : layout == 2 ? x.to(dt).contiguous(torch::MemoryFormat::ChannelsLast3d)
                                      : x.to(dt);
        const auto xf = in.to(torch::kFloat32);
        auto ref = (xf / xf.square().sum(1, true).sqrt().clamp_min(1e-12) * scale * gamma).to(dt);
        if (silu) ref = torch::silu(ref);
        const auto out = layers::channel_rms_norm(in, gamma, scale, silu);
        EXPECT_EQ(out.scalar_type(), dt);
        EXPECT_EQ(out.sizes(), in.sizes());
        EXPECT_FALSE(torch::isnan(out).any().item<bool>());
        EXPECT_LE(max_diff(out, ref), dt == torch::kFloat32 ? 1e-5 : bf16_step(ref))
            << dt << " silu " << silu << " layout " << layout;
        if (layout == 2) {
          EXPECT_TRUE(out.is_contiguous(torch::MemoryFormat::ChannelsLast3d));
        }
      }
  EXPECT_THROW(layers::channel_rms_norm(x, gamma.slice(0, 0, 7), scale, true), c10::Error);
}

// A Linear's partial forms (the rows of its output, the GELU after it, the
// input as parts) against the whole layer: the same products, in float32 up
// to the order of the sums, in bf16 within a rounding step (forward_cat
// rounds its partial sum once more).
TEST(Fused, LinearPartsAreTheWholeLayer) {
  torch::NoGradGuard g;
  torch::manual_seed(11);
  layers::Linear lin(24, 40, true);
  lin->weight.copy_(torch::randn({40, 24}) * 0.2);
  lin->bias.copy_(torch::randn({40}));
  const auto x = torch::randn({2, 7, 24});
  for (auto p : {layers::Precision::F32, layers::Precision::BF16}) {
    lin->precision = p;
    const auto whole = lin->forward(x);
    const double tol = p == layers::Precision::F32 ? 1e-5 : 2 * bf16_step(whole);
    ASSERT_TRUE(lin->plain());
    EXPECT_LE(max_diff(lin->forward_rows(x, 5, 9), whole.narrow(-1, 5, 9)), tol) << int(p);
    EXPECT_EQ(lin->forward_rows(x, 5, 9).sizes(), (std::vector<int64_t>{2, 7, 9}));
    EXPECT_LE(max_diff(lin->forward_gelu_tanh(x), layers::gelu_tanh(whole)), tol) << int(p);
    EXPECT_LE(max_diff(lin->forward_gelu_tanh(x, 30), layers::gelu_tanh(whole.narrow(-1, 30, 10))),
              tol);
    const auto cat = lin->forward_cat({x.narrow(-1, 0, 10), x.narrow(-1, 10, 14)});
    EXPECT_EQ(cat.sizes(), whole.sizes());
    EXPECT_LE(max_diff(cat, whole), tol) << int(p);
    EXPECT_THROW(lin->forward_cat({x, x.narrow(-1, 0, 3)}), c10::Error);
    EXPECT_THROW(lin->forward_cat({x.narrow(-1, 0, 10)}), c10::Error);
  }
  // A layer with a run-time adapter is not plain: the partial forms compute
  // the whole forward, adapter included, and take their part of it.
  lin->precision = layers::Precision::F32;
  layers::LinearAdapter a;
  a.down = torch::randn({2, 24});
  a.up = torch::randn({40, 2});
  a.scale = 0.5;
  a.rows = 40;
  lin->adapters.push_back(a);
  EXPECT_FALSE(lin->plain());
  const auto whole = lin->forward(x);
  EXPECT_TRUE(torch::equal(lin->forward_rows(x, 5, 9), whole.narrow(-1, 5, 9)));
  EXPECT_TRUE(
      torch::equal(lin->forward_gelu_tanh(x, 5, 9), layers::gelu_tanh(whole.narrow(-1, 5, 9))));
  EXPECT_TRUE(torch::equal(lin->forward_cat({x.narrow(-1, 0, 10), x.narrow(-1, 10, 14)}), whole));
}

// The CUDA kernels against the CPU twin (run where a GPU is there).
TEST(Fused, CudaKernelsMatchTheirCpuTwin) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::NoGradGuard g;
  const auto c = inputs(torch::kCPU, 2, 300, 1536, 12), d = inputs(torch::kCUDA, 2, 300, 1536, 12);
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    const auto a = layers::modulated_layer_norm(c.x, c.shift, c.scale, 1e-6, dt);
    const auto b = layers::modulated_layer_norm(d.x, d.shift, d.scale, 1e-6, dt);
    EXPECT_LE(max_diff(a, b), dt == torch::kFloat32 ? 1e-5 : bf16_step(a)) << dt;
    auto xa = c.x.clone(), xb = d.x.clone();
    layers::gated_add_(xa, c.y.to(dt), c.gate);
    layers::gated_add_(xb, d.y.to(dt), d.gate);
    EXPECT_LT(max_diff(xa, xb), 1e-5) << dt;
    const auto qa = layers::rms_norm_rope(c.y.to(dt), c.w, 12, c.cos, c.sin, 1e-6);
    const auto qb = layers::rms_norm_rope(d.y.to(dt), d.w, 12, d.cos, d.sin, 1e-6);
    EXPECT_LE(max_diff(qa, qb), dt == torch::kFloat32 ? 1e-5 : bf16_step(qa)) << dt;
    // The variants without a gate and without a rotation.
    layers::gated_add_(xa, c.y.to(dt), torch::Tensor());
    layers::gated_add_(xb, d.y.to(dt), torch::Tensor());
    EXPECT_LT(max_diff(xa, xb), 1e-5) << dt;
    const torch::Tensor none;
    const auto na = layers::rms_norm_rope(c.y.to(dt), c.w, 12, none, none, 1e-6);
    const auto nb = layers::rms_norm_rope(d.y.to(dt), d.w, 12, none, none, 1e-6);
    EXPECT_LE(max_diff(na, nb), dt == torch::kFloat32 ? 1e-5 : bf16_step(na)) << dt;
  }
  // The VAE's channel norm, with and without the SiLU, from a contiguous and
  // a strided input.
  torch::manual_seed(13);
  const auto v = torch::randn({2, 96, 3, 20, 24}) * 2;
  const auto gamma = torch::rand({96, 1, 1, 1}) + 0.5;
  for (auto dt : {torch::kFloat32, torch::kBFloat16})
    for (bool silu : {false, true})
      for (const auto& in : {v, v.transpose(3, 4)}) {
        const auto a = layers::channel_rms_norm(in.to(dt), gamma, std::sqrt(96.0), silu);
        const auto b =
            layers::channel_rms_norm(in.to(torch::kCUDA, dt), gamma.cuda(), std::sqrt(96.0), silu);
        EXPECT_LE(max_diff(a, b), dt == torch::kFloat32 ? 1e-5 : bf16_step(a)) << dt << silu;
      }
  // A Linear's GELU in the matmul's epilogue (cuBLASLt) against the CPU's
  // product and GELU in turn; its rows and parts.
  torch::manual_seed(12);
  layers::Linear lin(1536, 2048, true);
  lin->weight.copy_(torch::randn({2048, 1536}) * 0.03);
  lin->bias.copy_(torch::randn({2048}) * 0.1);
  const auto x = torch::randn({2, 300, 1536});
  // In float32 within 1e-4: the tanh form (the erf form differs by up to
  // 4.7e-4), in true float32 products (TF32, off by default, would not pass).
  for (auto p : {layers::Precision::F32, layers::Precision::BF16}) {
    lin->to(torch::kCPU);
    lin->precision = p;
    const auto a = lin->forward_gelu_tanh(x, 100, 1000);  // a bias slice 200 bytes in
    const auto ra = lin->forward_rows(x, 100, 1000);
    const auto ca = lin->forward_cat({x.narrow(-1, 0, 500), x.narrow(-1, 500, 1036)});
    lin->to(torch::kCUDA);
    const auto xc = x.to(torch::kCUDA);
    const auto b = lin->forward_gelu_tanh(xc, 100, 1000);
    const auto rb = lin->forward_rows(xc, 100, 1000);
    const auto cb = lin->forward_cat({xc.narrow(-1, 0, 500), xc.narrow(-1, 500, 1036)});
    const bool f32 = p == layers::Precision::F32;
    EXPECT_LE(max_diff(a, b), f32 ? 1e-4 : 2 * bf16_step(a)) << int(p);
    EXPECT_LE(max_diff(ra, rb), f32 ? 1e-4 : 2 * bf16_step(ra)) << int(p);
    EXPECT_LE(max_diff(ca, cb), f32 ? 1e-4 : 2 * bf16_step(ca)) << int(p);
  }
}

// The DiT with the fused passes (forced on for the CPU) gives the DiT's
// output without them, in float32 and in bf16.
TEST(Fused, WanDitForwardIsUnchanged) {
  auto m = diffusion::WanModel::load(test::fixture("wan21_dit_tiny.safetensors"));
  torch::manual_seed(5);
  const auto x = torch::randn({2, 16, 2, 4, 6});
  const auto t = torch::tensor({999.0, 420.0});
  const auto ctx = torch::randn({2, 5, 64});
  expect_fused_unchanged(m, [&] { return m.forward(x, t, ctx); });
  // Weights stored in bf16, as most checkpoints hold them: the same (the
  // cross-attention's norm weight is widened before its − 1).
  // Norm weights below ½, where w − 1 in bf16 would round (to 4e-6 of the
  // output here; 3e-7 without that rounding).
  torch::NoGradGuard g;
  for (auto& p : m.module().named_parameters()) {
    if (p.key().find("norm3.weight") != std::string::npos)
      p.value().copy_(torch::rand(p.value().sizes()) * 0.45 + 0.01);
    p.value().set_data(p.value().to(torch::kBFloat16));
  }
  expect_fused_unchanged(
      m, [&] { return m.forward(x, t, ctx); }, 1e-6);
}

// The same for the FLUX DiT (modulation and gated residuals fused).
TEST(Fused, FluxDitForwardIsUnchanged) {
  auto m = diffusion::FluxModel::load(test::fixture("flux1_dev_tiny.safetensors"));
  const auto& c = m.config();
  torch::manual_seed(6);
  const auto x = torch::randn({2, 16, 1, 8, 12});
  layers::Conditioning cond;
  cond.context = torch::randn({2, 7, c.context_in_dim});
  cond.pooled = torch::randn({2, c.vec_in_dim});
  cond.guidance = torch::full({2}, 3.5);
  const auto t = torch::tensor({900.0, 300.0});
  expect_fused_unchanged(m, [&] { return m.denoise(x, t, cond); });
}

// The Wan VAE's decode and encode with their fused norms and channels-last
// convolutions give those without them.
TEST(Fused, WanVaeDecodeIsUnchanged) {
  auto vae = vae::WanVAE::load(test::fixture("wan21_vae_tiny.safetensors"));
  torch::manual_seed(7);
  // Whether a call ran its convolutions by frames (channels-last 2D), and how many.
  const auto by_frames = [](const std::function<torch::Tensor()>& f) {
    const int64_t before = vae::convolutions_by_frames();
    const auto out = f();
    EXPECT_TRUE(out.is_contiguous());
    return std::pair{out, vae::convolutions_by_frames() - before};
  };
  for (int64_t b : {1, 2}) {  // with two, the convolutions by frames go through each
    const auto z = torch::randn({b, 16, 3, 4, 6});
    // The encoder's too (its temporal convolutions have a stride of 2).
    const auto video = torch::rand({b, 3, 9, 32, 48}) * 2 - 1;
    const std::vector<std::function<torch::Tensor()>> calls = {[&] { return vae.decode(z); },
                                                               [&] { return vae.encode(video); }};
    for (const auto& f : calls) {
      expect_fused_unchanged(vae, [&] {
        const auto [out, n] = by_frames(f);
        // By frames exactly where the passes run.
        torch::NoGradGuard g;  // as the VAE runs
        EXPECT_EQ(n > 0, layers::use_fused(torch::kCPU, layers::matmul_dtype(vae.precision())));
        return out;
      });
    }
  }
}

// The CPU's bf16 tanh-GELU against the function in float64, rounded to bf16:
// the same to one rounding step. (LibTorch's own form loses the small negative
// values to cancellation in 1 + tanh: below x ≈ -5 it gives 0 in float32.)
TEST(Fused, Bf16GeluIsTheTanhGelu) {
  torch::NoGradGuard g;
  torch::manual_seed(8);
  auto x = (torch::randn({3, 1000, 77}) * 3).to(torch::kBFloat16);
  x.view(-1).slice(0, 0, 6).copy_(torch::tensor({0.0, 20.0, -20.0, 100.0, -100.0, 1e-3}));
  const auto got = layers::gelu_tanh_bf16_cpu(x).to(torch::kFloat64);
  // 0.5x(1 + tanh(u)) = x·σ(2u), u = √(2/π)(x + 0.044715x³), in float64.
  const auto xd = x.to(torch::kFloat64);
  const auto u = std::sqrt(2 / M_PI) * (xd + 0.044715 * xd.pow(3));
  const auto ref = (xd * torch::sigmoid(2 * u)).to(torch::kBFloat16).to(torch::kFloat64);
  const auto step = ref.abs() / 128 + 1e-30;  // one bf16 step at each value
  EXPECT_TRUE(((got - ref).abs() <= step).all().item<bool>());
  EXPECT_LT((got != ref).to(torch::kFloat32).mean().item<double>(), 0.01);
  // Beside LibTorch's float32 form.
  EXPECT_LT((got - torch::gelu(x.to(torch::kFloat32), "tanh")).abs().max().item<double>(), 0.05);
  EXPECT_EQ(got.view(-1)[0].item<double>(), 0.0);
  EXPECT_EQ(got.view(-1)[1].item<double>(), 20.0);
  EXPECT_LT(std::abs(got.view(-1)[2].item<double>()), 1e-30);
  EXPECT_EQ(got.view(-1)[3].item<double>(), 100.0);
  const auto nan = torch::full({4}, std::nan(""), torch::kBFloat16);
  EXPECT_TRUE(torch::isnan(layers::gelu_tanh_bf16_cpu(nan)).all().item<bool>());
  // A non-contiguous input (FLUX's single blocks slice the MLP half).
  const auto wide = torch::randn({2, 10, 30}).to(torch::kBFloat16);
  EXPECT_TRUE(torch::equal(layers::gelu_tanh_bf16_cpu(wide.slice(-1, 10)),
                           layers::gelu_tanh_bf16_cpu(wide.slice(-1, 10).contiguous())));
}
