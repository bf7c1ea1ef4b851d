#include "pipeline/pipeline.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <regex>

#include "base/cpu_memory.h"
#include "base/device.h"
#include "base/files.h"
#include "base/json.h"
#include "base/runtime.h"
#include "base/sha256.h"
#include "base/strings.h"
#include "base/torch_compat.h"
#include "diffusion/denoiser.h"
#include "embedded/model.h"
#include "layers/fp8.h"
#include "layers/model.h"
#include "pipeline/lora_check.h"
#include "pipeline/preview.h"
#include "pipeline/prompt_cache.h"
#include "schedulers/registry.h"

namespace kinora::pipeline {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Added to a row's seed for the noise of ancestral samplers. LibTorch's CPU
// generator (mt19937) keeps only a seed's low 32 bits, so the offset lies there.
constexpr uint64_t kAncestralSeedOffset = 0x9E3779B9;

std::string& entry_of(Preset& p, const std::string& key) {
  if (key == "model") return p.model;
  if (key == "model2") return p.model2;
  if (key == "vae") return p.vae;
  if (key == "text_encoder") return p.text_encoder;
  if (key == "tokenizer") return p.tokenizer;
  if (key == "clip") return p.clip;
  throw Error("pipeline: no preset key '" + key + "' for a model file");
}
const std::string& entry_of(const Preset& p, const std::string& key) {
  return entry_of(const_cast<Preset&>(p), key);  // the same field, read only
}

fs::path* file_of(ModelFiles& f, const std::string& key) {
  if (key == "model") return &f.model;
  if (key == "model2") return &f.model2;
  if (key == "vae") return &f.vae;
  if (key == "text_encoder") return &f.text_encoder;
  if (key == "tokenizer") return &f.tokenizer;
  if (key == "clip") return &f.clip;
  if (key == "clip_tokenizer") return &f.clip_tokenizer;
  throw Error("pipeline: no preset key '" + key + "' for a model file");
}

// The model files a job reads, by role.
constexpr const char* kFileRoles[] = {"model",        "model2",    "vae",
                                      "text_encoder", "tokenizer", "clip"};

// A file's size and modification time: what changes when it is rewritten,
// truncated or replaced.
std::string size_and_time(const fs::path& f) {
  std::error_code ec;
  const auto size = fs::file_size(f, ec);
  const auto time = fs::last_write_time(f, ec).time_since_epoch().count();
  return std::to_string(size) + ":" + std::to_string(time);
}

// The model files as they were when loaded: fingerprint (first and last MiB)
// and size:time by role.
struct LoadedFile {
  fs::path path;
  std::string fingerprint, size_time;
};
std::map<std::string, LoadedFile> loaded_files(const ModelFiles& files) {
  std::map<std::string, LoadedFile> out;
  ModelFiles copy = files;
  for (const char* role : kFileRoles) {
    const fs::path& path = *file_of(copy, role);
    if (path.empty() || !fs::is_regular_file(path)) continue;
    out[role] = {path, file_fingerprint(path), size_and_time(path)};
  }
  return out;
}

// The first loaded file that is no longer what was loaded, or null.
const LoadedFile* changed_file(const std::map<std::string, LoadedFile>& loaded) {
  for (const auto& [role, f] : loaded)
    if (size_and_time(f.path) != f.size_time) return &f;
  return nullptr;
}

// The JSON an output embeds: the preset as another machine would render it
// given the files (names, never this machine's paths), each file's name and
// fingerprint, the versions.
nlohmann::json metadata_for(const Preset& p, const Family& family,
                            const std::map<std::string, LoadedFile>& loaded,
                            const std::vector<LoraRef>& applied,
                            const std::vector<fs::path>& lora_files) {
  nlohmann::json j = p.to_json();
  // A file in a subfolder of models_dir's folders (diffusion_models/wan/…,
  // loras/styles/…) by its path inside that folder, which finds that file
  // again given the same models_dir; any other by its name.
  const fs::path md = models_dir_path(p);
  const auto recorded = [&](const std::string& given, const fs::path& resolved) {
    const std::string name = fs::path(given).filename().string();
    if (md.empty() || resolved.empty() || given.empty()) return name;
    // The entry's own file (not a diffusers folder's transformer/…, which
    // the folder's name finds again).
    const std::string file = resolved.filename().string();
    if (file != name && file != name + ".safetensors" && file != name + ".model") return name;
    const fs::path rel = fs::absolute(resolved).lexically_normal().lexically_relative(
        fs::absolute(md).lexically_normal());
    if (rel.empty() || *rel.begin() == "..") return name;
    fs::path in_folder;
    for (auto it = std::next(rel.begin()); it != rel.end(); ++it) in_folder /= *it;
    if (in_folder.empty() || in_folder.filename() == in_folder) return name;
    return in_folder.generic_string();
  };
  // A record that would find another file, or several, under models_dir (the
  // same name in diffusion_models/ and checkpoints/): the file's path inside
  // models_dir, which finds it alone.
  const auto unambiguous = [&](const char* key, const char* subfolder, const std::string& record,
                               const fs::path& resolved) {
    if (md.empty() || resolved.empty() || record.empty()) return record;
    Preset again = p;
    again.base_dir = md;                           // no file beside the preset takes its place
    again.models_dir = fs::absolute(md).string();  // not relative to that new base
    entry_of(again, key) = record;
    try {
      // The model may be a diffusers folder's name, which resolve_dit_file finds.
      const fs::path found = std::string(key) == "model"
                                 ? resolve_dit_file(again)
                                 : resolve_model_file(again, key, subfolder, false);
      if (fs::equivalent(found, resolved)) return record;
    } catch (const std::exception&) {
    }
    const fs::path rel = fs::absolute(resolved).lexically_normal().lexically_relative(
        fs::absolute(md).lexically_normal());
    return rel.empty() || *rel.begin() == ".." ? record : rel.generic_string();
  };
  for (const char* key : {"model", "model2", "vae", "text_encoder", "tokenizer", "clip",
                          "clip_tokenizer", "output"}) {
    const auto f = loaded.find(key);
    const fs::path resolved = f == loaded.end() ? fs::path() : f->second.path;
    j[key] = recorded(j[key].get<std::string>(), resolved);
    // The model files of the family's roles, looked up in their folders.
    for (const auto& role : family.roles())
      if (role.key == std::string(key))
        j[key] = unambiguous(key, role.subfolder, j[key].get<std::string>(), resolved);
  }
  j["models_dir"] = "";
  for (std::size_t i = 0; i < j["loras"].size(); ++i) {
    auto& l = j["loras"][i];
    l["path"] =
        recorded(l["path"].get<std::string>(), i < lora_files.size() ? lora_files[i] : fs::path());
  }
  // The fingerprints taken when the models were loaded: the files the weights
  // came from, whatever happened to them since.
  nlohmann::json model_files = nlohmann::json::object();
  for (const auto& [role, f] : loaded)
    model_files[role] = {{"file", f.path.filename().string()},
                         {"sha256_first_last_mib", f.fingerprint}};
  nlohmann::json loras = nlohmann::json::array();
  for (std::size_t i = 0; i < applied.size(); ++i) {
    const fs::path file = i < lora_files.size() ? lora_files[i] : fs::path(applied[i].path);
    nlohmann::json l = {{"file", file.filename().string()}, {"strength", applied[i].strength}};
    if (applied[i].strength_low) l["strength_low"] = *applied[i].strength_low;
    if (i < lora_files.size()) l["sha256_first_last_mib"] = file_fingerprint(lora_files[i]);
    loras.push_back(l);
  }
  return {{"kinora", {{"version", version_string()}, {"libtorch", torch_version()}}},
          {"preset", j},
          {"model_files", model_files},
          {"loras", loras}};
}

// A file as far as a cache can tell it from others cheaply: the fingerprint
// of its first and last MiB, its size and its modification time (a file
// changed in the middle keeps the first).
std::string file_stamp(const fs::path& f) {
  return file_fingerprint(f) + ":" + size_and_time(f);
}

// What a prompt's encoding depends on besides its text and the text
// encoders' LoRAs: the family, the stamps of the text encoders and tokenizers
// (a tokenizer folder's files each), the precision, the version.
std::string text_encoders_key(const Family& family, const ModelFiles& files,
                              const std::string& precision) {
  std::string key = family.name() + "|" + precision + "|" + version_string();
  std::error_code ec;
  for (const fs::path* f :
       {&files.text_encoder, &files.tokenizer, &files.clip, &files.clip_tokenizer}) {
    key += "|";
    if (f->empty()) continue;
    if (fs::is_directory(*f, ec)) {
      std::vector<fs::path> inside;
      for (const auto& e : fs::directory_iterator(*f, ec))
        if (e.is_regular_file(ec)) inside.push_back(e.path());
      std::sort(inside.begin(), inside.end());
      for (const auto& i : inside) key += i.filename().string() + "=" + file_stamp(i) + ",";
    } else {
      key += file_stamp(*f);
    }
  }
  return key;
}

// A file named `entry` (or with one of `extensions` added) in the
// subfolders of `folder` (ComfyUI users sort models into them): the one
// found, empty when none is. Several: an error naming them. An entry that is
// a path inside the folder and not there ("wan/t2v/dit.safetensors", as an
// output made on a machine that sorts its models otherwise records it) is
// looked for by its file name, at the top as well. Bounded to a few levels
// so that a folder linked into itself cannot loop.
fs::path find_in_subfolders(const fs::path& folder, const std::string& entry,
                            const std::string& source, const std::string& what,
                            std::initializer_list<const char*> extensions,
                            bool pipeline_folders = false) {
  const fs::path e = entry;
  if (!stays_inside(entry)) return {};
  const bool bare = e.filename() == e;
  const std::string base = e.filename().string();
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) return {};
  std::vector<fs::path> found;
  const auto opts = fs::directory_options::follow_directory_symlink |
                    fs::directory_options::skip_permission_denied;
  for (fs::recursive_directory_iterator it(folder, opts, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it.depth() > 3) it.disable_recursion_pending();
    if (bare && it.depth() == 0) continue;  // top: searched
    // Files; or, for pipeline_folders, diffusers pipeline folders.
    if (pipeline_folders ? !fs::is_regular_file(it->path() / "model_index.json", ec)
                         : !it->is_regular_file(ec))
      continue;
    const auto name = it->path().filename().string();
    bool match = name == base;
    for (const char* ext : extensions) match = match || name == base + ext;
    if (!match) continue;
    // One file reached by several paths (through links) is one match, named
    // by its shortest path.
    const auto real = fs::weakly_canonical(it->path(), ec);
    const auto same = std::find_if(found.begin(), found.end(), [&](const fs::path& f) {
      return fs::weakly_canonical(f, ec) == real;
    });
    if (same == found.end())
      found.push_back(it->path());
    else if (it->path().string().size() < same->string().size())
      *same = it->path();
  }
  if (found.size() > 1) {
    std::sort(found.begin(), found.end());
    std::string msg = source + ": " + what + " '" + entry + "' is in more than one subfolder of " +
                      folder.string() + " (";
    for (std::size_t i = 0; i < found.size(); ++i)
      msg.append(i ? ", " : "").append(found[i].lexically_relative(folder).string());
    throw Error(msg + "): give its path relative to that folder");
  }
  return found.empty() ? fs::path() : found.front();
}

}  // namespace

