// Stage 3, the DiT: umT5 and the Wan DiT trained together by flow matching on
// the VAE's latents, with caption dropout for classifier-free guidance, EMA
// weights, and sample sheets and diagnostics (diagnostics.cpp) on their own
// schedule. train_dit runs it in steps: checks, data, models (fresh or
// resumed), the step loop with its logs, checkpoints and sheets, the export.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <tuple>

#include "base/error.h"
#include "base/strings.h"
#include "diffusion/wan_dit.h"
#include "text/t5.h"
#include "text/tokenizer.h"
#include "training/internal.h"
#include "vae/wan_vae.h"

namespace kinora::training {
namespace fs = std::filesystem;
using torch::Tensor;
using namespace internal;

namespace {

// ---------------------------------------------------------------- initialisation

// Embeddings and relative-position biases N(0, 1), projections N(0, 1/fan_in), norms 1.
void init_t5(torch::nn::Module& m, uint64_t seed) {
  torch::NoGradGuard g;
  torch::manual_seed(seed);
  for (auto& item : m.named_parameters()) {
    const auto& name = item.key();
    auto& p = item.value();
    if (name == "token_embedding.weight")
      p.normal_(0, 1);
    else if (name.find("pos_embedding") != std::string::npos)
      // Relative-position biases that differ by O(1) between distances, so each
      // head weighs neighbours by where they stand from the first step: started
      // near zero (and moved at AdamW's step size) the encoder stays a bag of
      // words for thousands of steps, and "a red circle on a blue background"
      // reads as "a blue circle on a red background" (docs/training.md, "What
      // was tried and did not help").
      p.normal_(0, 1);
    else if (p.dim() == 1)
      p.fill_(1);  // RMS norm weights
    else
      p.normal_(0, 1.0 / std::sqrt(static_cast<double>(p.size(1))));
  }
}

// Wan's init_weights: Xavier-uniform linears (and patch embedding), N(0, 0.02) for
// the text and time embeddings, a zero output head, modulation N(0, 1/dim).
void init_dit(torch::nn::Module& m, uint64_t seed, int64_t dim) {
  torch::NoGradGuard g;
  torch::manual_seed(seed);
  for (auto& item : m.named_parameters()) {
    const auto& name = item.key();
    auto& p = item.value();
    const bool embed = starts_with(name, "text_embedding.") || starts_with(name, "time_embedding.");
    if (ends_with(name, "modulation"))
      p.normal_(0, 1.0 / std::sqrt(static_cast<double>(dim)));
    else if (name == "head.head.weight" || name == "head.head.bias" || ends_with(name, ".bias"))
      p.zero_();
    else if (p.dim() == 1)
      p.fill_(1);  // norm weights
    else if (embed)
      p.normal_(0, 0.02);
    else {
      const double fan_out = static_cast<double>(p.size(0));
      const double fan_in = static_cast<double>(p[0].numel());
      const double bound = std::sqrt(6.0 / (fan_in + fan_out));
      p.uniform_(-bound, bound);
    }
  }
}

// ---------------------------------------------------------------- set-up and checks

// The files of the earlier stages, in the same run folder.
void check_earlier_stages(const DitOptions& o) {
  for (const auto& [file, stage, what] :
       {std::tuple{kTokenizerFile, "tokenizer", "tokenizer"}, {kVaeFile, "vae", "VAE"}})
    if (!fs::exists(o.run_dir / file))
      fail_file(o.run_dir / file, std::string("missing: the DiT stage needs the run's ") + what +
                                      ", which `kinora train " + stage +
                                      "` writes into the same --run folder (or copy one there)");
}

// The heads started as kernels (--locality-heads, --motion-heads,
// --pool-heads): their counts, and all of them within the DiT's heads.
std::string heads_problem(const DitOptions& o) {
  if (o.locality_heads < 0 || o.locality_heads > std::min<int64_t>(o.num_heads, 3))
    return "--locality-heads " + std::to_string(o.locality_heads) +
           ": from 0 to 3, and at most the DiT's " + std::to_string(o.num_heads) +
           " heads (--heads)";
  if (o.motion_heads != 0 && ((o.motion_heads != 4 && o.motion_heads != 8) ||
                              o.locality_heads + o.motion_heads > o.num_heads))
    return "--motion-heads " + std::to_string(o.motion_heads) + ": 0, 4 or 8, and with the " +
           std::to_string(o.locality_heads) + " locality heads at most the DiT's " +
           std::to_string(o.num_heads) + " heads (--heads)";
  if (o.pool_heads != 0 && ((o.pool_heads != 2 && o.pool_heads != 4) ||
                            o.locality_heads + o.motion_heads + o.pool_heads > o.num_heads))
    return "--pool-heads " + std::to_string(o.pool_heads) +
           ": 0, 2 or 4, and with the locality and motion heads at most the DiT's " +
           std::to_string(o.num_heads) + " heads (--heads)";
  return {};
}

// The options against each other and against the run's VAE.
void check_options(const DitOptions& o, const vae::WanVAEConfig& vae) {
  const int64_t frames = 1 + (o.clip.frames - 1) / vae.time_compression();
  if (o.window > 0 && (vae.time_compression() != 1 || o.window > frames))
    throw Error("--window " + std::to_string(o.window) +
                " needs a VAE without temporal compression and at most " + std::to_string(frames) +
                " latent frames (this VAE compresses time " +
                std::to_string(vae.time_compression()) + "×)");
  if (o.time_patch < 1 || frames % o.time_patch != 0 ||
      (o.window > 0 && o.window % o.time_patch != 0))
    throw Error("--time-patch " + std::to_string(o.time_patch) + " must divide the clips' " +
                std::to_string(frames) + " latent frames" + (o.window > 0 ? " and --window" : ""));
  if (o.time_patch > 1 && (o.locality_heads > 0 || o.motion_heads > 0))
    throw Error(
        "--locality-heads and --motion-heads look a latent frame back or on, and with "
        "--time-patch " +
        std::to_string(o.time_patch) + " a token holds " + std::to_string(o.time_patch) +
        " latent frames; use them with --time-patch 1");
  // The DiT predicts ε − x₀: at high σ nearly the noise itself, every one of a
  // token's latent values. Through a narrower width a token's noise cannot
  // pass (docs/training.md, "What was tried and did not help").
  const int64_t token_values = o.time_patch * o.patch * o.patch * vae.z_dim;
  if (o.dim < token_values)
    throw Error("--dim " + std::to_string(o.dim) + " is narrower than a token's " +
                std::to_string(token_values) + " latent values (--patch " +
                std::to_string(o.patch) + ", --time-patch " + std::to_string(o.time_patch) + ": " +
                std::to_string(o.time_patch) + "×" + std::to_string(o.patch) + "×" +
                std::to_string(o.patch) + " cells × " + std::to_string(vae.z_dim) +
                " channels); the model could not carry the noise it predicts. Use a dim of " +
                std::to_string(token_values) + " or more, or a smaller patch");
  if (const auto problem = heads_problem(o); !problem.empty()) throw Error(problem);
}

text::T5Config t5_config(const DitOptions& o, int64_t vocab) {
  text::T5Config tc;
  tc.vocab = vocab, tc.dim = o.text_dim, tc.dim_attn = o.text_dim;
  tc.dim_ffn = o.text_ffn, tc.num_heads = o.text_heads, tc.num_layers = o.text_layers;
  tc.num_buckets = 32, tc.max_distance = 128, tc.shared_pos = false;
  return tc;
}

diffusion::WanConfig wan_config(const DitOptions& o, int64_t z_dim) {
  diffusion::WanConfig wc;
  wc.dim = o.dim, wc.ffn_dim = o.ffn_dim, wc.num_heads = o.num_heads, wc.num_layers = o.num_layers;
  wc.text_dim = o.text_dim, wc.freq_dim = 256, wc.in_dim = wc.out_dim = z_dim;
  wc.text_len = o.text_len;
  wc.patch_h = wc.patch_w = o.patch;
  wc.patch_t = o.time_patch;
  return wc;
}

// The trained model a fresh run starts from (--init-from), its
// configs checked against the run's.
struct StartFrom {
  std::optional<io::Checkpoint> dit, te;
};

StartFrom open_start(const DitOptions& o, const text::T5Config& tc,
                     const diffusion::WanConfig& wc) {
  const std::string wanted = "--init-from wants a trained model's folder";
  StartFrom from;
  from.dit = open_trained(o.init_from / kDitFile, wc.to_json(), wanted);
  from.te = open_trained(o.init_from / kTextEncoderFile, tc.to_json(), wanted);
  return from;
}

// What cannot change once the stage has begun: the architecture, keyed by
// the command line's options (state.json's "config").
nlohmann::json run_config(const DitOptions& o) {
  return {{"--dim", o.dim},           {"--ffn", o.ffn_dim},       {"--heads", o.num_heads},
          {"--layers", o.num_layers}, {"--patch", o.patch},       {"--time-patch", o.time_patch},
          {"--text-len", o.text_len}, {"--text-dim", o.text_dim}, {"--text-layers", o.text_layers}};
}

// ---------------------------------------------------------------- data

// What the step loop draws from: the latents and their captions, and the
// captions' tokens (and the empty caption's), all on the stage's device.
struct DitData {
  Tensor latents;
  std::vector<std::string> captions;
  Tensor ids, masks, empty_ids, empty_mask;
};

DitData load_data(const DitOptions& o, vae::WanVAE& vae, const text::Tokenizer& tok) {
  DitData d;
  std::tie(d.latents, d.captions) = latent_dataset(o, vae);
  say(o, "dit: " + std::to_string(d.latents.size(0)) + " latents " +
             c10::str(d.latents.sizes().slice(1)));
  // Tokens of every caption (and of the empty one), short: the encoder's output
  // past a caption's end is dropped in inference, so padding never reaches the DiT.
  const int64_t max_tokens = o.text_len;
  const auto empty = tok.encode("", max_tokens);
  std::vector<Tensor> ids, masks;
  for (const auto& c : d.captions) {
    const auto t = tok.encode(c, max_tokens);
    ids.push_back(t.ids[0]), masks.push_back(t.mask[0]);
  }
  d.ids = torch::stack(ids).to(o.device), d.masks = torch::stack(masks).to(o.device);
  d.empty_ids = empty.ids.to(o.device), d.empty_mask = empty.mask.to(o.device);
  return d;
}

// ---------------------------------------------------------------- models

// Copies `values` into the module's parameters (same order as parameters()).
void assign(torch::nn::Module& m, const std::vector<Tensor>& values) {
  torch::NoGradGuard g;
  auto ps = m.parameters();
  for (std::size_t i = 0; i < ps.size(); ++i) ps[i].copy_(values[i]);
}

std::vector<Tensor> clones(torch::nn::Module& m) {
  std::vector<Tensor> out;
  for (auto& p : m.parameters()) out.push_back(p.detach().clone());
  return out;
}

// umT5 and the DiT as they train: initialised on the CPU (the same start on
// every device), then moved to the stage's device; their optimizer; their
// EMA weights.
struct DitModels {
  DitModels(const DitOptions& o, const text::T5Config& tc, const diffusion::WanConfig& wc);
  text::T5Encoder te;
  diffusion::WanModel dit;
  std::vector<Tensor> te_params;   // umT5's, as parameters() lists them
  std::vector<Tensor> all_params;  // the optimizer's, both groups
  std::unique_ptr<torch::optim::AdamW> opt;
  std::vector<Tensor> ema_dit, ema_te;
};

DitModels::DitModels(const DitOptions& o, const text::T5Config& tc, const diffusion::WanConfig& wc)
    : te(tc), dit(wc) {
  init_t5(te.module(), mix(o.seed, 1));
  init_dit(dit.module(), mix(o.seed, 2), wc.dim);
  te.module().to(o.device), dit.to(o.device);
  dit.set_precision(o.precision);
  te.set_trainable(true), dit.set_trainable(true);
  // Two groups: everything, and umT5's relative-position tables at a higher
  // rate (what tells the encoder word order; T5 itself was trained with
  // Adafactor, whose steps scale with the weights').
  auto params = dit.module().parameters();
  std::vector<Tensor> position_tables;
  for (const auto& item : te.module().named_parameters())
    (item.key().find("pos_embedding") != std::string::npos ? position_tables : params)
        .push_back(item.value());
  te_params = te.module().parameters();
  all_params = params;
  all_params.insert(all_params.end(), position_tables.begin(), position_tables.end());
  const auto adamw = torch::optim::AdamWOptions(o.lr).betas({0.9, 0.99}).weight_decay(0.01);
  auto faster = std::make_unique<torch::optim::AdamWOptions>(adamw);
  faster->lr(o.lr * o.text_position_lr);
  opt = std::make_unique<torch::optim::AdamW>(
      std::vector<torch::optim::OptimizerParamGroup>{
          torch::optim::OptimizerParamGroup(params),
          torch::optim::OptimizerParamGroup(position_tables, std::move(faster))},
      adamw);
}

// Where the stage stands: what dit-state/state.json records.
struct DitProgress {
  int64_t step = 0;
  double seconds = 0;
  int64_t locality_heads = 0, motion_heads = 0, pool_heads = 0;  // the run's heads, as started
};

// A fresh start: the heads started as kernels, or the model of init_from.
DitProgress start_fresh(const DitOptions& o, int64_t num_heads, const StartFrom& from,
                        DitModels& m) {
  init_locality_heads(m.dit.module(), num_heads, o.locality_heads, o.locality_depth);
  init_motion_heads(m.dit.module(), num_heads, o.locality_heads, o.motion_heads, o.locality_depth);
  init_pool_heads(m.dit.module(), num_heads, o.locality_heads + o.motion_heads, o.pool_heads,
                  o.locality_depth);
  if (from.dit) {
    load_into(m.dit.module(), *from.dit, o.init_from / kDitFile);
    load_into(m.te.module(), *from.te, o.init_from / kTextEncoderFile);
    say(o, "dit: starting from the model in " + o.init_from.string());
  }
  m.ema_dit = clones(m.dit.module()), m.ema_te = clones(m.te.module());
  return {0, 0, o.locality_heads, o.motion_heads, o.pool_heads};
}

// The progress recorded in state.json (`j`, read from `path`), with the heads
// the options add to it: locality heads to a run that has fewer, motion heads
// to one that has none; pool heads only at a fresh start.
DitProgress resumed_progress(const DitOptions& o, const fs::path& path, const nlohmann::json& j,
                             int64_t num_heads) {
  DitProgress p;
  p.step = j.at("step"), p.seconds = j.at("seconds");
  const int64_t had = j.value("locality_heads", int64_t{0});
  const int64_t had_motion = j.value("motion_heads", int64_t{0});
  if (o.locality_heads > 0 && o.locality_heads < had)
    fail_file(path, "this run has " + std::to_string(had) +
                        " locality heads; they cannot be taken back (--locality-heads " +
                        std::to_string(o.locality_heads) + ")");
  p.locality_heads = std::max(had, o.locality_heads);
  if (had_motion > 0 &&
      (p.locality_heads != had || (o.motion_heads != 0 && o.motion_heads != had_motion)))
    fail_file(path, "this run has " + std::to_string(had_motion) + " motion heads after " +
                        std::to_string(had) +
                        " locality heads; neither can change now (--locality-heads " +
                        std::to_string(o.locality_heads) + ", --motion-heads " +
                        std::to_string(o.motion_heads) + ")");
  if (had_motion == 0 && p.locality_heads + o.motion_heads > num_heads)
    fail_file(path, "this run's " + std::to_string(p.locality_heads) +
                        " locality heads leave no room for " + std::to_string(o.motion_heads) +
                        " motion heads");
  p.motion_heads = had_motion > 0 ? had_motion : o.motion_heads;
  p.pool_heads = j.value("pool_heads", int64_t{0});
  if (o.pool_heads != 0 && o.pool_heads != p.pool_heads)
    fail_file(path, "this run has " + std::to_string(p.pool_heads) +
                        " pool heads; they are started with a fresh run only "
                        "(--pool-heads " +
                        std::to_string(o.pool_heads) + ")");
  return p;
}

// The run's own state: live and EMA weights, the optimizer, the progress; the
// heads the options add started in the live and EMA weights alike.
DitProgress resume(const DitOptions& o, const StageState& s, int64_t num_heads, DitModels& m) {
  const auto& j = s.json;
  const auto& state = s.checkpoint;
  const auto p = resumed_progress(o, s.dir / "state.json", j, num_heads);
  const int64_t had = j.value("locality_heads", int64_t{0});
  const int64_t had_motion = j.value("motion_heads", int64_t{0});
  const auto add_heads = [&] {
    init_locality_heads(m.dit.module(), num_heads, p.locality_heads, o.locality_depth, had);
    if (had_motion == 0)
      init_motion_heads(m.dit.module(), num_heads, p.locality_heads, p.motion_heads,
                        o.locality_depth);
  };
  load_into(m.dit.module(), state / "dit.safetensors");
  add_heads();
  load_into(m.te.module(), state / "umt5.safetensors");
  try {
    load_optimizer(*m.opt, state / "optimizer.pt", o.device);
  } catch (const c10::Error& e) {
    fail_file(state / "optimizer.pt",
              std::string("cannot resume from this optimizer state (") +
                  e.what_without_backtrace() +
                  "); a run begun before the position tables had their own rate cannot go on");
  }
  // EMA copies: load into the modules, copy out, then restore the live weights.
  const auto live_dit = clones(m.dit.module()), live_te = clones(m.te.module());
  load_into(m.dit.module(), state / "ema-dit.safetensors");
  add_heads();
  load_into(m.te.module(), state / "ema-umt5.safetensors");
  m.ema_dit = clones(m.dit.module()), m.ema_te = clones(m.te.module());
  assign(m.dit.module(), live_dit), assign(m.te.module(), live_te);
  say(o, "dit: resuming at step " + std::to_string(p.step));
  if (!o.init_from.empty())
    say(o, "dit: --init-from is ignored: this run resumes from its checkpoint of step " +
               std::to_string(p.step));
  const char* kinds[] = {"in every frame", "in the frame before", "in the frame after"};
  for (int64_t h = had; h < p.locality_heads; ++h)
    say(o,
        "dit: started head " + std::to_string(h) + " of every block as the same place " + kinds[h]);
  if (had_motion == 0 && p.motion_heads > 0)
    say(o, "dit: started heads " + std::to_string(p.locality_heads) + "-" +
               std::to_string(p.locality_heads + p.motion_heads - 1) +
               " of every block as motion kernels");
  return p;
}

// ---------------------------------------------------------------- the step loop

// One kernel per operation for the whole list, not per tensor: on a GPU a
// small model's step is otherwise bound by kernel launches.
void ema_update(std::vector<Tensor>& ema, const std::vector<Tensor>& params, double decay) {
  torch::NoGradGuard g;
  at::_foreach_mul_(ema, decay);
  at::_foreach_add_(ema, params, 1 - decay);
}

// The stage from its first (or resumed) step to its last: the step loop with
// its log lines, checkpoints and sample sheets, and at the end the exported
// EMA weights.
class DitRun {
 public:
  DitRun(const DitOptions& o, StageState& state, const nlohmann::json& config,
         const text::Tokenizer& tok, vae::WanVAE& vae, const text::T5Config& tc,
         const diffusion::WanConfig& wc, const DitData& data, DitModels& m, DitProgress& p);
  // Steps on to o.steps or to a cancel, then the last checkpoint.
  void train();

