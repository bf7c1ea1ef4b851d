// Sampler cases: the network is replaced by the fixtures' fixed stand-in
//   v = tanh(x)·(1 + σ) − 0.5·σ·c   (float32)
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
}

}  // namespace kinora::conformance
