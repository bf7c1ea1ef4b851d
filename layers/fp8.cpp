#include "layers/fp8.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <limits>

#include "base/torch_compat.h"
#include "io/safetensors.h"
#include "layers/linear.h"
#include "layers/model.h"

#ifdef KINORA_CUDA
#include "layers/fused_kernels.h"
#endif

namespace kinora::layers {

uint8_t e4m3_from_float(float f) {
  if (std::isnan(f)) return 0x7F;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0;
  const float a = std::min(std::fabs(f), kE4M3Max);
  if (a == 0) return sign;
  int e = 0;
  (void)std::frexp(a, &e);  // a = m·2^e, m in [0.5, 1): 2^(e-1) ≤ a < 2^e
  // Three mantissa bits: quanta of 2^(e-4), and 2^-9 below the smallest normal (2^-6).
  int qe = std::max(e - 4, -9);
  auto r = static_cast<int>(std::nearbyint(std::ldexp(a, -qe)));  // ties to even
  // Subnormals and the first binade: the code is the count of 2^-9 quanta.
  if (qe == -9) return static_cast<uint8_t>(sign | r);
  if (r == 16) {  // rounded up into the next binade
    r = 8;
    ++qe;
  }
  return static_cast<uint8_t>(sign | ((qe + 10) << 3) | (r - 8));
}

torch::Tensor round_to_e4m3(const torch::Tensor& x) {
  const auto xf = x.to(torch::kFloat32);
  const auto a = xf.abs().clamp_max(kE4M3Max);
  const auto e = std::get<1>(torch::frexp(a));
  const auto quantum = torch::ldexp(torch::ones_like(a), (e - 4).clamp_min(-9));
  return torch::copysign(torch::round(a / quantum) * quantum, xf);
}

torch::Tensor e4m3_scale(const torch::Tensor& x) {
  if (x.numel() == 0) return torch::full({}, 1e-12f / kE4M3Max, x.options().dtype(torch::kFloat32));
  // One pass over x (|x| would be a temporary as large).
  const auto [lo, hi] = torch::aminmax(x);
  return torch::maximum(hi, lo.neg()).to(torch::kFloat32).clamp_min(1e-12) / kE4M3Max;
}

torch::Tensor quantize_e4m3(const torch::Tensor& x, const torch::Tensor& scale) {
  TORCH_CHECK(scale.numel() == 1 && scale.scalar_type() == torch::kFloat32,
              "quantize_e4m3: a float32 scalar scale");
#ifdef KINORA_CUDA
  if (x.is_cuda()) {
    const bool bf16 = x.scalar_type() == torch::kBFloat16;
    const auto xc = (bf16 ? x : x.to(torch::kFloat32)).contiguous();
    const auto s = scale.to(x.device()).contiguous();
    auto out = torch::empty(x.sizes(), x.options().dtype(torch::kUInt8));
    cuda::quantize_e4m3(xc.data_ptr(), bf16, s.data_ptr<float>(), out.data_ptr<uint8_t>(),
                        xc.numel(), compat::current_cuda_stream(x.device()));
    return out;
  }
#endif
  TORCH_CHECK(x.is_cpu(), "quantize_e4m3: no kernel for ", x.device(), " in this build");
  const auto xc = x.to(torch::kFloat32).contiguous();
  const float s = scale.item<float>();
  auto out = torch::empty(x.sizes(), x.options().dtype(torch::kUInt8));
  const float* in = xc.data_ptr<float>();
  uint8_t* o = out.data_ptr<uint8_t>();
  at::parallel_for(0, xc.numel(), 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) o[i] = e4m3_from_float(in[i] / s);
  });
  return out;
}

E4M3Weight quantize_weight_e4m3(const torch::Tensor& w) {
  torch::NoGradGuard g;
  const auto scale = e4m3_scale(w);
  return {quantize_e4m3(w, scale), scale.item<float>()};
}

bool device_has_fp8_matmul(const torch::Device& device) {
  return compat::has_fp8_matmul(device);
}

torch::Tensor fp8_linear(const torch::Tensor& x, const torch::Tensor& w8, float w_scale,
                         const torch::Tensor& bias, torch::ScalarType out) {
  TORCH_CHECK(w8.scalar_type() == torch::kUInt8 && w8.dim() == 2,
              "fp8_linear: E4M3 bytes [out, in]");
  TORCH_CHECK(x.size(-1) == w8.size(1), "fp8_linear: input width ", x.size(-1), " for a weight [",
              w8.size(0), ", ", w8.size(1), "]");
  const int64_t in = w8.size(1), n = w8.size(0);
  auto shape = x.sizes().vec();
  shape.back() = n;
  const auto x2 = x.reshape({-1, in});
  const auto sx = e4m3_scale(x2);
  // cuBLAS's FP8 products take widths that are multiples of 16.
  if (device_has_fp8_matmul(x.device()) && in % 16 == 0 && n % 16 == 0) {
    const auto x8 = quantize_e4m3(x2, sx);
    const auto sw = torch::full({}, w_scale, sx.options());
    const bool bias_inside = bias.defined() && out == torch::kBFloat16;
    auto y =
        compat::scaled_mm_e4m3(x8, w8, sx, sw, bias_inside ? bias.to(out) : torch::Tensor(), out);
    if (bias.defined() && !bias_inside) y.add_(bias.to(out));
    return y.view(shape);
  }
  // The same FP8 values, multiplied in the compute dtype.
  const auto xq = round_to_e4m3(x2.to(torch::kFloat32) / sx).to(out);
  const auto w = io::widen_fp8(w8, io::DType::F8_E4M3, out);
  torch::Tensor y;
  if (x.is_cpu()) {  // the scales inside the product (a scalar read costs nothing here)
    const double s = sx.item<double>() * w_scale;
    y = bias.defined() ? torch::addmm(bias.to(out), xq, w.t(), 1.0, s)
                       : torch::mm(xq, w.t()).mul_(s);
  } else {
    y = torch::mm(xq, w.t()).mul_(sx * w_scale);
    if (bias.defined()) y.add_(bias.to(out));
  }
  return y.view(shape);
}

int64_t use_fp8_matmuls(Model& model, const torch::Device& work) {
  torch::NoGradGuard g;
  int64_t n = 0;
  for (const auto& block : model.swappable_blocks())
    for (const auto& m : block->modules(/*include_self=*/true)) {
      auto* l = dynamic_cast<LinearImpl*>(m.get());
      if (!l) continue;
      ++n;
      l->fp8_matmul = true;
      if (l->fp8 == io::DType::F8_E4M3) continue;  // an E4M3 checkpoint's, used as stored
      // Widened on `work` (a GPU's copy is 2 bytes a weight for bf16, not 4).
      const auto home = l->weight.device();
      auto w = l->weight.to(work);
      w = l->fp8 ? io::widen_fp8(w, *l->fp8, torch::kFloat32) : w.to(torch::kFloat32);
      if (l->scale) w = w * *l->scale;  // not in place: w may be the weight itself
      auto q = quantize_weight_e4m3(w);
      l->weight.set_data(q.bytes.to(home));
      l->fp8 = io::DType::F8_E4M3;
      l->scale = q.scale;
    }
  return n;
}

}  // namespace kinora::layers
