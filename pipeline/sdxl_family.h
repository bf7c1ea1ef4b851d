#pragma once
// SDXL text to image: the SDXL UNet, the SD/SDXL autoencoder (scale 0.13025),
// CLIP-L and OpenCLIP bigG at their penultimate layers, on the common
// pipeline. The first family that predicts noise: its samplers are the noise
// ones (euler, euler_ancestral, dpmpp_2m, dpmpp_2m_karras), with
// classifier-free guidance and the negative prompt; the schedule options'
// defaults are SDXL's (leading spacing, offset 1), and the prediction comes
// from the UNet.
//
// The files: a single-file checkpoint (ComfyUI's checkpoints/ folder) holds
// all four parts, and the preset's `vae`, `clip` (CLIP-L) and `text_encoder`
// (bigG) keys override the parts it holds; a UNet alone needs the three
// others. The CLIP tokenizer (vocab.json and merges.txt) is found as FLUX's.
#include "pipeline/family.h"

namespace kinora::pipeline {

class SDXLFamily : public Family {
 public:
  std::string name() const override { return "sdxl"; }
  // An SD/SDXL UNet in any layout, alone or in a single-file checkpoint (SD
  // 1.x / 2.x too, which load() then refuses with what is supported).
  bool recognises(const std::filesystem::path& model) const override;
  std::vector<Role> roles() const override;
  // The parts the preset does not name, from the model file when it holds
  // them; the CLIP tokenizer.
  void resolve_extra(const Preset& p, ModelFiles& files) const override;
  // SDXL's: 1024×1024, DPM++ 2M with Karras sigmas, 25 steps, guidance 6.
  Preset defaults() const override;
  std::vector<std::string> snap(Preset& p) const override;
  // `shift`: a noise-prediction schedule is not shifted.
  std::vector<std::string> unused_settings(const Preset& p,
                                           const LoadedModels& models) const override;
  GuidanceStrategy guidance(const Preset& p) const override {
    return GuidanceStrategy::ClassifierFree;
  }
  std::string default_negative_prompt(const ModelFiles&) const override { return ""; }
  LoadedModels load(const ModelFiles& files, layers::Precision precision,
                    const std::function<void(const std::string&)>& say) const override;
  void check(const LoadedModels& models, const Preset& p, const ModelFiles& files) const override;
  std::vector<std::string> check_files(const ModelFiles& files) const override;
  PreviewMap preview(const LoadedModels& models) const override;
  // diffusers' UNet names onto the original ones.
  lora::DiffusersNames lora_names(const LoadedModels& models) const override;
  // CLIP-L (lora_te1_, text_encoder.) and bigG (lora_te2_, text_encoder_2.).
  std::vector<LoraTextEncoder> lora_text_encoders(const LoadedModels& models) const override;
};

// CLIP-L (lora_te1_, text_encoder.) and bigG (lora_te2_, text_encoder_2.) as
// LoRA targets.
std::vector<Family::LoraTextEncoder> sdxl_lora_text_encoders(layers::Model& clip_l,
                                                             layers::Model& clip_g);

}  // namespace kinora::pipeline
