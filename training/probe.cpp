#include "training/probe.h"

#include <cmath>
#include <cstdio>

#include "base/error.h"
#include "diffusion/wan_dit.h"
#include "pipeline/pipeline.h"
#include "schedulers/sigma_schedules.h"
#include "text/t5.h"
#include "text/tokenizer.h"
#include "training/internal.h"
#include "training/train.h"
#include "vae/wan_vae.h"

namespace kinora::training {
namespace fs = std::filesystem;
using torch::Tensor;

namespace {

std::size_t shape_index(Shape s) {
  return static_cast<std::size_t>(s);
}

// The shape a swapped caption names: circle → square → triangle → circle.
Shape next_shape(Shape s) {
  return kShapes[(shape_index(s) + 1) % kShapes.size()];
}

// The options, and the model folder's four files.
void check_options(const ProbeOptions& o) {
  if (o.clips_per_shape < 1)
    throw Error("--clips must be at least 1, got " + std::to_string(o.clips_per_shape));
  for (const char* f : {kDitFile, kTextEncoderFile, kVaeFile, kTokenizerFile})
    if (!fs::is_regular_file(o.model_dir / f))
      throw Error((o.model_dir / f).string() + ": no such file (a model folder holds " + kDitFile +
                  ", " + kTextEncoderFile + ", " + kVaeFile + " and " + kTokenizerFile + ")");
  for (double s : o.redraw_sigmas)
    if (!(s > 0 && s <= 1)) throw Error("--sigmas must lie in (0, 1], got " + c10::str(s));
  if (o.fit_steps < 0 || !(o.fit_lr > 0))
    throw Error("--fit-steps must be ≥ 0 and --fit-lr > 0, got " + std::to_string(o.fit_steps) +
                " and " + c10::str(o.fit_lr));
  if (o.fit_frames < 1 || (o.fit_frames - 1) % 4 != 0 || o.fit_frames > o.clip.frames)
    throw Error("--fit-frames must be 1 + 4k and at most the clip's " +
                std::to_string(o.clip.frames) + ", got " + std::to_string(o.fit_frames));
}

// Scenes of each shape in turn, from seeds no stage trains on.
std::vector<Scene> probe_scenes(const ProbeOptions& o) {
  std::vector<Scene> scenes;
  std::array<int64_t, 3> have{};
  for (uint64_t k = 0; static_cast<int64_t>(scenes.size()) < 3 * o.clips_per_shape; ++k) {
    const auto s = random_scene(o.seed * 0x9E3779B97F4A7C15ULL + 0x9B0BE000 + k, o.clip);
    if (have[shape_index(s.shape)] >= o.clips_per_shape) continue;
    ++have[shape_index(s.shape)];
    scenes.push_back(s);
  }
  return scenes;
}

// Videos [N, 3, F, H, W] in [−1, 1] → uint8.
Tensor to_uint8(const Tensor& v) {
  return v.clamp(-1, 1).add(1).mul(127.5).round().to(torch::kUInt8);
}

// The model, the clips and their latents, and the rows measured so far, in
// the order probe.h lists them. Run with no gradient.
class Probe {
 public:
  explicit Probe(const ProbeOptions& o);
  // The clips themselves, with no VAE: the ceiling of every other row.
  void clip_row() { measure_video("clip", 0, to_uint8(videos_)); }
  void noise_rows();
  void fit_rows();
  void redraw_rows();
  std::vector<ProbeRow> rows;

 private:
  void say(const std::string& s) const {
    if (o_.on_message) o_.on_message(s);
  }
  void measure_video(const std::string& kind, double level, const Tensor& video);
  // A row from latents (normalised), decoded.
  void measure_row(const std::string& kind, double level, const Tensor& z) {
    measure_video(kind, level, to_uint8(vae_.decode(z)));
  }