fs::path models_dir_path(const Preset& p) {
  if (p.models_dir.empty()) return {};
  const fs::path md = p.models_dir;
  return md.is_absolute() ? md : p.base_dir / md;
}

// A preset's model entry: a path (relative ones against the preset's folder),
// or a name under models_dir, in its ComfyUI subfolder or at its top.
fs::path resolve_model_file(const Preset& p, const std::string& key, const char* subfolder,
                            bool required) {
  const std::string& entry = entry_of(p, key);
  const std::string source = p.source.empty() ? std::string("preset") : p.source;
  if (entry.empty()) {
    if (required) {
      std::string flag = "--" + key;
      std::replace(flag.begin(), flag.end(), '_', '-');
      throw Error(source + ": key '" + key +
                  "' is empty: a model file or a name under models_dir is needed (" + flag +
                  " on the command line)");
    }
    return {};
  }
  std::error_code ec;
  std::vector<fs::path> tried;
  auto found = [&](const fs::path& candidate) {
    tried.push_back(candidate);
    return fs::is_regular_file(candidate, ec);
  };
  const fs::path e = entry;
  if (found(e.is_absolute() ? e : p.base_dir / e)) return tried.back();
  if (!p.models_dir.empty() && !e.is_absolute()) {
    const fs::path md = models_dir_path(p);
    // A model may also be a single-file checkpoint (SDXL), kept in checkpoints/.
    std::vector<fs::path> folders = {md / subfolder, md};
    if (key == "model") folders.insert(folders.begin() + 1, md / "checkpoints");
    // Every file the name finds there: one is taken, several are refused
    // (the same name in diffusion_models/ and checkpoints/, or in a
    // subfolder too, would otherwise pick one of them silently, and another
    // once that one is moved).
    std::vector<fs::path> matches;
    const auto add = [&](const fs::path& f) {
      const auto real = fs::weakly_canonical(f, ec);
      if (std::none_of(matches.begin(), matches.end(),
                       [&](const fs::path& m) { return fs::weakly_canonical(m, ec) == real; }))
        matches.push_back(f);
    };
    for (const fs::path& folder : folders)
      for (const fs::path& candidate :
           {folder / e, folder / (entry + ".safetensors"), folder / (entry + ".model")})
        if (found(candidate)) add(candidate);
    // Subfolders: searched for a bare name always, for a path inside a
    // folder ("wan/dit.safetensors", which is also looked for by its file
    // name) only when it is not where it says.
    if (matches.empty() || e.filename() == e)
      for (const fs::path& folder : folders)
        if (folder != md)
          if (auto f = find_in_subfolders(folder, entry, source, "key '" + key + "'",
                                          {".safetensors", ".model"});
              !f.empty())
            add(f);
    if (matches.size() == 1) return matches.front();
    if (matches.size() > 1) {
      std::string msg = source + ": key '" + key + "': '" + entry +
                        "' names more than one file under " + md.string() + " (";
      for (std::size_t i = 0; i < matches.size(); ++i)
        msg.append(i ? ", " : "").append(matches[i].lexically_relative(md).string());
      throw Error(msg + "): give its path relative to that folder");
    }
  }
  std::string msg = source + ": key '" + key + "': '" + entry + "' not found (looked for";
  for (const auto& t : tried) msg.append(" ").append(t.string());
  msg += ")";
  for (const auto& t : tried)
    if (fs::exists(t, ec) && !fs::is_directory(t, ec)) {
      msg += "; " + t.string() + " is not a regular file (a device, pipe or socket)";
      break;
    }
  for (const auto& t : tried)
    if (fs::is_directory(t, ec)) {
      const fs::path dir = t.filename().empty() ? t.parent_path() : t;  // "x/transformer/"
      const auto parent =
          fs::exists(dir.parent_path() / "model_index.json", ec) ? dir.parent_path() : fs::path();
      msg += "; " + t.string() + " is a folder, not a model file";
      if (!parent.empty())
        msg +=
            " (a part of the diffusers pipeline folder " + parent.string() + ": give that folder)";
      else if (key == "model")
        msg += " (a diffusers pipeline folder holds model_index.json)";
      // The weights it holds (a Wan-AI repository's folder, an expert's
      // high_noise_model/): the file to give, a sharded one's index first.
      std::vector<fs::path> held;
      for (const auto& f : fs::directory_iterator(dir, ec)) {
        const auto name = f.path().filename().string();
        const bool index =
            name.size() > 24 && name.compare(name.size() - 23, 23, ".safetensors.index.json") == 0;
        if (index)
          held.insert(held.begin(), f.path());
        else if (f.path().extension() == ".safetensors" && name.find("-of-") == std::string::npos)
          held.push_back(f.path());
      }
      if (held.size() == 1 || (!held.empty() && held.front().extension() == ".json"))
        msg += "; it holds " + held.front().string() + ": give that file";
      break;
    }
  if (p.models_dir.empty() && !e.is_absolute() &&
      std::none_of(tried.begin(), tried.end(),
                   [&](const fs::path& t) { return fs::exists(t, ec); }))
    msg += "; give models_dir (--models-dir) to find models by name";
  throw Error(msg);
}

