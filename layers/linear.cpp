#include "layers/linear.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/DeviceGuard.h>
#include <torch/cuda.h>

#include <cstdint>

#include "base/error.h"
#include "base/runtime.h"
#include "layers/fp8.h"
#include "layers/ops.h"

namespace kinora::layers {

Precision parse_precision(const std::string& s) {
  if (s == "fp32" || s == "f32" || s == "float32") return Precision::F32;
  if (s == "bf16" || s == "bfloat16") return Precision::BF16;
  throw Error("unknown precision '" + s + "' (expected fp32 or bf16)");
}

const char* precision_name(Precision p) {
  return p == Precision::BF16 ? "bf16" : "fp32";
}

bool cpu_flags_have_native_bf16(const std::string& flags_line) {
  const auto flags = cpu_flag_words(flags_line);
  return flags.count("avx512_bf16") > 0 || flags.count("amx_bf16") > 0;
}

bool cpu_has_native_bf16() {
  static const bool has = cpu_flags_have_native_bf16(cpu_flags_line());
  return has;
}

bool cuda_has_native_bf16(const torch::Device& device) {
  if (!device.is_cuda() || !torch::cuda::is_available()) return false;
  // ATen's CUDA hooks exist in every build (a CPU-only one answers false); this
  // one reads the device's compute capability: 8.0 (Ampere) or later.
  c10::OptionalDeviceGuard guard;
  if (device.has_index()) guard.reset_device(device);
  return at::detail::getCUDAHooks().supportsBFloat16ConvolutionWithCuDNNv8();
}

namespace {
bool computes_bf16(const torch::Device& device) {
  return device.is_cuda() ? cuda_has_native_bf16(device) : cpu_has_native_bf16();
}
}  // namespace

Precision resolve_precision(const std::string& s, const torch::Device& device) {
  if (s == "auto") return computes_bf16(device) ? Precision::BF16 : Precision::F32;
  return parse_precision(s);
}

std::string precision_warning(Precision p, const torch::Device& device) {
  if (p != Precision::BF16 || computes_bf16(device)) return "";
  if (device.is_cuda())
    return "bf16 on a GPU before Ampere (compute capability under 8.0) has no bf16 units and runs "
           "slower than fp32; precision \"auto\" or \"fp32\" picks fp32 here";
  return "bf16 on a CPU without bf16 arithmetic (AVX512-BF16 or AMX) runs many times slower than "
         "fp32; precision \"auto\" or \"fp32\" picks fp32 here";
}

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias)
    : in_features(in), out_features(out) {
  weight = register_parameter("weight", torch::empty({out, in}), /*requires_grad=*/false);
  if (with_bias) bias = register_parameter("bias", torch::zeros({out}), false);
}

torch::Tensor LinearImpl::weight_as(torch::ScalarType dtype) const {
  return weight_rows_as(dtype, 0, out_features);
}

torch::Tensor LinearImpl::weight_rows_as(torch::ScalarType dtype, int64_t row0,
                                         int64_t rows) const {
  const auto stored = row0 == 0 && rows == out_features ? weight : weight.narrow(0, row0, rows);
  torch::Tensor w = fp8 ? io::widen_fp8(stored, *fp8, dtype) : stored.to(dtype);
  if (scale) w = w * *scale;
  return w;
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  const auto dt = matmul_dtype(precision);
  const auto xd = x.to(dt);
  torch::Tensor y;
  if (fp8_matmul && fp8 == io::DType::F8_E4M3) {
    y = fp8_linear(xd, weight, scale.value_or(1.0f), bias, dt);
  } else if (const auto w = weight_as(dt); bias.defined() && xd.dim() > 2 && xd.is_contiguous()) {
    // The bias inside the matmul (LibTorch 1.13 adds it in a second pass for
    // inputs of more than two dimensions).
    auto shape = xd.sizes().vec();
    shape.back() = out_features;
    y = torch::addmm(bias.to(dt), xd.view({-1, in_features}), w.t()).view(shape);
  } else {
    y = torch::nn::functional::linear(xd, w, bias.defined() ? bias.to(dt) : torch::Tensor());
  }
  // Adapters are made where the model was (a text encoder's on the CPU, which
  // visits a GPU to encode): used where the input is.
  const auto dev = xd.device();
  for (const auto& a : adapters) {
    auto part = a.delta.defined() ? torch::matmul(xd, a.delta.to(dev, dt).t())
                                  : torch::matmul(torch::matmul(xd, a.down.to(dev, dt).t()),
                                                  a.up.to(dev, dt).t());
    if (a.bias.defined()) part = part + a.bias.to(dev, dt);
    y.narrow(-1, a.row0, a.rows).add_(part, a.scale);
  }
  return y;
}

