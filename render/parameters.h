#pragma once
// The "parameters" text a PNG carries for the tools that read only that
// (AUTOMATIC1111, Forge, ComfyUI's and Civitai's readers), in the form
// AUTOMATIC1111 writes it, so that it pastes into them:
//
//   PROMPT
//   Negative prompt: NEGATIVE
//   Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6, Seed: 7,
//   Size: 1024x1024, Model hash: 31e35c80fc, Model: sd_xl_base_1.0,
//   Lora hashes: "ink: 0123456789ab", Version: Kinora
//
// (the last line one line). Kinora's own parameters (the preset, restorable)
// travel beside it in the "kinora" chunk; this text is for the others.
#include <atomic>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "pipeline/preset.h"

namespace kinora::render {

// The hashes the text names files by, read from this machine's files.
struct FileHashes {
  // "Model hash": the first 10 hex digits of the model file's SHA-256
  // (Civitai's "AutoV2"); empty to leave the entry out.
  std::string model;
  // "Lora hashes": each LoRA by the name the text gives it and the first 12
  // hex digits of the SHA-256 of its tensor bytes (safetensors_data_sha256_hex),
  // in the order the prompt names them.
  struct Lora {
    std::string name, hash;
  };
  std::vector<Lora> loras;
};

// The text for a preset as rendered (its family set). The prompt is kept as
// written, its <lora:NAME:STRENGTH> tags included; the preset's `loras` are
// appended to it as tags (A1111 applies only the LoRAs a prompt names). The
// negative prompt's line is left out when there is none, as A1111 does.
std::string parameters_text(const pipeline::Preset& p, const FileHashes& hashes = {});

// The hashes of the preset's model file (none for the embedded model or a
// diffusers folder) and LoRA files, through the hash cache `cache_file`
// (base/hash_cache.h). A file that cannot be found or read is left out,
// with a note to `say`; `say` also hears which file is being hashed when
// the cache does not have it. Throws nothing but kinora::Cancelled (`cancel`
// set while a file is hashed).
FileHashes file_hashes(const pipeline::Preset& p, const std::filesystem::path& cache_file,
                       const std::atomic<bool>* cancel = nullptr,
                       const std::function<void(const std::string&)>& say = {});

}  // namespace kinora::render
