#pragma once
// Which model family a checkpoint holds, and in which key layout, from its tensor
// names and shapes alone (never from metadata or the file name).
#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

namespace kinora::io {

// WanVAE: the Wan 2.1 VAE (16 latent channels). Wan22VAE: the Wan 2.2 VAE of
// the TI2V-5B (48 latent channels, Wan2.2 vae2_2.py), recognised so that it is
// named, not loaded: Kinora has no implementation of it. KLAutoencoder: the 2D
// KL autoencoder of FLUX (16 latent channels) and of SD/SDXL (4). UNet: the SD
// 1.x / 2.x / SDXL UNet. OpenCLIP: an OpenCLIP text tower in its own names
// (SDXL's bigG, SD 2.x's ViT-H).
enum class Family {
  Unknown,
  WanDiT,
  WanVAE,
  Wan22VAE,
  UMT5,
  T5,
  CLIP,
  FluxDiT,
  KLAutoencoder,
  UNet,
  OpenCLIP
};
enum class Layout { Unknown, Original, ComfyUI, Diffusers, HF };

const char* family_name(Family f);
const char* layout_name(Layout l);

using ShapeMap = std::map<std::string, std::vector<int64_t>>;

struct Detection {
  Family family = Family::Unknown;
  Layout layout = Layout::Unknown;
  std::string prefix;   // stripped from every key ("model.diffusion_model." …)
  std::string summary;  // what the shapes say: widths, layer counts, the variant
};

Detection detect_layout(const ShapeMap& shapes);
// The first of `wanted` (in its order) found under any of the known prefixes: the part of a
// file that holds several models (an SDXL single-file checkpoint: the UNet
// under model.diffusion_model., the VAE under first_stage_model., the text
// encoders under conditioner.embedders.N.). What detect_layout(shapes) says
// when none of them is there.
Detection detect_layout(const ShapeMap& shapes, std::initializer_list<Family> wanted);
// Every model the file holds, one per prefix (a single-file checkpoint's
// UNet, VAE and text encoders), in the order of detect_layout's prefixes.
std::vector<Detection> detect_parts(const ShapeMap& shapes);

// The keys under `prefix` with the prefix removed.
ShapeMap strip_prefix(const ShapeMap& shapes, const std::string& prefix);
// Number of N for which some key starts with stem + "N.".
int count_indexed(const ShapeMap& shapes, const std::string& stem);

}  // namespace kinora::io