  const ProbeOptions& o_;
  diffusion::WanModel dit_;
  text::T5Encoder te_;
  vae::WanVAE vae_;
  text::Tokenizer tok_;
  std::vector<Scene> scenes_;
  int64_t n_;
  Tensor videos_;                           // [N, 3, F, H, W] in [−1, 1]
  std::vector<std::string> own_, swapped_;  // the clips' captions, and with the shape swapped
  Tensor x0_;                               // the clips' latents
  int64_t text_len_;
  Tensor uncond_;  // the empty caption's context, N rows
};

Probe::Probe(const ProbeOptions& o)
    : o_(o),
      dit_(diffusion::WanModel::load(o.model_dir / kDitFile, o.precision)),
      te_(text::T5Encoder::load(o.model_dir / kTextEncoderFile, o.precision)),
      vae_(vae::WanVAE::load(o.model_dir / kVaeFile, o.precision)),
      tok_(text::Tokenizer::load(o.model_dir / kTokenizerFile)),
      scenes_(probe_scenes(o)),
      n_(static_cast<int64_t>(scenes_.size())) {
  std::vector<Tensor> videos;
  for (const auto& s : scenes_) {
    videos.push_back(frames_to_video(render(s, o.clip)));
    own_.push_back(s.caption());
    Scene w = s;
    w.shape = next_shape(s.shape);
    swapped_.push_back(w.caption());
  }
  videos_ = torch::stack(videos);
  x0_ = vae_.encode(videos_);
  text_len_ = dit_.config().text_len;
  uncond_ = encode_captions(te_, tok_, {""}, text_len_, torch::kCPU).expand({n_, -1, -1});
}

// A row from videos [N, 3, F, H, W] uint8.
void Probe::measure_video(const std::string& kind, double level, const Tensor& video) {
  ProbeRow row{kind, level, {}, {}};
  for (int64_t i = 0; i < n_; ++i) {
    const auto& s = scenes_[static_cast<std::size_t>(i)];
    const auto m = measure(video[i].permute({1, 2, 3, 0}).contiguous());
    const auto aim = kind == "swapped" ? next_shape(s.shape) : s.shape;
    // As the semantic test counts a shape: one object drawn, of that shape.
    row.right[shape_index(s.shape)] += m.object_found && m.objects == 1 && m.shape == aim;
    row.fill[shape_index(s.shape)] += m.fill_ratio / static_cast<double>(o_.clips_per_shape);
  }
  char line[200];
  std::snprintf(line, sizeof line,
                "probe: %-7s %.2f  circles %d (fill %.3f)  squares %d (%.3f)  triangles %d "
                "(%.3f) of %lld each",
                kind.c_str(), level, row.right[0], row.fill[0], row.right[1], row.fill[1],
                row.right[2], row.fill[2], static_cast<long long>(o_.clips_per_shape));
  say(line);
  rows.push_back(row);
}

void Probe::noise_rows() {
  for (double a : o_.noise_levels) {
    torch::manual_seed(static_cast<int64_t>(o_.seed) + 1);
    measure_row("noise", a, x0_ + a * torch::randn(x0_.sizes()));
  }
}

// The rows first, fit, first+noise and fit+noise (with fit steps).
void Probe::fit_rows() {
  // One frame by default: the gradient through the decoder then costs a
  // seventeenth of a clip's.
  const auto first = videos_.slice(2, 0, o_.fit_frames);  // [N, 3, F, H, W]
  // measure() reads motion, so wants two frames: one frame twice.
  const auto to_pixels = [&](const Tensor& v) {
    const auto p = to_uint8(v);
    return o_.fit_frames == 1 ? p.repeat({1, 1, 2, 1, 1}) : p;
  };
  const auto posterior = vae_.posterior(first);
  const auto& mu = posterior.first;
  char line[160];
  std::snprintf(
      line, sizeof line,
      "probe: the encoder's posterior σ, RMS %.4f; its means' spread, RMS %.4f (un-normalised)",
      posterior.second.clamp(-30, 20).exp().mean().sqrt().item<double>(),
      (mu - mu.mean({0, 2, 3, 4}, true)).pow(2).mean().sqrt().item<double>());
  say(line);
  const auto fit = fit_latents(vae_, first, o_.fit_steps, o_.fit_lr, [&](int64_t k, double l1) {
    if (k % 25 != 0 && k != o_.fit_steps) return;
    char step_line[120];
    std::snprintf(step_line, sizeof step_line, "probe: fit step %lld/%lld  weighted L1 %.4f",
                  static_cast<long long>(k), static_cast<long long>(o_.fit_steps), l1);
    say(step_line);
  });
  measure_video("first", 0, to_pixels(vae_.decode_unnormalised(mu)));
  rows.back().l1 = fit.l1_encoded;
  measure_video("fit", static_cast<double>(o_.fit_steps),
                to_pixels(vae_.decode_unnormalised(fit.z)));
  rows.back().l1 = fit.l1_fitted;
  // The fitted latents with the noise rows' noise (normalised units): whether
  // what the fit gained survives a DiT's error, or is a pattern no model
  // would draw. The encoder's latents with the same noise beside them.
  for (double a : o_.noise_levels) {
    if (a <= 0) continue;
    torch::manual_seed(static_cast<int64_t>(o_.seed) + 3);
    const auto noise = a * torch::randn(mu.sizes());
    measure_video("first+noise", a, to_pixels(vae_.decode(vae_.normalise(mu) + noise)));
    measure_video("fit+noise", a, to_pixels(vae_.decode(vae_.normalise(fit.z) + noise)));
  }
  std::snprintf(line, sizeof line, "probe: the fitted latents moved by RMS %.4f (un-normalised)",
                (fit.z - mu).pow(2).mean().sqrt().item<double>());
  say(line);
  std::snprintf(line, sizeof line,
                "probe: weighted L1 of the first frames: %.4f encoded, %.4f fitted", fit.l1_encoded,
                fit.l1_fitted);
  say(line);
}

// The rows redraw and swapped: the latents noised to each σ₀ and sampled back
// to 0 (Euler, classifier-free guidance) with their own caption, then with
// the shape word swapped.
void Probe::redraw_rows() {
  for (bool swap : {false, true}) {
    layers::Conditioning cond, unconditional;
    cond.context = encode_captions(te_, tok_, swap ? swapped_ : own_, text_len_, torch::kCPU);
    unconditional.context = uncond_;
    for (double s0 : o_.redraw_sigmas) {
      torch::manual_seed(static_cast<int64_t>(o_.seed) + 2);  // the same noise for every σ₀
      auto x = (1 - s0) * x0_ + s0 * torch::randn(x0_.sizes());
      // The shift-1 grid from σ₀ down, shifted as the sampler shifts its own
      // (the inverse of a shift k is the shift 1/k).
      const double u0 = schedulers::static_shift(s0, 1 / o_.shift);
      const auto steps = std::max<int64_t>(1, std::llround(static_cast<double>(o_.steps) * s0));
      for (int64_t k = 0; k < steps; ++k) {
        const double a =
            schedulers::static_shift(u0 * (1 - static_cast<double>(k) / steps), o_.shift);
        const double b =
            schedulers::static_shift(u0 * (1 - static_cast<double>(k + 1) / steps), o_.shift);
        const auto t = torch::full({1}, a * 1000, torch::kFloat32);
        const auto v = pipeline::guided_prediction(dit_, x, t, cond, &unconditional, o_.guidance);
        x = x + (b - a) * v;  // Euler on the flow
      }
      measure_row(swap ? "swapped" : "redraw", s0, x);
    }
  }
}

}  // namespace

std::vector<ProbeRow> probe_shapes(const ProbeOptions& given) {
  ProbeOptions o = given;
  o.model_dir = internal::base_model_dir(given.model_dir, "train probe");
  check_options(o);
  torch::NoGradGuard no_grad;
  Probe probe(o);
  probe.clip_row();
  probe.noise_rows();
  if (o.fit_steps > 0) probe.fit_rows();
  probe.redraw_rows();
  return std::move(probe.rows);
}

std::string probe_table(const std::vector<ProbeRow>& rows, int64_t clips_per_shape) {
  std::string out =
      "| probe | level | circles | squares | triangles |\n| --- | --- | --- | --- | --- |\n";
  for (const auto& r : rows) {
    char line[200];
    std::snprintf(line, sizeof line,
                  "| %s | %.2f | %d/%lld (%.3f) | %d/%lld (%.3f) | %d/%lld (%.3f) |\n",
                  r.kind.c_str(), r.level, r.right[0], static_cast<long long>(clips_per_shape),
                  r.fill[0], r.right[1], static_cast<long long>(clips_per_shape), r.fill[1],
                  r.right[2], static_cast<long long>(clips_per_shape), r.fill[2]);
    out += line;
  }
  return out;
}

}  // namespace kinora::training
