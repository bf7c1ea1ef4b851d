#include "training/probe.h"

#include <cmath>
#include <cstdio>

#include "base/error.h"
#include "diffusion/wan_dit.h"
#include "pipeline/pipeline.h"
#include "schedulers/sigma_schedules.h"
#include "text/t5.h"
#include "text/tokenizer.h"
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

}  // namespace

std::vector<ProbeRow> probe_shapes(const ProbeOptions& o) {
  if (o.clips_per_shape < 1) throw Error("probe: clips per shape must be at least 1");
  for (const char* f : {kDitFile, kTextEncoderFile, kVaeFile, kTokenizerFile})
    if (!fs::is_regular_file(o.model_dir / f))
      throw Error((o.model_dir / f).string() + ": no such file (a model folder holds " + kDitFile +
                  ", " + kTextEncoderFile + ", " + kVaeFile + " and " + kTokenizerFile + ")");
  for (double s : o.redraw_sigmas)
    if (!(s > 0 && s <= 1)) throw Error("probe: a redraw's σ₀ must lie in (0, 1]");
  if (o.fit_steps < 0 || !(o.fit_lr > 0)) throw Error("probe: fit steps must be ≥ 0, its rate > 0");
  if (o.fit_frames < 1 || (o.fit_frames - 1) % 4 != 0 || o.fit_frames > o.clip.frames)
    throw Error("probe: fit frames must be 1 + 4k and at most the clip's " +
                std::to_string(o.clip.frames));
  torch::NoGradGuard no_grad;
  auto dit = diffusion::WanModel::load(o.model_dir / kDitFile, o.precision);
  auto te = text::T5Encoder::load(o.model_dir / kTextEncoderFile, o.precision);
  auto vae = vae::WanVAE::load(o.model_dir / kVaeFile, o.precision);
  const auto tok = text::Tokenizer::load(o.model_dir / kTokenizerFile);
  const auto say = [&](const std::string& s) {
    if (o.on_message) o.on_message(s);
  };

  // Scenes of each shape in turn, from seeds no stage trains on.
  std::vector<Scene> scenes;
  std::array<int64_t, 3> have{};
  for (uint64_t k = 0; static_cast<int64_t>(scenes.size()) < 3 * o.clips_per_shape; ++k) {
    const auto s = random_scene(o.seed * 0x9E3779B97F4A7C15ULL + 0x9B0BE000 + k, o.clip);
    if (have[shape_index(s.shape)] >= o.clips_per_shape) continue;
    ++have[shape_index(s.shape)];
    scenes.push_back(s);
  }
  const auto n = static_cast<int64_t>(scenes.size());
  std::vector<Tensor> videos;
  std::vector<std::string> own, swapped;
  for (const auto& s : scenes) {
    videos.push_back(frames_to_video(render(s, o.clip)));
    own.push_back(s.caption());
    Scene w = s;
    w.shape = next_shape(s.shape);
    swapped.push_back(w.caption());
  }
  const auto x0 = vae.encode(torch::stack(videos));
  const int64_t text_len = dit.config().text_len;
  const auto uncond = encode_captions(te, tok, {""}, text_len, torch::kCPU).expand({n, -1, -1});

  std::vector<ProbeRow> rows;
  // A row from videos [N, 3, F, H, W] uint8 (measure_row: from latents, decoded).
  auto measure_video = [&](const std::string& kind, double level, const Tensor& video) {
    ProbeRow row{kind, level, {}, {}};
    for (int64_t i = 0; i < n; ++i) {
      const auto& s = scenes[static_cast<std::size_t>(i)];
      const auto m = measure(video[i].permute({1, 2, 3, 0}).contiguous());
      const auto aim = kind == "swapped" ? next_shape(s.shape) : s.shape;
      // As the semantic test counts a shape: one object drawn, of that shape.
      row.right[shape_index(s.shape)] += m.object_found && m.objects == 1 && m.shape == aim;
      row.fill[shape_index(s.shape)] += m.fill_ratio / static_cast<double>(o.clips_per_shape);
    }
    char line[200];
    std::snprintf(line, sizeof line,
                  "probe: %-7s %.2f  circles %d (fill %.3f)  squares %d (%.3f)  triangles %d "
                  "(%.3f) of %lld each",
                  kind.c_str(), level, row.right[0], row.fill[0], row.right[1], row.fill[1],
                  row.right[2], row.fill[2], static_cast<long long>(o.clips_per_shape));
    say(line);
    rows.push_back(row);
  };
  auto measure_row = [&](const std::string& kind, double level, const Tensor& z) {
    measure_video(kind, level,
                  vae.decode(z).clamp(-1, 1).add(1).mul(127.5).round().to(torch::kUInt8));
  };

  // The clips themselves, with no VAE: the ceiling of every other row.
  measure_video("clip", 0,
                torch::stack(videos).clamp(-1, 1).add(1).mul(127.5).round().to(torch::kUInt8));

  for (double a : o.noise_levels) {
    torch::manual_seed(static_cast<int64_t>(o.seed) + 1);
    measure_row("noise", a, x0 + a * torch::randn(x0.sizes()));
  }
  if (o.fit_steps > 0) {
    // One frame by default: the gradient through the decoder then costs a
    // seventeenth of a clip's.
    const auto first = torch::stack(videos).slice(2, 0, o.fit_frames);  // [N, 3, F, H, W]
    // measure() reads motion, so wants two frames: one frame twice.
    const auto to_pixels = [&](const Tensor& v) {
      const auto p = v.clamp(-1, 1).add(1).mul(127.5).round().to(torch::kUInt8);
      return o.fit_frames == 1 ? p.repeat({1, 1, 2, 1, 1}) : p;
    };
    const auto [mu, logvar] = vae.posterior(first);
    {
      char line[160];
      std::snprintf(line, sizeof line,
                    "probe: the encoder's posterior σ, RMS %.4f; its means' spread, RMS %.4f "
                    "(un-normalised)",
                    logvar.clamp(-30, 20).exp().mean().sqrt().item<double>(),
                    (mu - mu.mean({0, 2, 3, 4}, true)).pow(2).mean().sqrt().item<double>());
      say(line);
    }
    const auto fit = fit_latents(vae, first, o.fit_steps, o.fit_lr, [&](int64_t k, double l1) {
      if (k % 25 != 0 && k != o.fit_steps) return;
      char line[120];
      std::snprintf(line, sizeof line, "probe: fit step %lld/%lld  weighted L1 %.4f",
                    static_cast<long long>(k), static_cast<long long>(o.fit_steps), l1);
      say(line);
    });
    measure_video("first", 0, to_pixels(vae.decode_unnormalised(mu)));
    rows.back().l1 = fit.l1_encoded;
    measure_video("fit", static_cast<double>(o.fit_steps),
                  to_pixels(vae.decode_unnormalised(fit.z)));
    rows.back().l1 = fit.l1_fitted;
    // The fitted latents with the noise rows' noise (normalised units): whether
    // what the fit gained survives a DiT's error, or is a pattern no model
    // would draw. The encoder's latents with the same noise beside them.
    for (double a : o.noise_levels) {
      if (a <= 0) continue;
      torch::manual_seed(static_cast<int64_t>(o.seed) + 3);
      const auto noise = a * torch::randn(mu.sizes());
      measure_video("first+noise", a, to_pixels(vae.decode(vae.normalise(mu) + noise)));
      measure_video("fit+noise", a, to_pixels(vae.decode(vae.normalise(fit.z) + noise)));
    }
    char line[160];
    std::snprintf(line, sizeof line, "probe: the fitted latents moved by RMS %.4f (un-normalised)",
                  (fit.z - mu).pow(2).mean().sqrt().item<double>());
    say(line);
    std::snprintf(line, sizeof line,
                  "probe: weighted L1 of the first frames: %.4f encoded, %.4f fitted",
                  fit.l1_encoded, fit.l1_fitted);
    say(line);
  }
  for (bool swap : {false, true}) {
    const layers::Conditioning cond{
        encode_captions(te, tok, swap ? swapped : own, text_len, torch::kCPU)};
    const layers::Conditioning unconditional{uncond};
    for (double s0 : o.redraw_sigmas) {
      torch::manual_seed(static_cast<int64_t>(o.seed) + 2);  // the same noise for every σ₀
      auto x = (1 - s0) * x0 + s0 * torch::randn(x0.sizes());
      // The shift-1 grid from σ₀ down, shifted as the sampler shifts its own
      // (the inverse of a shift k is the shift 1/k).
      const double u0 = schedulers::static_shift(s0, 1 / o.shift);
      const auto steps = std::max<int64_t>(1, std::llround(static_cast<double>(o.steps) * s0));
      for (int64_t k = 0; k < steps; ++k) {
        const double a =
            schedulers::static_shift(u0 * (1 - static_cast<double>(k) / steps), o.shift);
        const double b =
            schedulers::static_shift(u0 * (1 - static_cast<double>(k + 1) / steps), o.shift);
        const auto t = torch::full({1}, a * 1000, torch::kFloat32);
        const auto v = pipeline::guided_prediction(dit, x, t, cond, &unconditional, o.guidance);
        x = x + (b - a) * v;  // Euler on the flow
      }
      measure_row(swap ? "swapped" : "redraw", s0, x);
    }
  }
  return rows;
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
