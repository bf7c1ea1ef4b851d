// DPM-Solver++ 2M for noise-prediction models (Lu et al. 2022): multistep,
// order 2 (midpoint), x0-prediction, first step and last step of order 1,
// final σ = 0. The sample is the model's input x = α·x0 + σ_vp·ε with
// α = 1/√(σ² + 1), σ_vp = σ·α (init_noise_sigma 1, no input scaling).
// Sigmas: the training table's at the spaced timesteps, or (the _karras
// variant) Karras et al.'s ρ = 7 ramp between the table's ends, the timesteps
// then being σ's fractional training step, rounded. Reference: diffusers'
// DPMSolverMultistepScheduler (dpmsolver++, midpoint, lower_order_final,
// final_sigmas_type zero), float32 as there.
#include <cmath>

#include "schedulers/noise_math.h"
#include "schedulers/sigma_schedules.h"
#include "schedulers/solvers.h"

namespace kinora::schedulers {
namespace {

// (α_t, σ_t) of the VP path at VE noise level σ, as 0-dim float32.
std::pair<torch::Tensor, torch::Tensor> alpha_sigma(const torch::Tensor& sigma) {
  const auto alpha_t = (sigma.pow(2) + 1).pow(0.5).reciprocal();
  return {alpha_t, sigma * alpha_t};
}
torch::Tensor lambda_of(const std::pair<torch::Tensor, torch::Tensor>& as) {
  return torch::log(as.first) - torch::log(as.second);
}

class DpmSolverPP2M final : public Scheduler {
 public:
  explicit DpmSolverPP2M(bool karras) : karras_(karras) {}

  std::string name() const override { return karras_ ? "dpmpp_2m_karras" : "dpmpp_2m"; }
  Space space() const override { return Space::Noise; }
  torch::Tensor scale_model_input(const torch::Tensor& x, int i) const override {
    detail::check_step_index(*this, i);
    return x;  // the sample is already the model's input
  }

 protected:
  void build_schedule(int steps, const ScheduleOptions& o) override {
    detail::check_noise_options(name(), o);
    const auto table = scaled_linear_sigmas(detail::kTrainSteps);
    std::vector<double> s;
    std::vector<int64_t> t;
    if (karras_) {
      // The spacing plays no part: the ramp spans the whole table.
      s = karras_sigmas(table.front(), table.back(), steps);
      std::vector<float> log_sigmas;
      for (float v : table) log_sigmas.push_back(static_cast<float>(std::log(v)));
      for (double v : s)
        t.push_back(static_cast<int64_t>(std::nearbyint(sigma_to_t(v, log_sigmas))));
    } else {
      t = dpm_timesteps(steps, o.spacing, o.steps_offset, detail::kTrainSteps);
      for (int64_t v : t) s.push_back(interp_at(static_cast<double>(v), table));
    }
    sigmas_ = detail::noise_sigmas(
        name(), s, karras_ ? std::string("Karras") : std::string(detail::spacing_name(o.spacing)));
    timesteps_ = torch::tensor(t, torch::kInt64);
    prediction_ = o.prediction;
  }

  void reset_history() override {
    older_ = newest_ = torch::Tensor();
    lower_order_nums_ = 0;
  }

  torch::Tensor solve(const torch::Tensor& out, int i, const torch::Tensor& x) override {
    // The model's output as an x0 prediction.
    const auto [alpha_s0, sigma_s0] = alpha_sigma(sigmas_[i]);
    auto m0 = prediction_ == NoisePrediction::Epsilon ? (x - sigma_s0 * out) / alpha_s0
                                                      : alpha_s0 * x - sigma_s0 * out;
    older_ = std::move(newest_);
    newest_ = m0;

    const auto st = alpha_sigma(sigmas_[i + 1]), s0 = alpha_sigma(sigmas_[i]);
    const auto& [alpha_t, sigma_t] = st;
    const auto h = lambda_of(st) - lambda_of(s0);
    const auto coef = alpha_t * (torch::exp(-h) - 1.0);
    // σ_{i+1} = 0 on the last step: λ = ∞, and the update is the x0 prediction.
    auto x_t = (sigma_t / s0.second) * x - coef * m0;
    const bool last = i == steps_ - 1;
    if (lower_order_nums_ >= 1 && !last) {
      const auto s1 = alpha_sigma(sigmas_[i - 1]);
      const auto r0 = (lambda_of(s0) - lambda_of(s1)) / h;
      const auto D1 = (1.0 / r0) * (m0 - older_);
      x_t = x_t - 0.5 * coef * D1;
    }
    lower_order_nums_ = std::min(lower_order_nums_ + 1, 2);
    return x_t;
  }

 private:
  bool karras_;
  NoisePrediction prediction_ = NoisePrediction::Epsilon;
  torch::Tensor older_, newest_;  // x0 predictions, newest last
  int lower_order_nums_ = 0;
};
}  // namespace

std::unique_ptr<Scheduler> make_dpmpp_2m() {
  return std::make_unique<DpmSolverPP2M>(false);
}
std::unique_ptr<Scheduler> make_dpmpp_2m_karras() {
  return std::make_unique<DpmSolverPP2M>(true);
}

}  // namespace kinora::schedulers
