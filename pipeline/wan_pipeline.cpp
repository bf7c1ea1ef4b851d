#include "pipeline/wan_pipeline.h"

#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>

#include "base/json.h"
#include "base/runtime.h"
#include "base/sha256.h"
#include "diffusion/wan_dit.h"
#include "io/checkpoint.h"
#include "media/output.h"
#include "pipeline/embedded.h"
#include "pipeline/preview.h"
#include "schedulers/registry.h"
#include "text/t5.h"
#include "text/tokenizer.h"
#include "training/train.h"
#include "vae/wan_vae.h"

namespace kinora::pipeline {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A preset's model entry: a path (relative ones against the preset's folder),
// or a name under models_dir, in its ComfyUI subfolder or at its top.
fs::path resolve(const std::string& entry, const std::string& key, const Preset& p,
                 const char* subfolder, bool required) {
  if (entry.empty()) {
    if (required)
      throw Error("preset: key '" + key +
                  "' is empty: a model file or a name under models_dir is needed");
    return {};
  }
  std::error_code ec;
  std::vector<fs::path> tried;
  auto found = [&](const fs::path& candidate) {
    tried.push_back(candidate);
    return fs::is_regular_file(candidate, ec);
  };
  const fs::path e = entry;
  if (found(e.is_absolute() ? e : p.base_dir / e)) return tried.back();
  if (!p.models_dir.empty() && !e.is_absolute()) {
    const fs::path md =
        fs::path(p.models_dir).is_absolute() ? fs::path(p.models_dir) : p.base_dir / p.models_dir;
    for (const fs::path& folder : {md / subfolder, md})
      for (const fs::path& candidate : {folder / e, folder / (entry + ".safetensors")})
        if (found(candidate)) return candidate;
  }
  std::string msg = "preset: key '" + key + "': '" + entry + "' not found (looked for";
  for (const auto& t : tried) msg.append(" ").append(t.string());
  msg += ")";
  if (p.models_dir.empty() && e.filename() == e)
    msg += "; give models_dir (--models-dir) to find models by name";
  throw Error(msg);
}
}  // namespace

// The negative prompt used when a preset gives none: the model's own (the
// embedded model was trained with the empty caption as its unconditional input,
// and says so in its metadata), else Wan's.
static std::string default_negative_prompt(const fs::path& model) {
  const auto ck = io::Checkpoint::open(model);
  const auto it = ck.metadata().find("kinora");
  if (it != ck.metadata().end()) {
    try {
      const auto j = parse_json(it->second, model.string() + " (metadata 'kinora')");
      if (j.is_object() && j.contains("negative_prompt") && j["negative_prompt"].is_string())
        return j["negative_prompt"].get<std::string>();
    } catch (const Error&) {
      // Not the embedded model's metadata: Wan's default below.
    }
  }
  return kWanDefaultNegativePrompt;
}

ModelPaths resolve_models(const Preset& p) {
  ModelPaths m;
  if (p.uses_embedded_model()) {
    const auto dir = embedded_model_dir();
    if (!dir) {
      // Appended, not `"…" + std::string&&`: GCC 12 warns falsely on that
      // (-Wstringop-overflow, its bug 105651).
      std::string msg = "no model given, and the embedded default model was not found (looked in";
      for (const auto& d : embedded_model_search_path()) msg.append(" ").append(d.string());
      msg += "); give --model, --vae, --text-encoder and --tokenizer";
      throw Error(msg);
    }
    m.model = *dir / training::kDitFile;
    m.vae = *dir / training::kVaeFile;
    m.text_encoder = *dir / training::kTextEncoderFile;
    m.tokenizer = *dir / training::kTokenizerFile;
    return m;
  }
  m.model = resolve(p.model, "model", p, "diffusion_models", true);
  m.model2 = resolve(p.model2, "model2", p, "diffusion_models", false);
  m.vae = resolve(p.vae, "vae", p, "vae", true);
  m.text_encoder = resolve(p.text_encoder, "text_encoder", p, "text_encoders", true);
  m.tokenizer = resolve(p.tokenizer, "tokenizer", p, "text_encoders", true);
  return m;
}

