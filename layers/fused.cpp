#include "layers/fused.h"

#include <ATen/Parallel.h>
#include <c10/core/DeviceGuard.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "base/torch_compat.h"
#include "layers/clones.h"

#ifdef KINORA_CUDA
#include "layers/fused_kernels.h"
#endif

namespace kinora::layers {

namespace {

// What KINORA_FUSED asks for.
Fused fused_from_environment() {
  const char* v = std::getenv("KINORA_FUSED");
  if (!v || !*v) return Fused::Auto;
  return std::strcmp(v, "0") == 0 ? Fused::Off : Fused::On;
}
std::atomic<Fused> fused_mode{fused_from_environment()};

void check_rows(const torch::Tensor& x, const torch::Tensor& per_batch, const char* what,
                const char* name) {
  TORCH_CHECK(x.dim() == 3, what, ": expected [B, L, D], got ", x.sizes());
  TORCH_CHECK(per_batch.dim() == 3 && per_batch.size(0) == x.size(0) && per_batch.size(1) == 1 &&
                  per_batch.size(2) == x.size(2),
              what, ": ", name, " must be [", x.size(0), ", 1, ", x.size(2), "], got ",
              per_batch.sizes());
  TORCH_CHECK(per_batch.device() == x.device(), what, ": ", name, " on another device");
}

// bf16 as its bits (uint16_t) ↔ float: the top half of the float; rounded to
// nearest even, NaN kept NaN. Branch-free, so that the loops vectorise.
inline float load(const float* p, int64_t i) {
  return p[i];
}
inline float load(const uint16_t* p, int64_t i) {
  const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline uint16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(f != f ? 0x7FC0u : rounded);
}
inline void store(float* p, int64_t i, float v) {
  p[i] = v;
}
inline void store(uint16_t* p, int64_t i, float v) {
  p[i] = to_bf16(v);
}
// v rounded to the buffer's dtype and back: what a tensor of that dtype holds.
inline float round_as(const float*, float v) {
  return v;
}
inline float round_as(const uint16_t*, float v) {
  const uint16_t b = to_bf16(v);
  return load(&b, 0);
}

// Rows [0, rows) in parallel, `fn(row)` for each.
template <typename Fn>
void each_row(int64_t rows, int64_t dim, const Fn& fn) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(dim, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) fn(r);
  });
}

// One row of each pass (Out, Y, T: float or uint16_t for bf16), instantiated
// below as plain functions (multiversioned functions cannot be templates).
template <typename Out>
inline void modulated_layer_norm_row(const float* x, const float* shift, const float* scale, Out* o,
                                     int64_t dim, float eps) {
  float s = 0;
  for (int64_t i = 0; i < dim; ++i) s += x[i];
  const float mean = s / static_cast<float>(dim);
  float q = 0;
  for (int64_t i = 0; i < dim; ++i) q += (x[i] - mean) * (x[i] - mean);
  const float rstd = 1.f / std::sqrt(q / static_cast<float>(dim) + eps);
  for (int64_t i = 0; i < dim; ++i) store(o, i, (x[i] - mean) * rstd * (1.f + scale[i]) + shift[i]);
}
template <typename Y>
inline void gated_add_row(float* x, const Y* y, const float* gate, int64_t dim) {
  if (!gate) {
    for (int64_t i = 0; i < dim; ++i) x[i] += load(y, i);
    return;
  }
  for (int64_t i = 0; i < dim; ++i) x[i] += load(y, i) * gate[i];
}
template <typename T>
inline void rms_norm_rope_row(const T* y, const T* w, const float* c, const float* s, T* o,
                              int64_t dim, int64_t pairs, float eps) {
  float q = 0;
  for (int64_t i = 0; i < dim; ++i) q += load(y, i) * load(y, i);
  const float rstd = 1.f / std::sqrt(q / static_cast<float>(dim) + eps);
  if (!c) {  // no rotation
    for (int64_t i = 0; i < dim; ++i) store(o, i, round_as(y, load(y, i) * rstd) * load(w, i));
    return;
  }
  for (int64_t h = 0; h < dim; h += 2 * pairs)  // each head
    for (int64_t p = 0; p < pairs; ++p) {
      const int64_t i = h + 2 * p;
      const float a = round_as(y, round_as(y, load(y, i) * rstd) * load(w, i));
      const float b = round_as(y, round_as(y, load(y, i + 1) * rstd) * load(w, i + 1));
      store(o, i, a * c[p] - b * s[p]);
      store(o, i + 1, a * s[p] + b * c[p]);
    }
}

