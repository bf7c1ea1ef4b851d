#include "layers/conditioning.h"

#include "base/error.h"

namespace kinora::layers {

namespace {
torch::Tensor to_device(const torch::Tensor& t, torch::Device device) {
  return t.defined() ? t.to(device) : t;
}
// [B, L, …] padded with zeros along dim 1 to `len`.
torch::Tensor pad_tokens(const torch::Tensor& t, int64_t len) {
  if (!t.defined() || t.size(1) == len) return t;
  auto shape = t.sizes().vec();
  shape[1] = len - t.size(1);
  return torch::cat({t, torch::zeros(shape, t.options())}, 1);
}
torch::Tensor cat_rows(const torch::Tensor& a, const torch::Tensor& b, const char* what) {
  if (a.defined() != b.defined())
    throw Error(std::string("conditioning: '") + what + "' given for one prompt only");
  return a.defined() ? torch::cat({a, b}) : a;
}
}  // namespace

Conditioning Conditioning::to(torch::Device device) const {
  return {to_device(context, device), to_device(pooled, device), to_device(mask, device),
          to_device(guidance, device)};
}

Conditioning Conditioning::cat(const Conditioning& a, const Conditioning& b) {
  const int64_t len = std::max(a.context.size(1), b.context.size(1));
  Conditioning c;
  c.context = torch::cat({pad_tokens(a.context, len), pad_tokens(b.context, len)});
  c.mask = cat_rows(pad_tokens(a.mask, len), pad_tokens(b.mask, len), "mask");
  c.pooled = cat_rows(a.pooled, b.pooled, "pooled");
  c.guidance = cat_rows(a.guidance, b.guidance, "guidance");
  return c;
}

}  // namespace kinora::layers
