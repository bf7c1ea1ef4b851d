#pragma once
// The sampler interface: a schedule of noise levels and one solver step.
//
// Flow matching throughout: x_σ = (1−σ)·x0 + σ·ε, the model predicts v = ε − x0,
// so x0 = x − σ·v. A scheduler needs nothing but tensors: it never sees a model.
//
//   s->set_timesteps(steps, {.shift = 5.0});
//   for (int i = 0; i < s->num_steps(); ++i)
//     x = s->step(model(x, s->timesteps()[i]), i, x);
#include <torch/torch.h>

#include <optional>
#include <string>

namespace kinora::schedulers {

struct ScheduleOptions {
  // Static flow shift σ' = s·σ / (1 + (s−1)·σ) (Wan's `shift`); 1 leaves σ as is.
  double shift = 1.0;
  // Exponential shift σ' = e^μ / (e^μ + (1/σ − 1)) (FLUX's resolution-dependent
  // shift, see flux_mu()). When set it replaces `shift`.
  std::optional<double> mu;
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;

  virtual std::string name() const = 0;

  // Builds the schedule for `steps` steps and forgets any solver history, so that
  // calling it twice gives the same schedule. Throws kinora::Error when steps < 1.
  void set_timesteps(int steps, const ScheduleOptions& options = {});

  int num_steps() const { return steps_; }
  // What the model is given at each step, [steps]: σ·1000 (int64 truncated for
  // Wan's solvers, as the reference does; float32 for Euler).
  const torch::Tensor& timesteps() const { return timesteps_; }
  // Noise levels [steps + 1], float32, decreasing, ending in 0.
  const torch::Tensor& sigmas() const { return sigmas_; }
  double sigma(int i) const;

  // One solver step from `sample` at step i (steps are taken in order 0, 1, …),
  // given the model's flow prediction there. Inputs are not modified; the result
  // has the sample's dtype and shape.
  torch::Tensor step(const torch::Tensor& model_output, int i, const torch::Tensor& sample);

 protected:
  // Fills sigmas_ (float32, steps+1) and timesteps_ (steps).
  virtual void build_schedule(int steps, const ScheduleOptions& options) = 0;
  virtual void reset_history() = 0;
  // model_output and sample are float32 here.
  virtual torch::Tensor solve(const torch::Tensor& model_output, int i,
                              const torch::Tensor& sample) = 0;

  int steps_ = 0;
  torch::Tensor timesteps_;
  torch::Tensor sigmas_;

 private:
  int next_step_ = 0;
};

}  // namespace kinora::schedulers
