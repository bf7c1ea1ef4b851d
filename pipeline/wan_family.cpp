#include "pipeline/wan_family.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "base/json.h"
#include "diffusion/wan_dit.h"
#include "embedded/model.h"
#include "io/checkpoint.h"
#include "io/layout.h"
#include "pipeline/pipeline.h"
#include "pipeline/preview.h"
#include "text/t5.h"
#include "text/t5_conditioner.h"
#include "vae/wan_vae.h"

namespace kinora::pipeline {
namespace fs = std::filesystem;
using nlohmann::json;

bool WanFamily::recognises(const fs::path& model) const {
  return io::detect_layout(io::Checkpoint::open(model).shapes()).family == io::Family::WanDiT;
}

std::vector<Family::Role> WanFamily::roles() const {
  return {{"model", "diffusion_models", true},
          {"model2", "diffusion_models", false},
          {"vae", "vae", true},
          {"text_encoder", "text_encoders", true},
          {"tokenizer", "text_encoders", true}};
}

std::optional<ModelFiles> WanFamily::default_files() const {
  const auto dir = embedded::model_dir();
  if (!dir) {
    // Appended, not `"…" + std::string&&`: GCC 12 warns falsely on that
    // (-Wstringop-overflow, its bug 105651).
    std::string msg = "no model given, and the embedded default model was not found (looked in";
    for (const auto& d : embedded::model_search_path()) msg.append(" ").append(d.string());
    msg += "); give --model, --vae, --text-encoder and --tokenizer";
    throw Error(msg);
  }
  ModelFiles files;
  files.model = *dir / embedded::kDitFile;
  files.vae = *dir / embedded::kVaeFile;
  files.text_encoder = *dir / embedded::kTextEncoderFile;
  files.tokenizer = *dir / embedded::kTokenizerFile;
  return files;
}

namespace {
// The first frame counts whose latent frames (`tc` frames each after the
// first) fill whole tokens of `pt`: tc·(k·pt − 1) + 1. "17, 37, 57 … frames".
std::string whole_token_frames(int64_t tc, int64_t pt) {
  return std::to_string(tc * (pt - 1) + 1) + ", " + std::to_string(tc * (2 * pt - 1) + 1) + ", " +
         std::to_string(tc * (3 * pt - 1) + 1) + " … frames";
}
}  // namespace

std::vector<std::string> WanFamily::snap(Preset& p) const {
  std::vector<std::string> msgs;
  // 4 frames per latent frame after the first; a DiT that takes several
  // latent frames per token (the embedded model's 5) takes whole tokens of
  // them. A file that cannot be read is reported when the render loads it.
  int64_t per_token = 1;
  try {
    const auto dit = p.uses_embedded_model() ? default_files()->model : resolve_dit_file(p);
    per_token = diffusion::WanConfig::from_checkpoint(io::Checkpoint::open(dit)).patch_t;
  } catch (const Error&) {
  }
  const int64_t latent = std::max<int64_t>(1, std::lround((p.frames - 1) / 4.0) + 1);
  const int64_t whole =
      per_token * std::max<int64_t>(1, std::llround(static_cast<double>(latent) / per_token));
  if (const int frames = static_cast<int>(4 * (whole - 1) + 1); frames != p.frames) {
    msgs.push_back("frames " + std::to_string(p.frames) + " → " + std::to_string(frames) +
                   (per_token > 1
                        ? " (this DiT takes " + std::to_string(per_token) +
                              " latent frames per token: " + whole_token_frames(4, per_token) + ")"
                        : " (Wan makes 4k+1 frames: 4 per latent frame after the first)"));
    p.frames = frames;
  }
  snap_size_to_16(p, "a multiple of 16: 8× VAE and 2× patch, or 4× and 4×", msgs);
  return msgs;
}

Preset WanFamily::defaults_for(const fs::path& model) const {
  std::error_code ec;
  if (!fs::is_regular_file(model, ec)) return defaults();
  json j;
  try {  // a file that cannot be read is reported when it is loaded
    const auto meta = io::Checkpoint::open(model).metadata();
    const auto it = meta.find("kinora");
    if (it == meta.end()) return defaults();
    j = parse_json(it->second, model.string() + " (metadata 'kinora')");
  } catch (const Error&) {
    return defaults();
  }
  const auto whole = [&](const char* key, int lo, int hi) {
    return j.is_object() && j.contains(key) && j[key].is_number_integer() &&
           j[key].get<int64_t>() >= lo && j[key].get<int64_t>() <= hi;
  };
  if (!whole("width", 16, 4096) || !whole("height", 16, 4096) || !whole("frames", 1, 1001))
    return defaults();
  Preset p = Preset::embedded_defaults();
  p.width = j["width"].get<int>(), p.height = j["height"].get<int>();
  p.frames = j["frames"].get<int>();
  if (j.contains("training_shift") && j["training_shift"].is_number() &&
      j["training_shift"].get<double>() > 0 && j["training_shift"].get<double>() <= 100)
    p.shift = j["training_shift"].get<double>();
  return p;
}

// The model's own negative prompt when its metadata has one (the embedded
// model was trained with the empty caption as its unconditional input, and
// says so), else Wan's.
std::string WanFamily::default_negative_prompt(const ModelFiles& files) const {
  const auto ck = io::Checkpoint::open(files.model);
  const auto it = ck.metadata().find("kinora");
  if (it != ck.metadata().end()) {
    try {
      const auto j = parse_json(it->second, files.model.string() + " (metadata 'kinora')");
      if (j.is_object() && j.contains("negative_prompt") && j["negative_prompt"].is_string())
        return j["negative_prompt"].get<std::string>();
    } catch (const Error&) {
      // Not the embedded model's metadata: Wan's below.
    }
  }
  return kWanDefaultNegativePrompt;
}

LoadedModels WanFamily::load(const ModelFiles& files, layers::Precision precision,
                             const std::function<void(const std::string&)>& say) const {
  // The files' kinds and fit were checked before (check_files, which the
  // render calls first).
  LoadedModels m;
  auto dit = [&](const fs::path& path) {
    say(file_label(path) + " (Wan DiT)");
    return std::make_shared<diffusion::WanModel>(diffusion::WanModel::load(path, precision));
  };
  const auto first = dit(files.model);
  m.denoiser = first;
  if (!files.model2.empty()) {
    m.denoiser2 = dit(files.model2);
    m.switch_timestep = static_cast<double>(diffusion::wan22_expert_boundary(false));
  }
  say(file_label(files.vae) + " (Wan VAE)");
  m.autoencoder = std::make_shared<vae::WanVAE>(vae::WanVAE::load(files.vae, precision));
  say(file_label(files.text_encoder) + " (umT5)");
  auto text = std::make_shared<text::T5Conditioner>(text::T5Conditioner::load(
      files.text_encoder, files.tokenizer, first->config().text_len, precision));
  m.conditioner = text;
  return m;
}

void WanFamily::check(const LoadedModels& m, const Preset& p, const ModelFiles& files) const {
  const auto& dit = static_cast<const diffusion::WanModel&>(*m.denoiser);
  const auto& cfg = dit.config();
  const auto& ae = *m.autoencoder;
  if (cfg.text_dim != m.conditioner->context_dim())
    throw Error(file_label(files.model) + " expects text of width " + std::to_string(cfg.text_dim) +
                ", but " + file_label(files.text_encoder) + " gives " +
                std::to_string(m.conditioner->context_dim()));
  if (cfg.out_dim != ae.latent_channels())
    throw Error(file_label(files.model) + " works on " + std::to_string(cfg.out_dim) +
                " latent channels, but " + file_label(files.vae) + " has " +
                std::to_string(ae.latent_channels()));
  const int64_t sc = ae.spatial_compression();
  if (p.width % (sc * cfg.patch_w) || p.height % (sc * cfg.patch_h))
    throw Error("size " + std::to_string(p.width) + "×" + std::to_string(p.height) +
                ": this VAE and DiT need multiples of " + std::to_string(sc * cfg.patch_w) + "×" +
                std::to_string(sc * cfg.patch_h) + " (" + std::to_string(sc) +
                "× VAE, patches of " + std::to_string(cfg.patch_w) + ")");
  if (ae.latent_frames(p.frames) % cfg.patch_t != 0) {
    // Frame counts whose latent frames fill whole tokens: tc·(k·pt − 1) + 1.
    throw Error(std::to_string(p.frames) + " frames: this DiT takes " +
                std::to_string(cfg.patch_t) + " latent frames per token, so " +
                whole_token_frames(ae.temporal_compression(), cfg.patch_t));
  }
}

std::vector<std::string> WanFamily::check_files(const ModelFiles& files) const {
  std::vector<std::string> notes;
  const auto dit_config = [](const fs::path& file, const char* what) {
    return diffusion::WanConfig::from_checkpoint(
        expect_kind(file, {io::Family::WanDiT}, what).checkpoint);
  };
  const auto cfg = dit_config(files.model, "Wan DiT (model)");
  const auto model = file_label(files.model);
  // The image-to-video DiTs take the video's latent and an image's (and its
  // mask): no render here gives them one.
  if (cfg.in_dim != cfg.out_dim)
    throw Error(files.model.string() + ": an image-to-video model (it takes " +
                std::to_string(cfg.in_dim) + " input channels, the video's " +
                std::to_string(cfg.out_dim) + " and an image's); Kinora renders Wan text to " +
                "video only: give a T2V model (or TI2V's, rendering from text)");
  // A Wan 2.2 A14B pair: two experts of one architecture, high-noise first.
  const auto role = diffusion::wan22_expert_role(files.model);
  if (!files.model2.empty()) {
    const auto cfg2 = dit_config(files.model2, "low-noise expert (model2)");
    if (cfg2.to_json() != cfg.to_json())
      throw Error(files.model2.string() + ": given as the low-noise expert (model2) of " + model +
                  ", but it is another model (" + cfg2.variant() + ", " + std::to_string(cfg2.dim) +
                  " wide, " + std::to_string(cfg2.num_layers) + " layers; the model is " +
                  cfg.variant() + ", " + std::to_string(cfg.dim) + " wide, " +
                  std::to_string(cfg.num_layers) +
                  " layers): a Wan 2.2 pair's experts share their architecture");
    std::error_code ec;
    if (fs::equivalent(files.model, files.model2, ec))
      throw Error(files.model2.string() +
                  ": given as both the model and its low-noise expert (model2); a Wan 2.2 pair "
                  "is two files, the high-noise expert (model) and the low-noise one (model2)");
    const auto role2 = diffusion::wan22_expert_role(files.model2);
    if (role == "low-noise expert" && role2 == "high-noise expert")
      throw Error("model " + model + " is the low-noise expert and model2 " +
                  file_label(files.model2) +
                  " the high-noise one (by their names): swap them; the model runs the first, "
                  "high-noise steps and model2 the rest");
    if (!role.empty() && role == role2)
      throw Error("model " + model + " and model2 " + file_label(files.model2) + " are both the " +
                  role +
                  " (by their names); a Wan 2.2 pair is a high-noise expert (model) and "
                  "a low-noise one (model2)");
  } else if (!role.empty()) {
    notes.push_back(model + " is a Wan 2.2 A14B " + role +
                    " (by its name), rendered alone: it was trained for " +
                    (role == "high-noise expert" ? "the first, high-noise steps"
                                                 : "the last, low-noise steps") +
                    " only; give the pair as model (high-noise) and model2 (low-noise)");
  }
  const auto vae = vae::WanVAEConfig::from_checkpoint(
      expect_kind(files.vae, {io::Family::WanVAE}, "Wan VAE for " + model).checkpoint);
  if (vae.z_dim != cfg.out_dim)
    throw Error(model + " works on " + std::to_string(cfg.out_dim) + " latent channels, but " +
                file_label(files.vae) + " has " + std::to_string(vae.z_dim) +
                (cfg.out_dim == 48 ? " (the TI2V-5B's VAE is the Wan 2.2 VAE, 48 channels, which "
                                     "Kinora does not support yet)"
                                   : ""));
  const auto te = expect_kind(files.text_encoder, {io::Family::UMT5, io::Family::T5},
                              "umT5 text encoder for " + model);
  if (te.detection.family == io::Family::T5)
    throw Error(files.text_encoder.string() +
                ": a T5 v1.1 encoder (FLUX's t5xxl), not Wan's umT5-XXL (ComfyUI's "
                "umt5_xxl_*.safetensors, or a Wan diffusers pipeline's text_encoder/)");
  if (const auto t5 = text::T5Config::from_checkpoint(te.checkpoint); t5.dim != cfg.text_dim)
    throw Error(model + " expects text of width " + std::to_string(cfg.text_dim) + ", but " +
                file_label(files.text_encoder) + " gives " + std::to_string(t5.dim));
  return notes;
}

lora::DiffusersNames WanFamily::lora_names(const LoadedModels&) const {
  return [](const std::string& stem) -> std::optional<lora::Target> {
    const std::string name = diffusion::wan_diffusers_to_original(stem + ".weight");
    if (name.size() <= 7 || name == stem + ".weight") return std::nullopt;
    return lora::Target{name.substr(0, name.size() - 7), 0, -1};
  };
}

PreviewMap WanFamily::preview(const LoadedModels&) const {
  return {wan21_preview_factors(), wan21_preview_bias()};
}

}  // namespace kinora::pipeline
