#pragma once
// Small pieces shared by the noise-prediction samplers (internal to the
// schedulers module).
//
// Coefficients are 0-dim float32 tensors combined in diffusers' order of
// operations (its schedulers keep σ as float32 tensors), so that trajectories
// match the Python references to float rounding.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "base/error.h"
#include "schedulers/scheduler.h"

namespace kinora::schedulers::detail {

inline const char* spacing_name(TimestepSpacing s) {
  switch (s) {
    case TimestepSpacing::Leading:
      return "leading";
    case TimestepSpacing::Trailing:
      return "trailing";
    case TimestepSpacing::Linspace:
      break;
  }
  return "linspace";
}

// The SD/SDXL training schedule: 1000 steps, β scaled_linear from 0.00085 to 0.012.
inline constexpr int kTrainSteps = 1000;

inline void check_noise_options(const std::string& name, const ScheduleOptions& o) {
  if (o.steps_offset < 0 || o.steps_offset >= kTrainSteps)
    throw Error(std::string(name)
                    .append(": steps_offset must be from 0 to ")
                    .append(std::to_string(kTrainSteps - 1))
                    .append(", got ")
                    .append(std::to_string(o.steps_offset)));
}

// σ_0 … σ_{N−1} as float32, then the final 0; throws when they are not strictly
// decreasing (more steps than the spacing has distinct training steps).
inline torch::Tensor noise_sigmas(const std::string& name, const std::vector<double>& s,
                                  const std::string& schedule) {
  auto out = torch::empty({static_cast<int64_t>(s.size()) + 1}, torch::kFloat32);
  auto a = out.accessor<float, 1>();
  for (std::size_t i = 0; i < s.size(); ++i) a[static_cast<int64_t>(i)] = static_cast<float>(s[i]);
  a[static_cast<int64_t>(s.size())] = 0.0f;
  for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i)
    if (!(a[i] > a[i + 1]))
      throw Error(std::string(name)
                      .append(": ")
                      .append(std::to_string(s.size()))
                      .append(" steps repeat noise levels with the ")
                      .append(schedule)
                      .append(" schedule of ")
                      .append(std::to_string(kTrainSteps))
                      .append(" training steps; use fewer steps"));
  return out;
}

inline void check_step_index(const Scheduler& s, int i) {
  if (s.num_steps() == 0)
    throw Error(s.name() + ": set_timesteps() must be called before scale_model_input()");
  if (i < 0 || i >= s.num_steps())
    throw Error(s.name() + ": step " + std::to_string(i) + " out of range (0 to " +
                std::to_string(s.num_steps() - 1) + ")");
}

// The Euler samplers' space x = x0 + σ·ε: the model sees x / √(σ² + 1).
inline torch::Tensor euler_scale_input(const torch::Tensor& x, const torch::Tensor& sigma) {
  return x / (sigma.pow(2) + 1).pow(0.5);
}

// x0 from the model's output in the Euler samplers' space: ε → x − σ·ε;
// v → v·(−σ / √(σ² + 1)) + x / (σ² + 1) (the c_out, c_skip of v-prediction).
inline torch::Tensor euler_x0(const torch::Tensor& out, const torch::Tensor& x,
                              const torch::Tensor& sigma, NoisePrediction p) {
  if (p == NoisePrediction::Epsilon) return x - sigma * out;
  return out * (-sigma / (sigma.pow(2) + 1).pow(0.5)) + x / (sigma.pow(2) + 1);
}

// The Euler samplers' starting noise level: the largest σ, or √(σ² + 1) of it
// with leading spacing (diffusers' init_noise_sigma), in float32.
inline double euler_init_noise_sigma(const torch::Tensor& sigmas, TimestepSpacing spacing) {
  const auto m = sigmas.max();
  if (spacing != TimestepSpacing::Leading) return m.item<double>();
  return (m.pow(2) + 1).pow(0.5).item<double>();
}

// Standard normal noise for ancestral steps: ScheduleOptions::noise when given,
// else drawn on the CPU from a generator seeded with ScheduleOptions::seed.
class NoiseSource {
 public:
  void configure(const ScheduleOptions& o) {
    fn_ = o.noise;
    seed_ = o.seed;
  }
  void restart() { gen_ = at::make_generator<at::CPUGeneratorImpl>(seed_); }

  // Noise shaped like `like` (float32, on its device) for step i.
  torch::Tensor draw(const std::string& name, const torch::Tensor& like, int i) {
    torch::Tensor n;
    if (fn_) {
      n = fn_(like, i);
      if (!n.defined() || n.sizes() != like.sizes())
        throw Error(name + ": the noise given for step " + std::to_string(i) + " has shape " +
                    (n.defined() ? c10::str(n.sizes()) : std::string("(none)")) +
                    ", expected the sample's " + c10::str(like.sizes()));
    } else {
      n = torch::randn(like.sizes(), gen_, torch::TensorOptions().dtype(torch::kFloat32));
    }
    return n.to(like.device(), torch::kFloat32);
  }

 private:
  std::function<torch::Tensor(const torch::Tensor&, int)> fn_;
  uint64_t seed_ = 0;
  at::Generator gen_;
};

}  // namespace kinora::schedulers::detail
