#include "pipeline/sdxl_family.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "diffusion/sdxl_unet.h"
#include "io/checkpoint.h"
#include "io/layout.h"
#include "pipeline/pipeline.h"
#include "text/clip.h"
#include "text/clip_tokenizer.h"
#include "text/sdxl_conditioner.h"
#include "vae/kl_autoencoder.h"

namespace kinora::pipeline {
namespace fs = std::filesystem;

namespace {
const diffusion::SDXLUNet& unet_of(const LoadedModels& m) {
  return static_cast<const diffusion::SDXLUNet&>(*m.denoiser);
}
// Whether `file` holds a model of `family` (alone or as a part).
bool holds(const fs::path& file, io::Family family) {
  return io::detect_layout(io::Checkpoint::open(file).shapes(), {family}).family == family;
}
}  // namespace

bool SDXLFamily::recognises(const fs::path& model) const {
  return holds(model, io::Family::UNet);
}

std::vector<Family::Role> SDXLFamily::roles() const {
  return {{"model", "diffusion_models", true},
          {"vae", "vae", false},
          {"clip", "text_encoders", false},
          {"text_encoder", "text_encoders", false}};
}

void SDXLFamily::resolve_extra(const Preset& p, ModelFiles& files) const {
  const std::string source = p.source.empty() ? std::string("preset") : p.source;
  if (!p.model2.empty())
    throw Error(source + ": key 'model2' is the low-noise expert of a Wan 2.2 pair; SDXL takes " +
                "one UNet");
  if (!p.tokenizer.empty())
    throw Error(source + ": key 'tokenizer' is a SentencePiece model for T5; SDXL's encoders " +
                "use the CLIP tokenizer (key 'clip_tokenizer', a folder with vocab.json and " +
                "merges.txt)");
  // The parts the preset leaves out come from the model file when it holds
  // them (a single-file checkpoint).
  struct Part {
    fs::path* file;
    io::Family family;
    const char* what;
    const char* key;  // the preset key; its option is --KEY with '-' for '_'
  };
  for (const Part& part : {Part{&files.vae, io::Family::KLAutoencoder, "VAE", "vae"},
                           Part{&files.clip, io::Family::CLIP, "CLIP-L text encoder", "clip"},
                           Part{&files.text_encoder, io::Family::OpenCLIP,
                                "OpenCLIP bigG text encoder", "text_encoder"}}) {
    if (!part.file->empty()) continue;
    if (holds(files.model, part.family)) {
      *part.file = files.model;
      continue;
    }
    std::string flag = std::string("--") + part.key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    throw Error(file_label(files.model) + " holds no " + part.what +
                " (it is not a single-file checkpoint with one): give it with " + flag +
                " or the preset key '" + part.key + "'");
  }
  if (files.clip_tokenizer.empty())  // else a diffusers folder's tokenizer/
    files.clip_tokenizer = resolve_clip_tokenizer(p, files.clip);
  text::ClipTokenizer::load(files.clip_tokenizer);  // a malformed one now, not after the models
}

Preset SDXLFamily::defaults() const {
  Preset p;
  p.family = "sdxl";
  p.width = p.height = 1024;
  p.frames = 1;
  p.steps = 25;
  p.sampler = "dpmpp_2m_karras";
  p.shift = 1.0;
  p.guidance = 6.0;
  return p;
}

std::vector<std::string> SDXLFamily::unused_settings(const Preset& p, const LoadedModels&) const {
  if (p.shift == defaults().shift) return {};
  return {"shift " + nlohmann::json(p.shift).dump() +
          " is not used: SDXL samples its own noise schedule, unshifted"};
}

std::vector<std::string> SDXLFamily::snap(Preset& p) const {
  std::vector<std::string> msgs;
  if (p.frames != 1) {
    msgs.push_back("frames " + std::to_string(p.frames) + " → 1 (SDXL makes images)");
    p.frames = 1;
  }
  // 8× autoencoder, then the UNet halves the latent twice.
  for (auto [v, name] : {std::pair<int*, const char*>{&p.width, "width"}, {&p.height, "height"}}) {
    const int snapped = std::max(64, 32 * static_cast<int>(std::lround(*v / 32.0)));
    if (snapped != *v) {
      msgs.push_back(std::string(name) + " " + std::to_string(*v) + " → " +
                     std::to_string(snapped) +
                     " (at least 64 and a multiple of 32: 8× autoencoder, two halvings in the "
                     "UNet)");
      *v = snapped;
    }
  }
  return msgs;
}

std::vector<std::string> SDXLFamily::check_files(const ModelFiles& files) const {
  expect_kind(files.model, {io::Family::UNet}, "SDXL UNet (model)");
  // A part of its own file: the single-file checkpoint holds it.
  if (!files.vae.empty() && files.vae != files.model) {
    const auto ae = vae::KLAutoencoderConfig::from_checkpoint(
        expect_kind(files.vae, {io::Family::KLAutoencoder}, "VAE for " + file_label(files.model))
            .checkpoint);
    if (ae.z_channels != 4)
      throw Error(file_label(files.model) + " works on 4 latent channels, but the autoencoder " +
                  file_label(files.vae) + " has " + std::to_string(ae.z_channels) +
                  (ae.z_channels == 16 ? " (FLUX's ae.safetensors; SDXL takes its own VAE)" : ""));
  }
  if (!files.clip.empty() && files.clip != files.model) {
    // A file holding bigG alone would load as the only text model it has.
    if (detect_file(files.clip, {io::Family::CLIP, io::Family::OpenCLIP}).family ==
        io::Family::OpenCLIP)
      throw Error(files.clip.string() +
                  ": an OpenCLIP text encoder (bigG, SDXL's second), not CLIP-L; give it as the "
                  "text encoder (--text-encoder) and CLIP-L (clip_l.safetensors) as --clip");
    expect_kind(files.clip, {io::Family::CLIP},
                "CLIP-L text encoder for " + file_label(files.model));
  }
  return {};
}

LoadedModels SDXLFamily::load(const ModelFiles& files, layers::Precision precision,
                              const std::function<void(const std::string&)>& say) const {
  LoadedModels m;
  const bool single =
      files.vae == files.model || files.clip == files.model || files.text_encoder == files.model;
  say(file_label(files.model) + (single ? " (SDXL checkpoint: UNet)" : " (SDXL UNet)"));
  const auto ck = io::Checkpoint::open(files.model);
  {
    const auto cfg = diffusion::SDXLUNetConfig::from_checkpoint(ck);
    if (cfg.adm_in_channels == 0)
      throw Error(files.model.string() + ": an " + cfg.variant() +
                  " UNet; Kinora runs SDXL UNets (with the pooled-text and size conditioning), "
                  "not SD 1.x or 2.x yet");
    if (cfg.in_channels != cfg.out_channels)
      throw Error(files.model.string() + ": a UNet with " + std::to_string(cfg.in_channels) +
                  " input channels for " + std::to_string(cfg.out_channels) +
                  " output channels (an inpainting or image-conditioned model); only text to "
                  "image is supported");
  }
  auto unet =
      std::make_shared<diffusion::SDXLUNet>(diffusion::SDXLUNet::load(files.model, precision));
  // v-prediction fine-tunes mark themselves with a `v_pred` tensor (ComfyUI's
  // convention).
  if (ck.contains("v_pred")) unet->set_prediction(diffusion::Prediction::VPrediction);
  auto part = [&](const fs::path& file, const char* what, auto&& load_it) {
    try {
      return load_it();
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + " (given as the " + what + " for the SDXL UNet " +
                  file_label(files.model) + ")");
    }
  };
  say(file_label(files.vae) + " (SDXL VAE)");
  auto ae = part(files.vae, "VAE", [&] {
    return std::make_shared<vae::KLAutoencoder>(vae::KLAutoencoder::load(files.vae, precision));
  });
  say(file_label(files.clip) + " (CLIP-L)");
  auto clip_l = part(files.clip, "CLIP-L text encoder", [&] {
    // A file holding bigG alone would load as the only text model it has.
    if (!holds(files.clip, io::Family::CLIP) && holds(files.clip, io::Family::OpenCLIP))
      throw Error(files.clip.string() +
                  ": an OpenCLIP text encoder (bigG, SDXL's second), not CLIP-L; give it as the "
                  "text encoder (--text-encoder) and CLIP-L (clip_l.safetensors) as --clip");
    return text::CLIPTextModel::load(files.clip, precision);
  });
  say(file_label(files.text_encoder) + " (OpenCLIP bigG)");
  auto clip_g = part(files.text_encoder, "OpenCLIP bigG text encoder", [&] {
    return text::CLIPTextModel::load(files.text_encoder, precision, io::Family::OpenCLIP);
  });
  auto tokenizer = part(files.clip_tokenizer, "CLIP tokenizer",
                        [&] { return text::ClipTokenizer::load(files.clip_tokenizer); });
  auto cond = part(files.text_encoder, "text encoders", [&] {
    return std::make_shared<text::SDXLConditioner>(std::move(clip_l), std::move(clip_g),
                                                   std::move(tokenizer));
  });
  m.denoiser = unet;
  m.autoencoder = ae;
  m.conditioner = cond;
  return m;
}

