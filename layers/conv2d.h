#pragma once
// The pieces the 2-D convolutional models (the SDXL UNet, the FLUX and SDXL
// autoencoders) share: modules that only hold parameters under the
// reference's names, and the computation written out with the dtype it runs in.
#include <torch/torch.h>

namespace kinora::layers {

// What a block's forward needs besides its input: the dtype convolutions run
// in (the precision's matmul dtype; Linear layers carry their own) and the
// GroupNorm group count.
struct ConvContext {
  torch::ScalarType dtype = torch::kFloat32;
  int64_t groups = 32;
};

inline torch::nn::Conv2d conv2d(int64_t in, int64_t out, int64_t k) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k));
}

// `c` applied to x in ctx.dtype (its parameters converted as they are used),
// padded by k/2 unless `padding` is given; the result stays in ctx.dtype.
inline torch::Tensor run_conv2d(const torch::nn::Conv2d& c, const torch::Tensor& x,
                                const ConvContext& ctx, int64_t stride = 1, int64_t padding = -1) {
  const int64_t k = c->weight.size(-1);
  return torch::conv2d(x.to(ctx.dtype), c->weight.to(ctx.dtype), c->bias.to(ctx.dtype), stride,
                       padding < 0 ? k / 2 : padding);
}

// GroupNorm in float32 whatever the input (generative-models' GroupNorm32),
// its affine parameters as stored.
struct GroupNorm32Impl : torch::nn::Module {
  GroupNorm32Impl(int64_t ch, double epsilon) : eps(epsilon) {
    weight = register_parameter("weight", torch::ones({ch}), false);
    bias = register_parameter("bias", torch::zeros({ch}), false);
  }
  torch::Tensor forward(const torch::Tensor& x, const ConvContext& ctx) {
    return torch::group_norm(x.to(torch::kFloat32), ctx.groups, weight.to(torch::kFloat32),
                             bias.to(torch::kFloat32), eps);
  }
  double eps;
  torch::Tensor weight, bias;
};
TORCH_MODULE(GroupNorm32);

}  // namespace kinora::layers