namespace {
// The weights of a diffusers component folder: one file, or a sharded index.
fs::path component_weights(const fs::path& dir, const std::string& stem) {
  std::error_code ec;
  for (const auto& name : {stem + ".safetensors", stem + ".safetensors.index.json"})
    if (fs::is_regular_file(dir / name, ec)) return dir / name;
  return {};
}
}  // namespace

std::optional<ModelFiles> diffusers_folder_files(const Preset& p) {
  if (p.model.empty()) return std::nullopt;
  const fs::path e = p.model;
  std::vector<fs::path> candidates = {e.is_absolute() ? e : p.base_dir / e};
  if (const auto md = models_dir_path(p); !md.empty() && !e.is_absolute()) {
    candidates.push_back(md / "diffusion_models" / e);
    candidates.push_back(md / "diffusers" / e);  // ComfyUI's folder for them
    candidates.push_back(md / "checkpoints" / e);
    candidates.push_back(md / e);
  }
  std::error_code ec;
  // A pipeline folder in a subfolder of those two, by its name (or a path
  // inside them), as model files are found.
  if (const auto md = models_dir_path(p);
      !md.empty() && !e.is_absolute() && e.extension() != ".safetensors" &&
      e.extension() != ".json" &&
      std::none_of(candidates.begin(), candidates.end(),
                   [&](const fs::path& c) { return fs::is_directory(c, ec); }))
    for (const char* sub : {"diffusion_models", "diffusers"})
      if (auto f = find_in_subfolders(md / sub, p.model,
                                      p.source.empty() ? std::string("preset") : p.source,
                                      "key 'model'", {}, true);
          !f.empty())
        candidates.push_back(f);
  for (const auto& dir : candidates) {
    if (!fs::is_regular_file(dir / "model_index.json", ec)) continue;
    // Its components: FLUX has a second text encoder and tokenizer.
    const auto index = read_json_file(dir / "model_index.json");
    if (!index.is_object())
      throw Error((dir / "model_index.json").string() + ": not a diffusers pipeline index");
    ModelFiles f;
    f.model = component_weights(dir / "transformer", "diffusion_pytorch_model");
    if (f.model.empty())  // a UNet pipeline (SDXL)
      f.model = component_weights(dir / "unet", "diffusion_pytorch_model");
    f.vae = component_weights(dir / "vae", "diffusion_pytorch_model");
    // FLUX: CLIP first, T5 second; SDXL: CLIP-L first, bigG second; Wan: its
    // umT5 alone.
    const bool two_encoders = index.contains("text_encoder_2") ||
                              fs::is_directory(dir / "text_encoder_2", ec) ||
                              fs::is_directory(dir / "tokenizer_2", ec);
    const fs::path t5 = two_encoders ? dir / "text_encoder_2" : dir / "text_encoder";
    const fs::path t5_tok = two_encoders ? dir / "tokenizer_2" : dir / "tokenizer";
    f.text_encoder = component_weights(t5, "model");
    if (fs::is_regular_file(t5_tok / "spiece.model", ec)) f.tokenizer = t5_tok / "spiece.model";
    if (two_encoders) {
      f.clip = component_weights(dir / "text_encoder", "model");
      if (fs::is_directory(dir / "tokenizer", ec)) f.clip_tokenizer = dir / "tokenizer";
    }
    if (f.model.empty())
      throw Error(dir.string() + ": a diffusers folder without transformer/ or unet/" +
                  "diffusion_pytorch_model.safetensors (or its .index.json)");
    // A model file by the same name as well: which one is meant is not said.
    if (const auto md = models_dir_path(p); !md.empty() && !e.is_absolute())
      for (const char* sub : {"diffusion_models", "checkpoints", ""})
        if (const auto file = (sub[0] ? md / sub : md) / (p.model + ".safetensors");
            fs::is_regular_file(file, ec))
          throw Error((p.source.empty() ? std::string("preset") : p.source) + ": key 'model': '" +
                      p.model + "' names both the diffusers folder " + dir.string() +
                      " and the file " + file.string() + ": give the path of the one meant");
    return f;
  }
  return std::nullopt;
}

fs::path resolve_dit_file(const Preset& p) {
  if (const auto folder = diffusers_folder_files(p)) return folder->model;
  return resolve_model_file(p, "model", "diffusion_models", true);
}

ModelFiles resolve_models(const Preset& p, const Family& family) {
  if (p.uses_embedded_model())
    if (auto files = family.default_files()) return *files;
  // A family key that is not the model file's: said so, rather than the first
  // file of the wrong family's roles that is missing.
  if (!p.family.empty() && !p.model.empty()) {
    fs::path model;
    try {
      model = resolve_dit_file(p);
    } catch (const Error&) {
    }
    std::error_code ec;
    if (!model.empty() && fs::is_regular_file(model, ec) && !family.recognises(model))
      for (const auto& other : families())
        if (other.get() != &family && other->recognises(model))
          throw Error((p.source.empty() ? std::string("preset") : p.source) +
                      ": key 'family' is '" + family.name() + "', but " +
                      model.filename().string() + " is a " + other->name() +
                      " model; set the key to '" + other->name() + "' or leave it out");
  }
  // A diffusers folder gives every file the preset does not name itself.
  if (const auto folder = diffusers_folder_files(p)) {
    ModelFiles files = *folder;
    for (const auto& role : family.roles()) {
      fs::path* f = file_of(files, role.key);
      if (role.key != std::string("model") && !entry_of(p, role.key).empty())
        *f = resolve_model_file(p, role.key, role.subfolder, role.required);
      else if (f->empty() && role.required)
        throw Error(p.model + ": the diffusers folder has no file for '" + role.key +
                    "'; give it with --" + role.key);
    }
    if (!p.clip_tokenizer.empty()) files.clip_tokenizer.clear();
    family.resolve_extra(p, files);
    return files;
  }
  ModelFiles files;
  try {
    for (const auto& role : family.roles()) try {
        *file_of(files, role.key) = resolve_model_file(p, role.key, role.subfolder, role.required);
      } catch (const Error& e) {
        // A part missing for the model's family: which family that is, for
        // whoever meant another (a FLUX file given for a Wan render).
        if (!role.required || !entry_of(p, role.key).empty() || files.model.empty()) throw;
        throw Error(std::string(e.what()) + "; " + files.model.filename().string() +
                    " is a model of the '" + family.name() + "' family, which needs it");
      }
    family.resolve_extra(p, files);
  } catch (const Error& e) {
    // The weights inside a diffusers pipeline folder (its transformer/ or
    // unet/) given as the model: the folder brings every other part.
    std::error_code ec;
    const auto pipeline = files.model.parent_path().parent_path();
    if (!files.model.empty() && fs::is_regular_file(pipeline / "model_index.json", ec))
      throw Error(std::string(e.what()) + "; " + files.model.string() +
                  " is a part of the diffusers pipeline folder " + pipeline.string() +
                  ": give that folder as the model, and it brings the other parts");
    throw;
  }
  return files;
}

ModelFiles resolve_models_each(const Preset& p, const Family& family,
                               std::vector<std::string>* errors) {
  try {
    return resolve_models(p, family);
  } catch (const Error&) {
  }
  ModelFiles files;
  try {
    if (const auto folder = diffusers_folder_files(p)) files = *folder;
  } catch (const Error& e) {
    if (errors) errors->push_back(e.what());
  }
  for (const auto& role : family.roles()) {
    fs::path* f = file_of(files, role.key);
    // The diffusers folder's, unless the preset names another.
    if (!f->empty() && (role.key == std::string("model") || entry_of(p, role.key).empty()))
      continue;
    try {
      *f = resolve_model_file(p, role.key, role.subfolder, role.required);
    } catch (const Error& e) {
      f->clear();
      if (errors) errors->push_back(e.what());
    }
  }
  try {
    family.resolve_extra(p, files);
  } catch (const Error& e) {
    if (errors) errors->push_back(e.what());
  }
  return files;
}

