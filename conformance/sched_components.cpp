// Sampler cases: the network is replaced by the fixtures' fixed stand-in
//   flow (Wan, FLUX):  v = tanh(x)·(1 + σ) − 0.5·σ·c   (float32)
//   noise (SDXL):      ε = tanh(x_in)·(1 + 0.1·σ), x_in = scale_model_input(x)
// so that the solver alone is compared. trajectory[i] is the sample after step i.
#include "base/error.h"
#include "conformance/components.h"
#include "schedulers/registry.h"
#include "schedulers/sigma_schedules.h"

namespace kinora::conformance {
namespace {

torch::Tensor stand_in(const torch::Tensor& x, const torch::Tensor& c, const torch::Tensor& sigma) {
  return torch::tanh(x) * (1 + sigma) - 0.5 * sigma * c;
}

template <typename T>
T config_value(const Case& k, const char* key) {
  if (!k.config.contains(key)) fail_file(k.path, std::string("case config has no '") + key + "'");
  return k.config.at(key).get<T>();
}

Outputs run_trajectory(const Case& k, schedulers::Scheduler& s) {
  auto x = k.input("x").to(torch::kFloat32);
  const auto c = k.input("c").to(torch::kFloat32);
  std::vector<torch::Tensor> trajectory;
  for (int i = 0; i < s.num_steps(); ++i) {
    const auto sigma = s.sigmas()[i];
    x = s.step(stand_in(x, c, sigma), i, x);
    trajectory.push_back(x);
  }
  return {{"trajectory", torch::stack(trajectory)}};
}

Outputs run_wan(const Case& k, const char* sampler) {
  auto s = schedulers::make_scheduler(sampler);
  s->set_timesteps(config_value<int>(k, "steps"),
                   {.shift = config_value<double>(k, "shift"), .mu = std::nullopt});
  auto out = run_trajectory(k, *s);
  out["timesteps"] = s->timesteps();
  out["sigmas"] = s->sigmas();
  return out;
}

Outputs run_flux(const Case& k) {
  auto s = schedulers::make_scheduler("flow_euler");
  schedulers::ScheduleOptions o;
  if (config_value<bool>(k, "shift"))
    o.mu = schedulers::flux_mu(config_value<int64_t>(k, "image_seq_len"),
                               config_value<double>(k, "base_shift"),
                               config_value<double>(k, "max_shift"));
  s->set_timesteps(config_value<int>(k, "steps"), o);
  auto out = run_trajectory(k, *s);
  out["timesteps"] = s->sigmas();  // FLUX's "timesteps" are its t ∈ [0, 1], i.e. the sigmas
  return out;
}

// SDXL's samplers (diffusers' config: scaled_linear β 0.00085 … 0.012, ε,
// leading spacing, steps_offset 1), from x = noise · init_noise_sigma.
Outputs run_sdxl(const Case& k, const char* sampler) {
  auto s = schedulers::make_scheduler(sampler, schedulers::Space::Noise);
  schedulers::ScheduleOptions o;
  o.prediction = schedulers::NoisePrediction::Epsilon;
  o.spacing = schedulers::TimestepSpacing::Leading;
  o.steps_offset = 1;
  if (k.inputs.count("step_noise")) {
    const auto step_noise = k.input("step_noise").to(torch::kFloat32);
    o.noise = [step_noise](const torch::Tensor&, int i) { return step_noise[i]; };
  }
  // The diffusers config carries no step count: the recorded trajectory's length is it.
  const auto steps = k.config.contains("steps") ? config_value<int>(k, "steps")
                     : k.outputs.count("trajectory")
                         ? static_cast<int>(k.outputs.at("trajectory").size(0))
                         : 0;
  s->set_timesteps(steps, o);
  const auto init = torch::full({1}, s->init_noise_sigma(), torch::kFloat32);
  auto x = k.input("noise").to(torch::kFloat32) * init[0];
  std::vector<torch::Tensor> trajectory;
  for (int i = 0; i < s->num_steps(); ++i) {
    const auto sigma = s->sigmas()[i];
    const auto eps = torch::tanh(s->scale_model_input(x, i)) * (1 + 0.1 * sigma);
    x = s->step(eps, i, x);
    trajectory.push_back(x);
  }
  return {{"timesteps", s->timesteps()},
          {"sigmas", s->sigmas()},
          {"init_noise_sigma", init},
          {"trajectory", torch::stack(trajectory)},
          {"sample", x}};
}

}  // namespace

void add_scheduler_components(std::map<std::string, Component>& out) {
  out["sched.wan_unipc"] = {"sched.wan_unipc", false, [](const Case& k, const auto&, const auto&) {
                              return run_wan(k, "flow_unipc");
                            }};
  out["sched.wan_dpmpp"] = {"sched.wan_dpmpp", false, [](const Case& k, const auto&, const auto&) {
                              return run_wan(k, "flow_dpmpp_2m");
                            }};
  out["sched.flux_euler"] = {"sched.flux_euler", false,
                             [](const Case& k, const auto&, const auto&) { return run_flux(k); }};
  out["sched.sdxl_euler"] = {
      "sched.sdxl_euler", false,
      [](const Case& k, const auto&, const auto&) { return run_sdxl(k, "euler"); }};
  out["sched.sdxl_euler_a"] = {
      "sched.sdxl_euler_a", false,
      [](const Case& k, const auto&, const auto&) { return run_sdxl(k, "euler_ancestral"); }};
  out["sched.sdxl_dpmpp_karras"] = {
      "sched.sdxl_dpmpp_karras", false,
      [](const Case& k, const auto&, const auto&) { return run_sdxl(k, "dpmpp_2m_karras"); }};
}

}  // namespace kinora::conformance
