#include "layers/fp8.h"

#include <ATen/Parallel.h>
#include <c10/core/DeviceGuard.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "base/torch_compat.h"
#include "io/safetensors.h"
#include "layers/clones.h"
#include "layers/linear.h"
#include "layers/model.h"

#ifdef KINORA_CUDA
#include "layers/fused_kernels.h"
#endif

namespace kinora::layers {

torch::Tensor round_to_e4m3(const torch::Tensor& x) {
  const auto xf = x.to(torch::kFloat32);
  const auto a = xf.abs().clamp_max(kE4M3Max);
  const auto e = std::get<1>(torch::frexp(a));
  const auto quantum = torch::ldexp(torch::ones_like(a), (e - 4).clamp_min(-9));
  return torch::copysign(torch::round(a / quantum) * quantum, xf);
}

namespace {
KINORA_INLINE uint32_t bits_of(float f) {
  uint32_t u = 0;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
KINORA_INLINE float float_of(uint32_t u) {
  float f = 0;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// v rounded to E4M3, as float32 bits: three mantissa bits (ties to even) from
// the smallest normal, 2^-6, on; multiples of 2^-9 below it (rounded by adding
// and taking away 1.5·2^23); ±448 at most. Branch-free, so that it vectorises.
KINORA_INLINE uint32_t e4m3_bits(float v) {
  v = std::min(std::max(v, -kE4M3Max), kE4M3Max);
  const uint32_t u = bits_of(v);
  const uint32_t sign = u & 0x80000000u, a = u & 0x7FFFFFFFu;
  const uint32_t normal = (a + 0x7FFFFu + ((a >> 20) & 1u)) & 0xFFF00000u;
  const float sub = ((float_of(a) * 512.0f + 12582912.0f) - 12582912.0f) * (1.0f / 512.0f);
  // NaN stays NaN (its payload would carry into the sign above).
  return a > 0x7F800000u ? 0x7FC00000u : sign | (a < 0x3C800000u ? bits_of(sub) : normal);
}

// The E4M3 byte of a value e4m3_bits gave (NaN: 0x7F, as CUDA's conversion).
KINORA_INLINE uint8_t e4m3_code(uint32_t r) {
  const uint32_t a = r & 0x7FFFFFFFu;
  const auto sign = static_cast<uint8_t>((r >> 24) & 0x80u);
  if (a > 0x7F800000u) return 0x7F;
  if (a < 0x3C800000u)  // below 2^-6: the count of 2^-9 quanta, exact
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(float_of(a) * 512.0f));
  // Exponent rebiased from 127 to 7, three mantissa bits.
  return static_cast<uint8_t>(sign | (((a >> 23) - 120u) << 3) | ((a >> 20) & 7u));
}

// in[i] / s rounded, into float32 (Out = uint32_t) or bf16 (uint16_t) bits;
// In: float, or uint16_t holding bf16 bits.
template <typename In, typename Out>
KINORA_INLINE void round_scaled(const In* in, Out* out, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float v = 0;
    if constexpr (std::is_same_v<In, uint16_t>)
      v = float_of(static_cast<uint32_t>(in[i]) << 16);
    else
      v = in[i];
    const uint32_t r = e4m3_bits(v / s);
    if constexpr (std::is_same_v<Out, uint16_t>)
      out[i] = static_cast<uint16_t>(r >> 16);  // exact: three mantissa bits
    else
      out[i] = r;
  }
}
// The two a layer runs (its input in its compute dtype), built per x86-64 level.
KINORA_CLONES void round_bf16(const uint16_t* in, uint16_t* out, float s, int64_t n) {
  round_scaled(in, out, s, n);
}
KINORA_CLONES void round_f32(const float* in, uint32_t* out, float s, int64_t n) {
  round_scaled(in, out, s, n);
}
template <typename In, typename Out>
void round_chunks(const In* in, Out* out, float s, int64_t n) {
  at::parallel_for(0, n, 1 << 14, [&](int64_t b, int64_t e) {
    if constexpr (std::is_same_v<In, uint16_t> && std::is_same_v<Out, uint16_t>)
      round_bf16(in + b, out + b, s, e - b);
    else if constexpr (std::is_same_v<In, float> && std::is_same_v<Out, uint32_t>)
      round_f32(in + b, out + b, s, e - b);
    else
      round_scaled(in + b, out + b, s, e - b);
  });
}
}  // namespace

uint8_t e4m3_from_float(float f) {
  return e4m3_code(e4m3_bits(f));
}

torch::Tensor e4m3_values(const torch::Tensor& x, const torch::Tensor& scale,
                          torch::ScalarType out) {
  TORCH_CHECK(out == torch::kFloat32 || out == torch::kBFloat16, "e4m3_values: float32 or bf16");
  const bool in_bf16 = x.scalar_type() == torch::kBFloat16;
#ifdef KINORA_CUDA
  // A GPU without FP8 units: the quantizing kernel (CUDA converts in software
  // before compute capability 8.9), then the bytes widened.
  if (x.is_cuda()) return io::widen_fp8(quantize_e4m3(x, scale), io::DType::F8_E4M3, out);
#endif
  if (!x.is_cpu() || !(in_bf16 || x.scalar_type() == torch::kFloat32))
    return round_to_e4m3(x.to(torch::kFloat32) / scale).to(out);
  const auto xc = x.contiguous();
  auto y = torch::empty(xc.sizes(), xc.options().dtype(out));
  const float s = scale.item<float>();
  const int64_t n = xc.numel();
  const bool out_bf16 = out == torch::kBFloat16;
  auto* o16 = static_cast<uint16_t*>(y.data_ptr());
  auto* o32 = static_cast<uint32_t*>(y.data_ptr());
  if (in_bf16) {
    const auto* in = static_cast<const uint16_t*>(xc.data_ptr());
    out_bf16 ? round_chunks(in, o16, s, n) : round_chunks(in, o32, s, n);
  } else {
    const float* in = xc.data_ptr<float>();
    out_bf16 ? round_chunks(in, o16, s, n) : round_chunks(in, o32, s, n);
  }
  return y;
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
    const c10::OptionalDeviceGuard on(x.device());  // the kernel runs on x's device
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
    for (int64_t i = b; i < e; ++i) o[i] = e4m3_code(e4m3_bits(in[i] / s));
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
  const auto xq = e4m3_values(x2, sx, out);
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
      // Copied to `work` as stored (2 bytes a weight for bf16) and widened there.
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
