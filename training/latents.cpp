// The clips the stages train on and what the DiT stage makes of them: rendered
// clips (clip_batch), the VAE's latents of the DiT's dataset, cached in the run
// folder (latent_dataset), the noise levels and noised batches of a training
// step, and the loss weights of the object's cells.
#include <ATen/Parallel.h>

#include <cstdio>
#include <optional>

#include "base/error.h"
#include "base/json.h"
#include "base/sha256.h"
#include "base/strings.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "training/internal.h"
#include "vae/wan_vae.h"

namespace kinora::training {
namespace fs = std::filesystem;
using torch::Tensor;
using namespace internal;

Tensor frames_to_video(const Tensor& frames) {
  return frames.permute({3, 0, 1, 2}).to(torch::kFloat32).div(127.5).sub(1);
}

std::pair<Tensor, std::vector<std::string>> clip_batch(uint64_t first_seed, int64_t count,
                                                       const ClipSpec& spec) {
  std::vector<Scene> scenes;
  std::vector<std::string> captions;
  for (uint64_t s = first_seed; static_cast<int64_t>(scenes.size()) < count; ++s) {
    const auto scene = random_scene(s, spec);
    if (held_out(scene)) continue;
    scenes.push_back(scene);
    captions.push_back(scene.caption());
  }
  // Rendering is pure per scene, and on a GPU machine the device would
  // otherwise wait for one CPU core to draw the dataset.
  std::vector<Tensor> clips(scenes.size());
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const auto k = static_cast<std::size_t>(i);
      clips[k] = render(scenes[k], spec);
    }
  });
  for (auto& c : clips) c = frames_to_video(c);
  return {torch::stack(clips), captions};
}

// ---------------------------------------------------------------- the latent cache

namespace {

using Dataset = std::pair<Tensor, std::vector<std::string>>;

// How the cache's latents were made; a cache made otherwise is encoded anew.
// A cache made before placements were recorded holds clips placed anywhere,
// and one made before refinement was recorded the encoder's own latents; one
// made before the VAE was recorded is encoded anew (its VAE is unknown).
struct CacheKey {
  std::string placement;  // of the clips' paths
  std::string refine;     // "0", or "STEPS steps at LR" (fit_latents)
  std::string vae;        // vae_fingerprint of the run's VAE
};

// What in the run's VAE file makes the latents: SHA-256 over the encoder's
// tensors (with refinement, the decoder's too: fit_latents descends through
// it) and the latent statistics that normalise them. A VAE whose decoder alone
// was retrained (docs/training.md, V3) keeps its DiT's cache.
std::string vae_fingerprint(const fs::path& path, bool decoder_too) {
  const auto ck = io::Checkpoint::open(path);
  Sha256 h;
  for (const auto& name : ck.names()) {
    const bool encoder = starts_with(name, "encoder.") || starts_with(name, "conv1.");
    const bool decoder = starts_with(name, "decoder.") || starts_with(name, "conv2.");
    if (!encoder && !(decoder_too && decoder)) continue;
    const auto t = ck.get(name).to(torch::kCPU, torch::kFloat32).contiguous();
    h.update(name.data(), name.size() + 1);
    h.update(t.data_ptr(), static_cast<std::size_t>(t.numel()) * t.element_size());
  }
  const auto cfg = vae::WanVAEConfig::from_checkpoint(ck);
  for (const auto* v : {&cfg.latents_mean, &cfg.latents_std})
    h.update(v->data(), v->size() * sizeof(double));
  return h.hex_digest();
}

CacheKey cache_key(const DitOptions& o) {
  return {name(o.clip.placement),
          o.refine_steps == 0
              ? "0"
              : std::to_string(o.refine_steps) + " steps at " + c10::str(o.refine_lr),
          vae_fingerprint(o.run_dir / kVaeFile, o.refine_steps > 0)};
}

// The cached latents and captions when the file holds o.dataset clips made as
// `key` says; judged from the header, so that a cache of other clips is not read.
std::optional<Dataset> read_cache(const fs::path& path, const DitOptions& o, const CacheKey& key) {
  const auto ck = io::Checkpoint::open(path);
  const auto& meta = ck.metadata();
  const auto it = meta.find("placement");
  const std::string cached = it == meta.end() ? name(Placement::Anywhere) : it->second;
  const auto rf = meta.find("refine");
  const auto vf = meta.find("vae");
  if (vf == meta.end() || vf->second != key.vae) {
    say(o, "dit: the cached latents (" + path.string() + ") were encoded by " +
               (vf == meta.end() ? std::string("a VAE they do not record")
                                 : std::string("another VAE")) +
               " than the run's " + kVaeFile + "; encoding anew");
    return std::nullopt;
  }
  if (cached == key.placement && ck.shapes().at("latents").at(0) == o.dataset &&
      (rf == meta.end() ? std::string("0") : rf->second) == key.refine) {
    const auto caps = parse_json(meta.at("captions"), path.string() + " (metadata 'captions')",
                                 {std::size_t{256} << 20, JsonLimits{}.max_depth});
    // A copy (the file is mapped), on the stage's device.
    return Dataset{ck.get("latents").to(o.device, torch::kFloat32, false, /*copy=*/true),
                   caps.template get<std::vector<std::string>>()};
  }
  say(o, "dit: the cached latents (" + path.string() + ") are of other clips; encoding anew");
  return std::nullopt;
}

// read_cache, or nullopt (said) for a cache that cannot be read (a kill or a
// full disk mid-write, a damaged disk): it is only a cache.
std::optional<Dataset> cached_latents(const fs::path& path, const DitOptions& o,
                                      const CacheKey& key) {
  if (!fs::exists(path)) return std::nullopt;
  try {
    return read_cache(path, o, key);
  } catch (const std::exception& e) {
    say(o, std::string("dit: the cached latents cannot be read (")
               .append(e.what())
               .append("); they are only a cache: encoding anew"));
    return std::nullopt;
  }
}

// Clips encoded, or with o.refine_steps fitted through the decoder
// (fit_latents), refine_batch at a time: the fit's steps are sequential, so a
// GPU wants many clips in each.
class LatentEncoder {
 public:
  LatentEncoder(const DitOptions& o, vae::WanVAE& vae) : o_(o), vae_(vae) {}

