#include "io/layout.h"

#include <array>
#include <optional>
#include <set>
#include <sstream>

namespace kinora::io {

const char* family_name(Family f) {
  switch (f) {
    case Family::WanDiT:
      return "Wan DiT";
    case Family::WanVAE:
      return "Wan VAE";
    case Family::Wan22VAE:
      return "Wan 2.2 VAE (48 latent channels, the TI2V-5B's; Kinora does not support it yet)";
    case Family::UMT5:
      return "umT5 encoder";
    case Family::T5:
      return "T5 encoder";
    case Family::CLIP:
      return "CLIP text encoder";
    case Family::FluxDiT:
      return "FLUX DiT";
    case Family::KLAutoencoder:
      return "image autoencoder";
    case Family::UNet:
      return "SD/SDXL UNet";
    case Family::OpenCLIP:
      return "OpenCLIP text encoder";
    case Family::Unknown:
      break;
  }
  return "unknown";
}

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::Original:
      return "original";
    case Layout::ComfyUI:
      return "ComfyUI";
    case Layout::Diffusers:
      return "diffusers";
    case Layout::HF:
      return "HF";
    case Layout::Unknown:
      break;
  }
  return "unknown";
}

ShapeMap strip_prefix(const ShapeMap& shapes, const std::string& prefix) {
  if (prefix.empty()) return shapes;
  ShapeMap out;
  for (const auto& [k, v] : shapes)
    if (k.rfind(prefix, 0) == 0) out.emplace(k.substr(prefix.size()), v);
  return out;
}

int count_indexed(const ShapeMap& shapes, const std::string& stem) {
  std::set<int> seen;
  for (const auto& [k, v] : shapes) {
    if (k.rfind(stem, 0) != 0) continue;
    std::size_t i = stem.size(), j = i;
    while (j < k.size() && k[j] >= '0' && k[j] <= '9') ++j;
    if (j > i && j < k.size() && k[j] == '.') seen.insert(std::stoi(k.substr(i, j - i)));
  }
  return static_cast<int>(seen.size());
}

