#include "pipeline/flux_family.h"

#include <regex>

#include "base/error.h"
#include "base/json.h"
#include "diffusion/flux_dit.h"
#include "io/checkpoint.h"
#include "io/layout.h"
#include "pipeline/pipeline.h"
#include "pipeline/preview.h"
#include "schedulers/sigma_schedules.h"
#include "text/flux_conditioner.h"
#include "vae/kl_autoencoder.h"

namespace kinora::pipeline {
namespace fs = std::filesystem;

namespace {
const diffusion::FluxModel& dit_of(const LoadedModels& m) {
  return static_cast<const diffusion::FluxModel&>(*m.denoiser);
}
}  // namespace

bool FluxFamily::recognises(const fs::path& model) const {
  return io::detect_layout(io::Checkpoint::open(model).shapes()).family == io::Family::FluxDiT;
}

std::vector<Family::Role> FluxFamily::roles() const {
  return {{"model", "diffusion_models", true},
          {"vae", "vae", true},
          {"text_encoder", "text_encoders", true},
          {"tokenizer", "text_encoders", true},
          {"clip", "text_encoders", true}};
}

void FluxFamily::resolve_extra(const Preset& p, ModelFiles& files) const {
  if (!p.model2.empty())
    throw Error((p.source.empty() ? std::string("preset") : p.source) +
                ": key 'model2' is the low-noise expert of a Wan 2.2 pair; FLUX takes one DiT");
  if (files.clip_tokenizer.empty())  // else a diffusers folder's tokenizer/
    files.clip_tokenizer = resolve_clip_tokenizer(p, files.clip);
  text::ClipTokenizer::load(files.clip_tokenizer);  // a malformed one now, not after the models
}

Preset FluxFamily::defaults() const {
  Preset p;
  p.family = "flux";
  p.width = p.height = 1024;
  p.frames = 1;
  p.steps = 28;
  p.sampler = "flow_euler";
  p.shift = 1.0;
  p.guidance = 3.5;
  return p;
}

Preset FluxFamily::defaults_for(const fs::path& model) const {
  Preset p = defaults();
  std::error_code ec;
  if (fs::is_regular_file(model, ec)) {
    const auto det = io::detect_layout(io::Checkpoint::open(model).shapes());
    if (det.summary.rfind("schnell", 0) == 0) p.steps = 4;
  }
  return p;
}

std::vector<std::string> FluxFamily::snap(Preset& p) const {
  std::vector<std::string> msgs;
  if (p.frames != 1) {
    msgs.push_back("frames " + std::to_string(p.frames) + " → 1 (FLUX makes images)");
    p.frames = 1;
  }
  snap_size_to_16(p, "a multiple of 16: 8× autoencoder, 2×2 packing", msgs);
  return msgs;
}

schedulers::ScheduleOptions FluxFamily::schedule(const Preset& p, int64_t image_tokens,
                                                 const LoadedModels& models) const {
  // dev: BFL's shift by the image's token count; schnell: none. The preset's
  // `shift` does not apply to FLUX.
  if (dit_of(models).config().guidance_embed)
    return {.shift = 1.0, .mu = schedulers::flux_mu(image_tokens)};
  return {.shift = 1.0, .mu = std::nullopt};
}

std::vector<std::string> FluxFamily::unused_settings(const Preset& p,
                                                     const LoadedModels& models) const {
  std::vector<std::string> out;
  const bool dev = dit_of(models).config().guidance_embed;
  const auto number = [](double v) { return nlohmann::json(v).dump(); };
  if (p.shift != defaults().shift)
    out.push_back("shift " + number(p.shift) + " is not used: " +
                  (dev ? "FLUX.1-dev shifts its schedule by the image's size"
                       : "FLUX.1-schnell samples an unshifted schedule"));
  if (!dev && p.guidance != defaults().guidance)
    out.push_back("guidance " + number(p.guidance) +
                  " is not used: this FLUX DiT (schnell) takes no guidance");
  return out;
}

LoadedModels FluxFamily::load(const ModelFiles& files, layers::Precision precision,
                              const std::function<void(const std::string&)>& say) const {
  LoadedModels m;
  say(file_label(files.model) + " (FLUX DiT)");
  auto dit =
      std::make_shared<diffusion::FluxModel>(diffusion::FluxModel::load(files.model, precision));
  // Each part named with the DiT it is meant for when it is not one.
  auto part = [&](const fs::path& file, const char* what, auto&& load_it) {
    try {
      return load_it();
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + " (given as the " + what + " for the FLUX DiT " +
                  file_label(files.model) + ")");
    }
  };
  say(file_label(files.vae) + " (FLUX autoencoder)");
  auto ae = part(files.vae, "autoencoder", [&] {
    return std::make_shared<vae::KLAutoencoder>(vae::KLAutoencoder::load(files.vae, precision));
  });
  say(file_label(files.text_encoder) + " (T5-XXL)");
  auto t5 = part(files.text_encoder, "T5 text encoder", [&] {
    auto enc = text::T5Encoder::load(files.text_encoder);
    if (!enc.config().shared_pos)
      throw Error(files.text_encoder.string() +
                  ": a umT5 encoder (Wan's); FLUX needs T5-XXL v1.1 (t5xxl_fp16.safetensors)");
    return enc;
  });
  auto t5_tokenizer =
      part(files.tokenizer, "T5 tokenizer", [&] { return text::Tokenizer::load(files.tokenizer); });
  say(file_label(files.clip) + " (CLIP-L)");
  auto clip = part(files.clip, "CLIP text encoder", [&] {
    // SDXL's bigG would load as the only text model its file has.
    const auto shapes = io::Checkpoint::open(files.clip).shapes();
    const auto holds = [&](io::Family f) { return io::detect_layout(shapes, {f}).family == f; };
    if (!holds(io::Family::CLIP) && holds(io::Family::OpenCLIP))
      throw Error(files.clip.string() +
                  ": an OpenCLIP text encoder (bigG, SDXL's second), not CLIP-L; FLUX takes "
                  "CLIP-L (clip_l.safetensors) as --clip");
    return text::CLIPTextModel::load(files.clip);
  });
  auto clip_tokenizer = part(files.clip_tokenizer, "CLIP tokenizer",
                             [&] { return text::ClipTokenizer::load(files.clip_tokenizer); });
  // FLUX pads T5 to 512 tokens for dev and 256 for schnell (BFL's cli.py).
  const int64_t t5_tokens = dit->config().guidance_embed ? 512 : 256;
  auto cond = part(files.clip_tokenizer, "text encoders' tokenizers", [&] {
    return std::make_shared<text::FluxConditioner>(std::move(t5), std::move(t5_tokenizer),
                                                   std::move(clip), std::move(clip_tokenizer),
                                                   t5_tokens);
  });
  m.denoiser = dit;
  m.autoencoder = ae;
  m.conditioner = cond;
  return m;
}