std::vector<fs::path> input_files(const Preset& p) {
  std::vector<fs::path> out;
  try {
    ModelFiles files = resolve_models_each(p, family_for(p), nullptr);
    for (const char* role : kFileRoles)
      if (const fs::path& f = *file_of(files, role); !f.empty()) out.push_back(f);
    if (!files.clip_tokenizer.empty()) out.push_back(files.clip_tokenizer);
  } catch (const Error&) {
  }
  for (const auto& l : p.loras) try {
      out.push_back(resolve_lora_file(p, l.path));
    } catch (const Error&) {
    }
  try {
    for (const auto& l : prompt_loras(p.prompt).loras) try {
        out.push_back(resolve_lora_tag(p, l.path));
      } catch (const Error&) {
      }
  } catch (const Error&) {
  }
  // A sharded checkpoint's shards, which its index names.
  for (std::size_t i = 0, n = out.size(); i < n; ++i)
    for (const auto& shard : io::shard_files(out[i])) out.push_back(shard);
  return out;
}

std::vector<std::string> snap_sizes(Preset& p) {
  return family_for(p).snap(p);
}

void check_sampler(const Preset& p) {
  schedulers::canonical_scheduler_name(p.sampler, sampler_space(family_for(p)));
}

torch::Tensor initial_noise(int64_t seed, const std::vector<int64_t>& shape) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed));
  return torch::randn(shape, gen, torch::TensorOptions().dtype(torch::kFloat32));
}

torch::Tensor guided_prediction(diffusion::Denoiser& denoiser, const torch::Tensor& x,
                                const torch::Tensor& t, const layers::Conditioning& cond,
                                const layers::Conditioning* uncond, double scale) {
  const int64_t n = x.size(0);
  if (!uncond || scale == 1.0) return denoiser.denoise(x, t.expand({n}), cond);
  const auto out = denoiser.denoise(torch::cat({x, x}), t.expand({2 * n}),
                                    layers::Conditioning::cat(cond, *uncond));
  const auto c = out.slice(0, 0, n), u = out.slice(0, n);
  return u + scale * (c - u);
}

// ---------------------------------------------------------------- placing the models

namespace {

bool finite(const torch::Tensor& t) {
  return !t.defined() || torch::isfinite(t).all().item<bool>();
}

// The first of a denoiser's weights that holds NaN or infinite values, by
// name; "" when all are finite (or they cannot be read as numbers).
std::string nonfinite_weight(const layers::Model& m) {
  for (const auto& item : m.module().named_parameters(true))
    if (item.value().is_floating_point() && !finite(item.value())) return item.key();
  return "";
}
std::string nonfinite_weight(diffusion::Denoiser& d) {
  const auto* m = dynamic_cast<const layers::Model*>(&d);
  return m ? nonfinite_weight(*m) : "";
}

// Device memory block swap's "auto" keeps free beside a forward's
// activations: the decode's, the allocator's slack.
constexpr int64_t kDeviceSlack = int64_t{3} << 29;  // 1.5 GiB

std::string gib(int64_t bytes) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1f GiB", static_cast<double>(bytes) / (int64_t{1} << 30));
  return s;
}

// The denoisers (a Wan 2.2 pair's two experts) that are models block swap
// can act on.
std::vector<layers::Model*> denoiser_models(const LoadedModels& m) {
  std::vector<layers::Model*> out;
  for (auto* d : {m.denoiser.get(), m.denoiser2.get()})
    if (auto* model = dynamic_cast<layers::Model*>(d)) out.push_back(model);
  return out;
}

// The largest of the denoisers' activations over `rows` tokens.
int64_t activation_bytes(const LoadedModels& m, int64_t rows) {
  int64_t most = 0;
  for (auto* model : denoiser_models(m)) most = std::max(most, model->activation_bytes(rows));
  return most;
}

// The loaded models (in host memory) to `device`: the autoencoder whole, each
// denoiser with block swap where the preset asks for it, or ("auto") where it
// would not fit in the device's free memory beside a forward's activations
// over `rows` tokens (a guided step's two passes batched). The text encoders
// stay in host memory: they visit the device while they encode.
void place_models(const LoadedModels& m, const Preset& p, torch::Device device, int64_t rows,
                  const std::function<void(const std::string&)>& say) {
  const auto asked = block_swap_count(p.block_swap, p.source + ": block_swap");
  std::vector<std::pair<diffusion::Denoiser*, layers::Model*>> dits;
  for (auto* d : {m.denoiser.get(), m.denoiser2.get()})
    if (d) dits.emplace_back(d, dynamic_cast<layers::Model*>(d));
  m.autoencoder->to(device);
  if (!device.is_cuda()) {
    for (auto& [d, model] : dits) d->to(device);
    return;
  }
  // "auto": the memory left for the denoisers' weights, shared between a
  // Wan 2.2 pair's experts; the activations of a forward and kDeviceSlack
  // kept free.
  int64_t free = -1, budget = 0, activations = 0;
  if (!asked) {
    free = compat::cuda_free_bytes(device);
    activations = activation_bytes(m, rows);
    budget = (free - activations - kDeviceSlack) / static_cast<int64_t>(dits.size());
  }
  for (auto& [d, model] : dits) {
    const int64_t blocks = model ? static_cast<int64_t>(model->swappable_blocks().size()) : 0;
    if (blocks == 0) {
      if (asked && *asked > 0) say("block swap: this model has no blocks to swap");
      d->to(device);
      continue;
    }
    const int64_t n = asked      ? std::min(*asked, blocks)
                      : free < 0 ? 0
                                 : layers::blocks_to_swap(model->weight_bytes(),
                                                          model->block_bytes(), blocks, budget);
    model->set_block_swap(n);
    if (n > 0) {
      std::string line = "block swap: " + std::to_string(n) + " of the denoiser's " +
                         std::to_string(blocks) + " blocks stay in host memory and visit " +
                         device_name(device) + " in turn (" + gib(model->weight_bytes()) +
                         " of weights";
      if (!asked) line += ", " + gib(activations) + " of activations, " + gib(free) + " free";
      line += ")";
      if (!asked && n == blocks)
        line += "; even so the rest may not fit: a smaller size, fewer frames or --fp8";
      say(line);
    }
    d->to(device);
  }
}

// Block swap's copies made ahead for the next forward, handed back (the end
// of sampling, however it ends).
void release_swaps(const LoadedModels& m) {
  for (auto* model : denoiser_models(m))
    if (auto* swap = model->block_swap()) swap->release();
}

}  // namespace

// ---------------------------------------------------------------- loaded models

struct Pipeline::Cache {
  std::string key;          // family | files | precision | device | block swap | fp8
  int64_t placed_rows = 0;  // the forward's rows block swap's "auto" placed the models for
  LoadedModels models;
  std::map<std::string, LoadedFile> files;  // as they were when loaded
  // The LoRAs applied to the denoisers (merged), and what they were: files
  // and strengths. Another job with other LoRAs re-merges only their weights.
  std::string lora_key, lora_files_key;
  std::vector<lora::Resolved> resolved;
  lora::Applied applied, applied2;
  // The same for the text encoders LoRAs also address (SDXL's two): per
  // encoder, per LoRA file.
  std::vector<std::vector<lora::Resolved>> resolved_text;
  std::vector<std::unique_ptr<lora::Applied>> applied_text;
  // Prompt encodings, and what they depend on besides the text: the family,
  // the text encoders' and tokenizers' fingerprints, the precision (set with
  // the models), and the LoRAs on the text encoders.
  std::unique_ptr<PromptCache> prompts;
  std::string text_key;
  void clear_applied() {
    applied.clear();  // back into the modules before they go
    applied2.clear();
    for (auto& a : applied_text) a->clear();
  }
  ~Cache() { clear_applied(); }
};