void SDXLFamily::check(const LoadedModels& m, const Preset& p, const ModelFiles& files) const {
  const auto& cfg = unet_of(m).config();
  const auto& cond = static_cast<const text::SDXLConditioner&>(*m.conditioner);
  const std::string both = file_label(files.clip) == file_label(files.text_encoder)
                               ? file_label(files.clip)
                               : file_label(files.clip) + " and " + file_label(files.text_encoder);
  if (cfg.context_dim != cond.context_dim())
    throw Error(file_label(files.model) + " takes text states of width " +
                std::to_string(cfg.context_dim) + " (SDXL: CLIP-L 768 + bigG 1280), but " + both +
                " give " + std::to_string(cond.context_dim()));
  if (cfg.pooled_dim() != cond.pooled_dim())
    throw Error(file_label(files.model) + " takes a pooled text vector of width " +
                std::to_string(cfg.pooled_dim()) + ", but " + file_label(files.text_encoder) +
                " gives " + std::to_string(cond.pooled_dim()));
  const auto& ae = *m.autoencoder;
  if (cfg.in_channels != ae.latent_channels())
    throw Error(
        file_label(files.model) + " works on " + std::to_string(cfg.in_channels) +
        " latent channels, but the autoencoder " + file_label(files.vae) + " has " +
        std::to_string(ae.latent_channels()) +
        (ae.latent_channels() == 16 ? " (a FLUX autoencoder; SDXL needs the SDXL VAE)" : ""));
  const int64_t cell = ae.spatial_compression() * unet_of(m).latent_patch()[1];
  if (p.width % cell || p.height % cell)
    throw Error("size " + std::to_string(p.width) + "×" + std::to_string(p.height) +
                ": this UNet with this autoencoder needs multiples of " + std::to_string(cell));
}

