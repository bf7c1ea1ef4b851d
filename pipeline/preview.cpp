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

namespace kinora::pipeline {
namespace {
constexpr double kFluxScale = 0.3611, kFluxShift = 0.1159;
torch::Tensor flux_scaled_factors() {
  static const float f[16][3] = {
      {-0.0346f, 0.0244f, 0.0681f},  {0.0034f, 0.0210f, 0.0687f},    {0.0275f, -0.0668f, -0.0433f},
      {-0.0174f, 0.0160f, 0.0617f},  {0.0859f, 0.0721f, 0.0329f},    {0.0004f, 0.0383f, 0.0115f},
      {0.0405f, 0.0861f, 0.0915f},   {-0.0236f, -0.0185f, -0.0259f}, {-0.0245f, 0.0250f, 0.1180f},
      {0.1008f, 0.0755f, -0.0421f},  {-0.0515f, 0.0201f, 0.0011f},   {0.0428f, -0.0012f, -0.0036f},
      {0.0817f, 0.0765f, 0.0749f},   {-0.1264f, -0.0522f, -0.1103f}, {-0.0280f, -0.0881f, -0.0499f},
      {-0.1262f, -0.0982f, -0.0778f}};
  return torch::from_blob(const_cast<float*>(&f[0][0]), {16, 3}, torch::kFloat32).clone();
}
}  // namespace

torch::Tensor flux_preview_factors() {
  return flux_scaled_factors() * kFluxScale;
}

torch::Tensor flux_preview_bias() {
  // rgb = Fᵀ·(z − shift)·scale + b = (scale·F)ᵀ·z + (b − scale·shift·Σ_c F).
  return torch::tensor({-0.0329f, -0.0718f, -0.0851f}) -
         kFluxScale * kFluxShift * flux_scaled_factors().sum(0);
}
}  // namespace kinora::pipeline
