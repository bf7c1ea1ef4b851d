// Euler for noise-prediction models (SD, SDXL): x = x0 + σ·ε, the model sees
// x / √(σ² + 1) and predicts ε or v; x_{i+1} = x_i + (x_i − x0)/σ_i · (σ_{i+1} − σ_i).
// σ_i is the training table's σ at the spaced timesteps, then 0. Reference:
// diffusers' EulerDiscreteScheduler (linear interpolation, discrete
// timesteps, no churn), float32 as there.
#include "schedulers/euler_base.h"
#include "schedulers/solvers.h"

namespace kinora::schedulers {
namespace {

class EulerDiscrete final : public detail::EulerBase {
 public:
  std::string name() const override { return "euler"; }

 protected:
  void reset_history() override {}

  torch::Tensor solve(const torch::Tensor& out, int i, const torch::Tensor& x) override {
    const auto sigma = sigmas_[i];
    const auto derivative = (x - x0(out, i, x)) / sigma;
    const auto dt = sigmas_[i + 1] - sigma;
    return x + derivative * dt;
  }
};
}  // namespace

std::unique_ptr<Scheduler> make_euler() {
  return std::make_unique<EulerDiscrete>();
}

}  // namespace kinora::schedulers