namespace {

const std::vector<int64_t>* find(const ShapeMap& m, const std::string& k) {
  const auto it = m.find(k);
  return it == m.end() ? nullptr : &it->second;
}
bool has(const ShapeMap& m, const std::string& k) {
  return m.count(k) != 0;
}
int64_t dim(const ShapeMap& m, const std::string& k, std::size_t i) {
  const auto* s = find(m, k);
  return s && s->size() > i ? (*s)[i] : -1;
}
// A size for a summary: "?" where the tensor that gives it is missing (an
// incomplete file).
std::string size_text(int64_t v) {
  return v > 0 ? std::to_string(v) : "?";
}

std::string wan_dit_summary(const ShapeMap& m, bool diffusers) {
  const int64_t width = dim(m, "patch_embedding.weight", 0);
  const int64_t in_dim = dim(m, "patch_embedding.weight", 1);
  const int layers = count_indexed(m, "blocks.");
  const int64_t ffn =
      dim(m, diffusers ? "blocks.0.ffn.net.0.proj.weight" : "blocks.0.ffn.0.weight", 0);
  const int64_t text = dim(
      m, diffusers ? "condition_embedder.text_embedder.linear_1.weight" : "text_embedding.0.weight",
      1);
  const int64_t out4 = dim(m, diffusers ? "proj_out.weight" : "head.head.weight", 0);
  const bool image_branch = diffusers ? has(m, "blocks.0.attn2.add_k_proj.weight")
                                      : has(m, "blocks.0.cross_attn.k_img.weight");
  std::ostringstream s;
  s << "width " << size_text(width) << ", " << layers << " layers, ffn " << size_text(ffn)
    << ", channels " << size_text(in_dim) << "→" << size_text(out4 > 0 ? out4 / 4 : -1)
    << ", text width " << size_text(text) << (image_branch ? ", image cross-attention" : "");
  return s.str();
}

std::string t5_summary(const ShapeMap& m, bool hf) {
  const int layers = count_indexed(m, hf ? "encoder.block." : "blocks.");
  const auto* emb =
      find(m, hf ? (has(m, "shared.weight") ? "shared.weight" : "encoder.embed_tokens.weight")
                 : "token_embedding.weight");
  std::ostringstream s;
  s << "vocab " << (emb ? (*emb)[0] : -1) << ", width " << (emb ? (*emb)[1] : -1) << ", " << layers
    << " layers";
  return s.str();
}

// ComfyUI nests diffusion models under these; text models often sit under
// text_model.; an SD/SDXL single-file checkpoint holds its VAE under
// first_stage_model. and its text encoders under cond_stage_model. (SD 1.x/2.x)
// or conditioner.embedders.N. (SDXL).
constexpr std::array<const char*, 12> kPrefixes = {
    "",
    "model.diffusion_model.",
    "diffusion_model.",
    "text_model.",
    "model.",
    "first_stage_model.",
    "conditioner.embedders.0.transformer.text_model.",
    "conditioner.embedders.1.model.",
    "conditioner.embedders.0.model.",
    "cond_stage_model.transformer.text_model.",
    "cond_stage_model.model.",
    "vae."};

std::string unet_summary(const ShapeMap& m, bool diffusers) {
  const int64_t ch = dim(m, diffusers ? "conv_in.weight" : "input_blocks.0.0.weight", 0);
  const int64_t in = dim(m, diffusers ? "conv_in.weight" : "input_blocks.0.0.weight", 1);
  const int64_t adm =
      dim(m, diffusers ? "add_embedding.linear_1.weight" : "label_emb.0.0.weight", 1);
  int64_t context = -1;
  for (const auto& [k, v] : m)
    if (const std::string tail = "attn2.to_k.weight";
        k.size() > tail.size() && k.compare(k.size() - tail.size(), tail.size(), tail) == 0 &&
        v.size() == 2) {
      context = v[1];
      break;
    }
  std::string variant;
  if (adm == 2816 || (adm > 0 && context == 2048))
    variant = "SDXL";
  else if (adm == 2560)
    variant = "SDXL refiner";
  else if (adm > 0)
    variant = "SDXL-type";
  else if (context == 768)
    variant = "SD 1.x";
  else if (context == 1024)
    variant = "SD 2.x";
  else
    variant = "SD-type";
  std::ostringstream s;
  s << variant << ": channels " << ch << ", input channels " << in << ", context width " << context;
  if (adm > 0) s << ", added conditioning " << adm;
  return s.str();
}

std::optional<Detection> detect_under(const ShapeMap& all, const std::string& prefix) {
  {
    const ShapeMap m = strip_prefix(all, prefix);
    if (m.empty()) return std::nullopt;
    const bool comfy_prefix = prefix == "model.diffusion_model." || prefix == "diffusion_model.";
    Detection d;
    d.prefix = prefix;
    const auto* patch = find(m, "patch_embedding.weight");
    if (patch && patch->size() == 5 && has(m, "blocks.0.self_attn.q.weight")) {
      d.family = Family::WanDiT;
      d.layout = comfy_prefix ? Layout::ComfyUI : Layout::Original;
      d.summary = wan_dit_summary(m, false);
    } else if (patch && patch->size() == 5 && has(m, "blocks.0.attn1.to_q.weight")) {
      d.family = Family::WanDiT;
      d.layout = Layout::Diffusers;
      d.summary = wan_dit_summary(m, true);
    } else if (has(m, "double_blocks.0.img_attn.qkv.weight")) {
      d.family = Family::FluxDiT;
      d.layout = comfy_prefix ? Layout::ComfyUI : Layout::Original;
      d.summary = std::string(has(m, "guidance_in.in_layer.weight") ? "dev (guidance-distilled)"
                                                                    : "schnell") +
                  ": width " + std::to_string(dim(m, "img_in.weight", 0)) + ", " +
                  std::to_string(count_indexed(m, "double_blocks.")) + " double + " +
                  std::to_string(count_indexed(m, "single_blocks.")) + " single blocks";
    } else if (has(m, "transformer_blocks.0.attn.to_q.weight") &&
               has(m, "single_transformer_blocks.0.attn.to_q.weight")) {
      d.family = Family::FluxDiT;
      d.layout = Layout::Diffusers;
      d.summary = std::string(has(m, "time_text_embed.guidance_embedder.linear_1.weight")
                                  ? "dev (guidance-distilled)"
                                  : "schnell") +
                  ": width " + std::to_string(dim(m, "x_embedder.weight", 0)) + ", " +
                  std::to_string(count_indexed(m, "transformer_blocks.")) + " double + " +
                  std::to_string(count_indexed(m, "single_transformer_blocks.")) + " single blocks";
    } else if (const bool nested = has(m, "decoder.upsamples.0.upsamples.0.residual.0.gamma");
               dim(m, "decoder.conv1.weight", 4) > 0 &&
               (nested || has(m, "decoder.upsamples.0.residual.0.gamma"))) {
      // Wan 2.2's stages nest their blocks (Up_ResidualBlock.upsamples).
      d.family = nested ? Family::Wan22VAE : Family::WanVAE;
      d.layout = Layout::Original;
      d.summary = "base width " + std::to_string(dim(m, "encoder.conv1.weight", 0)) +
                  ", latent channels " + std::to_string(dim(m, "conv2.weight", 0));
    } else if (dim(m, "decoder.conv_in.weight", 4) > 0 &&
               has(m, "decoder.up_blocks.0.resnets.0.conv1.weight")) {
      // diffusers' AutoencoderKLWan holds both; the Wan 2.2 VAE's has 48 latent
      // channels and takes 2×2-patchified frames (12 input channels).
      d.family =
          dim(m, "post_quant_conv.weight", 0) == 48 || dim(m, "encoder.conv_in.weight", 1) == 12
              ? Family::Wan22VAE
              : Family::WanVAE;
      d.layout = Layout::Diffusers;
      d.summary = "base width " + std::to_string(dim(m, "encoder.conv_in.weight", 0)) +
                  ", latent channels " + std::to_string(dim(m, "post_quant_conv.weight", 0));
    } else if (find(m, "decoder.conv_in.weight") &&
               find(m, "decoder.conv_in.weight")->size() == 4 &&
               (has(m, "decoder.up.0.block.0.conv1.weight") ||
                has(m, "decoder.up_blocks.0.resnets.0.conv1.weight"))) {
      d.family = Family::KLAutoencoder;
      d.layout = has(m, "decoder.up.0.block.0.conv1.weight") ? Layout::Original : Layout::Diffusers;
      const int64_t z = dim(m, "decoder.conv_in.weight", 1);
      d.summary = std::string(z == 16  ? "FLUX"
                              : z == 4 ? "SD/SDXL"
                                       : "KL") +
                  ": latent channels " + std::to_string(z) + ", base width " +
                  std::to_string(dim(m, "encoder.conv_in.weight", 0));
    } else if (has(m, "blocks.0.attn.q.weight") && has(m, "token_embedding.weight")) {
      d.family = has(m, "blocks.0.pos_embedding.embedding.weight") ? Family::UMT5 : Family::T5;
      d.layout = Layout::Original;
      d.summary = t5_summary(m, false) + (d.family == Family::UMT5 ? ", relative bias per layer"
                                                                   : ", shared relative bias");
    } else if (has(m, "encoder.block.0.layer.0.SelfAttention.q.weight")) {
      d.family = has(m, "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight")
                     ? Family::UMT5
                     : Family::T5;
      d.layout = Layout::HF;
      d.summary = t5_summary(m, true) + (d.family == Family::UMT5 ? ", relative bias per layer"
                                                                  : ", shared relative bias");
    } else if (has(m, "encoder.layers.0.self_attn.q_proj.weight") &&
               has(m, "embeddings.token_embedding.weight")) {
      d.family = Family::CLIP;
      d.layout = Layout::HF;
      d.summary = "width " + std::to_string(dim(m, "embeddings.token_embedding.weight", 1)) + ", " +
                  std::to_string(count_indexed(m, "encoder.layers.")) + " layers, context " +
                  std::to_string(dim(m, "embeddings.position_embedding.weight", 0));
    } else if (dim(m, "input_blocks.0.0.weight", 3) > 0 &&
               has(m, "middle_block.0.in_layers.0.weight") && has(m, "out.2.weight")) {
      d.family = Family::UNet;
      d.layout = comfy_prefix ? Layout::ComfyUI : Layout::Original;
      d.summary = unet_summary(m, false);
    } else if (dim(m, "conv_in.weight", 3) > 0 && has(m, "time_embedding.linear_1.weight") &&
               has(m, "down_blocks.0.resnets.0.conv1.weight")) {
      d.family = Family::UNet;
      d.layout = Layout::Diffusers;
      d.summary = unet_summary(m, true);
    } else if (has(m, "transformer.resblocks.0.attn.in_proj_weight") &&
               has(m, "token_embedding.weight") && has(m, "ln_final.weight")) {
      d.family = Family::OpenCLIP;
      d.layout = Layout::Original;
      d.summary = "width " + std::to_string(dim(m, "token_embedding.weight", 1)) + ", " +
                  std::to_string(count_indexed(m, "transformer.resblocks.")) + " layers, context " +
                  std::to_string(dim(m, "positional_embedding", 0)) +
                  (has(m, "text_projection")
                       ? ", projection " + std::to_string(dim(m, "text_projection", 1))
                       : std::string());
    } else {
      return std::nullopt;
    }
    return d;
  }
}

}  // namespace

Detection detect_layout(const ShapeMap& all) {
  for (const char* p : kPrefixes)
    if (auto d = detect_under(all, p)) return *d;
  return {};
}

std::vector<Detection> detect_parts(const ShapeMap& all) {
  std::vector<Detection> out;
  for (const char* p : kPrefixes)
    if (auto d = detect_under(all, p)) out.push_back(*d);
  return out;
}

Detection detect_layout(const ShapeMap& all, std::initializer_list<Family> wanted) {
  for (const auto f : wanted)
    for (const char* p : kPrefixes)
      if (auto d = detect_under(all, p); d && d->family == f) return *d;
  return detect_layout(all);
}

}  // namespace kinora::io