std::vector<std::string> snap_sizes(Preset& p) {
  std::vector<std::string> msgs;
  const int frames = 4 * static_cast<int>(std::lround((p.frames - 1) / 4.0)) + 1;
  if (frames != p.frames) {
    msgs.push_back("frames " + std::to_string(p.frames) + " → " + std::to_string(frames) +
                   " (Wan makes 4k+1 frames: 4 per latent frame after the first)");
    p.frames = frames;
  }
  for (auto [v, name] : {std::pair<int*, const char*>{&p.width, "width"}, {&p.height, "height"}}) {
    const int snapped = std::max(16, 16 * static_cast<int>(std::lround(*v / 16.0)));
    if (snapped != *v) {
      msgs.push_back(std::string(name) + " " + std::to_string(*v) + " → " +
                     std::to_string(snapped) +
                     " (a multiple of 16: 8× VAE and 2× patch, or 4× and 4×)");
      *v = snapped;
    }
  }
  return msgs;
}

torch::Tensor initial_noise(int64_t seed, const std::vector<int64_t>& shape) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed));
  return torch::randn(shape, gen, torch::TensorOptions().dtype(torch::kFloat32));
}

// ---------------------------------------------------------------- loaded models

struct WanPipeline::Models {
  template <typename T>
  struct Slot {
    std::string key;  // path + precision
    std::unique_ptr<T> value;
  };
  Slot<diffusion::WanModel> dit, dit2;
  Slot<vae::WanVAE> vae;
  Slot<text::T5Encoder> te;
  Slot<text::Tokenizer> tok;
};

namespace {
template <typename T, typename Load>
T& cached(std::string key, std::unique_ptr<T>& value, std::string& slot_key, Load&& load) {
  if (!value || slot_key != key) {
    value.reset();  // free the old one first
    value = std::make_unique<T>(load());
    slot_key = std::move(key);
  }
  return *value;
}
}  // namespace

WanPipeline::WanPipeline(torch::Device device)
    : device_(device), models_(std::make_unique<Models>()) {}
WanPipeline::~WanPipeline() = default;

std::string WanPipeline::metadata_for(const Preset& p, const ModelPaths& paths) const {
  // File names and fingerprints, never the paths of this machine (a home
  // folder): the preset as another machine would render it, given the files.
  nlohmann::json j = p.to_json();
  for (const char* key : {"model", "model2", "vae", "text_encoder", "tokenizer", "output"})
    j[key] = fs::path(j[key].get<std::string>()).filename().string();
  j["models_dir"] = "";
  for (auto& l : j["loras"]) l["path"] = fs::path(l["path"].get<std::string>()).filename().string();
  nlohmann::json files = nlohmann::json::object();
  for (const auto& [role, path] : {std::pair<const char*, const fs::path*>{"model", &paths.model},
                                   {"model2", &paths.model2},
                                   {"vae", &paths.vae},
                                   {"text_encoder", &paths.text_encoder},
                                   {"tokenizer", &paths.tokenizer}}) {
    if (path->empty()) continue;
    files[role] = {{"file", path->filename().string()},
                   {"sha256_first_last_mib", file_fingerprint(*path)}};
  }
  nlohmann::json loras = nlohmann::json::array();
  for (const auto& l : p.loras)
    loras.push_back({{"file", fs::path(l.path).filename().string()}, {"strength", l.strength}});
  return nlohmann::json{{"kinora",
                         {{"version", version_string()},
                          {"libtorch", torch_version()},
                          {"ffmpeg", media::ffmpeg_version()}}},
                        {"preset", j},
                        {"model_files", files},
                        {"loras", loras}}
      .dump();
}