KINORA_CLONES void modln_f32(const float* x, const float* sh, const float* sc, float* o, int64_t d,
                             float eps) {
  modulated_layer_norm_row(x, sh, sc, o, d, eps);
}
KINORA_CLONES void modln_bf16(const float* x, const float* sh, const float* sc, uint16_t* o,
                              int64_t d, float eps) {
  modulated_layer_norm_row(x, sh, sc, o, d, eps);
}
KINORA_CLONES void gated_f32(float* x, const float* y, const float* g, int64_t d) {
  gated_add_row(x, y, g, d);
}
KINORA_CLONES void gated_bf16(float* x, const uint16_t* y, const float* g, int64_t d) {
  gated_add_row(x, y, g, d);
}
KINORA_CLONES void rope_f32(const float* y, const float* w, const float* c, const float* s,
                            float* o, int64_t d, int64_t pairs, float eps) {
  rms_norm_rope_row(y, w, c, s, o, d, pairs, eps);
}
KINORA_CLONES void rope_bf16(const uint16_t* y, const uint16_t* w, const float* c, const float* s,
                             uint16_t* o, int64_t d, int64_t pairs, float eps) {
  rms_norm_rope_row(y, w, c, s, o, d, pairs, eps);
}

void modulated_layer_norm_cpu(const float* x, const float* shift, const float* scale, void* out,
                              bool bf16, int64_t rows, int64_t per_batch, int64_t dim, float eps) {
  each_row(rows, dim, [&](int64_t r) {
    const int64_t m = (r / per_batch) * dim;
    if (bf16)
      modln_bf16(x + r * dim, shift + m, scale + m, static_cast<uint16_t*>(out) + r * dim, dim,
                 eps);
    else
      modln_f32(x + r * dim, shift + m, scale + m, static_cast<float*>(out) + r * dim, dim, eps);
  });
}

void gated_add_cpu(float* x, const void* y, bool bf16, const float* gate, int64_t rows,
                   int64_t per_batch, int64_t dim) {
  each_row(rows, dim, [&](int64_t r) {
    const float* g = gate ? gate + (r / per_batch) * dim : nullptr;
    if (bf16)
      gated_bf16(x + r * dim, static_cast<const uint16_t*>(y) + r * dim, g, dim);
    else
      gated_f32(x + r * dim, static_cast<const float*>(y) + r * dim, g, dim);
  });
}

void rms_norm_rope_cpu(const void* y, const void* w, const float* cos, const float* sin, void* out,
                       bool bf16, int64_t rows, int64_t tokens, int64_t dim, int64_t head_dim,
                       float eps) {
  const int64_t pairs = head_dim / 2;
  each_row(rows, dim, [&](int64_t r) {
    const float* c = cos ? cos + (r % tokens) * pairs : nullptr;
    const float* s = sin ? sin + (r % tokens) * pairs : nullptr;
    if (bf16)
      rope_bf16(static_cast<const uint16_t*>(y) + r * dim, static_cast<const uint16_t*>(w), c, s,
                static_cast<uint16_t*>(out) + r * dim, dim, pairs, eps);
    else
      rope_f32(static_cast<const float*>(y) + r * dim, static_cast<const float*>(w), c, s,
               static_cast<float*>(out) + r * dim, dim, pairs, eps);
  });
}

