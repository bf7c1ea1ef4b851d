#pragma once
// What the trainer's source files share and nobody else uses: seeds, messages
// and the learning-rate schedule, the run folder's files (weights, optimizer,
// state.json, loss logs), the sample images and the DiT's latent cache. An
// internal header of training/: not part of the trainer's API (train.h,
// probe.h), included from no other folder, and free to change with it.
//
// The trainer's files, by seam:
//   checkpoint.cpp   the run folder: weights, optimizer state, JSON, loss logs
//   tokenizer.cpp    stage 1 and the caption grammar
//   vae_stage.cpp    stage 2, object_mask, fit_latents
//   latents.cpp      clips and the DiT's data: clip_batch, the latent cache,
//                    noise levels, noised batches, object weights
//   heads.cpp        the DiT's heads started as position kernels
//   diagnostics.cpp  sample sheets, word gaps, denoising errors
//   dit_stage.cpp    stage 3
//   probe.cpp        the shape probe (probe.h)
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "base/files.h"
#include "io/checkpoint.h"
#include "training/train.h"

namespace kinora::training::internal {

// One seed from two numbers (a base seed and what it seeds), hashed with
// splitmix64's finaliser.
inline uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t z = a * 0x9E3779B97F4A7C15ull + b + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline void say(const StageOptions& o, const std::string& msg) {
  if (o.on_message) o.on_message(msg);
}

inline bool cancelled(const StageOptions& o) {
  return o.cancel && o.cancel->load();
}

// Linear warm-up over o.warmup steps, then cosine decay to o.lr / 10 at o.steps.
inline double lr_at(const StageOptions& o, int64_t step) {
  if (step < o.warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup);
  const double p = static_cast<double>(step - o.warmup) /
                   static_cast<double>(std::max<int64_t>(1, o.steps - o.warmup));
  return o.lr * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * std::min(1.0, p))));
}

// Group i gets lr × factors[i] (1 where no factor is given).
inline void set_lr(torch::optim::AdamW& opt, double lr, const std::vector<double>& factors = {}) {
  auto& groups = opt.param_groups();
  for (std::size_t i = 0; i < groups.size(); ++i)
    static_cast<torch::optim::AdamWOptions&>(groups[i].options())
        .lr(lr * (i < factors.size() ? factors[i] : 1.0));
}

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Gradients scaled so that their joint L2 norm is at most `max_norm`, without
// reading the norm back to the host (dit_stage.cpp).
void clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);

// ---------------------------------------------------------------- options
// (checkpoint.cpp)

// Upper bounds of the size options, so that a typo (--batch 99999999999) is
// refused rather than growing memory until the process is killed.
constexpr int64_t kMaxBatch = 4096;
constexpr int64_t kMaxSteps = 100'000'000;
constexpr int64_t kMaxDataset = 1 << 20;

// "--OPTION VALUE: expected WHAT" when `ok` is false, else "": one check of
// options_problem, said in the command line's words.
std::string option_problem(bool ok, const std::string& option, double value,
                           const std::string& expected);
// The options every stage has (steps, batch, lr, warmup, save_every, log_every).
std::string stage_options_problem(const StageOptions& o);
// The base model's folder: `dir`, or where it is empty the embedded model's
// folder as `kinora generate` finds it (embedded::model_dir():
// $KINORA_ASSETS, the installed assets, the source tree's assets/). Throws an
// Error starting with `who` ("train lora") when none holds the model.
std::filesystem::path base_model_dir(const std::filesystem::path& dir, const std::string& who);

// ---------------------------------------------------------------- the run folder
// (checkpoint.cpp)

// The module's parameters as safetensors, float32 on the CPU whatever the
// device and precision trained in.
void save_module(torch::nn::Module& m, const std::filesystem::path& path,
                 const std::map<std::string, std::string>& metadata);

// The module's parameters from the file, each by name and shape; with `only`,
// those it accepts alone (the others keep their values).
void load_into(torch::nn::Module& m, const io::Checkpoint& ck, const std::filesystem::path& path,
               const std::function<bool(const std::string&)>& only = {});
void load_into(torch::nn::Module& m, const std::filesystem::path& path);

// A trained model's file for a fresh run to start from (load_into): its config
// (metadata) must be the run's, key for key, so that a model of other heads or
// patches (the same shapes, another meaning) is refused by name rather than
// trained on. Reads the header only. `wanted` says what the file should have
// been, for a path that does not exist (e.g. "DitOptions.init_from: a trained
// model's folder").
io::Checkpoint open_trained(const std::filesystem::path& path, const std::string& config,
                            const std::string& wanted);

void write_json(const std::filesystem::path& path, const nlohmann::json& j);
nlohmann::json read_json(const std::filesystem::path& path);

// The optimizer, serialised in memory and written through a temporary name
// like every other file here: a full disk is an Error naming `path`, and
// leaves no temporary behind.
void save_optimizer(torch::optim::Optimizer& opt, const std::filesystem::path& path);
void load_optimizer(torch::optim::Optimizer& opt, const std::filesystem::path& path,
                    torch::Device device = torch::kCPU);

