#include "pipeline/preset.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <regex>
#include <set>

#include "base/device.h"
#include "base/error.h"
#include "base/files.h"
#include "base/json.h"
#include "embedded/model.h"
#include "media/format.h"
#include "pipeline/family.h"
#include "pipeline/pipeline.h"
#include "schedulers/registry.h"

namespace kinora::pipeline {
using nlohmann::json;

const char* const kWanDefaultNegativePrompt =
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低"
    "质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态"
    "畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走";

json Preset::to_json() const {
  json loras_json = json::array();
  for (const auto& l : loras) {
    json one = {{"path", l.path}, {"strength", l.strength}};
    if (l.strength_low) one["strength_low"] = *l.strength_low;
    loras_json.push_back(one);
  }
  return {{"schema_version", kPresetSchema},
          {"prompt", prompt},
          {"negative_prompt", negative_prompt},
          {"seed", seed},
          {"width", width},
          {"height", height},
          {"frames", frames},
          {"fps", fps},
          {"steps", steps},
          {"sampler", sampler},
          {"shift", shift},
          {"guidance", guidance},
          {"precision", precision},
          {"device", device},
          {"block_swap", block_swap == "auto" ? json(block_swap) : json(std::stoll(block_swap))},
          {"fp8", fp8},
          {"family", family},
          {"models_dir", models_dir},
          {"model", model},
          {"model2", model2},
          {"vae", vae},
          {"text_encoder", text_encoder},
          {"tokenizer", tokenizer},
          {"clip", clip},
          {"clip_tokenizer", clip_tokenizer},
          {"loras", loras_json},
          {"lora_mode", lora_mode},
          {"output", output},
          {"format", format},
          {"crf", crf}};
}

namespace {

// A value as it appears in a message: its JSON, bytes that are not UTF-8
// shown as U+FFFD (dump() would throw on them).
std::string quote(const json& v) {
  if (v.is_number_float() && !std::isfinite(v.get<double>()))  // dump() writes null
    return std::isnan(v.get<double>()) ? "nan" : v.get<double>() > 0 ? "inf" : "-inf";
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

[[noreturn]] void bad(const std::string& source, const std::string& key, const std::string& what) {
  throw Error(source + ": key '" + key + "' " + what);
}

template <typename T>
void read_int(const json& j, const std::string& key, T& out, int64_t lo, int64_t hi,
              const std::string& src) {
  const auto it = j.find(key);
  if (it == j.end()) return;
  if (!it->is_number_integer()) bad(src, key, "must be an integer, got " + quote(*it));
  const auto v = it->get<int64_t>();
  if (v < lo || v > hi)
    bad(src, key,
        "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
            std::to_string(v));
  out = static_cast<T>(v);
}

void read_number(const json& j, const std::string& key, double& out, double lo, double hi,
                 const std::string& src) {
  const auto it = j.find(key);
  if (it == j.end()) return;
  if (!it->is_number()) bad(src, key, "must be a number, got " + quote(*it));
  const double v = it->get<double>();
  if (!(v >= lo && v <= hi))
    bad(src, key,
        "must be between " + json(lo).dump() + " and " + json(hi).dump() + ", got " + quote(*it));
  out = v;
}

void read_string(const json& j, const std::string& key, std::string& out, const std::string& src) {
  const auto it = j.find(key);
  if (it == j.end()) return;
  if (!it->is_string()) bad(src, key, "must be a string, got " + quote(*it));
  out = it->get<std::string>();
  if (const auto at = invalid_utf8_offset(out); at != std::string::npos)
    bad(src, key,
        "is not valid UTF-8 (byte " + std::to_string(at) + " of " + std::to_string(out.size()) +
            ")");
  if (const auto at = out.find('\0'); at != std::string::npos)
    bad(src, key, "holds a NUL character (byte " + std::to_string(at) + ")");
}

const std::string kSeedRule =
    "must be an integer from 0 to " + std::to_string(kMaxSeed) + ", or -1 for a random seed";

}  // namespace

bool Preset::uses_embedded_model() const {
  // models_dir may be set: a batch's --models-dir, or the folder whose loras/
  // holds LoRAs for the embedded model.
  return model.empty() && model2.empty() && vae.empty() && text_encoder.empty() &&
         tokenizer.empty() && clip.empty() && clip_tokenizer.empty() &&
         (family.empty() || family == "wan");
}

Preset Preset::embedded_defaults() {
  const auto& d = embedded::kDefaults;
  Preset p;
  p.width = d.width, p.height = d.height, p.frames = d.frames, p.fps = d.fps;
  p.steps = d.steps, p.sampler = d.sampler, p.shift = d.shift, p.guidance = d.guidance;
  p.precision = d.precision;
  return p;
}

Preset Preset::from_json(const json& j, const std::string& src, const Preset* base) {
  if (!j.is_object()) throw Error(src + ": a preset must be a JSON object");
  static const std::set<std::string> known = {
      "schema_version", "prompt",    "negative_prompt", "seed",      "width",      "height",
      "frames",         "fps",       "steps",           "sampler",   "shift",      "guidance",
      "precision",      "device",    "block_swap",      "family",    "models_dir", "model",
      "model2",         "vae",       "text_encoder",    "tokenizer", "clip",       "clip_tokenizer",
      "loras",          "lora_mode", "output",          "format",    "crf",        "fp8"};
  for (const auto& item : j.items())
    if (!known.count(item.key())) bad(src, item.key(), "is not a preset key");
  // No model keys (and no other family): the embedded model.
  bool embedded = true;
  for (const char* k : {"model", "model2", "vae", "text_encoder", "tokenizer", "clip",
                        "clip_tokenizer", "models_dir"})
    if (j.contains(k) && !(j[k].is_string() && j[k].get<std::string>().empty())) embedded = false;
  if (const auto f = j.find("family");
      f != j.end() && !(f->is_string() && (f->get<std::string>().empty() || *f == "wan")))
    embedded = false;
  // Defaults: the embedded model's, the named family's, or Wan's.
  Preset p = base ? *base : embedded ? embedded_defaults() : Preset();
  if (const auto f = j.find("family");
      !base && !embedded && f != j.end() && f->is_string() && !f->get<std::string>().empty()) {
    try {
      p = family_named(f->get<std::string>()).defaults();
    } catch (const Error& e) {
      bad(src, "family", std::string("names ") + e.what());
    }
  }
  int schema = kPresetSchema;
  // A later version is a later Kinora's preset, said as such.
  if (const auto it = j.find("schema_version");
      it != j.end() && it->is_number_integer() && it->get<int64_t>() > kPresetSchema)
    bad(src, "schema_version",
        "is " + std::to_string(it->get<int64_t>()) +
            ": a preset of a newer Kinora (this one reads " + std::to_string(kPresetSchema) + ")");
  read_int(j, "schema_version", schema, 1, kPresetSchema, src);
  read_string(j, "prompt", p.prompt, src);
  read_string(j, "negative_prompt", p.negative_prompt, src);
  if (const auto it = j.find("seed"); it != j.end()) {
    if (!it->is_number_integer()) bad(src, "seed", kSeedRule + ", got " + quote(*it));
    p.seed = parse_seed(quote(*it), src + ": key 'seed'");
  }
  read_int(j, "width", p.width, 16, 4096, src);
  read_int(j, "height", p.height, 16, 4096, src);
  read_int(j, "frames", p.frames, 1, 1025, src);
  read_int(j, "fps", p.fps, 1, 240, src);
  read_int(j, "steps", p.steps, 1, 1000, src);
  read_string(j, "sampler", p.sampler, src);
  read_number(j, "shift", p.shift, 0.01, 100.0, src);
  read_number(j, "guidance", p.guidance, 0.0, 30.0, src);
  read_string(j, "precision", p.precision, src);
  read_string(j, "device", p.device, src);
  if (const auto it = j.find("block_swap"); it != j.end()) {
    p.block_swap = it->is_string() ? it->get<std::string>() : it->dump();
    try {
      if (!it->is_string() && !it->is_number_integer()) throw Error("");
      block_swap_count(p.block_swap, "block_swap");
    } catch (const Error&) {
      bad(src, "block_swap",
          "must be \"auto\" or a count of blocks (0 to 9999), got " + quote(*it));
    }
  }
  if (const auto it = j.find("fp8"); it != j.end()) {
    if (!it->is_boolean()) bad(src, "fp8", "must be true or false, got " + quote(*it));
    p.fp8 = it->get<bool>();
  }
  read_string(j, "family", p.family, src);
  read_string(j, "models_dir", p.models_dir, src);
  read_string(j, "model", p.model, src);
  read_string(j, "model2", p.model2, src);
  read_string(j, "vae", p.vae, src);
  read_string(j, "text_encoder", p.text_encoder, src);
  read_string(j, "tokenizer", p.tokenizer, src);
  read_string(j, "clip", p.clip, src);
  read_string(j, "clip_tokenizer", p.clip_tokenizer, src);
  read_string(j, "output", p.output, src);
  read_string(j, "format", p.format, src);
  read_string(j, "lora_mode", p.lora_mode, src);
  read_int(j, "crf", p.crf, 0, 63, src);
  try {
    p.sampler = schedulers::preset_scheduler_name(p.sampler);
  } catch (const Error& e) {
    bad(src, "sampler", std::string("names ") + e.what());
  }
  if (!is_device_name(p.device))
    bad(src, "device",
        "must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got \"" + p.device + "\"");
  if (p.precision != "auto" && p.precision != "fp32" && p.precision != "bf16")
    bad(src, "precision", "must be \"auto\", \"fp32\" or \"bf16\", got \"" + p.precision + "\"");
  if (p.lora_mode != "merged" && p.lora_mode != "runtime")
    bad(src, "lora_mode", "must be \"merged\" or \"runtime\", got \"" + p.lora_mode + "\"");
  if (!p.format.empty()) {
    try {
      media::parse_format(p.format);
    } catch (const Error& e) {
      bad(src, "format", std::string("names ") + e.what());
    }
  }
  if (const auto it = j.find("loras"); it != j.end()) {
    if (!it->is_array()) bad(src, "loras", "must be a list of {\"path\", \"strength\"}");
    for (std::size_t i = 0; i < it->size(); ++i) {
      const auto& l = (*it)[i];
      const std::string key = "loras[" + std::to_string(i) + "]";
      // "file", the field an output's list of applied LoRAs names it by, is
      // read as "path" (a list copied from there works).
      const char* const path_key = l.is_object() && l.contains("file") ? "file" : "path";
      if (l.is_object() && l.contains("file") && l.contains("path"))
        bad(src, key, "has both \"path\" and \"file\": give one");
      if (!l.is_object() || !l.contains(path_key) || !l[path_key].is_string())
        bad(src, key, "must have a \"path\" string");
      LoraRef r{l[path_key].get<std::string>(), 1.0};
      if (const auto at = invalid_utf8_offset(r.path); at != std::string::npos)
        bad(src, key + ".path", "is not valid UTF-8 (byte " + std::to_string(at) + ")");
      if (r.path.find('\0') != std::string::npos) bad(src, key + ".path", "holds a NUL character");
      for (const auto& item : l.items())
        if (item.key() != "path" && item.key() != "file" && item.key() != "strength" &&
            item.key() != "strength_low")
          bad(src, key + "." + item.key(),
              "is not a key of a LoRA (path or file, strength, strength_low)");
      auto strength_of = [&](const char* k) {
        if (!l[k].is_number()) bad(src, key + "." + k, "must be a number");
        const double v = l[k].get<double>();
        if (!std::isfinite(v) || std::abs(v) > kMaxLoraStrength)
          bad(src, key + "." + k, "must be a number from -100 to 100");
        return v;
      };
      if (l.contains("strength")) r.strength = strength_of("strength");
      if (l.contains("strength_low")) r.strength_low = strength_of("strength_low");
      p.loras.push_back(r);
    }
  }
  p.source = src;
  return p;
}

Preset Preset::load(const std::filesystem::path& path, const std::string& models_dir) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw Error(path.string() + ": " +
                (std::filesystem::exists(path, ec) ? "not a file" : "no such preset file"));
  // A render itself (a video, an image): its embedded preset is restore's.
  const auto ext = path.extension().string();
  if (ext == ".mp4" || ext == ".webm" || ext == ".mov" || ext == ".png" || ext == ".mkv")
    throw Error(path.string() + ": a render, not a preset file (`kinora restore " + path.string() +
                " > preset.json` writes the preset it embeds)");
  const auto j = read_json_file(path);
  if (j.is_object() && media::is_kinora_parameters(j))
    throw Error(path.string() + ": the parameters of a render, not a preset (`kinora restore " +
                path.string() + "` prints its preset)");
  Preset p = from_json(j, path.string());
  p.base_dir = path.parent_path();
  return with_family_defaults(j, std::move(p), path.string(), models_dir);
}

Preset Preset::with_family_defaults(const nlohmann::json& j, Preset p, const std::string& source,
                                    const std::string& models_dir) {
  // No family named: the model file's family gives the defaults (FLUX's size,
  // steps and guidance for a FLUX file); Wan's otherwise.
  if (p.uses_embedded_model() || !p.family.empty() || p.model.empty()) return p;
  Preset probe = p;
  if (probe.models_dir.empty()) probe.models_dir = models_dir;
  Preset d;
  try {
    d = family_for(probe).defaults_for(resolve_dit_file(probe));
  } catch (const Error&) {
    return p;  // a missing or foreign model file is reported when it is rendered
  }
  Preset q = from_json(j, source, &d);
  q.base_dir = p.base_dir;
  q.source = p.source;
  return q;
}

std::filesystem::path Preset::output_path() const {
  const std::filesystem::path o = output;
  return o.empty() || o.is_absolute() ? o : base_dir / o;
}

Preset Preset::absolutized() const {
  namespace fs = std::filesystem;
  Preset p = *this;
  if (base_dir.empty()) return p;
  std::error_code ec;
  auto anchor = [&](std::string& s, bool only_if_exists) {
    if (s.empty() || fs::path(s).is_absolute()) return;
    const auto full = fs::absolute(base_dir / s, ec);
    if (!only_if_exists || fs::exists(full, ec)) s = full.string();
  };
  for (auto* s :
       {&p.model, &p.model2, &p.vae, &p.text_encoder, &p.tokenizer, &p.clip, &p.clip_tokenizer})
    anchor(*s, true);
  for (auto& l : p.loras) anchor(l.path, true);
  anchor(p.models_dir, false);
  anchor(p.output, false);
  p.base_dir.clear();
  return p;
}

void Preset::place_output_in(const std::filesystem::path& folder, const std::string& origin) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path dir = fs::absolute(folder, ec).lexically_normal();  // relative: to here
  const fs::path out = output;
  // An absolute output is fine when it lies inside already.
  const fs::path norm =
      (out.is_absolute() ? out.lexically_normal().lexically_relative(dir) : out.lexically_normal());
  if (norm.empty() || norm == "." || *norm.begin() == "..")
    throw Error(origin + ": key 'output' '" + output + "' is outside the output folder " +
                dir.string() + "; only names inside it are rendered");
  const fs::path root = fs::weakly_canonical(dir, ec);
  const fs::path full = fs::weakly_canonical(dir / norm, ec);
  const auto rel = full.lexically_relative(root);
  if (ec || rel.empty() || *rel.begin() == "..")
    throw Error(origin + ": key 'output' '" + output + "' leads outside the output folder " +
                dir.string() + " (through a link); not rendered");
  output = (dir / norm).string();
}