 private:
  Tensor batch_loss();
  void log_loss(Tensor& sum, int64_t& n, double lr);
  void with_ema(const std::function<void()>& fn);
  // The modules' weights as the model's files, configs in the metadata.
  void export_dit(const fs::path& path);
  void export_te(const fs::path& path);
  void sample();
  void save();

  const DitOptions& o_;
  StageState& s_;
  const fs::path state_;
  const nlohmann::json& config_;
  const text::Tokenizer& tok_;
  vae::WanVAE& vae_;
  const text::T5Config& tc_;
  const diffusion::WanConfig& wc_;
  const DitData& data_;
  DitModels& m_;
  DitProgress& p_;
  LossLog loss_log_;
  std::string dit_meta_;  // the exported DiT's "kinora" metadata
  // A stage run again when complete trains nothing and logs nothing new: its
  // sheet and their lines are already there.
  int64_t started_at_;
  int64_t resumed_at_;  // -1 on a fresh start
  int64_t saved_at_ = -1;
  LossLog gaps_log_, given_log_, denoise_log_;
  // The clips the diagnostics run on: the dataset's first (at most 64).
  int64_t gap_clips_;
  std::vector<std::string> gap_captions_;
};

std::string denoise_header() {
  std::string header = "step";
  for (const double s : kDenoiseSigmas) header += ",sigma" + std::to_string(s).substr(0, 4);
  return header + ",lr,seconds";
}

DitRun::DitRun(const DitOptions& o, StageState& state, const nlohmann::json& config,
               const text::Tokenizer& tok, vae::WanVAE& vae, const text::T5Config& tc,
               const diffusion::WanConfig& wc, const DitData& data, DitModels& m, DitProgress& p)
    : o_(o),
      s_(state),
      state_(state.dir),
      config_(config),
      tok_(tok),
      vae_(vae),
      tc_(tc),
      wc_(wc),
      data_(data),
      m_(m),
      p_(p),
      loss_log_(open_log(state_ / "loss.csv", state, p.step, "step,loss,lr,seconds")),
      dit_meta_(nlohmann::json{{"model", "Kinora tiny Wan DiT"},
                               {"width", o.clip.width},
                               {"height", o.clip.height},
                               {"frames", o.clip.frames},
                               {"negative_prompt", ""},
                               {"training_shift", o.shift},
                               {"placement", name(o.clip.placement)}}
                    .dump()),
      started_at_(p.step),
      resumed_at_(state.resuming ? p.step : -1),
      gaps_log_(open_log(state_ / "word-gaps.csv", state, p.step,
                         "step,object,background,shape,direction,lr,seconds")),
      given_log_(open_log(state_ / "direction-given-frame.csv", state, p.step,
                          "step,direction_given_frame,lr,seconds")),
      denoise_log_(open_log(state_ / "denoise.csv", state, p.step, denoise_header())),
      gap_clips_(std::min<int64_t>(64, data.latents.size(0))),
      gap_captions_(data.captions.begin(), data.captions.begin() + gap_clips_) {}

// One step's batch, drawn on the CPU (the same batches on every device) and
// moved, and the flow-matching loss on it: x_σ = (1 − σ)·x0 + σ·ε, the model
// predicts ε − x0 at t = 1000σ.
Tensor DitRun::batch_loss() {
  const auto& o = o_;
  const auto idx = torch::randint(data_.latents.size(0), {o.batch}, torch::kLong).to(o.device);
  auto x0 = data_.latents.index_select(0, idx);
  if (o.window > 0 && o.window < x0.size(2)) {
    // Frames start[b] … start[b] + window − 1 of each clip, in one gather.
    const auto start = torch::randint(x0.size(2) - o.window + 1, {o.batch}, torch::kLong);
    const auto frame = (start.view({-1, 1, 1, 1, 1}) +
                        torch::arange(o.window, torch::kLong).view({1, 1, -1, 1, 1}))
                           .to(o.device);
    x0 = x0.gather(2, frame.expand({o.batch, x0.size(1), o.window, x0.size(3), x0.size(4)}));
  }
  auto tid = data_.ids.index_select(0, idx), tmask = data_.masks.index_select(0, idx);
  // Caption dropout: the empty caption, as the unconditional branch sees it.
  const auto drop = (torch::rand({o.batch}) < o.caption_dropout).to(o.device);
  tid = torch::where(drop.unsqueeze(1), data_.empty_ids, tid);
  tmask = torch::where(drop.unsqueeze(1), data_.empty_mask, tmask);
  const auto ctx = m_.te.forward(tid, tmask) * tmask.unsqueeze(-1).to(torch::kFloat32);
  const auto sigma = draw_sigmas(o, o.batch).to(o.device);
  const auto noise = torch::randn_like(x0);  // the device's own generator
  auto [xt, weight] = noise_batch(x0, sigma, noise, o.given_frame);
  if (o.object_weight > 0) weight = weight * object_weights(x0, o.object_weight);
  const auto pred = m_.dit.forward(xt, sigma * 1000, ctx);
  // The mean over the frames that count (all of them unless one is given).
  return ((pred - (noise - x0)).pow(2) * weight).sum() /
         (weight.sum() * (x0.numel() / weight.numel()));
}

// A line of loss.csv and a message: the mean loss since the last one.
void DitRun::log_loss(Tensor& sum, int64_t& n, double lr) {
  const double mean = sum.item<double>() / static_cast<double>(n);
  loss_log_.add(p_.step, {mean}, lr, p_.seconds);
  char line[128];
  std::snprintf(line, sizeof line, "dit step %lld/%lld  loss %.4f  %.2f s/step",
                static_cast<long long>(p_.step), static_cast<long long>(o_.steps), mean,
                p_.seconds / static_cast<double>(p_.step));
  say(o_, line);
  sum.zero_(), n = 0;
}

void DitRun::train() {
  const auto dit_params = m_.dit.module().parameters();
  // The loss is summed where it is computed and read back only when logged.
  auto sum = torch::zeros({}, torch::TensorOptions().device(o_.device));
  int64_t n = 0;
  while (p_.step < o_.steps && !cancelled(o_)) {
    const auto t0 = Clock::now();
    const double lr = lr_at(o_, p_.step);
    set_lr(*m_.opt, lr, {1.0, o_.text_position_lr});
    torch::manual_seed(mix(o_.seed, 2000000 + p_.step));
    const auto loss = batch_loss();
    m_.opt->zero_grad();
    loss.backward();
    clip_grad_norm(m_.all_params, 1.0);
    m_.opt->step();
    ++p_.step;
    const double decay = std::min(o_.ema, (1.0 + p_.step) / (10.0 + p_.step));
    ema_update(m_.ema_dit, dit_params, decay);
    ema_update(m_.ema_te, m_.te_params, decay);
    p_.seconds += seconds_since(t0);
    sum += loss.detach(), ++n;
    if (p_.step % o_.log_every == 0 || p_.step == o_.steps) log_loss(sum, n, lr);
    if (p_.step % o_.save_every == 0) save();
    // Sheets on their own schedule, not only at checkpoints; the last step's
    // comes with the final save.
    if (o_.sample_every > 0 && p_.step % o_.sample_every == 0 && p_.step < o_.steps)
      with_ema([this] { sample(); });
  }
  save();
}

// Runs `fn` with the EMA weights in the modules, then puts the live ones back.
void DitRun::with_ema(const std::function<void()>& fn) {
  const auto live_dit = clones(m_.dit.module()), live_te = clones(m_.te.module());
  assign(m_.dit.module(), m_.ema_dit), assign(m_.te.module(), m_.ema_te);
  fn();
  assign(m_.dit.module(), live_dit), assign(m_.te.module(), live_te);
}

// The modules' weights as the model's files, configs in the metadata.
void DitRun::export_dit(const fs::path& path) {
  save_module(m_.dit.module(), path,
              {{"config", wc_.to_json()},
               {"kinora", dit_meta_},
               {"trained_steps", std::to_string(p_.step)},
               {"kinora_run", s_.run_id}});
}

void DitRun::export_te(const fs::path& path) {
  save_module(m_.te.module(), path, {{"config", tc_.to_json()}, {"kinora_run", s_.run_id}});
}

// The sheet of this step and the diagnostics' lines. Call with the EMA
// weights in the modules.
void DitRun::sample() {
  const auto& latents = data_.latents;
  write_dit_samples(sample_file(s_, p_.step), m_.dit, m_.te, tok_, vae_, o_,
                    latents.sizes().slice(1), s_.run_id);
  const auto gap_latents = latents.slice(0, 0, gap_clips_);
  const auto g = word_gaps(m_.dit, m_.te, tok_, gap_latents, gap_captions_, o_);
  const double lr = lr_at(o_, p_.step);
  gaps_log_.add(p_.step, {g.object, g.background, g.shape, g.direction}, lr, p_.seconds);
  given_log_.add(p_.step, {g.direction_given_frame}, lr, p_.seconds);
  const auto errors =
      denoise_errors(m_.dit, m_.te, tok_, gap_latents, gap_captions_, o_, kDenoiseSigmas);
  denoise_log_.add(p_.step, errors, lr, p_.seconds);
  char line[256];
  std::snprintf(line, sizeof line,
                "dit step %lld: the loss with one word wrong: object colour %+.1f%%, background "
                "%+.1f%%, shape %+.1f%%, direction %+.2f%% (%+.2f%% with a frame given; EMA "
                "weights, %lld clips)",
                static_cast<long long>(p_.step), g.object, g.background, g.shape, g.direction,
                g.direction_given_frame, static_cast<long long>(gap_clips_));
  say(o_, line);
}

// A checkpoint: live weights, optimizer, EMA weights and state.json,
// committed together (CheckpointWriter); when the stage is complete, also the
// last sheet and the run's model files.
void DitRun::save() {
  if (saved_at_ == p_.step) return;  // the loop's last checkpoint may be the final one
  saved_at_ = p_.step;
  if (p_.step != resumed_at_) {  // else the checkpoint it resumed from
    CheckpointWriter w(s_, p_.step);
    w.write("dit.safetensors", [&](const fs::path& f) { save_module(m_.dit.module(), f, {}); });
    w.write("umt5.safetensors", [&](const fs::path& f) { save_module(m_.te.module(), f, {}); });
    w.write("optimizer.pt", [&](const fs::path& f) { save_optimizer(*m_.opt, f); });
    with_ema([&] {
      w.write("ema-dit.safetensors", [&](const fs::path& f) { export_dit(f); });
      w.write("ema-umt5.safetensors", [&](const fs::path& f) { export_te(f); });
    });
    w.commit(s_,
             {{"step", p_.step},
              {"seconds", p_.seconds},
              {"locality_heads", p_.locality_heads},
              {"motion_heads", p_.motion_heads},
              {"pool_heads", p_.pool_heads}},
             config_);
  }
  if (p_.step >= o_.steps) {  // complete: the sheet and the run's files
    with_ema([&] {
      if (o_.sample_every > 0 && p_.step == o_.steps && p_.step > started_at_) sample();
      export_dit(o_.run_dir / kDitFile);
      export_te(o_.run_dir / kTextEncoderFile);
    });
  }
}

}  // namespace

// Gradients scaled so that their joint L2 norm is at most `max_norm`, as
// torch::nn::utils::clip_grad_norm_ does, but without reading the norm back
// to the host: that would wait for the device at every step.
void internal::clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  torch::NoGradGuard g;
  std::vector<Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return;
  const auto norms = at::_foreach_norm(grads);
  const auto total = torch::stack(norms).to(torch::kFloat32).norm();
  const auto coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
  for (auto& grad : grads) grad.mul_(coef);
}