  void add(const Tensor& x) {  // clips [B, 3, F, H, W] on the CPU
    if (o_.refine_steps == 0) {
      lats_.push_back(vae_.encode(x.to(o_.device)));
      return;
    }
    pending_clips_ += x.size(0);
    pending_.push_back(x.to(o_.device));
    if (pending_clips_ >= o_.refine_batch) refine_pending();
  }

  // The latents of every clip added, in order, as encode() returns them.
  Tensor finish(const std::string& refine, Clock::time_point t0) {
    refine_pending();
    if (refined_ > 0) {
      // What the refinement took and what it gained, in one line.
      char line[200];
      std::snprintf(line, sizeof line,
                    "dit: latents refined (%s) in %.1f s: weighted L1 of their decoding %.4f -> "
                    "%.4f",
                    refine.c_str(), seconds_since(t0),
                    refined_before_ / static_cast<double>(refined_),
                    refined_after_ / static_cast<double>(refined_));
      say(o_, line);
    }
    return torch::cat(lats_);
  }

 private:
  void refine_pending() {
    if (pending_.empty()) return;
    const auto fit = fit_latents(vae_, torch::cat(pending_), o_.refine_steps, o_.refine_lr);
    lats_.push_back(vae_.normalise(fit.z));  // as encode() returns latents
    const auto n = static_cast<double>(pending_clips_);
    refined_before_ += n * fit.l1_encoded, refined_after_ += n * fit.l1_fitted;
    refined_ += pending_clips_;
    pending_.clear(), pending_clips_ = 0;
  }

  const DitOptions& o_;
  vae::WanVAE& vae_;
  std::vector<Tensor> lats_;
  std::vector<Tensor> pending_;  // clips waiting to be refined together
  int64_t pending_clips_ = 0;
  double refined_before_ = 0, refined_after_ = 0;
  int64_t refined_ = 0;
};

}  // namespace