bool LinearImpl::plain() const {
  return adapters.empty() && !(fp8_matmul && fp8 == io::DType::F8_E4M3);
}

namespace {
// x [..., in] times w [out, in] transposed, plus b [out] (if defined), then the
// tanh-GELU if `gelu`: one matmul over x's rows.
torch::Tensor product(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                      bool gelu) {
  auto shape = x.sizes().vec();
  shape.back() = w.size(0);
  const auto rows = x.reshape({-1, x.size(-1)});
  if (gelu && b.defined() && rows.is_cuda() && !torch::GradMode::is_enabled()) {
    // cuBLASLt's kernels may take the epilogue's bias as 16-byte aligned (a
    // slice of a bias need not be).
    const bool aligned = reinterpret_cast<std::uintptr_t>(b.data_ptr()) % 16 == 0;
    return at::_addmm_activation(aligned ? b : b.clone(), rows, w.t(), 1, 1, /*use_gelu=*/true)
        .view(shape);
  }
  const auto y = (b.defined() ? torch::addmm(b, rows, w.t()) : torch::mm(rows, w.t())).view(shape);
  return gelu ? gelu_tanh(y) : y;
}
}  // namespace

torch::Tensor LinearImpl::forward_part(const torch::Tensor& x, int64_t row0, int64_t rows,
                                       bool gelu) {
  if (!plain()) {
    const auto y = forward(x).narrow(-1, row0, rows);
    return gelu ? gelu_tanh(y) : y;
  }
  const auto dt = matmul_dtype(precision);
  return product(x.to(dt), weight_rows_as(dt, row0, rows),
                 bias.defined() ? bias.narrow(0, row0, rows).to(dt) : bias, gelu);
}

torch::Tensor LinearImpl::forward_gelu_tanh(const torch::Tensor& x, int64_t row0, int64_t rows) {
  return forward_part(x, row0, rows < 0 ? out_features - row0 : rows, true);
}

torch::Tensor LinearImpl::forward_rows(const torch::Tensor& x, int64_t row0, int64_t rows) {
  return forward_part(x, row0, rows, false);
}

torch::Tensor LinearImpl::forward_cat(const std::vector<torch::Tensor>& parts) {
  TORCH_CHECK(!parts.empty(), "Linear: no input parts");
  int64_t width = 0;
  for (const auto& part : parts) width += part.size(-1);
  TORCH_CHECK(width == in_features, "Linear: the parts have ", width, " features, not ",
              in_features);
  const auto dt = matmul_dtype(precision);
  // LibTorch's oneDNN bf16 matmul on the CPU copies a weight's column slice
  // whole (it takes only contiguous or transposed operands): there the
  // concatenation of the inputs costs less.
  if (!plain() || (parts.front().is_cpu() && dt == torch::kBFloat16))
    return forward(torch::cat(parts, -1));
  const auto w = weight_as(dt);
  torch::Tensor y;
  int64_t col = 0;
  for (const auto& part : parts) {
    const int64_t k = part.size(-1);
    const auto rows = part.to(dt).reshape({-1, k});
    const auto wt = w.narrow(1, col, k).t();  // [k, out], read in place
    if (!y.defined())
      y = bias.defined() ? torch::addmm(bias.to(dt), rows, wt) : torch::mm(rows, wt);
    else
      y.addmm_(rows, wt);
    col += k;
  }
  auto shape = parts.front().sizes().vec();
  shape.back() = out_features;
  return y.view(shape);
}

void set_trainable(torch::nn::Module& root, bool trainable) {
  for (auto& p : root.parameters(/*recurse=*/true)) p.set_requires_grad(trainable);
}

void set_precision(torch::nn::Module& root, Precision p) {
  if (auto* l = dynamic_cast<LinearImpl*>(&root)) l->precision = p;
  for (const auto& m : root.modules(/*include_self=*/false))
    if (auto* l = dynamic_cast<LinearImpl*>(m.get())) l->precision = p;
}

}  // namespace kinora::layers
