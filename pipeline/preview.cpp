#include "pipeline/preview.h"

namespace kinora::pipeline {

torch::Tensor wan21_preview_factors() {
  static const float f[16][3] = {
      {-0.1299f, -0.1692f, 0.2932f},  {0.0671f, 0.0406f, 0.0442f},  {0.3568f, 0.2548f, 0.1747f},
      {0.0372f, 0.2344f, 0.1420f},    {0.0313f, 0.0189f, -0.0328f}, {0.0296f, -0.0956f, -0.0665f},
      {-0.3477f, -0.4059f, -0.2925f}, {0.0166f, 0.1902f, 0.1975f},  {-0.0412f, 0.0267f, -0.1364f},
      {-0.1293f, 0.0740f, 0.1636f},   {0.0680f, 0.3019f, 0.1128f},  {0.0032f, 0.0581f, 0.0639f},
      {-0.1251f, 0.0927f, 0.1699f},   {0.0060f, -0.0633f, 0.0005f}, {0.3477f, 0.2275f, 0.2950f},
      {0.1984f, 0.0913f, 0.1861f}};
  return torch::from_blob(const_cast<float*>(&f[0][0]), {16, 3}, torch::kFloat32).clone();
}

torch::Tensor wan21_preview_bias() {
  return torch::tensor({-0.1835f, -0.0868f, -0.3360f});
}

torch::Tensor latent_preview(const torch::Tensor& latent, const torch::Tensor& factors,
                             const torch::Tensor& bias, const std::vector<double>& mean,
                             const std::vector<double>& std) {
  torch::NoGradGuard g;
  const auto z = latent.detach().to(torch::kCPU, torch::kFloat32);  // [C, T, h, w]
  const auto m = torch::tensor(mean, torch::kFloat32).view({-1, 1, 1, 1});
  const auto s = torch::tensor(std, torch::kFloat32).view({-1, 1, 1, 1});
  const auto raw = (z * s + m).permute({1, 2, 3, 0});   // [T, h, w, C]
  const auto rgb = torch::matmul(raw, factors) + bias;  // [T, h, w, 3] in about [−1, 1]
  return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch::kUInt8);
}

}  // namespace kinora::pipeline
