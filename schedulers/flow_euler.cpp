// Flow-matching Euler: x_{i+1} = x_i + (σ_{i+1} − σ_i)·v.
// Schedule: σ_i = 1 − i/N (i < N), then 0, shifted either statically (Wan's
// shift) or exponentially with μ (FLUX's resolution-dependent shift; no shift
// for schnell). Reference: BFL flux/sampling.py get_schedule() and denoise(),
// computed in float32 as there.
#include <cmath>

#include "schedulers/sigma_schedules.h"
#include "schedulers/solvers.h"

namespace kinora::schedulers {
namespace {

class FlowEuler final : public Scheduler {
 public:
  std::string name() const override { return "flow_euler"; }

 protected:
  void build_schedule(int steps, const ScheduleOptions& o) override {
    auto t = torch::linspace(1.0, 0.0, steps + 1, torch::kFloat32);
    if (o.mu) {
      // e^μ / (e^μ + (1/t − 1)^1), in the reference's float32 tensor operations.
      const double e = std::exp(*o.mu);
      t = (t.reciprocal() - 1.0).pow(1.0).add(e).reciprocal().mul(e);
    } else if (o.shift != 1.0) {
      auto d = t.to(torch::kFloat64);
      t = (o.shift * d / (1.0 + (o.shift - 1.0) * d)).to(torch::kFloat32);
    }
    sigmas_ = t;
    timesteps_ = t.slice(0, 0, steps) * 1000.0;
  }

  void reset_history() override {}

  torch::Tensor solve(const torch::Tensor& v, int i, const torch::Tensor& x) override {
    const double dt = sigmas_[i + 1].item<double>() - sigmas_[i].item<double>();
    return x + dt * v;
  }
};
}  // namespace

std::unique_ptr<Scheduler> make_flow_euler() {
  return std::make_unique<FlowEuler>();
}

}  // namespace kinora::schedulers