Dataset internal::latent_dataset(const DitOptions& o, vae::WanVAE& vae) {
  const auto path = o.run_dir / "dit-state" / "latents.safetensors";
  const auto key = cache_key(o);
  if (auto cached = cached_latents(path, o, key)) return std::move(*cached);
  LatentEncoder encoder(o, vae);
  std::vector<std::string> caps;
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < o.dataset; i += 16) {
    // Ctrl-C, SIGTERM: stop now; no cache is written, the next run encodes anew.
    if (cancelled(o))
      throw Error("dit: stopped while encoding the clips (" + std::to_string(i) + "/" +
                  std::to_string(o.dataset) + "); nothing was cached or trained");
    auto [x, c] =
        clip_batch(mix(o.seed, 0xDA7A000 + i), std::min<int64_t>(16, o.dataset - i), o.clip);
    encoder.add(x);
    caps.insert(caps.end(), c.begin(), c.end());
    if ((i / 16) % 32 == 0)
      say(o, "dit: encoding clips " + std::to_string(i) + "/" + std::to_string(o.dataset) + " (" +
                 std::to_string(static_cast<int>(seconds_since(t0))) + " s)");
  }
  auto lat = encoder.finish(key.refine, t0);
  io::save_safetensors(path, {{"latents", lat.to(torch::kCPU)}},
                       {{"captions", nlohmann::json(caps).dump()},
                        {"placement", key.placement},
                        {"refine", key.refine},
                        {"vae", key.vae}});
  return {lat, caps};
}

// ---------------------------------------------------------------- a training step's draws

Tensor draw_sigmas(const DitOptions& o, int64_t n) {
  const auto u =
      o.sigma == SigmaDraw::Uniform ? torch::rand({n}) : torch::sigmoid(torch::randn({n}));
  return o.shift * u / (1 + (o.shift - 1) * u);
}

Tensor object_weights(const Tensor& x0, double k, double threshold) {
  if (x0.dim() != 5) throw Error("object_weights: latents must be [B, C, F, H, W]");
  const auto background = std::get<0>(x0.flatten(3).median(3)).unsqueeze(-1).unsqueeze(-1);
  const auto distance = (x0 - background).pow(2).mean(1, true).sqrt();  // [B, 1, F, H, W]
  const auto object = torch::max_pool3d((distance > threshold).to(x0.scalar_type()), {1, 3, 3},
                                        {1, 1, 1}, {0, 1, 1});
  return 1 + k * object;
}

NoisedBatch noise_batch(const Tensor& x0, const Tensor& sigma, const Tensor& noise,
                        double given_frame) {
  if (x0.dim() != 5 || sigma.dim() != 1 || sigma.size(0) != x0.size(0) ||
      noise.sizes() != x0.sizes())
    throw Error("noise_batch: clips [B, C, F, H, W], σ [B] and noise like the clips");
  const int64_t b = x0.size(0), f = x0.size(2);
  auto frame_sigma = sigma.view({-1, 1, 1, 1, 1}).expand({b, 1, f, 1, 1});
  auto weight = torch::ones({b, 1, f, 1, 1}, x0.options());
  if (given_frame > 0) {
    const auto chosen = torch::rand({b}) < given_frame;
    const auto frame = torch::randint(f, {b}, torch::kLong);
    const auto u = torch::rand({b});
    const auto given = (torch::arange(f, torch::kLong).view({1, -1}) == frame.view({-1, 1})) &
                       chosen.view({-1, 1});
    const auto g = given.view({b, 1, f, 1, 1}).to(x0.device());
    frame_sigma =
        torch::where(g, (sigma * u.to(sigma.device())).view({-1, 1, 1, 1, 1}), frame_sigma);
    weight = weight.masked_fill(g, 0);
  }
  return {(1 - frame_sigma) * x0 + frame_sigma * noise, weight};
}

}  // namespace kinora::training