Preset Preset::restored(const json& parameters, const std::string& source) {
  namespace fs = std::filesystem;
  if (!parameters.is_object() || !parameters.contains("preset"))
    throw Error(source + ": holds no Kinora parameters");
  Preset p = from_json(parameters["preset"], source);
  // A name, or a path inside a models folder ("wan/t2v/dit.safetensors", as
  // outputs record a file in a subfolder); anything else by its file name.
  const auto inside = [](const std::string& entry) {
    return stays_inside(entry) ? entry : fs::path(entry).filename().string();
  };
  for (auto* s :
       {&p.model, &p.model2, &p.vae, &p.text_encoder, &p.tokenizer, &p.clip, &p.clip_tokenizer})
    *s = inside(*s);
  for (auto& l : p.loras) l.path = inside(l.path);
  p.models_dir.clear();
  p.output.clear();
  p.device = "auto";      // recorded where it ran; rendered again where this machine renders best
  p.block_swap = "auto";  // as much of the model on the device as this machine's fits
  return p;
}

std::optional<int64_t> block_swap_count(const std::string& value, const std::string& source) {
  if (value == "auto") return std::nullopt;
  static const std::regex count(R"([0-9]{1,4})");
  if (!std::regex_match(value, count))
    throw Error(source + " must be \"auto\" or a count of blocks (0 to 9999), got \"" + value +
                "\"");
  return std::stoll(value);
}