void FluxFamily::check(const LoadedModels& m, const Preset& p, const ModelFiles& files) const {
  const auto& cfg = dit_of(m).config();
  const auto& cond = static_cast<const text::FluxConditioner&>(*m.conditioner);
  if (cfg.context_in_dim != cond.context_dim())
    throw Error(file_label(files.model) + " expects T5 states of width " +
                std::to_string(cfg.context_in_dim) + ", but " + file_label(files.text_encoder) +
                " gives " + std::to_string(cond.context_dim()));
  if (cfg.vec_in_dim != cond.pooled_dim())
    throw Error(file_label(files.model) + " expects a pooled CLIP vector of width " +
                std::to_string(cfg.vec_in_dim) + ", but " + file_label(files.clip) + " gives " +
                std::to_string(cond.pooled_dim()));
  const auto& ae = *m.autoencoder;
  if (cfg.in_channels != 4 * ae.latent_channels())
    throw Error(file_label(files.model) + " works on " + std::to_string(cfg.in_channels / 4) +
                " latent channels, but the autoencoder " + file_label(files.vae) + " has " +
                std::to_string(ae.latent_channels()));
  const int64_t cell = 2 * ae.spatial_compression();
  if (p.width % cell || p.height % cell)
    throw Error("size " + std::to_string(p.width) + "×" + std::to_string(p.height) +
                ": FLUX with this autoencoder needs multiples of " + std::to_string(cell));
}