std::string options_problem(const DitOptions& o) {
  const auto d = [](int64_t v) { return static_cast<double>(v); };
  const auto whole = [&](int64_t v, const char* option, int64_t least) {
    return option_problem(v >= least, option, d(v),
                          "a whole number of " + std::to_string(least) + " or more");
  };
  const auto share = [&](double v, const char* option) {
    return option_problem(v >= 0 && v <= 1, option, v, "a share from 0 to 1");
  };
  for (auto problem : {
           stage_options_problem(o),
           option_problem(o.dataset >= 1 && o.dataset <= kMaxDataset, "--dataset", d(o.dataset),
                          "a whole number from 1 to " + std::to_string(kMaxDataset)),
           whole(o.sample_every, "--sample-every", 0),
           whole(o.window, "--window", 0),
           whole(o.dim, "--dim", 1),
           whole(o.ffn_dim, "--ffn", 1),
           whole(o.num_heads, "--heads", 1),
           whole(o.num_layers, "--layers", 1),
           option_problem(
               o.num_heads < 1 || (o.dim % o.num_heads == 0 && o.dim / o.num_heads >= 6 &&
                                   (o.dim / o.num_heads) % 2 == 0),
               "--dim", d(o.dim),
               "a multiple of --heads (" + std::to_string(o.num_heads) +
                   ") whose share per head is even and at least 6 (the 3D rotary "
                   "positions split it)"),
           whole(o.patch, "--patch", 1),
           whole(o.time_patch, "--time-patch", 1),
           whole(o.text_len, "--text-len", 1),
           whole(o.text_dim, "--text-dim", 1),
           whole(o.text_layers, "--text-layers", 1),
           option_problem(o.text_heads < 1 || o.text_dim % o.text_heads == 0, "--text-dim",
                          d(o.text_dim),
                          "a multiple of umT5's " + std::to_string(o.text_heads) + " heads"),
           share(o.caption_dropout, "--caption-dropout"),
           share(o.given_frame, "--given-frame"),
           option_problem(o.object_weight >= 0, "--object-weight", o.object_weight,
                          "a number of 0 or more"),
           whole(o.refine_steps, "--refine-steps", 0),
           option_problem(o.refine_lr > 0, "--refine-lr", o.refine_lr, "a number above 0"),
           option_problem(o.refine_batch >= 1 && o.refine_batch <= kMaxBatch, "--refine-batch",
                          d(o.refine_batch),
                          "a whole number from 1 to " + std::to_string(kMaxBatch)),
           option_problem(o.shift >= 1, "--shift", o.shift, "a number of 1 or more"),
           option_problem(o.text_position_lr > 0, "--text-position-lr", o.text_position_lr,
                          "a number above 0"),
           heads_problem(o),
       })
    if (!problem.empty()) return problem;
  return {};
}

