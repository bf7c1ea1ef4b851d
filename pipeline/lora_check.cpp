#include "pipeline/lora_check.h"

#include "base/error.h"
#include "diffusion/flux_dit.h"
#include "diffusion/wan_dit.h"
#include "io/checkpoint.h"
#include "pipeline/pipeline.h"

namespace kinora::pipeline {
namespace fs = std::filesystem;

DitForLoras load_dit_for_loras(const fs::path& path) {
  DitForLoras d;
  d.detection = io::detect_layout(io::Checkpoint::open(path).shapes());
  if (d.detection.family == io::Family::WanDiT) {
    auto m = std::make_shared<diffusion::WanModel>(diffusion::WanModel::load(path));
    d.models.denoiser = m;
    d.model = m;
    d.names = family_named("wan").lora_names(d.models);
  } else if (d.detection.family == io::Family::FluxDiT) {
    auto m = std::make_shared<diffusion::FluxModel>(diffusion::FluxModel::load(path));
    d.models.denoiser = m;
    d.model = m;
    d.names = family_named("flux").lora_names(d.models);
  } else {
    throw Error(path.string() + ": not a Wan or FLUX DiT (recognised as " +
                io::family_name(d.detection.family) + ")");
  }
  return d;
}

std::vector<lora::Report> check_loras(const Preset& p) {
  std::vector<fs::path> files;
  for (const auto& l : p.loras) {
    if (l.strength_low && p.model2.empty())
      throw Error("LoRA " + l.path +
                  ": a second strength (FILE:HIGH:LOW, strength_low) is for the low-noise "
                  "expert of a Wan 2.2 pair (model2), and this preset has one model");
    files.push_back(resolve_lora_file(p, l.path));
  }
  for (const auto& l : prompt_loras(p.prompt).loras) files.push_back(resolve_lora_tag(p, l.path));
  std::vector<lora::Report> out;
  if (files.empty()) return out;
  const auto dit = load_dit_for_loras(resolve_models(p, family_for(p)).model);
  for (const auto& f : files) out.push_back(lora::resolve(f, *dit.model, dit.names).report);
  return out;
}

}  // namespace kinora::pipeline