PreviewMap SDXLFamily::preview(const LoadedModels& m) const {
  const int64_t c = m.autoencoder->latent_channels();
  if (c != 4) return {torch::zeros({c, 3}), torch::zeros({3})};
  // ComfyUI's SDXL latent_rgb_factors, fitted on the scaled latent, carried
  // over to the unscaled one the preview is given.
  static const float f[4][3] = {{0.3651f, 0.4232f, 0.4341f},
                                {-0.2533f, -0.0042f, 0.1068f},
                                {0.1076f, 0.1111f, -0.0362f},
                                {-0.3165f, -0.2492f, -0.2188f}};
  const auto factors =
      torch::from_blob(const_cast<float*>(&f[0][0]), {4, 3}, torch::kFloat32).clone() * 0.13025;
  return {factors, torch::tensor({0.1084f, -0.0175f, -0.0011f})};
}

lora::DiffusersNames SDXLFamily::lora_names(const LoadedModels& m) const {
  const auto& cfg = unet_of(m).config();
  diffusion::UNetDiffusersLayout l;
  l.layers_per_block = cfg.num_res_blocks;
  const std::size_t levels = cfg.channel_mult.size();
  for (std::size_t level = 0; level < levels; ++level) {
    l.down_attention.push_back(cfg.transformer_depth[level] > 0);
    // up_blocks.i is the (levels − 1 − i)-th level, its blocks in order.
    l.up_attention.push_back(
        cfg.transformer_depth_output[level * static_cast<std::size_t>(cfg.num_res_blocks + 1)] > 0);
  }
  return [l](const std::string& stem) -> std::optional<lora::Target> {
    const std::string name = diffusion::unet_diffusers_to_original(stem + ".weight", l);
    if (name == stem + ".weight" || name.size() <= 7) return std::nullopt;
    return lora::Target{name.substr(0, name.size() - 7), 0, -1};
  };
}

std::vector<Family::LoraTextEncoder> sdxl_lora_text_encoders(layers::Model& clip_l,
                                                             layers::Model& clip_g) {
  return {{"CLIP-L", &clip_l, {"lora_te1_", "text_encoder.", "te1."}},
          {"bigG", &clip_g, {"lora_te2_", "text_encoder_2.", "te2."}}};
}

std::vector<Family::LoraTextEncoder> SDXLFamily::lora_text_encoders(const LoadedModels& m) const {
  auto& cond = static_cast<text::SDXLConditioner&>(*m.conditioner);
  return sdxl_lora_text_encoders(cond.clip_l(), cond.clip_g());
}

}  // namespace kinora::pipeline
