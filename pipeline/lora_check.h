#pragma once
// LoRAs resolved against a model without rendering: a DiT file loaded alone
// (its weights memory-mapped, not read), with its family's diffusers names.
// `kinora lora inspect/merge` and the studio's LoRA table use it, so a LoRA
// that does not fit the model is reported before a job is queued.
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/layout.h"
#include "lora/lora.h"
#include "pipeline/family.h"
#include "pipeline/preset.h"

namespace kinora::pipeline {

struct DitForLoras {
  std::shared_ptr<layers::Model> model;
  LoadedModels models;
  lora::DiffusersNames names;
  io::Detection detection;
  // The text encoders LoRAs of this family also address (SDXL's, when their
  // files are known), and what holds them.
  std::vector<Family::LoraTextEncoder> encoders;
  std::vector<std::shared_ptr<layers::Model>> text_models;
};

// One LoRA file resolved against a denoiser and the text encoders its family
// lets LoRAs address: the denoiser's updates, each encoder's, and one report
// over all of them (the denoiser's, with the encoders' counted in). Throws as
// lora::resolve, and for a file with nothing for this model.
struct FamilyLora {
  lora::Resolved denoiser;
  std::vector<lora::Resolved> text;  // per encoder
};
// With `text_unchecked` (SDXL's UNet without its text encoders' files), the
// text encoders' updates are left out rather than reported as not applied.
FamilyLora resolve_lora(const std::filesystem::path& file, const layers::Model& denoiser,
                        const lora::DiffusersNames& names,
                        const std::vector<Family::LoraTextEncoder>& encoders,
                        bool text_unchecked = false);

// Throws kinora::Error naming the file for one that is no Wan or FLUX DiT or
// SDXL UNet (alone or in a single-file checkpoint).
// `files`, when given, names the text encoders (SDXL's); a single-file
// checkpoint's own are used otherwise.
DitForLoras load_dit_for_loras(const std::filesystem::path& path,
                               const ModelFiles* files = nullptr);

// Each of the preset's LoRAs (and the prompt's <lora:…> tags) resolved against
// its DiT (the model file, a diffusers folder's transformer, or the embedded
// model's): their reports, in order. Throws kinora::Error naming the LoRA
// file and why for one that cannot be found, is no LoRA, or matches nothing
// of the model (another family or size), or for a second strength without a
// pair of experts.
std::vector<lora::Report> check_loras(const Preset& p);

// A note for one LoRA file given more than once (under two names too): each
// copy stacks, so their strengths add up, which may not be what was meant.
// `what_happens` says what is done to each copy ("applied", "merged"). Empty
// when every file is given once.
std::string repeated_lora_note(const std::vector<std::filesystem::path>& files,
                               const std::string& what_happens);

// check_loras for many presets (a batch's, a cluster job's): each model file
// (with its text encoders) loaded once, each LoRA file resolved once against it.
class LoraChecker {
 public:
  std::vector<lora::Report> check(const Preset& p);

 private:
  std::map<std::string, DitForLoras> dits_;  // by model and text encoder files
  std::map<std::pair<std::string, std::string>, lora::Report> reports_;  // model key, LoRA file
};

}  // namespace kinora::pipeline
