#pragma once
// The sampler interface: a schedule of noise levels and one solver step.
//
// Two kinds of sampler, by the model they drive (space()):
//  - Flow: flow matching, x_σ = (1−σ)·x0 + σ·ε; the model predicts v = ε − x0,
//    so x0 = x − σ·v (Wan, FLUX). init_noise_sigma() is 1 and the model sees x.
//  - Noise: the noise-prediction (DDPM, "VP") models of Stable Diffusion / SDXL,
//    with σ = √((1 − ᾱ)/ᾱ) of the training schedule; the model predicts ε or
//    v (ScheduleOptions::prediction) from scale_model_input(x, i). As in
//    diffusers, the Euler samplers keep x = x0 + σ·ε (init_noise_sigma ≈ σ_0)
//    and DPM-Solver++ keeps x = (x0 + σ·ε)/√(σ² + 1) (init_noise_sigma 1).
// A scheduler needs nothing but tensors: it never sees a model.
//
//   s->set_timesteps(steps, options);
//   x = noise * s->init_noise_sigma();
//   for (int i = 0; i < s->num_steps(); ++i)
//     x = s->step(model(s->scale_model_input(x, i), s->timesteps()[i]), i, x);
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace kinora::schedulers {

enum class Space { Flow, Noise };

// What a noise-prediction model predicts: the noise ε, or v = α·ε − σ_vp·x0
// (SD 2.x 768-v, some SDXL fine-tunes).
enum class NoisePrediction { Epsilon, V };

// How a noise sampler picks its timesteps from the 1000 training steps (the
// "leading", "trailing" and "linspace" of diffusers' timestep_spacing, after
// Lin et al. 2023, table 2). SDXL uses leading with steps_offset 1.
enum class TimestepSpacing { Leading, Trailing, Linspace };

struct ScheduleOptions {
  // Flow samplers ---------------------------------------------------------
  // Static flow shift σ' = s·σ / (1 + (s−1)·σ) (Wan's `shift`); 1 leaves σ as is.
  double shift = 1.0;
  // Exponential shift σ' = e^μ / (e^μ + (1/σ − 1)) (FLUX's resolution-dependent
  // shift, see flux_mu()). When set it replaces `shift`.
  std::optional<double> mu;

  // Noise samplers (ignored by the flow ones) -------------------------------
  NoisePrediction prediction = NoisePrediction::Epsilon;
  TimestepSpacing spacing = TimestepSpacing::Leading;
  // Added to leading timesteps (SDXL's steps_offset).
  int steps_offset = 1;
  // The noise Euler ancestral adds at each step: called with the float32
  // sample (shape and device) and the step index, it returns standard normal
  // noise of that shape. When empty the sampler draws it on the CPU from a
  // generator seeded with `seed` (restarted by set_timesteps), so that a render
  // is reproducible from its seed on any device.
  std::function<torch::Tensor(const torch::Tensor& like, int step)> noise = nullptr;
  uint64_t seed = 0;
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;

  virtual std::string name() const = 0;
  // The kind of model this sampler drives.
  virtual Space space() const { return Space::Flow; }

  // Builds the schedule for `steps` steps and forgets any solver history, so that
  // calling it twice gives the same schedule. Throws kinora::Error when steps < 1.
  void set_timesteps(int steps, const ScheduleOptions& options = {});

  int num_steps() const { return steps_; }
  // What the model is given at each step, [steps]. Flow: σ·1000 (int64
  // truncated for Wan's solvers, as the reference does; float32 for Euler).
  // Noise: the training step, 0 … 999 (float32 for Euler, int64 for DPM-Solver++).
  const torch::Tensor& timesteps() const { return timesteps_; }
  // Noise levels [steps + 1], float32, decreasing, ending in 0.
  const torch::Tensor& sigmas() const { return sigmas_; }
  double sigma(int i) const;

  // The standard deviation of the starting noise: x = noise · init_noise_sigma()
  // (1 for flow samplers and DPM-Solver++; √(σ_0² + 1) for Euler with leading
  // spacing, σ_0 otherwise), computed in float32 as the reference does.
  // Meaningful after set_timesteps().
  virtual double init_noise_sigma() const { return 1; }
  // What the model is given at step i for the sample x (Euler: x / √(σ_i² + 1);
  // flow samplers and DPM-Solver++: x itself).
  virtual torch::Tensor scale_model_input(const torch::Tensor& x, int i) const { return x; }

  // One solver step from `sample` at step i (steps are taken in order 0, 1, …),
  // given the model's prediction there (flow velocity, or ε / v). Inputs are not modified; the
  // result has the sample's dtype and shape.
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