PromptLoras prompt_loras(const std::string& prompt) {
  static const std::regex tag(R"(<lora:([^:<>]+)(?::([^<>]*))?>)");
  PromptLoras out;
  std::string::const_iterator from = prompt.begin();
  for (std::sregex_iterator it(prompt.begin(), prompt.end(), tag), end; it != end; ++it) {
    const auto& m = *it;
    out.text.append(from, m[0].first);
    from = m[0].second;
    double strength = 1;
    if (m[2].matched) {
      // Decimal, as --lora and a preset's "strength" take it (no hex, inf, nan).
      const std::string s = m[2].str();
      strength = is_decimal(s) ? std::strtod(s.c_str(), nullptr) : NAN;
      if (!std::isfinite(strength) || std::abs(strength) > kMaxLoraStrength)
        throw Error("prompt: " + m[0].str() + ": the strength must be a number from -100 to 100");
    }
    out.loras.push_back({m[1].str(), strength});
  }
  out.text.append(from, prompt.end());
  if (const auto at = out.text.find("<lora:"); at != std::string::npos)
    throw Error("prompt: a <lora:NAME> or <lora:NAME:STRENGTH> tag that is not complete, at '" +
                out.text.substr(at, 24) + "'");
  // The tags' places: no doubled spaces left behind.
  static const std::regex spaces(R"(  +)");
  out.text = std::regex_replace(out.text, spaces, " ");
  while (!out.text.empty() && out.text.back() == ' ') out.text.pop_back();
  while (!out.text.empty() && out.text.front() == ' ') out.text.erase(0, 1);
  return out;
}

// The loras/ folders LoRAs are found in by name, in order: models_dir's;
// for a preset of the embedded model its own folder's (after models_dir's,
// so that its LoRAs are found whatever the models folder); without either,
// the one beside the model file. Empty when there is none to look in.
std::vector<fs::path> lora_folders(const Preset& p) {
  std::vector<fs::path> out;
  if (const auto md = models_dir_path(p); !md.empty()) out.push_back(md / "loras");
  if (p.uses_embedded_model()) {
    if (const auto d = embedded::model_dir()) out.push_back(*d / "loras");
  } else if (out.empty() && !p.model.empty()) {
    const fs::path m = p.model;
    out.push_back((m.is_absolute() ? m : p.base_dir / m).parent_path() / "loras");
  }
  return out;
}

namespace {
// A LoRA found nowhere, but one of the paths looked at is there as something
// else (a folder, a device): said as such, as `what`'s.
void refuse_other_than_file(const std::vector<fs::path>& tried, const std::string& what) {
  std::error_code ec;
  for (const auto& t : tried)
    if (fs::exists(t, ec))
      throw Error(what + ": " + t.string() +
                  (fs::is_directory(t, ec) ? " is a folder" : " is not a regular file") +
                  ", not a LoRA file");
}
}  // namespace

fs::path resolve_lora_tag(const Preset& p, const std::string& name) {
  // A name, or a path inside loras/ ("styles/ink"): nothing that leaves it.
  if (!stays_inside(name))
    throw Error("prompt: <lora:" + name +
                ">: a LoRA named in a prompt is a file in loras/ (or a path inside it, such as "
                "styles/ink), not a path elsewhere");
  const auto folders = lora_folders(p);
  if (folders.empty())
    throw Error("prompt: <lora:" + name +
                ">: give models_dir (--models-dir): LoRAs named in a "
                "prompt are looked up in its loras/");
  std::error_code ec;
  for (const auto& folder : folders)
    for (const fs::path& c : {folder / name, folder / (name + ".safetensors")})
      if (fs::is_regular_file(c, ec)) return c;
  for (const auto& folder : folders)
    if (auto f =
            find_in_subfolders(folder, name, "prompt", "<lora:" + name + ">", {".safetensors"});
        !f.empty())
      return f;
  std::vector<fs::path> tried;
  for (const auto& folder : folders)
    for (const fs::path& c : {folder / name, folder / (name + ".safetensors")}) tried.push_back(c);
  refuse_other_than_file(tried, "prompt: <lora:" + name + ">");
  std::string msg = "prompt: <lora:" + name + ">: not found in " + folders.front().string();
  for (std::size_t i = 1; i < folders.size(); ++i) msg.append(" or ").append(folders[i].string());
  throw Error(msg);
}

fs::path resolve_lora_file(const Preset& p, const std::string& entry) {
  const std::string source = p.source.empty() ? std::string("preset") : p.source;
  if (entry.empty()) throw Error(source + ": a LoRA with an empty name");
  // Where `name` may be: beside the preset, then in the LoRA folder, with or
  // without ".safetensors".
  const auto candidates = [&](const std::string& name) {
    const fs::path e = name;
    std::vector<fs::path> out = {e.is_absolute() ? e : p.base_dir / e};
    const bool has_extension = e.extension() == ".safetensors";
    auto add = [&](const fs::path& c) {
      if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
    };
    if (!e.is_absolute())
      for (const auto& folder : lora_folders(p)) {
        add(folder / e);
        if (!has_extension) add(folder / (name + ".safetensors"));
      }
    return out;
  };
  const auto found = [](const std::vector<fs::path>& paths) {
    std::error_code ec;
    for (const auto& t : paths)
      if (fs::is_regular_file(t, ec)) return t;
    return fs::path();
  };
  const auto tried = candidates(entry);
  if (auto f = found(tried); !f.empty()) return f;
  for (const auto& folder : lora_folders(p))
    if (auto f = find_in_subfolders(folder, entry, source, "LoRA", {".safetensors"}); !f.empty())
      return f;
  // "NAME:TAIL" where NAME is a LoRA: TAIL meant as a strength.
  if (const auto colon = entry.rfind(':'); colon != std::string::npos && colon > 0)
    if (!found(candidates(entry.substr(0, colon))).empty()) {
      const std::string tail = entry.substr(colon + 1);
      if (is_decimal(tail))  // a strength, misplaced in a preset's path
        throw Error(source + ": LoRA '" + entry + "': a preset gives the strength in the LoRA's " +
                    "\"strength\" key, not after a colon in its \"path\"");
      throw Error(source + ": LoRA '" + entry + "': '" + tail +
                  "' is not a strength (a number from -100 to 100)");
    }
  const fs::path e = entry;
  refuse_other_than_file(tried, source + ": LoRA '" + entry + "'");
  std::string msg = source + ": LoRA '" + entry + "' not found (looked for";
  for (const auto& t : tried) msg.append(" ").append(t.string());
  msg += ")";
  if (p.models_dir.empty() && !e.is_absolute())
    msg += "; give models_dir (--models-dir) to find LoRAs by name in its loras/";
  throw Error(msg);
}

Pipeline::Pipeline() : cache_(std::make_unique<Cache>()) {}
Pipeline::~Pipeline() = default;

Result Pipeline::generate(const Preset& preset, const RunCallbacks& cb) {
  return std::move(generate_batch(preset, 1, cb).front());
}

std::vector<Result> Pipeline::generate_batch(const Preset& preset, int count,
                                             const RunCallbacks& cb) {
  // LibTorch's own errors carry a C++ backtrace: the user gets its first line,
  // and for memory what to change.
  try {
    return generate_rows(preset, count, cb);
  } catch (const c10::Error& e) {
    // What could still give a GPU room: the models as they were placed.
    bool swappable = false, fp8 = false;
    if (cache_)
      for (auto* model : denoiser_models(cache_->models)) {
        const auto blocks = static_cast<int64_t>(model->swappable_blocks().size());
        const auto* swap = model->block_swap();
        swappable = swappable || (swap ? swap->swapped() : 0) < blocks;
      }
    // The size that ran: the family's snapped one.
    Preset ran = preset;
    try {
      const Family& family = family_for(ran);
      family.snap(ran);
      fp8 = !preset.fp8 && family.has_fp8_path();
    } catch (const std::exception&) {
      // no family for this preset: no FP8 advice, the size as given
    }
    throw Error(libtorch_failure_message(e.what_without_backtrace(), ran, swappable, fp8));
  }
}

std::string libtorch_failure_message(std::string what, const Preset& preset,
                                     bool more_blocks_swappable, bool fp8_available) {
  what = what.substr(0, what.find('\n'));
  if (const auto at = what.find("DefaultCPUAllocator: "); at != std::string::npos)
    what = what.substr(at + 21);
  const bool memory = what.find("can't allocate memory") != std::string::npos ||
                      what.find("out of memory") != std::string::npos;
  if (!memory) return "LibTorch: " + what + "; nothing was written";
  const bool gpu = what.find("CUDA") != std::string::npos;
  std::string msg = "out of memory " + std::string(gpu ? "on the GPU " : "") + "rendering " +
                    std::to_string(preset.width) + "×" + std::to_string(preset.height) +
                    (preset.frames > 1 ? "×" + std::to_string(preset.frames) : "") + ": " + what +
                    "; a smaller size (or batch)";
  if (!gpu) return msg + ", --precision bf16, or a device with more memory; nothing was written";
  if (preset.precision == "fp32") msg += ", --precision bf16";
  if (more_blocks_swappable)
    msg +=
        ", more of the denoiser's blocks in host memory (--block-swap N; the studio's "
        "\"Blocks in host memory\")";
  if (fp8_available) msg += ", FP8 products (--fp8; the studio's \"Multiply in FP8\")";
  return msg + ", or a GPU with more memory; nothing was written";
}

