// Stage 2, the VAE: the Wan 2.1 VAE at a small base width trained as an
// autoencoder of clips, its object-weighted loss (object_mask), the latents
// fitted through its frozen decoder (fit_latents), and the report on its
// reconstructions.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "base/error.h"
#include "base/strings.h"
#include "training/internal.h"
#include "vae/wan_vae.h"

namespace kinora::training {
namespace fs = std::filesystem;
using torch::Tensor;
using namespace internal;

namespace {

// Per-channel means and standard deviations of latents: what normalises the
// DiT's inputs.
using Statistics = std::pair<std::vector<double>, std::vector<double>>;

// How much more the object's pixels weigh in the VAE's loss than the
// background's (train_vae, and fit_latents, which descends that loss).
constexpr double kObjectLossWeight = 10;

// PyTorch's default for convolutions: U(±1/√fan_in); norms 1, biases 0.
void init_vae(torch::nn::Module& m, uint64_t seed) {
  torch::NoGradGuard g;
  torch::manual_seed(seed);
  for (auto& item : m.named_parameters()) {
    const auto& name = item.key();
    auto& p = item.value();
    if (ends_with(name, "gamma"))
      p.fill_(1);
    else if (ends_with(name, "bias"))
      p.zero_();
    else
      p.uniform_(-1.0 / std::sqrt(static_cast<double>(p[0].numel())),
                 1.0 / std::sqrt(static_cast<double>(p[0].numel())));
  }
  // The posterior's log-variance starts at −6 (σ ≈ 0.05), so that early training
  // is not swamped by sampling noise while the means are still small.
  auto b = m.named_parameters()["conv1.bias"];
  b.slice(0, b.size(0) / 2).fill_(-6);
}

// The architecture the options ask for.
vae::WanVAEConfig vae_config(const VaeOptions& o) {
  vae::WanVAEConfig cfg;
  cfg.dim = o.dim;
  if (o.spatial_compression != 8 && o.spatial_compression != 4)
    throw Error("--spatial-compression must be 8 or 4, got " +
                std::to_string(o.spatial_compression));
  if (o.time_compression != 4 && o.time_compression != 2 && o.time_compression != 1)
    throw Error("--time-compression must be 4, 2 or 1, got " + std::to_string(o.time_compression));
  // One stage fewer at 4× (the released VAE's last, 4×-wide stage dropped);
  // time is halved by the last stages, as in the released VAE.
  if (o.spatial_compression == 4) cfg.dim_mult = {1, 2, 4};
  const std::size_t stages = cfg.dim_mult.size() - 1;
  cfg.temporal_downsample.assign(stages, false);
  for (int64_t t = o.time_compression, i = static_cast<int64_t>(stages) - 1; t > 1; t /= 2, --i)
    cfg.temporal_downsample[static_cast<std::size_t>(i)] = true;
  return cfg;
}

// See VaeOptions::inflate_from.
void inflate_from_images(torch::nn::Module& m, const fs::path& path) {
  const auto ck = io::Checkpoint::open(path);
  torch::NoGradGuard g;
  int copied = 0;
  for (auto& item : m.named_parameters()) {
    const auto& name = item.key();
    auto& p = item.value();
    if (!ck.contains(name)) continue;
    const auto t = ck.get(name);
    if (t.sizes() != p.sizes())
      fail_file(path, "tensor '" + name + "' has shape " + c10::str(t.sizes()) + ", this VAE " +
                          c10::str(p.sizes()) + " (another --dim?)");
    p.copy_(t);
    ++copied;
    // Causal 3D kernels [out, in, t, h, w]: the taps on past frames (all but the last).
    if (p.dim() == 5 && p.size(2) > 1) p.slice(2, 0, p.size(2) - 1).zero_();
  }
  if (copied == 0) fail_file(path, "no tensor of this VAE in it: not a Wan VAE checkpoint");
  // The temporal resampling an image model lacks starts as the identity on the
  // newest frame: each stride-2 time convolution of the encoder keeps the later
  // frame of each pair, each one of the decoder repeats its frame. At 4× the
  // video VAE so begins as the image model on every fourth frame and only has
  // to learn the frames between.
  for (auto& item : m.named_parameters()) {
    const auto& name = item.key();
    if (ck.contains(name) || name.find("time_conv.") == std::string::npos) continue;
    auto& p = item.value();
    p.zero_();
    if (p.dim() != 5) continue;  // the bias stays zero
    const int64_t in = p.size(1), t = p.size(2);
    const auto eye = torch::eye(in, p.options()).view({in, in, 1, 1});
    for (int64_t o = 0; o + in <= p.size(0); o += in)
      p.slice(0, o, o + in).select(2, t - 1).copy_(eye);
  }
}

// A fresh run's start from files (VaeOptions.inflate_from, init_from,
// decoder_from), checked before anything is written. Returns the latent
// statistics a decoder-only run keeps from init_from's file.
std::optional<Statistics> start_from_files(const VaeOptions& o, const vae::WanVAEConfig& cfg,
                                           torch::nn::Module& m, bool resuming) {
  if (!o.inflate_from.empty() && !o.init_from.empty())
    throw Error("--inflate-from and --init-from are two starts; give one");
  if (!o.inflate_from.empty() && !resuming) inflate_from_images(m, o.inflate_from);
  if (!o.decoder_from.empty() && (o.init_from.empty() || !o.decoder_only))
    throw Error(
        "--decoder-from replaces the decoder of the --init-from file in a --decoder-only run; "
        "give --init-from and --decoder-only");
  if (o.init_from.empty() || resuming) return std::nullopt;
  auto arch = nlohmann::json::parse(cfg.to_json());
  arch.erase("latents_mean"), arch.erase("latents_std");
  const auto ck = open_trained(o.init_from, arch.dump(), "--init-from wants a VAE file");
  load_into(m, ck, o.init_from);
  if (!o.decoder_from.empty()) {
    load_into(m, open_trained(o.decoder_from, arch.dump(), "--decoder-from wants a VAE file"),
              o.decoder_from, [](const std::string& key) {
                return starts_with(key, "decoder.") || starts_with(key, "conv2.");
              });
    say(o, "vae: the decoder from " + o.decoder_from.string());
  }
  std::optional<Statistics> kept;
  if (o.decoder_only) {
    const auto had = vae::WanVAEConfig::from_checkpoint(ck);
    kept.emplace(had.latents_mean, had.latents_std);
  }
  say(o, "vae: starting from " + o.init_from.string());
  return kept;
}

// Where the stage stands: what vae-state/state.json records.
struct VaeProgress {
  int64_t step = 0;
  double seconds = 0;
  // Statistics kept from the file a decoder-only run starts from (and recorded
  // in its state, so that a resumed run keeps them too).
  std::optional<Statistics> kept_statistics;
};

void resume(const VaeOptions& o, const StageState& s, vae::WanVAE& model, torch::optim::AdamW& opt,
            VaeProgress& p) {
  const auto& j = s.json;
  p.step = j.at("step"), p.seconds = j.at("seconds");
  if (j.contains("latents_mean"))
    p.kept_statistics.emplace(j.at("latents_mean").get<std::vector<double>>(),
                              j.at("latents_std").get<std::vector<double>>());
  load_into(model.module(), s.checkpoint / "vae.safetensors");
  load_optimizer(opt, s.checkpoint / "optimizer.pt");
  say(o, "vae: resuming at step " + std::to_string(p.step));
  if (!o.init_from.empty())
    say(o, "vae: --init-from is ignored: this run resumes from its checkpoint of step " +
               std::to_string(p.step));
}

// What cannot change once the stage has begun: the architecture.
nlohmann::json run_config(const VaeOptions& o) {
  return {{"--dim", o.dim},
          {"--spatial-compression", o.spatial_compression},
          {"--time-compression", o.time_compression}};
}

// A checkpoint: the sample sheet of this step (`samples` on the left, their
// decoded posterior means on the right), then the weights, the optimizer and
// state.json, committed together (CheckpointWriter).
void save_state(const VaeOptions& o, StageState& s, vae::WanVAE& model,
                torch::optim::Optimizer& opt, const Tensor& samples, const VaeProgress& p) {
  {
    torch::NoGradGuard g;
    const auto rec = model.decode_unnormalised(model.posterior(samples).first).clamp(-1, 1);
    write_ppm(sample_file(s, p.step), torch::cat({strip(samples), strip(rec)}, 1), s.run_id);
  }
  CheckpointWriter w(s, p.step);
  w.write("vae.safetensors", [&](const fs::path& f) { save_module(model.module(), f, {}); });
  w.write("optimizer.pt", [&](const fs::path& f) { save_optimizer(opt, f); });
  nlohmann::json j = {{"step", p.step}, {"seconds", p.seconds}};
  if (p.kept_statistics)
    j["latents_mean"] = p.kept_statistics->first, j["latents_std"] = p.kept_statistics->second;
  w.commit(s, j, run_config(o));
}

// Square crops of o.crop pixels of the clips x and their object masks fg:
// around the object three times in four (its centre in the middle frame,
// jittered), anywhere otherwise.
void crop_batch(const VaeOptions& o, const ClipSpec& spec, int64_t step, Tensor& x, Tensor& fg) {
  std::vector<Tensor> xs, fs;
  for (int64_t b = 0; b < o.batch; ++b) {
    const uint64_t r = mix(o.seed ^ 0xC209, step * 131 + b);
    int64_t y0 = static_cast<int64_t>(r % static_cast<uint64_t>(spec.height - o.crop + 1));
    int64_t x0 = static_cast<int64_t>((r >> 20) % static_cast<uint64_t>(spec.width - o.crop + 1));
    const auto mid = fg[b][0][spec.frames / 2];
    if ((r >> 40) % 4 != 0 && mid.sum().item<double>() > 0) {
      const auto nz = mid.nonzero().to(torch::kFloat32).mean(0);
      const auto jitter = [&](int shift) { return static_cast<int64_t>((r >> shift) % 17) - 8; };
      y0 = std::clamp<int64_t>(std::lround(nz[0].item<double>()) - o.crop / 2 + jitter(44), 0,
                               spec.height - o.crop);
      x0 = std::clamp<int64_t>(std::lround(nz[1].item<double>()) - o.crop / 2 + jitter(52), 0,
                               spec.width - o.crop);
    }
    xs.push_back(x[b].slice(2, y0, y0 + o.crop).slice(3, x0, x0 + o.crop));
    fs.push_back(fg[b].slice(2, y0, y0 + o.crop).slice(3, x0, x0 + o.crop));
  }
  x = torch::stack(xs);
  fg = torch::stack(fs);
}

// One step's loss and its terms: the object-weighted L1 and MSE of the
// reconstruction from a posterior sample, and the posterior's KL.
struct VaeLoss {
  Tensor loss, l1, mse, kl;
};

VaeLoss vae_loss(const VaeOptions& o, vae::WanVAE& model, const Tensor& x, const Tensor& fg) {
  const auto weight = (1 + (kObjectLossWeight - 1) * fg).expand_as(x);
  const auto wsum = weight.sum();
  auto [mu, logvar] = model.posterior(x);
  logvar = logvar.clamp(-30, 20);
  const auto z = mu + torch::exp(0.5 * logvar) * torch::randn_like(mu);
  const auto rec = model.decode_unnormalised(z);
  const auto l1 = ((rec - x).abs() * weight).sum() / wsum;
  const auto mse = ((rec - x).pow(2) * weight).sum() / wsum;
  const auto kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean();
  return {l1 + mse + o.kl_weight * kl, l1, mse, kl};
}

// The optimizer steps from p.step to o.steps (or to a cancel), with a log line
// every o.log_every steps and `save` every o.save_every.
void run_steps(const VaeOptions& o, vae::WanVAE& model, torch::optim::AdamW& opt, LossLog& log,
               const std::function<void()>& save, VaeProgress& p) {
  ClipSpec spec = o.clip;
  spec.frames = o.train_frames;
  double sum[4] = {0, 0, 0, 0};
  int64_t n = 0;
  while (p.step < o.steps && !cancelled(o)) {
    const auto t0 = Clock::now();
    const double lr = lr_at(o, p.step);
    set_lr(opt, lr);
    torch::manual_seed(mix(o.seed, 1000000 + p.step));
    auto x = clip_batch(mix(o.seed, p.step), o.batch, spec).first;
    // The object's pixels (far from the clip's background, the median of its
    // border) weigh 10× in the loss: they are a small share of each frame, and an
    // autoencoder first learns to draw backgrounds alone.
    auto fg = object_mask(x);  // [B, 1, F, H, W]
    if (o.crop > 0 && o.crop < spec.width && o.crop < spec.height)
      crop_batch(o, spec, p.step, x, fg);
    const auto l = vae_loss(o, model, x, fg);
    opt.zero_grad();
    l.loss.backward();
    torch::nn::utils::clip_grad_norm_(model.module().parameters(), 1.0);
    opt.step();
    ++p.step;
    p.seconds += seconds_since(t0);
    sum[0] += l.loss.item<double>(), sum[1] += l.l1.item<double>(), sum[2] += l.mse.item<double>(),
        sum[3] += l.kl.item<double>(), ++n;
    if (p.step % o.log_every == 0 || p.step == o.steps) {
      log.add(p.step, {sum[0] / n, sum[1] / n, sum[2] / n, sum[3] / n}, lr, p.seconds);
      char line[160];
      std::snprintf(line, sizeof line,
                    "vae step %lld/%lld  loss %.4f  l1 %.4f  kl %.2f  %.2f s/step",
                    static_cast<long long>(p.step), static_cast<long long>(o.steps), sum[0] / n,
                    sum[1] / n, sum[3] / n, p.seconds / static_cast<double>(p.step));
      say(o, line);
      sum[0] = sum[1] = sum[2] = sum[3] = 0, n = 0;
    }
    if (p.step % o.save_every == 0) save();
  }
}

// Per-channel mean and standard deviation of the posterior means of
// `o.stats_clips` full-length clips.
Statistics latent_statistics(vae::WanVAE& model, const VaeOptions& o) {
  torch::NoGradGuard g;
  std::vector<Tensor> mus;
  for (int64_t i = 0; i < o.stats_clips; i += 16) {
    const auto x =
        clip_batch(mix(o.seed, 0x57A7 + i), std::min<int64_t>(16, o.stats_clips - i), o.clip).first;
    mus.push_back(model.posterior(x).first);
  }
  const auto all = torch::cat(mus).transpose(0, 1).flatten(1).to(torch::kFloat64);  // [z, N]
  const auto mean = all.mean(1).contiguous(), spread = all.std(1).contiguous();
  return {{mean.data_ptr<double>(), mean.data_ptr<double>() + mean.numel()},
          {spread.data_ptr<double>(), spread.data_ptr<double>() + spread.numel()}};
}

// The best the DiT can do: the scene measures (what the semantic test checks)
// on the VAE's reconstructions of full-length clips from seeds no stage trains
// on. Written to <run>/vae-report.json and said.
void report_reconstructions(const VaeOptions& o, vae::WanVAE& model, const std::string& run) {
  constexpr int kClips = 48;
  int background = 0, object = 0, shape = 0, direction = 0, truth = 0;
  for (uint64_t seed = 0x7E57'0000; seed < 0x7E57'0000 + kClips; ++seed) {
    const auto scene = random_scene(seed, o.clip);
    const auto frames = render(scene, o.clip);
    torch::Tensor rec;
    {
      torch::NoGradGuard g;
      rec = model.decode_unnormalised(model.posterior(frames_to_video(frames).unsqueeze(0)).first);
    }
    const auto pixels =
        rec[0].permute({1, 2, 3, 0}).add(1).mul(127.5).round().clamp(0, 255).to(torch::kUInt8);
    const auto m = measure(pixels), t = measure(frames);
    background += m.background == scene.background;
    object += m.object_found && m.object == scene.object;
    shape += m.object_found && m.shape == scene.shape;
    direction += m.object_found && m.direction == scene.direction;
    truth += t.object_found && t.shape == scene.shape && t.object == scene.object &&
             t.background == scene.background && t.direction == scene.direction;
  }
  const auto pct = [&](int k) { return std::round(1000.0 * k / kClips) / 10; };
  const nlohmann::json j{{"clips", kClips},
                         {"background_pct", pct(background)},
                         {"object_pct", pct(object)},
                         {"shape_pct", pct(shape)},
                         {"direction_pct", pct(direction)},
                         {"originals_all_pct", pct(truth)},
                         {"run", run}};
  write_json(o.run_dir / "vae-report.json", j);
  char line[256];
  std::snprintf(line, sizeof line,
                "vae: measures on reconstructions of %d unseen clips: background %.1f%%, "
                "object %.1f%%, shape %.1f%%, direction %.1f%% (the originals: %.1f%% on all four)",
                kClips, pct(background), pct(object), pct(shape), pct(direction), pct(truth));
  say(o, line);
}

// The complete stage's file, <run>/kinora-tiny-wan-vae.safetensors, with the
// latent statistics that normalise the DiT's inputs (a decoder-only run from
// a trained file keeps that file's), and the report on its reconstructions.
void export_vae(const VaeOptions& o, vae::WanVAE& model, const VaeProgress& p,
                const std::string& run) {
  model.set_trainable(false);
  const auto [mean, spread] = p.kept_statistics ? *p.kept_statistics : latent_statistics(model, o);
  model.set_latent_statistics(mean, spread);
  save_module(
      model.module(), o.run_dir / kVaeFile,
      {{"config", model.config().to_json()},
       {"kinora",
        nlohmann::json{{"model", "Kinora tiny Wan 2.1 VAE"}, {"trained_steps", p.step}}.dump()},
       {"kinora_run", run}});
  say(o, "vae: wrote " + (o.run_dir / kVaeFile).string());
  report_reconstructions(o, model, run);
}

}  // namespace

Tensor object_mask(const Tensor& video) {
  const auto border = torch::cat({video.select(3, 0), video.select(3, -1)}, 3).flatten(2);
  const auto bg = std::get<0>(border.median(2)).view({-1, 3, 1, 1, 1});  // [B, 3, 1, 1, 1]
  return ((video - bg).abs().sum(1, true) > 0.1).to(torch::kFloat32);
}

FittedLatents fit_latents(vae::WanVAE& vae, const Tensor& video, int64_t steps, double lr,
                          const std::function<void(int64_t, double)>& on_step) {
  if (steps < 0 || !(lr > 0)) throw Error("fit_latents: steps must be ≥ 0 and the rate > 0");
  const auto weight = (1 + (kObjectLossWeight - 1) * object_mask(video)).expand_as(video);
  const auto weighted_l1 = [&](const Tensor& rec) {
    return ((rec - video).abs() * weight).sum() / weight.sum();
  };
  // What the steps descend: each clip's own weighted L1, summed, so that a
  // clip's gradient (and with Adam its path) does not depend on the others
  // fitted beside it.
  const std::vector<int64_t> per_clip = {1, 2, 3, 4};
  const auto clip_weight = weight.sum(per_clip);
  const auto fit_loss = [&](const Tensor& rec) {
    return (((rec - video).abs() * weight).sum(per_clip) / clip_weight).sum();
  };
  FittedLatents out;
  Tensor z;
  {
    torch::NoGradGuard g;
    z = vae.posterior(video).first;
    out.l1_encoded = weighted_l1(vae.decode_unnormalised(z)).item<double>();
  }
  if (steps > 0) {
    // The VAE's calls build graphs; its weights take no gradient and stay put.
    vae.set_trainable(true);
    for (auto& p : vae.module().parameters()) p.set_requires_grad(false);
    z = z.clone().set_requires_grad(true);
    torch::AutoGradMode grad(true);
    torch::optim::Adam opt({z}, torch::optim::AdamOptions(lr));
    for (int64_t k = 0; k < steps; ++k) {
      const auto rec = vae.decode_unnormalised(z);
      opt.zero_grad();
      fit_loss(rec).backward();
      opt.step();
      if (on_step) on_step(k + 1, weighted_l1(rec.detach()).item<double>());
    }
    vae.set_trainable(false);
    z = z.detach();
  }
  torch::NoGradGuard g;
  out.l1_fitted = weighted_l1(vae.decode_unnormalised(z)).item<double>();
  out.z = z;
  return out;
}

std::string options_problem(const VaeOptions& o) {
  const auto d = [](int64_t v) { return static_cast<double>(v); };
  const int64_t size = std::min(o.clip.width, o.clip.height);
  const int64_t sc = o.spatial_compression;
  for (auto problem : {
           stage_options_problem(o),
           option_problem(o.dim >= 1, "--dim", d(o.dim), "a whole number of 1 or more"),
           option_problem(sc == 4 || sc == 8, "--spatial-compression", d(sc), "4 or 8"),
           option_problem(
               o.time_compression == 1 || o.time_compression == 2 || o.time_compression == 4,
               "--time-compression", d(o.time_compression), "1, 2 or 4"),
           option_problem(o.train_frames >= 1 && (o.train_frames - 1) % 4 == 0, "--frames",
                          d(o.train_frames),
                          "1 + 4k frames (1, 5, 9, 13, 17, …): the VAE encodes a first frame, "
                          "then chunks of 4"),
           option_problem(o.crop == 0 || (o.crop >= sc && o.crop % sc == 0 && o.crop <= size),
                          "--crop", d(o.crop),
                          "0 (whole frames) or a multiple of " + std::to_string(sc) +
                              " (--spatial-compression) up to the clips' " + std::to_string(size) +
                              " pixels"),
           option_problem(std::isfinite(o.kl_weight) && o.kl_weight >= 0, "--kl", o.kl_weight,
                          "a number of 0 or more"),
       })
    if (!problem.empty()) return problem;
  return {};
}

void train_vae(const VaeOptions& o) {
  if (const auto problem = options_problem(o); !problem.empty()) throw Error(problem);
  const auto cfg = vae_config(o);
  vae::WanVAE model(cfg);
  init_vae(model.module(), o.seed);
  auto s = open_state(o.run_dir / "vae-state");
  const auto config = run_config(o);
  check_config(s, config);
  const auto log_path = s.dir / "loss.csv";
  for (const auto& file : {o.run_dir / kVaeFile, o.run_dir / "vae-report.json", log_path})
    check_output(file, s, o.overwrite);
  check_state_folder(s, o.overwrite);
  VaeProgress p;
  p.kept_statistics = start_from_files(o, cfg, model.module(), s.resuming);
  begin_state(s);  // after the options and the file to start from are checked
  if (s.orphaned)
    say(o, "vae: starting afresh over the logs of a run stopped before its first checkpoint");
  model.set_precision(o.precision);
  model.set_trainable(true);
  if (o.decoder_only)
    for (auto& item : model.module().named_parameters())
      if (starts_with(item.key(), "encoder.") || starts_with(item.key(), "conv1."))
        item.value().requires_grad_(false);  // no gradient: AdamW leaves them alone
  torch::optim::AdamW opt(model.module().parameters(),
                          torch::optim::AdamWOptions(o.lr).betas({0.9, 0.99}).weight_decay(0.0));
  if (s.resuming) resume(o, s, model, opt, p);
  const int64_t resumed_at = s.resuming ? p.step : -1;
  auto log = open_log(log_path, s, p.step, "step,loss,l1,mse,kl,lr,seconds");
  // Reconstructions of the same four clips at every checkpoint.
  const auto samples = clip_batch(mix(o.seed, 0x5A11), 4, o.clip).first;
  // A checkpoint of the step the stage resumed at is the one it resumed from;
  // the final one may be the loop's last.
  const auto save = [&] {
    if (p.step != resumed_at && !(s.resuming && s.json.value("step", int64_t{-1}) == p.step))
      save_state(o, s, model, opt, samples, p);
  };
  run_steps(o, model, opt, log, save, p);
  save();
  if (p.step < o.steps) {
    say(o, "vae: stopped at step " + std::to_string(p.step) + "; run again to resume");
    return;
  }
  export_vae(o, model, p, s.run_id);
}

}  // namespace kinora::training
