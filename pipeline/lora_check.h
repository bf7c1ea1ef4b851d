#pragma once
// LoRAs resolved against a model without rendering: a DiT file loaded alone
// (its weights memory-mapped, not read), with its family's diffusers names.
// `kinora lora inspect/merge` and the studio's LoRA table use it, so a LoRA
// that does not fit the model is reported before a job is queued.
#include <filesystem>
#include <memory>
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
};

// Throws kinora::Error naming the file for one that is no Wan or FLUX DiT.
DitForLoras load_dit_for_loras(const std::filesystem::path& path);

// Each of the preset's LoRAs (and the prompt's <lora:…> tags) resolved against
// its DiT (the model file, a diffusers folder's transformer, or the embedded
// model's): their reports, in order. Throws kinora::Error naming the LoRA
// file and why for one that cannot be found, is no LoRA, or matches nothing
// of the model (another family or size), or for a second strength without a
// pair of experts.
std::vector<lora::Report> check_loras(const Preset& p);

}  // namespace kinora::pipeline
