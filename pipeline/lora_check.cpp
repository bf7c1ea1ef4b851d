#include "pipeline/lora_check.h"

#include "base/error.h"
#include "diffusion/flux_dit.h"
#include "diffusion/sdxl_unet.h"
#include "diffusion/wan_dit.h"
#include "io/checkpoint.h"
#include "lora/lora.h"
#include "pipeline/pipeline.h"
#include "pipeline/sdxl_family.h"
#include "text/clip.h"

namespace kinora::pipeline {
namespace fs = std::filesystem;

FamilyLora resolve_lora(const fs::path& file, const layers::Model& denoiser,
                        const lora::DiffusersNames& names,
                        const std::vector<Family::LoraTextEncoder>& encoders, bool text_unchecked) {
  FamilyLora out;
  const auto updates = lora::Updates::read(file);  // once for the denoiser and each encoder
  lora::Scope scope;
  scope.text_elsewhere = !encoders.empty() || text_unchecked;
  out.denoiser = lora::resolve(updates, denoiser, names, scope);
  auto& report = out.denoiser.report;
  for (const auto& e : encoders) {
    auto t = lora::resolve(updates, *e.model, {}, {e.prefixes, false});
    report.matched += t.report.matched;
    report.total += t.report.total;
    for (auto u : t.report.unmatched) {
      u.where = e.name;
      report.unmatched.push_back(std::move(u));
    }
    out.text.push_back(std::move(t));
  }
  if (report.total == 0 && !text_unchecked)
    fail_file(file,
              "holds no update for this model (its keys address text encoders or models "
              "it does not have)");
  return out;
}

DitForLoras load_dit_for_loras(const fs::path& path, const ModelFiles* files) {
  DitForLoras d;
  const auto shapes = io::Checkpoint::open(path).shapes();
  d.detection = io::detect_layout(shapes);
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
  } else if (const auto unet = io::detect_layout(shapes, {io::Family::UNet});
             unet.family == io::Family::UNet) {
    // An SDXL UNet, alone or in a single-file checkpoint, with its text
    // encoders when their files are known.
    d.detection = unet;
    auto m = std::make_shared<diffusion::SDXLUNet>(diffusion::SDXLUNet::load(path));
    d.models.denoiser = m;
    d.model = m;
    d.names = family_named("sdxl").lora_names(d.models);
    // Its text encoders, from the files given or the checkpoint itself.
    auto encoder = [&](const fs::path& given, io::Family family) -> fs::path {
      if (!given.empty()) return given;
      const auto det = io::detect_layout(shapes, {family});
      return det.family == family ? path : fs::path();
    };
    const auto l = encoder(files ? files->clip : fs::path(), io::Family::CLIP);
    const auto g = encoder(files ? files->text_encoder : fs::path(), io::Family::OpenCLIP);
    if (!l.empty() && !g.empty()) {
      auto clip_l = std::make_shared<text::CLIPTextModel>(text::CLIPTextModel::load(l));
      auto clip_g = std::make_shared<text::CLIPTextModel>(
          text::CLIPTextModel::load(g, layers::Precision::F32, io::Family::OpenCLIP));
      d.encoders = sdxl_lora_text_encoders(*clip_l, *clip_g);
      d.text_models = {clip_l, clip_g};
    }
  } else {
    std::string held = std::string("recognised as ") + io::family_name(d.detection.family);
    if (d.detection.family == io::Family::Unknown) {
      held = "no known model's tensor names";
      try {
        lora::describe(path);
        held = "a LoRA, not a model: give the model its updates apply to";
      } catch (const Error&) {
        // neither a model nor a LoRA
      }
    }
    throw Error(path.string() + ": not a Wan or FLUX DiT or an SDXL UNet (" + held + ")");
  }
  return d;
}

std::vector<lora::Report> check_loras(const Preset& p) {
  return LoraChecker().check(p);
}

std::vector<lora::Report> LoraChecker::check(const Preset& p) {
  std::vector<fs::path> files;
  for (const auto& l : p.loras) {
    if (l.strength_low && p.model2.empty())
      throw Error("LoRA " + l.path +
                  ": a second strength (FILE:HIGH:LOW, strength_low) is for the low-noise "
                  "expert of a Wan 2.2 pair (model2, --model2), and this render has one "
                  "model");
    files.push_back(resolve_lora_file(p, l.path));
  }
  for (const auto& l : prompt_loras(p.prompt).loras) files.push_back(resolve_lora_tag(p, l.path));
  std::vector<lora::Report> out;
  if (files.empty()) return out;
  const auto model_files = resolve_models(p, family_for(p));
  const std::string key = model_files.model.string() + "\n" + model_files.clip.string() + "\n" +
                          model_files.text_encoder.string();
  auto dit = dits_.find(key);
  if (dit == dits_.end())
    dit = dits_.emplace(key, load_dit_for_loras(model_files.model, &model_files)).first;
  const auto& d = dit->second;
  for (const auto& f : files) {
    const auto done = reports_.find({key, f.string()});
    if (done != reports_.end()) {
      out.push_back(done->second);
      continue;
    }
    out.push_back(resolve_lora(f, *d.model, d.names, d.encoders).denoiser.report);
    reports_.emplace(std::make_pair(key, f.string()), out.back());
  }
  return out;
}

std::string repeated_lora_note(const std::vector<fs::path>& files,
                               const std::string& what_happens) {
  std::error_code ec;
  for (std::size_t i = 0; i < files.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (fs::equivalent(files[i], files[j], ec))
        return "LoRA " + files[i].filename().string() + " is given more than once: each is " +
               what_happens + ", so their strengths add up";
  return {};
}

}  // namespace kinora::pipeline
