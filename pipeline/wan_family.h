#pragma once
// The Wan 2.1 / 2.2 family (and the embedded model, which is one): the Wan DiT
// (a Wan 2.2 A14B pair as two experts), the Wan 2.1 causal 3D VAE, umT5 with
// its SentencePiece tokenizer; classifier-free guidance; frames 4k+1.
#include "pipeline/family.h"

namespace kinora::pipeline {

class WanFamily : public Family {
 public:
  std::string name() const override { return "wan"; }
  bool has_fp8_path() const override { return true; }
  bool recognises(const std::filesystem::path& model) const override;
  std::vector<Role> roles() const override;
  // The embedded model's (assets/); an error listing where it looked when it
  // is not there.
  std::optional<ModelFiles> default_files() const override;
  Preset defaults() const override { return Preset(); }
  // A DiT Kinora trained (the embedded model, a copy of it, a `kinora train`
  // or `lora merge` output: "kinora" metadata with its size): the embedded
  // model's defaults at the size and shift it was trained for.
  Preset defaults_for(const std::filesystem::path& model) const override;
  std::vector<std::string> snap(Preset& p) const override;
  GuidanceStrategy guidance(const Preset&) const override {
    return GuidanceStrategy::ClassifierFree;
  }
  std::string default_negative_prompt(const ModelFiles& files) const override;
  LoadedModels load(const ModelFiles& files, layers::Precision precision,
                    const std::function<void(const std::string&)>& say) const override;
  void check(const LoadedModels& models, const Preset& p, const ModelFiles& files) const override;
  std::vector<std::string> check_files(const ModelFiles& files) const override;
  PreviewMap preview(const LoadedModels& models) const override;
  lora::DiffusersNames lora_names(const LoadedModels& models) const override;
};

}  // namespace kinora::pipeline
