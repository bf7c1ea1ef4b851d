#pragma once
// What Euler and Euler ancestral for noise-prediction models share
// (diffusers' EulerDiscreteScheduler and EulerAncestralDiscreteScheduler):
// x = x0 + σ·ε; the schedule is the training table's σ at the spaced
// timesteps (linear interpolation), then 0; the model sees x / √(σ² + 1) and
// predicts ε or v; the sampler starts from noise·init_noise_sigma.
#include "schedulers/noise_math.h"
#include "schedulers/sigma_schedules.h"

namespace kinora::schedulers::detail {

class EulerBase : public Scheduler {
 public:
  Space space() const override { return Space::Noise; }
  double init_noise_sigma() const override { return init_noise_sigma_; }
  torch::Tensor scale_model_input(const torch::Tensor& x, int i) const override {
    check_step_index(*this, i);
    return euler_scale_input(x, sigmas_[i]);
  }

 protected:
  void build_schedule(int steps, const ScheduleOptions& o) override {
    check_noise_options(name(), o);
    const auto table = scaled_linear_sigmas(kTrainSteps);
    const auto t = euler_timesteps(steps, o.spacing, o.steps_offset, kTrainSteps);
    std::vector<double> s;
    for (float v : t) s.push_back(interp_at(v, table));
    sigmas_ = noise_sigmas(name(), s, spacing_name(o.spacing));
    timesteps_ = torch::tensor(t, torch::kFloat32);
    prediction_ = o.prediction;
    init_noise_sigma_ = euler_init_noise_sigma(sigmas_, o.spacing);
  }
  // The denoised sample at step i from the model's output there.
  torch::Tensor x0(const torch::Tensor& out, int i, const torch::Tensor& x) const {
    return euler_x0(out, x, sigmas_[i], prediction_);
  }

 private:
  NoisePrediction prediction_ = NoisePrediction::Epsilon;
  double init_noise_sigma_ = 1.0;
};

}  // namespace kinora::schedulers::detail