void train_dit(const DitOptions& o) {
  if (const auto problem = options_problem(o); !problem.empty()) throw Error(problem);
  check_earlier_stages(o);
  const auto tok = text::Tokenizer::load(o.run_dir / kTokenizerFile);
  if (o.device.is_cuda() && !torch::cuda::is_available())
    throw Error("--device cuda: this LibTorch sees no CUDA device (kinora devices lists them)");
  auto vae = vae::WanVAE::load(o.run_dir / kVaeFile, o.precision);
  vae.to(o.device);
  check_options(o, vae.config());
  const auto tc = t5_config(o, tok.vocab_size());
  const auto wc = wan_config(o, vae.config().z_dim);
  // The run's own state, when there is one, is resumed; its architecture is
  // the run's.
  auto s = open_state(o.run_dir / "dit-state");
  const auto config = run_config(o);
  check_config(s, config);
  for (const auto& file :
       {o.run_dir / kDitFile, o.run_dir / kTextEncoderFile, s.dir / "loss.csv",
        s.dir / "word-gaps.csv", s.dir / "direction-given-frame.csv", s.dir / "denoise.csv"})
    check_output(file, s, o.overwrite);
  check_state_folder(s, o.overwrite);
  // A model to start from is checked before anything is written or encoded.
  StartFrom from;
  if (!o.init_from.empty() && !s.resuming) from = open_start(o, tc, wc);
  begin_state(s);  // after every check: a refused run leaves nothing
  if (s.orphaned)
    say(o, "dit: starting afresh over the logs of a run stopped before its first checkpoint");
  const auto data = load_data(o, vae, tok);
  DitModels m(o, tc, wc);
  auto p = s.resuming ? resume(o, s, wc.num_heads, m) : start_fresh(o, wc.num_heads, from, m);
  DitRun(o, s, config, tok, vae, tc, wc, data, m, p).train();
  if (p.step < o.steps) {
    say(o, "dit: stopped at step " + std::to_string(p.step) + "; run again to resume");
    return;
  }
  say(o, "dit: wrote " + (o.run_dir / kDitFile).string() + " and " +
             (o.run_dir / kTextEncoderFile).string());
}

}  // namespace kinora::training