std::vector<std::string> FluxFamily::check_files(const ModelFiles& files) const {
  const auto cfg = diffusion::FluxConfig::from_checkpoint(
      expect_kind(files.model, {io::Family::FluxDiT}, "FLUX DiT (model)").checkpoint);
  const auto model = file_label(files.model);
  const auto ae = vae::KLAutoencoderConfig::from_checkpoint(
      expect_kind(files.vae, {io::Family::KLAutoencoder}, "autoencoder for " + model).checkpoint);
  if (cfg.in_channels != 4 * ae.z_channels)
    throw Error(model + " works on " + std::to_string(cfg.in_channels / 4) +
                " latent channels, but the autoencoder " + file_label(files.vae) + " has " +
                std::to_string(ae.z_channels));
  if (expect_kind(files.text_encoder, {io::Family::T5, io::Family::UMT5},
                  "T5 text encoder for " + model)
          .detection.family == io::Family::UMT5)
    throw Error(files.text_encoder.string() +
                ": a umT5 encoder (Wan's); FLUX needs T5-XXL v1.1 (t5xxl_fp16.safetensors)");
  // SDXL's bigG would load as the only text model its file has.
  if (detect_file(files.clip, {io::Family::CLIP, io::Family::OpenCLIP}).family ==
      io::Family::OpenCLIP)
    throw Error(files.clip.string() +
                ": an OpenCLIP text encoder (bigG, SDXL's second), not CLIP-L; FLUX takes "
                "CLIP-L (clip_l.safetensors) as --clip");
  expect_kind(files.clip, {io::Family::CLIP}, "CLIP text encoder for " + model);
  return {};
}

lora::DiffusersNames FluxFamily::lora_names(const LoadedModels& m) const {
  const int64_t h = dit_of(m).config().hidden_size, mlp = dit_of(m).config().mlp_hidden;
  return [h, mlp](const std::string& stem) -> std::optional<lora::Target> {
    static const std::regex dbl(
        R"(^transformer_blocks\.(\d+)\.attn\.(to_[qkv]|add_([qkv])_proj)$)");
    static const std::regex sgl(
        R"(^single_transformer_blocks\.(\d+)\.(attn\.to_([qkv])|proj_mlp)$)");
    std::smatch s;
    auto slot = [](char c) { return c == 'q' ? 0 : c == 'k' ? 1 : 2; };
    if (std::regex_match(stem, s, dbl)) {
      const bool txt = s[3].matched;
      const char c = txt ? s[3].str()[0] : s[2].str().back();
      return lora::Target{"double_blocks." + s[1].str() + (txt ? ".txt_attn.qkv" : ".img_attn.qkv"),
                          slot(c) * h, h};
    }
    if (std::regex_match(stem, s, sgl)) {
      const std::string block = "single_blocks." + s[1].str() + ".linear1";
      if (s[2] == "proj_mlp") return lora::Target{block, 3 * h, mlp};
      return lora::Target{block, slot(s[3].str()[0]) * h, h};
    }
    const std::string name = diffusion::flux_diffusers_to_original(stem + ".weight");
    if (name.size() <= 7 || name == stem + ".weight") return std::nullopt;
    return lora::Target{name.substr(0, name.size() - 7), 0, -1};
  };
}

PreviewMap FluxFamily::preview(const LoadedModels& m) const {
  if (m.autoencoder->latent_channels() != 16)
    return {torch::zeros({m.autoencoder->latent_channels(), 3}), torch::zeros({3})};
  return {flux_preview_factors(), flux_preview_bias()};
}

}  // namespace kinora::pipeline
