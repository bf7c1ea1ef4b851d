#pragma once
// Small pieces shared by the flow solvers (internal to the schedulers module).
//
// Coefficients are computed on 0-dim float32 tensors in the reference's order of
// operations, so that solver trajectories match the Python references to float
// rounding rather than to the accumulated difference of float64 coefficients.
#include <torch/torch.h>

#include <vector>

namespace kinora::schedulers::detail {

inline torch::Tensor f32(double v) {
  return torch::scalar_tensor(v, torch::kFloat32);
}

// α = 1 − σ, λ = ln α − ln σ (log-SNR of the flow path), as 0-dim float32.
inline torch::Tensor alpha_of(const torch::Tensor& sigma) {
  return 1 - sigma;
}
inline torch::Tensor lambda_of(const torch::Tensor& sigma) {
  return torch::log(alpha_of(sigma)) - torch::log(sigma);
}

// Wan's solvers: float32 sigmas with the final 0, int64 timesteps truncated from
// the float64 σ·1000 (the first UniPC step therefore sees 999).
inline void wan_schedule(const std::vector<double>& sigmas, torch::Tensor& sigmas_out,
                         torch::Tensor& timesteps_out) {
  const auto n = static_cast<int64_t>(sigmas.size());
  sigmas_out = torch::empty({n + 1}, torch::kFloat32);
  timesteps_out = torch::empty({n}, torch::kInt64);
  auto s = sigmas_out.accessor<float, 1>();
  auto t = timesteps_out.accessor<int64_t, 1>();
  for (int64_t i = 0; i < n; ++i) {
    s[i] = static_cast<float>(sigmas[static_cast<std::size_t>(i)]);
    t[i] = static_cast<int64_t>(sigmas[static_cast<std::size_t>(i)] * 1000.0);
  }
  s[n] = 0.0f;
}

// Two-entry history of x0 predictions, newest last.
struct History {
  torch::Tensor older, newest;
  void push(torch::Tensor m) {
    older = std::move(newest);
    newest = std::move(m);
  }
  void clear() { older = newest = torch::Tensor(); }
};

}  // namespace kinora::schedulers::detail