std::vector<Result> Pipeline::generate_rows(const Preset& preset, int count,
                                            const RunCallbacks& cb) {
  if (count < 1 || count > kMaxBatch)
    throw Error("batch size " + std::to_string(count) + ": from 1 to " + std::to_string(kMaxBatch));
  auto say = [&](const std::string& m) {
    if (cb.on_message) cb.on_message(m);
  };
  auto progress = [&](const Progress& p) {
    if (cb.on_progress) cb.on_progress(p);
  };
  auto check_cancel = [&] { throw_if_cancelled(cb.cancel); };
  // However the render ends (done, cancelled, failed), an idle program holds
  // no temporaries.
  struct ReleaseCache {
    ~ReleaseCache() { release_cpu_memory_cache(); }
  } release_at_end;
  Result r;
  r.preset = preset;
  Preset& p = r.preset;
  configure_threads();            // the machine's load now (main() made the first call)
  p.seed = resolve_seed(p.seed);  // the output records the seed that ran
  if (p.seed > kMaxSeed - (count - 1))
    throw Error("seeds " + std::to_string(p.seed) + " … " + std::to_string(p.seed + count - 1) +
                " pass the largest seed, " + std::to_string(kMaxSeed));
  const Family& family = family_for(p);
  p.family = family.name();
  for (const auto& m : family.snap(p)) say(m);
  // The preset's LoRAs, then those its prompt names (the tags are not text).
  const auto tags = prompt_loras(p.prompt);
  std::vector<LoraRef> loras = p.loras;
  std::vector<fs::path> lora_files;
  for (const auto& l : p.loras) lora_files.push_back(resolve_lora_file(p, l.path));
  for (const auto& l : tags.loras) {
    loras.push_back(l);
    lora_files.push_back(resolve_lora_tag(p, l.path));
  }
  // One file given twice (in the preset and in a tag, say) stacks: said, as
  // the user may have meant one. A pair's two strengths are for two experts.
  std::vector<fs::path> single;
  for (std::size_t i = 0; i < loras.size(); ++i)
    if (!loras[i].strength_low) single.push_back(lora_files[i]);
  if (const auto note = repeated_lora_note(single, "applied"); !note.empty()) say(note);
  const auto files = resolve_models(p, family);
  for (const auto& note : family.check_files(files)) say(note);
  // The device a preset names, refused in the preset's words ("fox.json:
  // key 'device' …"; the command line's as --device).
  const auto device = [&] {
    try {
      return resolve_device(p.device);
    } catch (const Error& e) {
      std::string why = e.what();
      const std::string head = "device '" + p.device + "': ";
      if (why.rfind(head, 0) == 0) why.erase(0, head.size());
      throw Error((p.source.empty() ? std::string("preset") : p.source) + ": key 'device' is \"" +
                  p.device + "\": " + why);
    }
  }();
  const auto precision = layers::resolve_precision(p.precision, device);
  if (const auto w = layers::precision_warning(precision, device); !w.empty()) say(w);
  // What ran, in the output's parameters.
  p.precision = layers::precision_name(precision);
  p.device = device_name(device);

  // Models, kept loaded between jobs while the files, precision and device stay.
  auto t0 = Clock::now();
  std::string key = family.name() + "|" + p.precision + "|" + p.device;
  if (device.is_cuda()) key += "|swap " + p.block_swap;
  if (p.fp8) key += "|fp8";
  for (const auto* f : {&files.model, &files.model2, &files.vae, &files.text_encoder,
                        &files.tokenizer, &files.clip, &files.clip_tokenizer})
    key += "|" + f->string();
  // A file rewritten or replaced since the models were loaded is loaded again.
  if (cache_->key == key && changed_file(cache_->files)) cache_->key.clear();
  // The rows (batch × tokens) a forward of this render runs over: a guided
  // step batches its two passes.
  const auto forward_rows = [&](const LoadedModels& m) {
    const int64_t sc = m.autoencoder->spatial_compression();
    const auto patch = m.denoiser->latent_patch();
    const bool guided = family.guidance(p) == GuidanceStrategy::ClassifierFree && p.guidance != 1.0;
    return m.autoencoder->latent_frames(p.frames) * (p.height / sc) * (p.width / sc) /
           (patch[0] * patch[1] * patch[2]) * count * (guided ? 2 : 1);
  };
  // Placed by "auto" on a GPU for a smaller render: placed again when the
  // device's free memory does not hold this one's activations.
  if (cache_->key == key && device.is_cuda() && p.block_swap == "auto") {
    const int64_t rows = forward_rows(cache_->models);
    if (rows > cache_->placed_rows) {
      if (const int64_t free = compat::cuda_free_bytes(device);
          free >= 0 && free < activation_bytes(cache_->models, rows) + kDeviceSlack)
        cache_->key.clear();
      else
        cache_->placed_rows = rows;
    }
  }
  if (cache_->key != key) {
    // Everything the LoRAs left on the old models goes with them: what they
    // were resolved against (its names and modules) and what was merged in,
    // the text encoders' included. Left, a render without LoRAs would find
    // the old files' updates still listed as resolved for "no files".
    cache_->clear_applied();
    cache_->applied_text.clear();
    cache_->resolved.clear();
    cache_->resolved_text.clear();
    cache_->lora_key.clear();
    cache_->lora_files_key.clear();
    cache_->models = {};  // free the old ones first
    cache_->key.clear();
    cache_->files = loaded_files(files);
    cache_->models = family.load(files, precision, [&](const std::string& what) {
      progress({"load", what, 0, 0});
    });
    family.check(cache_->models, p, files);
    if (p.fp8 && family.has_fp8_path()) {
      progress({"load", "the DiT's block layers as FP8", 0, 0});
      for (auto* model : denoiser_models(cache_->models)) layers::use_fp8_matmuls(*model, device);
    }
    if (!device.is_cpu()) progress({"load", "to " + device_name(device), 0, 0});
    cache_->placed_rows = forward_rows(cache_->models);
    place_models(cache_->models, p, device, cache_->placed_rows, say);
    cache_->key = key;
    cache_->text_key = text_encoders_key(family, files, p.precision);
  }
  const LoadedModels& models = cache_->models;
  family.check(models, p, files);
  if (p.fp8 && !family.has_fp8_path()) {
    say("fp8: this model has no FP8 products (the Wan and FLUX DiTs have them); it computes in " +
        p.precision);
    p.fp8 = false;  // what ran
  } else if (p.fp8 && !layers::device_has_fp8_matmul(device)) {
    say("fp8: " + device_name(device) +
        " has no FP8 matrix units (a GPU of compute capability 8.9 or later has: Ada, Hopper), so "
        "the FP8 weights and inputs are multiplied in " +
        p.precision + ": the numbers of an FP8 render, without its speed");
  }
  // What ran: the blocks kept in host memory (the most of a pair's experts).
  if (const auto asked = block_swap_count(p.block_swap, p.source + ": block_swap");
      !device.is_cuda() && asked && *asked > 0)
    say("block swap: nothing to swap on the CPU (the weights are in host memory already)");
  {
    int64_t swapped = 0;
    for (const auto* model : denoiser_models(models))
      swapped = std::max(swapped, model->blocks_swapped());
    p.block_swap = std::to_string(swapped);
  }
  // LoRAs, merged into the denoisers: files read and resolved when they
  // change, re-merged (only the weights they touch) when a strength changes.
  {
    std::string files_key, lkey = p.lora_mode + "|";
    for (std::size_t i = 0; i < lora_files.size(); ++i) {
      // A file rewritten under the same name (a LoRA trained again) is read again.
      const std::string file = lora_files[i].string() + "=" + file_stamp(lora_files[i]);
      files_key += file + "|";
      lkey += file + "@" + nlohmann::json(loras[i].strength).dump() + "/" +
              nlohmann::json(loras[i].strength_for(true)).dump() + "|";
    }
    if (!models.denoiser2)
      for (const auto& l : loras)
        if (l.strength_low)
          throw Error("LoRA " + l.path +
                      ": strength_low is the strength on a Wan 2.2 pair's low-noise expert "
                      "(model2, --model2), and this render has one model");
    if (lkey != cache_->lora_key) {
      cache_->clear_applied();
      cache_->lora_key.clear();
      auto as_model = [](diffusion::Denoiser& d) -> layers::Model& {
        auto* model = dynamic_cast<layers::Model*>(&d);
        if (!model) throw Error("this family's denoiser takes no LoRAs");
        return *model;
      };
      const auto encoders = family.lora_text_encoders(models);
      if (files_key != cache_->lora_files_key) {
        // Kept only whole: a LoRA refused after others were read leaves none
        // listed (the next render's list must be its own, one per LoRA).
        cache_->resolved.clear();
        cache_->resolved_text.clear();
        cache_->lora_files_key.clear();
        std::vector<lora::Resolved> resolved;
        std::vector<std::vector<lora::Resolved>> resolved_text(encoders.size());
        const auto names = family.lora_names(models);
        for (const auto& f : lora_files) {
          progress({"load", f.filename().string() + " (LoRA)", 0, 0});
          auto lr = resolve_lora(f, as_model(*models.denoiser), names, encoders);
          for (std::size_t e = 0; e < encoders.size(); ++e)
            resolved_text[e].push_back(std::move(lr.text[e]));
          resolved.push_back(std::move(lr.denoiser));
        }
        cache_->resolved = std::move(resolved);
        cache_->resolved_text = std::move(resolved_text);
        cache_->lora_files_key = files_key;
      }
      const auto mode = p.lora_mode == "runtime" ? lora::Mode::RunTime : lora::Mode::Merged;
      // Each expert gets its own strengths; a LoRA at 0 on one is not applied to it.
      auto list_for = [&](bool low) {
        std::vector<std::pair<const lora::Resolved*, double>> list;
        for (std::size_t i = 0; i < cache_->resolved.size(); ++i)
          if (const double s = loras[i].strength_for(low); s != 0)
            list.emplace_back(&cache_->resolved[i], s);
        return list;
      };
      if (!cache_->resolved.empty()) {
        if (const auto list = list_for(false); !list.empty())
          cache_->applied.apply(as_model(*models.denoiser), list, mode);
        // A Wan 2.2 pair's experts share their architecture: the same updates.
        if (const auto list = list_for(true); models.denoiser2 && !list.empty())
          cache_->applied2.apply(as_model(*models.denoiser2), list, mode);
        // Text encoders at the LoRA's (first) strength, as the web UI applies them.
        while (cache_->applied_text.size() < encoders.size())
          cache_->applied_text.push_back(std::make_unique<lora::Applied>());
        for (std::size_t e = 0; e < encoders.size(); ++e) {
          std::vector<std::pair<const lora::Resolved*, double>> list;
          for (std::size_t i = 0; i < cache_->resolved_text[e].size(); ++i)
            if (const double st = loras[i].strength;
                st != 0 && cache_->resolved_text[e][i].report.matched > 0)
              list.emplace_back(&cache_->resolved_text[e][i], st);
          if (!list.empty()) cache_->applied_text[e]->apply(*encoders[e].model, list, mode);
        }
      }
      cache_->lora_key = lkey;
    }
    // Every render says what its LoRAs match, one whose LoRAs were applied
    // for an earlier render too, and which of them a strength of 0 leaves off.
    for (std::size_t i = 0; i < cache_->resolved.size() && i < loras.size(); ++i) {
      const double high = loras[i].strength_for(false), low = loras[i].strength_for(true);
      std::string off;
      if (high == 0 && (low == 0 || !models.denoiser2))
        off = "; strength 0: not applied";
      else if (models.denoiser2 && (high == 0 || low == 0))
        off = high == 0 ? "; strength 0 on the high-noise expert: not applied to it"
                        : "; strength 0 on the low-noise expert: not applied to it";
      say("LoRA " + cache_->resolved[i].report.line() + off);
    }
  }
  r.timings.load_s = since(t0);
  check_cancel();

  // The denoisers' and the decoder's files read ahead while the prompts are
  // encoded (after another program pushed them out of the page cache, the first
  // step would otherwise read them page by page).
  auto prefetch = [](const auto* part) {
    if (const auto* m = dynamic_cast<const layers::Model*>(part)) m->prefetch();
  };
  if (!device.is_cuda()) {
    prefetch(models.denoiser.get());
    prefetch(models.denoiser2.get());
    prefetch(models.autoencoder.get());
  }

  // Text.
  t0 = Clock::now();
  progress({"text", "", 0, 0});
  const auto strategy = family.guidance(p);
  if (!cache_->prompts) cache_->prompts = std::make_unique<PromptCache>(PromptCache::default_dir());
  // With the text encoders' LoRAs (their files' stamps and strengths: a LoRA
  // trained again under the same name encodes anew).
  std::string text_key = cache_->text_key;
  if (!family.lora_text_encoders(models).empty()) text_key += "|" + cache_->lora_key;
  // The text encoders wait on the CPU; on a GPU they go there for a prompt that
  // is not in the cache and leave when the prompts are encoded (back to their
  // CPU weights, without a copy), so that the denoiser has the device's memory.
  // Where the device has no room for them beside the denoiser (a model kept
  // there with block swap), they encode in host memory.
  struct Lent {
    text::TextConditioner& encoders;
    bool away = false, stay = false;
    void back() {
      if (away) encoders.to(torch::kCPU);
      away = false;
    }
    ~Lent() { back(); }
  } lent{*models.conditioner};
  auto encode = [&](const std::string& text) {
    auto c = cache_->prompts->get(
        text_key, text,
        [&](const std::function<void(const std::string&)>& note) {
          if (device.is_cuda() && !lent.away && !lent.stay) {
            const int64_t need = models.conditioner->weight_bytes() + (int64_t{1} << 30);
            if (const int64_t free = compat::cuda_free_bytes(device); free >= 0 && free < need) {
              say("the text encoders encode on the CPU: " + device_name(device) + " has " +
                  gib(free) + " free, they need " + gib(need));
              lent.stay = true;
            } else {
              models.conditioner->to(device);
              lent.away = true;
            }
          }
          return models.conditioner->encode(text, note);
        },
        say);
    return c.to(device);
  };
  auto cond = encode(tags.text);
  layers::Conditioning uncond;
  const bool cfg = strategy == GuidanceStrategy::ClassifierFree && p.guidance != 1.0;
  if (cfg)
    uncond = encode(p.negative_prompt.empty() ? family.default_negative_prompt(files)
                                              : p.negative_prompt);
  // A text encoder with NaN weights: said here, naming its file, rather than
  // as latents gone bad at the first step.
  if (!finite(cond.context) || !finite(cond.pooled) ||
      (cfg && (!finite(uncond.context) || !finite(uncond.pooled)))) {
    // The encoder whose weights are not finite, by its file (a single-file
    // checkpoint's own encoders: the checkpoint).
    for (const auto& [role, model] : models.conditioner->encoders())
      if (const auto bad = nonfinite_weight(*model); !bad.empty()) {
        const auto& file = role == "clip" && !files.clip.empty() ? files.clip
                           : role == "text_encoder" && !files.text_encoder.empty()
                               ? files.text_encoder
                               : files.model;
        throw Error(file.string() + ": its weight " + bad +
                    " holds NaN or infinite values (so did the text encodings); nothing was "
                    "written");
      }
    throw Error(
        "the text encodings hold NaN or infinite values, though the encoders' weights "
        "are finite; nothing was written");
  }
  if (strategy != GuidanceStrategy::ClassifierFree && !p.negative_prompt.empty())
    say("the negative prompt is not used: " + family.name() +
        " is guided without an unconditional pass");
  for (const auto& m : family.unused_settings(p, models)) say(m);
  if (p.negative_prompt.find("<lora:") != std::string::npos)
    say("the negative prompt's <lora:…> is read as text: LoRAs are named in the prompt (or "
        "with --lora), and apply to both passes");
  if (strategy == GuidanceStrategy::Distilled)
    cond.guidance = torch::full({1}, p.guidance, torch::TensorOptions().device(device));
  // One row per output.
  for (layers::Conditioning one = cond; cond.batch() < count;)
    cond = layers::Conditioning::cat(cond, one);
  for (layers::Conditioning one = uncond; cfg && uncond.batch() < count;)
    uncond = layers::Conditioning::cat(uncond, one);
  lent.back();
  r.timings.text_s = since(t0);
  // The encoders' weights and temporaries: the denoiser's differ.
  models.conditioner->release_resident();
  release_cpu_memory_cache();
  check_cancel();

  // Sampling.
  auto& ae = *models.autoencoder;
  const int64_t sc = ae.spatial_compression();
  // Each row's noise from its own seed, as a render of that seed alone draws it.
  std::vector<torch::Tensor> noise;
  for (int i = 0; i < count; ++i)
    noise.push_back(
        initial_noise(p.seed + i, {1, models.denoiser->latent_channels(),
                                   ae.latent_frames(p.frames), p.height / sc, p.width / sc}));
  auto x = torch::cat(noise).to(device);
  noise.clear();
  // The sampler of the denoiser's kind ("euler" names one for flow models and
  // one for noise-prediction models).
  const auto prediction = models.denoiser->prediction();
  const auto space = prediction == diffusion::Prediction::FlowVelocity ? schedulers::Space::Flow
                                                                       : schedulers::Space::Noise;
  auto sched = schedulers::make_scheduler(p.sampler, space);
  auto options =
      family.schedule(p,
                      x.size(2) * x.size(3) * x.size(4) /
                          (models.denoiser->latent_patch()[0] * models.denoiser->latent_patch()[1] *
                           models.denoiser->latent_patch()[2]),
                      models);
  if (space == schedulers::Space::Noise) {
    options.prediction = prediction == diffusion::Prediction::VPrediction
                             ? schedulers::NoisePrediction::V
                             : schedulers::NoisePrediction::Epsilon;
    // Ancestral samplers' fresh noise: each row's from its own seed (offset so
    // that it is not the stream of the initial noise), on the CPU, as a render
    // of that seed alone draws it on any device.
    std::vector<at::Generator> generators;
    for (int i = 0; i < count; ++i)
      generators.push_back(at::make_generator<at::CPUGeneratorImpl>(
          static_cast<uint64_t>(p.seed + i) + kAncestralSeedOffset));
    options.noise = [generators](const torch::Tensor& like, int) {
      auto shape = like.sizes().vec();  // [B, C, F, h, w]
      shape[0] = 1;
      std::vector<torch::Tensor> rows;
      for (const auto& g : generators)
        rows.push_back(torch::randn(shape, g, torch::TensorOptions().dtype(torch::kFloat32)));
      return torch::cat(rows);
    };
  }
  sched->set_timesteps(p.steps, options);
  // Noise models start at their largest noise level (flow samplers: 1).
  if (const double s0 = sched->init_noise_sigma(); s0 != 1.0) x = x * s0;
  const auto timesteps = sched->timesteps().to(torch::kFloat32);
  const auto preview_map = cb.want_preview ? family.preview(models) : PreviewMap{};
  progress({"sample", "", 0, p.steps});
  t0 = Clock::now();
  struct ReleaseSwaps {
    const LoadedModels& models;
    ~ReleaseSwaps() { release_swaps(models); }
  } release_swaps_at_end{models};
  for (int i = 0; i < p.steps; ++i) {
    const auto ts = Clock::now();
    const float t = timesteps[i].item<float>();
    auto& denoiser =
        (models.denoiser2 && t < models.switch_timestep) ? *models.denoiser2 : *models.denoiser;
    // The model's input: x itself for flow samplers, x / √(σ² + 1) for Euler's.
    const auto v =
        guided_prediction(denoiser, sched->scale_model_input(x, i), torch::full({1}, t, device),
                          cond, cfg ? &uncond : nullptr, p.guidance);
    x = sched->step(v, i, x);
    // A diverged model or sampler: stop here, not after decoding a black video.
    if (!torch::isfinite(x).all().item<bool>()) {
      const auto& file = &denoiser == models.denoiser2.get() ? files.model2 : files.model;
      if (const auto bad = nonfinite_weight(denoiser); !bad.empty())
        throw Error(file.string() + ": its weight " + bad +
                    " holds NaN or infinite values (the latents did at step " +
                    std::to_string(i + 1) + "); nothing was written");
      // The LoRAs on this denoiser, which may be the cause: their weights
      // may be finite and their products not (at run time, in the forward).
      std::string with_loras;
      const bool low = &denoiser == models.denoiser2.get();
      for (std::size_t l = 0; l < cache_->resolved.size() && l < loras.size(); ++l)
        if (const double s = loras[l].strength_for(low); s != 0)
          with_loras.append(with_loras.empty() ? "" : ", ")
              .append(cache_->resolved[l].report.file.filename().string())
              .append(" at ")
              .append(nlohmann::json(s).dump());
      if (!with_loras.empty())
        with_loras = ", with the LoRAs " + with_loras +
                     (p.lora_mode == "runtime" ? " applied at run time" : " merged") +
                     ": render without them to see whether one is the cause";
      throw Error("step " + std::to_string(i + 1) + " of " + std::to_string(p.steps) +
                  ": the latents hold NaN or infinite values: the model diverged with sampler " +
                  p.sampler +
                  (space == schedulers::Space::Flow
                       ? " at shift " + nlohmann::json(p.shift).dump() + ","
                       : "") +
                  " guidance " + nlohmann::json(p.guidance).dump() + ", precision " + p.precision +
                  " (its weights are finite" + with_loras + "); nothing was written");
    }
    r.timings.step_s.push_back(since(ts));
    if (cb.on_step) {
      StepEvent e;
      e.step = i + 1;
      e.total = p.steps;
      e.seconds_per_step = since(t0) / (i + 1);
      e.eta_seconds = e.seconds_per_step * (p.steps - i - 1);
      if (cb.want_preview)
        e.preview = latent_preview(x[0], preview_map.factors, preview_map.bias, ae.latents_mean(),
                                   ae.latents_std());
      cb.on_step(e);
    }
    check_cancel();
  }
  r.timings.sampling_s = since(t0);
  release_swaps(models);  // the decoder gets that memory

  // Decode each row, clamp, to 8-bit RGB frames on the CPU.
  std::vector<Result> results;
  for (int i = 0; i < count; ++i) {
    t0 = Clock::now();
    Result ri = r;
    ri.preset.seed = p.seed + i;
    progress({"decode", "", 0, p.frames});
    auto video = ae.decode_video(x.slice(0, i, i + 1), [&](int64_t done, int64_t total) {
      progress({"decode", "", done, total});
      check_cancel();
    });  // [1, 3, F, H, W]
    // A decoder with NaN weights: an error, not a black video.
    if (!torch::isfinite(video).all().item<bool>())
      throw Error((files.vae.empty() ? files.model : files.vae).string() +
                  ": the decoded frames hold NaN or infinite values: a VAE file with such "
                  "weights, or one that overflowed at precision " +
                  p.precision + "; nothing was written");
    video = video.clamp(-1, 1);  // a copy of its own
    // In place: one video's memory on the device, not one per operation.
    video.add_(1).mul_(127.5).round_().clamp_(0, 255);
    ri.frames = video[0].permute({1, 2, 3, 0}).to(torch::kCPU, torch::kUInt8);
    ri.timings.decode_s = since(t0);
    if (const auto* f = changed_file(cache_->files)) {
      cache_->key.clear();  // the next job loads it again
      throw Error(f->path.string() +
                  ": changed on disk during the render (rewritten, truncated or replaced); "
                  "nothing was written: render again to use the file as it is now");
    }
    ri.metadata = metadata_for(ri.preset, family, cache_->files, loras, lora_files);
    results.push_back(std::move(ri));
  }
  return results;
}

}  // namespace kinora::pipeline
