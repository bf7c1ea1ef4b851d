// Euler ancestral for noise-prediction models: an Euler step down to
// σ_down = σ_{i+1}²/σ_i, then fresh noise of σ_up = √(σ_{i+1}²(σ_i² − σ_{i+1}²)/σ_i²)
// (σ_down² + σ_up² = σ_{i+1}²). Schedule, input scaling and x0 as Euler's.
// Reference: diffusers' EulerAncestralDiscreteScheduler, float32 as there; the
// noise is drawn at every step, the last one's (σ_up = 0) included.
#include "schedulers/euler_base.h"
#include "schedulers/solvers.h"

namespace kinora::schedulers {
namespace {

class EulerAncestral final : public detail::EulerBase {
 public:
  std::string name() const override { return "euler_ancestral"; }

 protected:
  void build_schedule(int steps, const ScheduleOptions& o) override {
    EulerBase::build_schedule(steps, o);
    noise_.configure(o);
  }

  void reset_history() override { noise_.restart(); }

  torch::Tensor solve(const torch::Tensor& out, int i, const torch::Tensor& x) override {
    const auto sigma_from = sigmas_[i], sigma_to = sigmas_[i + 1];
    const auto sigma_up =
        (sigma_to.pow(2) * (sigma_from.pow(2) - sigma_to.pow(2)) / sigma_from.pow(2)).pow(0.5);
    const auto sigma_down = (sigma_to.pow(2) - sigma_up.pow(2)).pow(0.5);
    const auto derivative = (x - x0(out, i, x)) / sigma_from;
    const auto dt = sigma_down - sigma_from;
    const auto prev = x + derivative * dt;
    return prev + noise_.draw(name(), x, i) * sigma_up;
  }

 private:
  detail::NoiseSource noise_;
};
}  // namespace

std::unique_ptr<Scheduler> make_euler_ancestral() {
  return std::make_unique<EulerAncestral>();
}

}  // namespace kinora::schedulers
