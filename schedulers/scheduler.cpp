#include "schedulers/scheduler.h"

#include "base/error.h"

namespace kinora::schedulers {

void Scheduler::set_timesteps(int steps, const ScheduleOptions& options) {
  if (steps < 1)
    throw Error(name() + ": the number of steps must be at least 1, got " + std::to_string(steps));
  if (!options.mu && !(options.shift > 0.0))
    throw Error(name() + ": shift must be positive, got " + std::to_string(options.shift));
  build_schedule(steps, options);
  steps_ = steps;
  reset_history();
  next_step_ = 0;
}

double Scheduler::sigma(int i) const {
  if (i < 0 || i > steps_)
    throw Error(name() + ": sigma index " + std::to_string(i) + " out of range");
  return sigmas_[i].item<double>();
}

torch::Tensor Scheduler::step(const torch::Tensor& model_output, int i,
                              const torch::Tensor& sample) {
  if (steps_ == 0) throw Error(name() + ": set_timesteps() must be called before step()");
  if (i != next_step_)
    throw Error(name() + ": step " + std::to_string(i) + " taken out of order (expected step " +
                std::to_string(next_step_) + "; set_timesteps() restarts)");
  if (model_output.sizes() != sample.sizes())
    throw Error(name() + ": model output and sample differ in shape");
  // The solver runs in float32 whatever the model's dtype (as the reference does).
  auto out = solve(model_output.to(torch::kFloat32), i, sample.to(torch::kFloat32));
  ++next_step_;
  return out.to(sample.scalar_type());
}

}  // namespace kinora::schedulers