Result WanPipeline::generate(const Preset& preset, const RunCallbacks& cb) {
  auto say = [&](const std::string& m) {
    if (cb.on_message) cb.on_message(m);
  };
  auto check_cancel = [&] { throw_if_cancelled(cb.cancel); };
  Result r;
  r.preset = preset;
  Preset& p = r.preset;
  configure_threads();            // the machine's load now, not at start-up
  p.seed = resolve_seed(p.seed);  // the output records the seed that ran
  for (const auto& m : snap_sizes(p)) say(m);
  if (!p.loras.empty()) throw Error("preset: key 'loras': LoRA is not supported yet");
  const auto paths = resolve_models(p);
  const auto precision = layers::resolve_precision(p.precision, device_);
  if (const auto w = layers::precision_warning(precision, device_); !w.empty()) say(w);
  p.precision = layers::precision_name(precision);  // what ran, in the output's parameters
  const std::string pk = "|" + p.precision;

  // Models (kept loaded between jobs while the files and precision stay the same).
  auto& tok = cached(paths.tokenizer.string(), models_->tok.value, models_->tok.key,
                     [&] { return text::Tokenizer::load(paths.tokenizer); });
  auto& te = cached(paths.text_encoder.string(), models_->te.value, models_->te.key,
                    [&] { return text::T5Encoder::load(paths.text_encoder); });
  auto& dit = cached(paths.model.string() + pk, models_->dit.value, models_->dit.key, [&] {
    auto m = diffusion::WanModel::load(paths.model, precision);
    m.to(device_);
    return m;
  });
  diffusion::WanModel* dit2 = nullptr;
  if (!paths.model2.empty())
    dit2 = &cached(paths.model2.string() + pk, models_->dit2.value, models_->dit2.key, [&] {
      auto m = diffusion::WanModel::load(paths.model2, precision);
      m.to(device_);
      return m;
    });
  auto& vae = cached(paths.vae.string() + pk, models_->vae.value, models_->vae.key, [&] {
    auto v = vae::WanVAE::load(paths.vae, precision);
    v.to(device_);
    return v;
  });
  const auto& cfg = dit.config();
  if (cfg.text_dim != te.config().dim)
    throw Error(paths.model.filename().string() + " expects text of width " +
                std::to_string(cfg.text_dim) + ", but " + paths.text_encoder.filename().string() +
                " gives " + std::to_string(te.config().dim));
  if (cfg.in_dim != vae.config().z_dim)
    throw Error(paths.model.filename().string() + " works on " + std::to_string(cfg.in_dim) +
                " latent channels, but " + paths.vae.filename().string() + " has " +
                std::to_string(vae.config().z_dim));
  check_cancel();

  // Text: prompt and negative prompt, trimmed to their real tokens.
  auto t0 = Clock::now();
  auto encode = [&](const std::string& text) {
    const auto tokens = tok.encode(text, cfg.text_len);
    if (tokens.truncated) say("prompt truncated to " + std::to_string(cfg.text_len) + " tokens");
    return te.forward(tokens.ids, tokens.mask)[0].slice(0, 0, tokens.length);  // [L, dim]
  };
  const auto cond = encode(p.prompt);
  const bool guided = p.guidance != 1.0;
  const auto uncond = guided
                          ? encode(p.negative_prompt.empty() ? default_negative_prompt(paths.model)
                                                             : p.negative_prompt)
                          : torch::Tensor();
  torch::Tensor context;  // [B, L, dim], zero-padded to a common length (the model pads to 512 with
                          // zeros anyway)
  if (guided) {
    const int64_t len = std::max(cond.size(0), uncond.size(0));
    namespace F = torch::nn::functional;
    context = torch::stack({F::pad(cond, F::PadFuncOptions({0, 0, 0, len - cond.size(0)})),
                            F::pad(uncond, F::PadFuncOptions({0, 0, 0, len - uncond.size(0)}))});
  } else {
    context = cond.unsqueeze(0);
  }
  context = context.to(device_);
  r.timings.text_s = since(t0);
  check_cancel();

  // Sampling.
  const int64_t sc = vae.config().spatial_compression();
  const int64_t lf = (p.frames - 1) / vae.config().time_compression() + 1, lh = p.height / sc,
                lw = p.width / sc;
  if (p.width % (sc * cfg.patch_w) || p.height % (sc * cfg.patch_h))
    throw Error("size " + std::to_string(p.width) + "×" + std::to_string(p.height) +
                ": this VAE and DiT need multiples of " + std::to_string(sc * cfg.patch_w) + "×" +
                std::to_string(sc * cfg.patch_h) + " (" + std::to_string(sc) +
                "× VAE, patches of " + std::to_string(cfg.patch_w) + ")");
  if (lf % cfg.patch_t != 0) {
    // Frame counts whose latent frames fill whole tokens: tc·(k·pt − 1) + 1.
    const int64_t tc = vae.config().time_compression(), pt = cfg.patch_t;
    throw Error(std::to_string(p.frames) + " frames: this DiT takes " + std::to_string(pt) +
                " latent frames per token, so " + std::to_string(tc * (pt - 1) + 1) + ", " +
                std::to_string(tc * (2 * pt - 1) + 1) + ", " +
                std::to_string(tc * (3 * pt - 1) + 1) + " … frames");
  }
  auto x = initial_noise(p.seed, {1, cfg.out_dim, lf, lh, lw}).to(device_);
  auto sched = schedulers::make_scheduler(p.sampler);
  sched->set_timesteps(p.steps, {.shift = p.shift, .mu = std::nullopt});
  const auto timesteps = sched->timesteps().to(torch::kFloat32);
  const auto boundary = diffusion::wan22_expert_boundary(false);
  t0 = Clock::now();
  for (int i = 0; i < p.steps; ++i) {
    const auto ts = Clock::now();
    const float t = timesteps[i].item<float>();
    auto& model = (dit2 && t < boundary) ? *dit2 : dit;
    torch::Tensor v;
    if (guided) {
      const auto out = model.forward(torch::cat({x, x}), torch::full({2}, t, device_),
                                     context);  // [2, C, F, h, w]
      const auto c = out[0], u = out[1];
      v = (u + p.guidance * (c - u)).unsqueeze(0);
    } else {
      v = model.forward(x, torch::full({1}, t, device_), context);
    }
    x = sched->step(v, i, x);
    // A diverged model or sampler: stop here, not after decoding a black video.
    if (!torch::isfinite(x).all().item<bool>())
      throw Error("step " + std::to_string(i + 1) + " of " + std::to_string(p.steps) +
                  ": the latents hold NaN or infinite values (the model diverged with sampler " +
                  p.sampler + " at shift " + nlohmann::json(p.shift).dump() + ", guidance " +
                  nlohmann::json(p.guidance).dump() + ", precision " + p.precision +
                  "); nothing was written");
    const double dt = since(ts);
    r.timings.step_s.push_back(dt);
    if (cb.on_step) {
      StepEvent e;
      e.step = i + 1;
      e.total = p.steps;
      e.seconds_per_step = since(t0) / (i + 1);
      e.eta_seconds = e.seconds_per_step * (p.steps - i - 1);
      if (cb.want_preview)
        e.preview = latent_preview(x[0], wan21_preview_factors(), wan21_preview_bias(),
                                   vae.config().latents_mean, vae.config().latents_std);
      cb.on_step(e);
    }
    check_cancel();
  }
  r.timings.sampling_s = since(t0);

  // Decode, clamp, to 8-bit RGB frames.
  t0 = Clock::now();
  const auto video = vae.decode(x).clamp(-1, 1);  // [1, 3, F, H, W]
  r.frames = ((video[0].permute({1, 2, 3, 0}) + 1) * 127.5)
                 .round()
                 .clamp(0, 255)
                 .to(torch::kCPU, torch::kUInt8);
  r.timings.decode_s = since(t0);
  r.metadata_json = metadata_for(p, paths);
  return r;
}

