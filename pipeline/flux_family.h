#pragma once
// FLUX.1 text to image (dev and schnell): the FLUX DiT, the FLUX autoencoder,
// T5-XXL and CLIP-L, on the common pipeline. Guidance is the distilled input
// dev takes (one pass per step, no negative prompt); dev's schedule shifts by
// the image's size (BFL's μ), schnell's does not.
#include "pipeline/family.h"

namespace kinora::pipeline {

class FluxFamily : public Family {
 public:
  std::string name() const override { return "flux"; }
  bool has_fp8_path() const override { return true; }
  bool recognises(const std::filesystem::path& model) const override;
  std::vector<Role> roles() const override;
  void resolve_extra(const Preset& p, ModelFiles& files) const override;
  // FLUX.1-dev's: 1024×1024, 28 Euler steps, guidance 3.5.
  Preset defaults() const override;
  // schnell: 4 steps.
  Preset defaults_for(const std::filesystem::path& model) const override;
  std::vector<std::string> snap(Preset& p) const override;
  GuidanceStrategy guidance(const Preset&) const override { return GuidanceStrategy::Distilled; }
  std::string default_negative_prompt(const ModelFiles&) const override { return ""; }
  schedulers::ScheduleOptions schedule(const Preset& p, int64_t image_tokens,
                                       const LoadedModels& models) const override;
  // `shift` (dev shifts by the image's size, schnell not at all), and on
  // schnell (no guidance input) a guidance other than the default.
  std::vector<std::string> unused_settings(const Preset& p,
                                           const LoadedModels& models) const override;
  LoadedModels load(const ModelFiles& files, layers::Precision precision,
                    const std::function<void(const std::string&)>& say) const override;
  void check(const LoadedModels& models, const Preset& p, const ModelFiles& files) const override;
  std::vector<std::string> check_files(const ModelFiles& files) const override;
  PreviewMap preview(const LoadedModels& models) const override;
  // diffusers' names, with to_q / to_k / to_v (and add_*_proj, a single
  // block's proj_mlp) onto the row slices of the fused qkv and linear1.
  lora::DiffusersNames lora_names(const LoadedModels& models) const override;
};

}  // namespace kinora::pipeline