int64_t parse_seed(const std::string& typed, const std::string& source) {
  // Surrounding spaces are no part of a number ("--set seed=-1 ").
  const auto first_char = typed.find_first_not_of(" \t");
  const std::string text =
      first_char == std::string::npos
          ? std::string()
          : typed.substr(first_char, typed.find_last_not_of(" \t") - first_char + 1);
  // Digits compared as text, so that a number past 64 bits is quoted as typed.
  std::size_t i = 0;
  const bool negative = !text.empty() && text[0] == '-';
  if (negative) ++i;
  const bool digits =
      i < text.size() && text.find_first_not_of("0123456789", i) == std::string::npos;
  auto refuse = [&] { throw Error(source + " " + kSeedRule + ", got " + text); };
  if (!digits) refuse();
  const auto first = text.find_first_not_of('0', i);
  const std::string n = first == std::string::npos ? "0" : text.substr(first);
  const std::string max = std::to_string(kMaxSeed);
  if (negative) {
    if (n == "1") return kRandomSeed;
    if (n == "0") return 0;
    refuse();
  }
  if (n.size() > max.size() || (n.size() == max.size() && n > max)) refuse();
  return std::stoll(n);
}

int64_t resolve_seed(int64_t seed) {
  if (seed != kRandomSeed) return seed;
  std::random_device rd;
  return static_cast<int64_t>(((uint64_t{rd()} << 32) | rd()) % static_cast<uint64_t>(kMaxSeed));
}

void Preset::set(const std::string& assignment, const std::string& origin) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw Error(origin + ": '" + assignment + "' is not key=value");
  const std::string key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  if (key == "seed") {  // quoted as typed, however large
    seed = parse_seed(value, origin + " seed");
    return;
  }
  json v;
  try {
    v = parse_json(value, origin + " " + key);
  } catch (const Error&) {
    v = value;  // a bare word is a string
  }
  // Strings for string keys even when they look like numbers ("model=1").
  json j = to_json();
  if (j.contains(key) && j[key].is_string() && !v.is_string()) v = value;
  j[key] = v;
  const auto base = base_dir;
  const auto from = source;
  *this = from_json(j, origin + " " + key);
  base_dir = base;
  source = from;
}

}  // namespace kinora::pipeline