// e^v for v ≤ 88 (e^v underflows to 0 below -87): 2ⁿ·p(r) with v = n·ln2 + r,
// |r| ≤ ln2/2, p Taylor's to r⁶ (relative error under 2e-7).
inline float exp_approx(float v) {
  v = v < 88.f ? v : 88.f;
  v = v > -87.f ? v : -87.f;
  const float t = v * 1.44269504f;  // n = t rounded to the nearest integer
  const float n = static_cast<float>(static_cast<int32_t>(t + (t < 0 ? -0.5f : 0.5f)));
  const float r = (v - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float p = 1.f / 720;
  p = p * r + 1.f / 120;
  p = p * r + 1.f / 24;
  p = p * r + 1.f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const auto bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

KINORA_CLONES void gelu_tanh_chunk(const uint16_t* in, uint16_t* out, int64_t n) {
  constexpr float k = 2 * 0.7978845608028654f;  // 2√(2/π)
  for (int64_t i = 0; i < n; ++i) {
    const float x = load(in, i);
    const float z = k * (x + 0.044715f * x * x * x);
    store(out, i, x / (1.f + exp_approx(-z)));
  }
}

// channel_rms_norm in two passes over memory, each streaming along the
// positions of a channel: first, for `n` positions of one batch item, the sum
// of squares over the channels (channel c's values at x + c·stride) turned
// into each position's factor scale / max(‖x‖, 1e-12) in q; then each
// channel's values times q and gamma. (Blocks of positions visited channel by
// channel in one pass would read rows a power of two apart, which share cache
// sets and evict each other before the second visit.)
template <typename T>
KINORA_INLINE void channel_factors(const T* x, float* q, int64_t channels, int64_t stride,
                                   int64_t n, float scale) {
  for (int64_t i = 0; i < n; ++i) q[i] = 0;
  for (int64_t c = 0; c < channels; ++c) {
    const T* xc = x + c * stride;
    for (int64_t i = 0; i < n; ++i) q[i] += load(xc, i) * load(xc, i);
  }
  for (int64_t i = 0; i < n; ++i) q[i] = scale / std::max(std::sqrt(q[i]), 1e-12f);
}
template <typename T>
KINORA_INLINE void channel_apply(const T* x, const float* q, float g, T* o, int64_t n, bool silu) {
  if (silu) {
    for (int64_t i = 0; i < n; ++i) {
      const float y = round_as(x, load(x, i) * q[i] * g);
      store(o, i, y / (1.f + exp_approx(-y)));
    }
  } else {
    for (int64_t i = 0; i < n; ++i) store(o, i, load(x, i) * q[i] * g);
  }
}
KINORA_CLONES void channel_factors_f32(const float* x, float* q, int64_t channels, int64_t stride,
                                       int64_t n, float scale) {
  channel_factors(x, q, channels, stride, n, scale);
}
KINORA_CLONES void channel_factors_bf16(const uint16_t* x, float* q, int64_t channels,
                                        int64_t stride, int64_t n, float scale) {
  channel_factors(x, q, channels, stride, n, scale);
}
KINORA_CLONES void channel_apply_f32(const float* x, const float* q, float g, float* o, int64_t n,
                                     bool silu) {
  channel_apply(x, q, g, o, n, silu);
}
KINORA_CLONES void channel_apply_bf16(const uint16_t* x, const float* q, float g, uint16_t* o,
                                      int64_t n, bool silu) {
  channel_apply(x, q, g, o, n, silu);
}

// The same norm where the channels are innermost ([B, …, C] in memory): each
// of n positions' C values are contiguous, so one position is one row.
template <typename T>
KINORA_INLINE void channel_rows(const T* x, const float* g, T* o, int64_t channels, int64_t n,
                                float scale, bool silu) {
  for (int64_t r = 0; r < n; ++r, x += channels, o += channels) {
    float ss = 0;
    for (int64_t c = 0; c < channels; ++c) ss += load(x, c) * load(x, c);
    const float q = scale / std::max(std::sqrt(ss), 1e-12f);
    if (silu) {
      for (int64_t c = 0; c < channels; ++c) {
        const float y = round_as(x, load(x, c) * q * g[c]);
        store(o, c, y / (1.f + exp_approx(-y)));
      }
    } else {
      for (int64_t c = 0; c < channels; ++c) store(o, c, load(x, c) * q * g[c]);
    }
  }
}
KINORA_CLONES void channel_rows_f32(const float* x, const float* g, float* o, int64_t channels,
                                    int64_t n, float scale, bool silu) {
  channel_rows(x, g, o, channels, n, scale, silu);
}
KINORA_CLONES void channel_rows_bf16(const uint16_t* x, const float* g, uint16_t* o,
                                     int64_t channels, int64_t n, float scale, bool silu) {
  channel_rows(x, g, o, channels, n, scale, silu);
}

// Whether x [B, C, d2, …] has its channels innermost and is otherwise dense:
// the memory of x.permute(0, 2, …, 1) in order (channels-last).
bool channels_innermost(const torch::Tensor& x) {
  if (x.dim() < 3 || x.stride(1) != 1) return false;
  std::vector<int64_t> order{0};
  for (int64_t d = 2; d < x.dim(); ++d) order.push_back(d);
  order.push_back(1);
  return x.permute(order).is_contiguous();
}

bool is_float_or_bf16(torch::ScalarType t) {
  return t == torch::kFloat32 || t == torch::kBFloat16;
}

}  // namespace

bool use_fused(const torch::Device& device, torch::ScalarType compute) {
  const Fused mode = fused_mode.load(std::memory_order_relaxed);
  if (torch::GradMode::is_enabled() || mode == Fused::Off) return false;
  return mode == Fused::On || device.is_cuda() || compute == torch::kBFloat16;
}

void set_fused(Fused mode) {
  fused_mode.store(mode, std::memory_order_relaxed);
}

torch::Tensor modulated_layer_norm(const torch::Tensor& x_in, const torch::Tensor& shift_in,
                                   const torch::Tensor& scale_in, double eps,
                                   torch::ScalarType out_dtype) {
  check_rows(x_in, shift_in, "modulated_layer_norm", "shift");
  check_rows(x_in, scale_in, "modulated_layer_norm", "scale");
  TORCH_CHECK(is_float_or_bf16(out_dtype), "modulated_layer_norm: float32 or bf16 out");
  const auto x = x_in.to(torch::kFloat32).contiguous();
  const auto shift = shift_in.to(torch::kFloat32).contiguous();
  const auto scale = scale_in.to(torch::kFloat32).contiguous();
  auto out = torch::empty(x.sizes(), x.options().dtype(out_dtype));
  const int64_t L = x.size(1), D = x.size(2), rows = x.size(0) * L;
  const bool bf16 = out_dtype == torch::kBFloat16;
#ifdef KINORA_CUDA
  if (x.is_cuda()) {
    const c10::OptionalDeviceGuard on(x.device());  // the kernel runs on x's device
    cuda::modulated_layer_norm(x.data_ptr<float>(), shift.data_ptr<float>(),
                               scale.data_ptr<float>(), out.data_ptr(), bf16, rows, L, D,
                               static_cast<float>(eps), compat::current_cuda_stream(x.device()));
    return out;
  }
#endif
  TORCH_CHECK(x.is_cpu(), "modulated_layer_norm: no kernel for ", x.device(), " in this build");
  modulated_layer_norm_cpu(x.data_ptr<float>(), shift.data_ptr<float>(), scale.data_ptr<float>(),
                           out.data_ptr(), bf16, rows, L, D, static_cast<float>(eps));
  return out;
}

void gated_add_(torch::Tensor& x, const torch::Tensor& y_in, const torch::Tensor& gate_in) {
  if (gate_in.defined()) check_rows(x, gate_in, "gated_add_", "gate");
  TORCH_CHECK(x.dim() == 3, "gated_add_: expected [B, L, D], got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && x.is_contiguous(),
              "gated_add_: x must be contiguous float32");
  TORCH_CHECK(y_in.sizes() == x.sizes() && y_in.device() == x.device(),
              "gated_add_: y must be shaped and placed as x, got ", y_in.sizes());
  const auto y = is_float_or_bf16(y_in.scalar_type()) ? y_in.contiguous()
                                                      : y_in.to(torch::kFloat32).contiguous();
  const auto gate = gate_in.defined() ? gate_in.to(torch::kFloat32).contiguous() : gate_in;
  const float* g = gate.defined() ? gate.data_ptr<float>() : nullptr;
  const int64_t L = x.size(1), D = x.size(2), rows = x.size(0) * L;
  const bool bf16 = y.scalar_type() == torch::kBFloat16;
#ifdef KINORA_CUDA
  if (x.is_cuda()) {
    const c10::OptionalDeviceGuard on(x.device());  // the kernel runs on x's device
    cuda::gated_add(x.data_ptr<float>(), y.data_ptr(), bf16, g, rows, L, D,
                    compat::current_cuda_stream(x.device()));
    return;
  }
#endif
  TORCH_CHECK(x.is_cpu(), "gated_add_: no kernel for ", x.device(), " in this build");
  gated_add_cpu(x.data_ptr<float>(), y.data_ptr(), bf16, g, rows, L, D);
}

torch::Tensor rms_norm_rope(const torch::Tensor& y_in, const torch::Tensor& weight_in,
                            int64_t heads, const torch::Tensor& cos_in, const torch::Tensor& sin_in,
                            double eps) {
  TORCH_CHECK(y_in.dim() == 3 && is_float_or_bf16(y_in.scalar_type()),
              "rms_norm_rope: expected [B, L, D] float32 or bf16, got ", y_in.sizes());
  const int64_t L = y_in.size(1), D = y_in.size(2);
  TORCH_CHECK(heads > 0 && D % heads == 0 && (D / heads) % 2 == 0, "rms_norm_rope: ", D,
              " channels do not split into ", heads, " even heads");
  const int64_t hd = D / heads;
  TORCH_CHECK(weight_in.numel() == D, "rms_norm_rope: weight must have ", D, " values");
  const bool rotate = cos_in.defined() || sin_in.defined();
  TORCH_CHECK(!rotate || (cos_in.sizes() == torch::IntArrayRef({L, hd / 2}) && sin_in.defined() &&
                          sin_in.sizes() == cos_in.sizes()),
              "rms_norm_rope: cos and sin must be [", L, ", ", hd / 2, "]");
  const auto dt = y_in.scalar_type();
  const auto y = y_in.contiguous();
  const auto w = weight_in.to(y.device(), dt).contiguous();
  torch::Tensor cos, sin;
  if (rotate) {
    cos = cos_in.to(y.device(), torch::kFloat32).contiguous();
    sin = sin_in.to(y.device(), torch::kFloat32).contiguous();
  }
  const float* c = rotate ? cos.data_ptr<float>() : nullptr;
  const float* s = rotate ? sin.data_ptr<float>() : nullptr;
  auto out = torch::empty(y.sizes(), y.options());
  const int64_t rows = y.size(0) * L;
  const bool bf16 = dt == torch::kBFloat16;
#ifdef KINORA_CUDA
  if (y.is_cuda()) {
    const c10::OptionalDeviceGuard on(y.device());  // the kernel runs on y's device
    cuda::rms_norm_rope(y.data_ptr(), w.data_ptr(), c, s, out.data_ptr(), bf16, rows, L, D, hd,
                        static_cast<float>(eps), compat::current_cuda_stream(y.device()));
    return out.unflatten(-1, {heads, hd});
  }
#endif
  TORCH_CHECK(y.is_cpu(), "rms_norm_rope: no kernel for ", y.device(), " in this build");
  rms_norm_rope_cpu(y.data_ptr(), w.data_ptr(), c, s, out.data_ptr(), bf16, rows, L, D, hd,
                    static_cast<float>(eps));
  return out.unflatten(-1, {heads, hd});
}

torch::Tensor channel_rms_norm(const torch::Tensor& x_in, const torch::Tensor& gamma_in,
                               double scale, bool silu) {
  TORCH_CHECK(x_in.dim() >= 2 && is_float_or_bf16(x_in.scalar_type()),
              "channel_rms_norm: expected [B, C, ...] float32 or bf16, got ", x_in.sizes());
  const int64_t B = x_in.size(0), C = x_in.size(1), S = x_in.numel() / std::max<int64_t>(B * C, 1);
  TORCH_CHECK(gamma_in.numel() == C, "channel_rms_norm: gamma must have ", C, " values");
  const auto gamma = gamma_in.to(x_in.device(), torch::kFloat32).contiguous();
  const float* g = gamma.data_ptr<float>();
  const auto sc = static_cast<float>(scale);
  const bool bf16 = x_in.scalar_type() == torch::kBFloat16;
#ifdef KINORA_CUDA
  if (x_in.is_cuda()) {
    const c10::OptionalDeviceGuard on(x_in.device());  // the kernel runs on x's device
    const auto x = x_in.contiguous();
    auto out = torch::empty(x.sizes(), x.options());
    cuda::channel_rms_norm(x.data_ptr(), g, out.data_ptr(), bf16, B, C, S, sc, silu,
                           compat::current_cuda_stream(x.device()));
    return out;
  }
#endif
  TORCH_CHECK(x_in.is_cpu(), "channel_rms_norm: no kernel for ", x_in.device(), " in this build");
  if (channels_innermost(x_in)) {
    auto out = torch::empty_like(x_in);  // the same strides
    const int64_t rows = B * S;
    at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
      const int64_t at = begin * C, n = end - begin;
      if (bf16)
        channel_rows_bf16(reinterpret_cast<const uint16_t*>(x_in.data_ptr<c10::BFloat16>()) + at, g,
                          reinterpret_cast<uint16_t*>(out.data_ptr<c10::BFloat16>()) + at, C, n, sc,
                          silu);
      else
        channel_rows_f32(x_in.data_ptr<float>() + at, g, out.data_ptr<float>() + at, C, n, sc,
                         silu);
    });
    return out;
  }
  const auto x = x_in.contiguous();
  auto out = torch::empty(x.sizes(), x.options());
  auto factors = torch::empty({B, S}, x.options().dtype(torch::kFloat32));
  float* q = factors.data_ptr<float>();
  const auto* xb = bf16 ? reinterpret_cast<const uint16_t*>(x.data_ptr<c10::BFloat16>()) : nullptr;
  auto* ob = bf16 ? reinterpret_cast<uint16_t*>(out.data_ptr<c10::BFloat16>()) : nullptr;
  const float* xf = bf16 ? nullptr : x.data_ptr<float>();
  float* of = bf16 ? nullptr : out.data_ptr<float>();
  // Blocks of positions small enough that their factors stay in the cache.
  constexpr int64_t kBlock = 8192;
  const int64_t blocks = (S + kBlock - 1) / kBlock;
  at::parallel_for(0, B * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t b = k / blocks, i0 = (k % blocks) * kBlock, n = std::min(kBlock, S - i0);
      if (bf16)
        channel_factors_bf16(xb + b * C * S + i0, q + b * S + i0, C, S, n, sc);
      else
        channel_factors_f32(xf + b * C * S + i0, q + b * S + i0, C, S, n, sc);
    }
  });
  at::parallel_for(0, B * C * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t row = k / blocks, b = row / C, i0 = (k % blocks) * kBlock;
      const int64_t n = std::min(kBlock, S - i0), at = row * S + i0;
      if (bf16)
        channel_apply_bf16(xb + at, q + b * S + i0, g[row % C], ob + at, n, silu);
      else
        channel_apply_f32(xf + at, q + b * S + i0, g[row % C], of + at, n, silu);
    }
  });
  return out;
}

torch::Tensor gelu_tanh_bf16_cpu(const torch::Tensor& x_in) {
  TORCH_CHECK(x_in.is_cpu() && x_in.scalar_type() == torch::kBFloat16,
              "gelu_tanh_bf16_cpu: a bf16 tensor on the CPU");
  const auto x = x_in.contiguous();
  auto out = torch::empty_like(x);
  const auto* in = reinterpret_cast<const uint16_t*>(x.data_ptr<c10::BFloat16>());
  auto* o = reinterpret_cast<uint16_t*>(out.data_ptr<c10::BFloat16>());
  at::parallel_for(0, x.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    gelu_tanh_chunk(in + begin, o + begin, end - begin);
  });
  return out;
}

}  // namespace kinora::layers