Result WanPipeline::render(const Preset& preset, const RunCallbacks& cb, bool overwrite) {
  if (preset.output.empty())
    throw Error("preset: key 'output' is empty: where should the video go?");
  // Everything about the destination is checked before sampling, not after.
  Preset snapped = preset;
  snap_sizes(snapped);
  const auto target =
      media::prepare_output(preset.output_path(), preset.format, snapped.frames, overwrite);
  Result r = generate(preset, cb);
  media::WriteOptions o;
  o.fps = r.preset.fps;
  o.crf = r.preset.crf;
  o.metadata_json = r.metadata_json;
  // A1111-style text for PNG readers that know only that.
  o.parameters_text =
      r.preset.prompt + "\nNegative prompt: " + r.preset.negative_prompt +
      "\nSteps: " + std::to_string(r.preset.steps) + ", Sampler: " + r.preset.sampler +
      ", CFG scale: " + nlohmann::json(r.preset.guidance).dump() +
      ", Seed: " + std::to_string(r.preset.seed) + ", Size: " + std::to_string(r.preset.width) +
      "x" + std::to_string(r.preset.height) + ", Shift: " + nlohmann::json(r.preset.shift).dump() +
      ", Model: " + fs::path(r.preset.model).filename().string() + ", Version: Kinora";
  const auto t0 = Clock::now();
  media::write_output(target, r.frames, o, cb.cancel);
  r.timings.encode_s = since(t0);
  r.output = target.path;
  r.preset.output = target.path.string();
  return r;
}

}  // namespace kinora::pipeline
