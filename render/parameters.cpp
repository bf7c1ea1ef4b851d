#include "render/parameters.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <optional>

#include "base/error.h"
#include "base/hash_cache.h"
#include "embedded/model.h"
#include "pipeline/pipeline.h"

namespace kinora::render {
namespace fs = std::filesystem;
using pipeline::Preset;

namespace {

// A number as Python prints the value A1111 holds: integers without a
// fraction ("CFG scale: 7"), others in their shortest exact form ("3.5").
std::string number(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::abs(v) < 1e15)
    return std::to_string(static_cast<long long>(v));
  return nlohmann::json(v).dump();
}

// A value as A1111 writes it: as it is, or as a JSON string when it holds a
// comma, a colon or a line break, which would end it early in the readers'
// "Key: value, " syntax. A double quote is quoted too, for a value that
// begins and ends with one: the readers would take it for a quoted one.
std::string quote(const std::string& v) {
  if (v.find_first_of(",:\"\n") == std::string::npos) return v;
  return nlohmann::json(v).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// The name A1111 gives a model or LoRA file: its file name without the
// extension. Only a weights extension is taken off, so that a name given
// without one ("flux1-dev.fp8", a diffusers folder "FLUX.1-dev") stays whole.
std::string weights_name(const std::string& entry) {
  fs::path path(entry);
  if (path.filename().empty()) path = path.parent_path();  // "folder/"
  const fs::path name = path.filename();
  const std::string ext = lower(name.extension().string());
  for (const char* e : {".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf"})
    if (ext == e) return name.stem().string();
  return name.string();
}

struct Sampler {
  std::string name;
  std::string schedule;  // A1111's "Schedule type", or "" for the sampler's own
  bool flow = true;      // a flow-matching sampler, whose schedule has a shift
};

// A1111's names for Kinora's samplers. SDXL is the family that predicts noise
// (its samplers are the noise ones); Wan and FLUX are flow models, where the
// shared names mean the flow samplers (schedulers/registry.h).
//
// DPM++ 2M with Karras sigmas is written as A1111 writes it since 1.9, the
// sampler and its "Schedule type" apart ("Sampler: DPM++ 2M, Schedule type:
// Karras"): current A1111, Forge and Civitai write and read that form, and
// A1111 still reads the older combined "DPM++ 2M Karras" only to convert it.
// A reader older than 1.9 takes the split form for plain DPM++ 2M.
Sampler a1111_sampler(const Preset& p) {
  const std::string& s = p.sampler;
  if (p.family == "sdxl") {
    if (s == "euler") return {"Euler", "", false};
    if (s == "euler_ancestral" || s == "euler_a") return {"Euler a", "", false};
    if (s == "dpmpp_2m") return {"DPM++ 2M", "", false};
    if (s == "dpmpp_2m_karras") return {"DPM++ 2M", "Karras", false};
    return {s, "", false};
  }
  if (s == "flow_euler" || s == "euler") return {"Euler", "", true};
  if (s == "flow_unipc" || s == "unipc" || s == "uni_pc_bh2") return {"UniPC", "", true};
  if (s == "flow_dpmpp_2m" || s == "dpmpp_2m" || s == "dpm++") return {"DPM++ 2M", "", true};
  return {s, "", true};
}

std::string model_name(const Preset& p) {
  if (p.uses_embedded_model()) return weights_name(embedded::kDitFile);
  return p.model.empty() ? std::string() : weights_name(p.model);
}

// A LoRA's name in "Lora hashes", where a colon or comma would split it.
std::string lora_alias(std::string name) {
  name.erase(std::remove_if(name.begin(), name.end(), [](char c) { return c == ':' || c == ','; }),
             name.end());
  return name;
}

}  // namespace

std::string parameters_text(const Preset& p, const FileHashes& hashes) {
  std::string text = p.prompt;
  for (const auto& l : p.loras)
    text.append(text.empty() ? "" : " ")
        .append("<lora:")
        .append(weights_name(l.path))
        .append(":")
        .append(number(l.strength))
        .append(">");
  if (!p.negative_prompt.empty()) text.append("\nNegative prompt: ").append(p.negative_prompt);

  std::string line;
  auto add = [&line](const char* key, const std::string& value) {
    line.append(line.empty() ? "" : ", ").append(key).append(": ").append(quote(value));
  };
  const Sampler sampler = a1111_sampler(p);
  add("Steps", std::to_string(p.steps));
  add("Sampler", sampler.name);
  if (!sampler.schedule.empty()) add("Schedule type", sampler.schedule);
  if (p.family == "flux") {
    // FLUX-dev's guidance is an input of the model, as Forge writes it: a
    // distilled scale beside a CFG scale of 1.
    add("CFG scale", "1");
    add("Distilled CFG Scale", number(p.guidance));
  } else {
    add("CFG scale", number(p.guidance));
  }
  add("Seed", std::to_string(p.seed));
  add("Size", std::to_string(p.width) + "x" + std::to_string(p.height));
  if (!hashes.model.empty()) add("Model hash", hashes.model);
  if (const auto name = model_name(p); !name.empty()) add("Model", name);
  if (sampler.flow) add("Shift", number(p.shift));  // Forge's, for flow models
  std::string loras;
  for (const auto& l : hashes.loras)
    loras.append(loras.empty() ? "" : ", ").append(lora_alias(l.name)).append(": ").append(l.hash);
  if (!loras.empty()) add("Lora hashes", loras);
  add("Version", "Kinora");
  text.append("\n").append(line);
  // As A1111 strips it: no empty first line for an empty prompt.
  const auto first = text.find_first_not_of(" \t\r\n");
  return first == std::string::npos ? std::string() : text.substr(first);
}

FileHashes file_hashes(const Preset& p, const fs::path& cache_file, const std::atomic<bool>* cancel,
                       const std::function<void(const std::string&)>& say) {
  auto note = [&](const std::string& m) {
    if (say) say(m);
  };
  // The first `digits` hex digits of the hash of the file `resolve` finds;
  // "" (with a note) when it finds none or it cannot be read.
  auto hash = [&](const std::string& what, const std::function<fs::path()>& resolve,
                  std::optional<FileDigest> kind, std::size_t digits) -> std::string {
    try {
      const fs::path file = resolve();
      // A1111 hashes a .safetensors LoRA's tensor bytes, any other file whole.
      const FileDigest k = kind ? *kind
                           : lower(file.extension().string()) == ".safetensors"
                               ? FileDigest::SafetensorsData
                               : FileDigest::Whole;
      const auto hex = cached_file_sha256(file, k, cache_file, cancel, [&] {
        note("hashing " + file.filename().string() + " for the PNG's A1111 parameters" +
             (cache_file.empty() ? std::string(" (no cache folder: it is hashed every time)")
                                 : " (once: remembered in " + cache_file.string() + ")"));
      });
      return hex.substr(0, digits);
    } catch (const Cancelled&) {
      throw;
    } catch (const std::exception& e) {
      note("the PNG's A1111 parameters leave out the hash of " + what + ": " + e.what());
      return "";
    }
  };

  FileHashes h;
  if (!p.uses_embedded_model() && !p.model.empty()) {
    bool folder = false;
    try {
      folder = pipeline::diffusers_folder_files(p).has_value();
    } catch (const std::exception&) {
    }
    // A diffusers folder is several files, and the tools name a model by one.
    if (!folder)
      h.model = hash(
          "model " + p.model, [&] { return pipeline::resolve_dit_file(p); }, FileDigest::Whole, 10);
  }

  auto add_lora = [&](const std::string& name, const std::function<fs::path()>& resolve) {
    const auto hex = hash("LoRA " + name, resolve, std::nullopt, 12);
    if (hex.empty()) return;  // as A1111 leaves out a LoRA it has no hash of
    for (const auto& l : h.loras)
      if (l.name == name && l.hash == hex) return;
    h.loras.push_back({name, hex});
  };
  // In the text's order: the prompt's tags, then the preset's LoRAs appended to it.
  std::vector<pipeline::LoraRef> tags;
  try {
    tags = pipeline::prompt_loras(p.prompt).loras;
  } catch (const std::exception&) {
    // A malformed tag fails the render before this.
  }
  for (const auto& t : tags)
    add_lora(t.path, [&] { return pipeline::resolve_lora_tag(p, t.path); });
  for (const auto& l : p.loras)
    add_lora(weights_name(l.path), [&] { return pipeline::resolve_lora_file(p, l.path); });
  return h;
}

}  // namespace kinora::render