// A stage's state folder (<run>/<stage>-state) as the stage finds it: resumed
// when it holds a state.json, else a fresh start.
struct StageState {
  std::filesystem::path dir;
  bool resuming = false;
  nlohmann::json json;               // state.json (resuming), else {}
  std::filesystem::path checkpoint;  // where its weights and optimizer are (resuming)
  // Names this run of the stage, made at its fresh start and kept in state.json
  // ("run") and in the metadata of the files it exports ("kinora_run"), so that
  // a resumed stage tells its own outputs from files it did not write.
  std::string run_id;
  // A run begun before runs had names: its outputs carry none, and are taken
  // as its own (recorded in state.json, so that it stays so).
  bool unmarked_outputs = false;
  // A fresh start over the state folder of a run of this stage stopped before
  // its first checkpoint (its run.json, written as it began, names it): its
  // logs, samples and checkpoint folders are this run's to replace.
  bool orphaned = false;
};
StageState open_state(const std::filesystem::path& dir);

// Before a fresh start: refuses, naming them, entries of the state folder
// named like the stage's checkpoints (checkpoint-*) or sample sheets
// (samples-*.ppm) that this run did not write (no run.json / comment naming
// it), unless `overwrite` (they are left alone even then).
void check_state_folder(const StageState& s, bool overwrite);

// The stage begins writing: its state folder made, the temporaries dead
// processes left and the checkpoint folders of this run that no state.json
// names removed, and run.json naming the run written (a stage killed before
// its first checkpoint is known by it on the next start).
void begin_state(const StageState& s);

// Where the sample sheet of `step` goes: samples-STEP.ppm, unless a file this
// run did not write has that name (then samples-STEP-2.ppm, ...).
std::filesystem::path sample_file(const StageState& s, int64_t step);

// The options that cannot change once a stage has begun (its architecture),
// as JSON keyed by the command line's option names ({"--dim": 128, ...}):
// refused with those names when state.json records other values. A state
// from before state.json recorded them passes (the weights' shapes are
// checked as they load).
void check_config(const StageState& s, const nlohmann::json& config);

// Refuses, naming `file`, to let a stage replace or append to an output it did
// not write, unless `overwrite`: any that exists when the stage starts afresh,
// and on a resume one whose metadata names another run (safetensors:
// "kinora_run"; JSON: "run") or none. Files without such a record (logs) are
// the run's own on a resume.
void check_output(const std::filesystem::path& file, const StageState& s, bool overwrite);

// One checkpoint of a stage: its files written into a folder under a temporary
// name, renamed into place whole as <state>/checkpoint-STEP, and then
// state.json, which names it, written last. A full disk or a kill before that
// leaves the previous checkpoint as it was, and no temporary behind (one left
// by a kill is removed by the next open_state); the previous checkpoint folder
// is removed once state.json names the new one.
class CheckpointWriter {
 public:
  CheckpointWriter(const StageState& s, int64_t step);
  // Writes the checkpoint's file `name` with `write` (given where to put it).
  // An Error (a full disk) names the file as the checkpoint would have held
  // it, and says which checkpoint is kept.
  void write(const std::string& name,
             const std::function<void(const std::filesystem::path&)>& writer);
  // `state` (the stage's own fields) with "checkpoint", "run" and the config
  // added becomes state.json. Updates `s` to the new checkpoint.
  void commit(StageState& s, nlohmann::json state, const nlohmann::json& config);

 private:
  std::string name_;
  std::filesystem::path dir_;
  std::string kept_;  // the checkpoint kept when this one fails
  ScopedTemp tmp_;
};

// One line per logged step: step, the stage's losses, lr, seconds so far.
class LossLog {
 public:
  // Writes the header when the file does not exist yet.
  LossLog(const std::filesystem::path& path, const std::string& header);
  void add(int64_t step, const std::vector<double>& values, double lr, double seconds);

 private:
  std::filesystem::path path_;
};

// Drops log lines past `step` (a resumed stage repeats them).
void truncate_log(const std::filesystem::path& path, int64_t step);

// A stage's log as a fresh or resumed stage begins it: cut back to the
// resumed step, or on a fresh start begun anew (check_output has refused a
// file that is not the run's unless overwrite).
LossLog open_log(const std::filesystem::path& path, const StageState& s, int64_t step,
                 const std::string& header);

// ---------------------------------------------------------------- images
// (diagnostics.cpp)

// A binary PPM: a dependency-free image of training samples. rgb: [H, W, 3] uint8.
// `run` (when given) is recorded in a comment, "# kinora_run RUN".
void write_ppm(const std::filesystem::path& path, const torch::Tensor& rgb,
               const std::string& run = {});

// Clips [B, 3, F, H, W] in [−1, 1] → one image [B·H, n·W, 3] uint8: a row per
// clip, `n` frames spread evenly from the first to the last.
torch::Tensor strip(const torch::Tensor& v, int64_t n = 3);

// What a DiT checkpoint draws: four fixed captions sampled from noise as the
// pipeline samples the embedded model (UniPC, 20 steps, kDefaults.guidance, the
// training shift, seed 0), decoded, frames 0, 4, 8, 12 and 16 of each in a row.
// Called with the EMA weights in the modules.
void write_dit_samples(const std::filesystem::path& path, diffusion::WanModel& dit,
                       text::T5Encoder& te, const text::Tokenizer& tok, vae::WanVAE& vae,
                       const DitOptions& o, torch::IntArrayRef latent_shape,
                       const std::string& run);

// ---------------------------------------------------------------- the DiT's data
// (latents.cpp)

// The VAE's latents of o.dataset clips (on o.device) and their captions,
// encoded once (and refined, with o.refine_steps) and cached in the run folder.
std::pair<torch::Tensor, std::vector<std::string>> latent_dataset(const DitOptions& o,
                                                                  vae::WanVAE& vae);

}  // namespace kinora::training::internal
