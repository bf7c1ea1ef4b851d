// Euler for noise-prediction models (SD, SDXL): x = x0 + σ·ε, the model sees
// x / √(σ² + 1) and predicts ε or v; x_{i+1} = x_i + (x_i − x0)/σ_i · (σ_{i+1} − σ_i).
// σ_i is the training table's σ at the spaced timesteps, then 0. Reference:
// diffusers' EulerDiscreteScheduler (linear interpolation, discrete
// timesteps, no churn), float32 as there.
#include "schedulers/noise_math.h"
#include "schedulers/sigma_schedules.h"
#include "schedulers/solvers.h"

namespace kinora::schedulers {
namespace {

class EulerDiscrete final : public Scheduler {
 public:
  std::string name() const override { return "euler"; }
  Space space() const override { return Space::Noise; }
  double init_noise_sigma() const override { return init_noise_sigma_; }
  torch::Tensor scale_model_input(const torch::Tensor& x, int i) const override {
    detail::check_step_index(*this, i);
    return detail::euler_scale_input(x, sigmas_[i]);
  }

 protected:
  void build_schedule(int steps, const ScheduleOptions& o) override {
    detail::check_noise_options(name(), o);
    const auto table = scaled_linear_sigmas(detail::kTrainSteps);
    const auto t = euler_timesteps(steps, o.spacing, o.steps_offset, detail::kTrainSteps);
    std::vector<double> s;
    for (float v : t) s.push_back(interp_at(v, table));
    sigmas_ = detail::noise_sigmas(name(), s, detail::spacing_name(o.spacing));
    timesteps_ = torch::tensor(t, torch::kFloat32);
    prediction_ = o.prediction;
    init_noise_sigma_ = detail::euler_init_noise_sigma(sigmas_, o.spacing);
  }

  void reset_history() override {}

  torch::Tensor solve(const torch::Tensor& out, int i, const torch::Tensor& x) override {
    const auto sigma = sigmas_[i];
    const auto x0 = detail::euler_x0(out, x, sigma, prediction_);
    const auto derivative = (x - x0) / sigma;
    const auto dt = sigmas_[i + 1] - sigma;
    return x + derivative * dt;
  }

 private:
  NoisePrediction prediction_ = NoisePrediction::Epsilon;
  double init_noise_sigma_ = 1.0;
};
}  // namespace

std::unique_ptr<Scheduler> make_euler() {
  return std::make_unique<EulerDiscrete>();
}

}  // namespace kinora::schedulers
