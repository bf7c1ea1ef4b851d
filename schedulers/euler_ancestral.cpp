// Euler ancestral for noise-prediction models: an Euler step down to
// σ_down = σ_{i+1}²/σ_i, then fresh noise of σ_up = √(σ_{i+1}²(σ_i² − σ_{i+1}²)/σ_i²)
// (σ_down² + σ_up² = σ_{i+1}²). Schedule, input scaling and x0 as Euler's.
// Reference: diffusers' EulerAncestralDiscreteScheduler, float32 as there; the
// noise is drawn at every step, the last one's (σ_up = 0) included.
#include "schedulers/noise_math.h"
#include "schedulers/sigma_schedules.h"
#include "schedulers/solvers.h"

namespace kinora::schedulers {
namespace {

class EulerAncestral final : public Scheduler {
 public:
  std::string name() const override { return "euler_ancestral"; }
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
    noise_.configure(o);
  }

  void reset_history() override { noise_.restart(); }

  torch::Tensor solve(const torch::Tensor& out, int i, const torch::Tensor& x) override {
    const auto sigma = sigmas_[i];
    const auto x0 = detail::euler_x0(out, x, sigma, prediction_);
    const auto sigma_from = sigmas_[i], sigma_to = sigmas_[i + 1];
    const auto sigma_up =
        (sigma_to.pow(2) * (sigma_from.pow(2) - sigma_to.pow(2)) / sigma_from.pow(2)).pow(0.5);
    const auto sigma_down = (sigma_to.pow(2) - sigma_up.pow(2)).pow(0.5);
    const auto derivative = (x - x0) / sigma;
    const auto dt = sigma_down - sigma;
    const auto prev = x + derivative * dt;
    return prev + noise_.draw(name(), x, i) * sigma_up;
  }

 private:
  NoisePrediction prediction_ = NoisePrediction::Epsilon;
  double init_noise_sigma_ = 1.0;
  detail::NoiseSource noise_;
};
}  // namespace

std::unique_ptr<Scheduler> make_euler_ancestral() {
  return std::make_unique<EulerAncestral>();
}

}  // namespace kinora::schedulers
