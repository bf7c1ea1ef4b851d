#include "layers/linear.h"

#include "base/error.h"

namespace kinora::layers {

Precision parse_precision(const std::string& s) {
  if (s == "fp32" || s == "f32" || s == "float32") return Precision::F32;
  if (s == "bf16" || s == "bfloat16") return Precision::BF16;
  throw Error("unknown precision '" + s + "' (expected fp32 or bf16)");
}

const char* precision_name(Precision p) {
  return p == Precision::BF16 ? "bf16" : "fp32";
}

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias)
    : in_features(in), out_features(out) {
  weight = register_parameter("weight", torch::empty({out, in}), /*requires_grad=*/false);
  if (with_bias) bias = register_parameter("bias", torch::zeros({out}), false);
}

torch::Tensor LinearImpl::weight_as(torch::ScalarType dtype) const {
  torch::Tensor w = fp8 ? io::widen_fp8(weight, *fp8, dtype) : weight.to(dtype);
  if (scale) w = w * *scale;
  return w;
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  const auto dt = matmul_dtype(precision);
  const auto w = weight_as(dt);
  return torch::nn::functional::linear(x.to(dt), w, bias.defined() ? bias.to(dt) : torch::Tensor());
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
