#include "cli/lora_command.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <memory>

#include "base/error.h"
#include "base/sha256.h"
#include "base/signals.h"
#include "base/strings.h"
#include "cli/convert.h"
#include "cli/error_message.h"
#include "diffusion/flux_dit.h"
#include "diffusion/wan_dit.h"
#include "io/checkpoint.h"
#include "io/layout.h"
#include "io/safetensors.h"
#include "layers/linear.h"
#include "lora/lora.h"
#include "pipeline/family.h"
#include "pipeline/lora_check.h"
#include "pipeline/pipeline.h"

namespace kinora::cli {
namespace fs = std::filesystem;

namespace {

struct LoraArgs {
  std::vector<std::string> files;  // inspect: one; merge: FILE[:STRENGTH] each
  std::string model, out, models_dir;
  std::string clip, text_encoder;  // inspect: SDXL's text encoders
  bool verbose = false, overwrite = false;
};

// A LoRA by path, or by name as `generate` finds it: in loras/ of
// --models-dir, then the embedded model's (no --model) or the one beside
// --model. `source` names the command in its messages.
fs::path find_lora(const LoraArgs& a, const std::string& name, const std::string& source) {
  pipeline::Preset finder;
  finder.model = a.model;
  finder.models_dir = a.models_dir;
  finder.source = source;
  return pipeline::resolve_lora_file(finder, name);
}

// --model: a file, or a name as `generate` finds it (diffusion_models/ or
// checkpoints/ of --models-dir, a diffusers folder's transformer/ or unet/).
std::string find_model(const LoraArgs& a, const std::string& command) {
  std::error_code ec;
  if (fs::is_regular_file(a.model, ec)) return a.model;
  pipeline::Preset finder;
  finder.model = a.model;
  finder.models_dir = a.models_dir;
  finder.source = "lora " + command + " --model";
  return pipeline::resolve_dit_file(finder).string();
}

// --clip, --text-encoder: a file, or a name as `generate` finds it
// (text_encoders/ of --models-dir).
std::string find_text_encoder(const LoraArgs& a, const std::string& entry, const std::string& key) {
  std::error_code ec;
  if (entry.empty() || fs::is_regular_file(entry, ec)) return entry;
  pipeline::Preset finder;
  (key == "clip" ? finder.clip : finder.text_encoder) = entry;
  finder.models_dir = a.models_dir;
  finder.source = key == "clip" ? "lora inspect --clip" : "lora inspect --text-encoder";
  return pipeline::resolve_model_file(finder, key, "text_encoders", true).string();
}

int inspect(const LoraArgs& a) {
  const fs::path file = find_lora(a, a.files.at(0), "lora inspect");
  if (a.model.empty()) {
    const auto r = lora::describe(file);
    std::cout << file.filename().string() << ": " << r.format << ", " << r.total << " updates"
              << r.rank_and_alpha();
    std::cout << "\n";
    if (a.verbose)
      for (const auto& u : r.updates) std::cout << "  " << u.stem << ": " << u.kind << "\n";
    return 0;
  }
  pipeline::ModelFiles encoders;
  encoders.clip = find_text_encoder(a, a.clip, "clip");
  encoders.text_encoder = find_text_encoder(a, a.text_encoder, "text_encoder");
  const auto dit = pipeline::load_dit_for_loras(a.model, &encoders);
  const bool sdxl = dit.detection.family == io::Family::UNet;
  if (!sdxl && (!a.clip.empty() || !a.text_encoder.empty()))
    throw Error("--clip and --text-encoder name an SDXL model's text encoders; " + a.model +
                " is a " + io::family_name(dit.detection.family) +
                ", whose LoRAs address its denoiser only");
  if (sdxl && dit.encoders.empty() && (a.clip.empty() != a.text_encoder.empty()))
    throw Error(
        "give both --clip (CLIP-L) and --text-encoder (OpenCLIP bigG) to check a "
        "LoRA's text encoder updates");
  // SDXL's text encoders: when their files are not known, their updates are
  // not checked (rather than reported as not applied: a render applies them).
  const bool text_unchecked = sdxl && dit.encoders.empty();
  const auto fl = pipeline::resolve_lora(file, *dit.model, dit.names, dit.encoders, text_unchecked);
  const auto& r = fl.denoiser;
  // Updates not applied are listed below with -v; without it, -v is the hint.
  std::cout << r.report.line(a.verbose ? "" : "-v") << "\n";
  if (text_unchecked) {
    int text = 0;
    for (const auto& u : lora::describe(file).updates) text += lora::is_text_encoder_stem(u.stem);
    if (text > 0)
      std::cout << "  " << counted(text, "text encoder update", "text encoder updates")
                << " not checked: give --clip and --text-encoder (or an SDXL single-file "
                   "checkpoint as --model) to check them\n";
  }
  if (a.verbose) {
    auto list = [](const lora::Resolved& res, const std::string& where) {
      for (const auto& p : res.patches)
        std::cout << "  " << p.stem << " → " << where << p.target.module << " rows "
                  << p.target.row0 << "–" << p.target.row0 + p.target.rows << " (" << p.kind
                  << ")\n";
    };
    list(r, "");
    for (std::size_t e = 0; e < fl.text.size(); ++e) list(fl.text[e], dit.encoders[e].name + ": ");
    for (const auto& u : r.report.unmatched) std::cout << "  not matched: " << u.text() << "\n";
  }
  return 0;
}

int merge(const LoraArgs& a) {
  if (a.model.empty() || a.out.empty() || a.files.empty())
    throw Error("lora merge: give --model, at least one --lora and --out");
  std::vector<std::pair<fs::path, double>> loras;
  for (const auto& f : a.files) {
    const auto l = parse_lora_arg(f);
    if (l.strength_low)
      throw Error("--lora '" + f + "': lora merge writes one model file; give one strength");
    loras.emplace_back(find_lora(a, l.path, "--lora"), l.strength);
  }
  // Every LoRA at 0 changes nothing: no copy of the model is written.
  if (std::all_of(loras.begin(), loras.end(), [](const auto& l) { return l.second == 0; }))
    throw Error(
        "lora merge: every LoRA is at strength 0, so the model would be written "
        "unchanged; nothing was written");
  // One file given twice stacks, as in a render: said, as one may have been meant.
  std::vector<fs::path> files;
  for (const auto& l : loras) files.push_back(l.first);
  if (const auto note = pipeline::repeated_lora_note(files, "merged"); !note.empty())
    std::cerr << "kinora: note: " << note << "\n";
  std::vector<fs::path> inputs = {a.model};
  for (const auto& l : loras) inputs.push_back(l.first);
  check_checkpoint_output(a.out, inputs, a.overwrite);
  auto dit = pipeline::load_dit_for_loras(a.model);
  if (dit.detection.layout == io::Layout::Diffusers)
    throw Error(a.model +
                ": a diffusers-layout model; lora merge writes the original (or "
                "ComfyUI) layout it reads, so give the model in that layout");
  const auto ck = io::Checkpoint::open(a.model);
  for (const auto& name : ck.names())
    if (io::is_fp8(ck.info(name).dtype))
      throw Error(a.model +
                  ": an FP8 checkpoint; lora merge writes float weights, so merge into "
                  "its bf16 or fp16 release instead");
  // Updates of SDXL's text encoders, which a render applies, would be dropped:
  // the file written holds the denoiser's weights only. Other families' renders
  // leave a text encoder's updates out too, and the report says so.
  for (const auto& [file, strength] : loras) {
    int text = 0;
    for (const auto& u : lora::describe(file).updates) text += lora::is_text_encoder_stem(u.stem);
    if (text > 0 && dit.detection.family == io::Family::UNet)
      throw Error(file.string() + ": " + std::to_string(text) +
                  " of its updates are for text encoders, which lora merge does not write (it "
                  "writes the denoiser's weights); apply it when rendering (--lora) instead");
  }
  std::vector<lora::Resolved> resolved;
  for (const auto& [file, strength] : loras) {
    throw_if_cancelled(&cancel_requested());
    resolved.push_back(lora::resolve(file, *dit.model, dit.names));
    std::cerr << "kinora: " << resolved.back().report.line()
              << (strength == 0 ? "; strength 0: not merged" : "") << "\n";
  }
  std::vector<std::pair<const lora::Resolved*, double>> list;
  for (std::size_t i = 0; i < resolved.size(); ++i)
    if (loras[i].second != 0) list.emplace_back(&resolved[i], loras[i].second);
  lora::Applied applied;
  applied.apply(*dit.model, list, lora::Mode::Merged);
  // The merged modules' weights and biases under the file's own keys.
  std::map<std::string, torch::Tensor> merged;
  for (const auto& r : resolved)
    for (const auto& p : r.patches)
      for (const auto& item : dit.model->module().named_modules("", false))
        if (item.key() == p.target.module) {
          auto* l = item.value()->as<layers::LinearImpl>();
          merged[dit.detection.prefix + p.target.module + ".weight"] = l->weight;
          if (l->bias.defined()) merged[dit.detection.prefix + p.target.module + ".bias"] = l->bias;
        }
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& name : ck.names()) {
    const auto it = merged.find(name);
    out.emplace_back(name,
                     it != merged.end() ? it->second.to(ck.get(name).scalar_type()) : ck.get(name));
  }
  auto metadata = ck.metadata();
  // A model merged before keeps its record: the earlier LoRAs first.
  nlohmann::json record = nlohmann::json::array();
  if (const auto it = metadata.find("kinora.lora_merge"); it != metadata.end()) {
    const auto earlier = nlohmann::json::parse(it->second, nullptr, false);
    if (earlier.is_array()) record = earlier;
  }
  for (std::size_t i = 0; i < loras.size(); ++i)
    if (loras[i].second != 0)  // merged
      record.push_back({{"file", loras[i].first.filename().string()},
                        {"sha256_first_last_mib", file_fingerprint(loras[i].first)},
                        {"strength", loras[i].second}});
  metadata["kinora.lora_merge"] = record.dump();
  throw_if_cancelled(&cancel_requested());
  save_checkpoint_cancellable(a.out, out, metadata, a.overwrite);
  std::cout << a.out << "\n";
  return 0;
}

}  // namespace

pipeline::LoraRef parse_lora_arg(const std::string& arg) {
  // Said here, naming the option, not later as the preset's.
  if (arg.empty() || arg[0] == ':') throw Error("--lora '" + arg + "': a LoRA with an empty name");
  const auto colon = arg.rfind(':');
  if (colon != std::string::npos && colon > 0) {
    const std::string tail = arg.substr(colon + 1);
    if (is_decimal(tail)) {
      auto strength = [&](const std::string& text) {
        const double s = std::strtod(text.c_str(), nullptr);
        if (!std::isfinite(s) || std::abs(s) > pipeline::kMaxLoraStrength)
          throw Error("--lora '" + arg + "': the strength must be a number from -100 to 100");
        return s;
      };
      // FILE:HIGH:LOW: a Wan 2.2 pair's experts at their own strengths.
      const auto colon2 = colon > 1 ? arg.rfind(':', colon - 1) : std::string::npos;
      if (colon2 != std::string::npos && colon2 > 0) {
        const std::string mid = arg.substr(colon2 + 1, colon - colon2 - 1);
        if (is_decimal(mid)) {
          pipeline::LoraRef r{arg.substr(0, colon2), strength(mid)};
          r.strength_low = strength(tail);
          // "FILE:1:0.5:3": a third number, where no file is named "FILE:1".
          const auto colon3 = colon2 > 1 ? arg.rfind(':', colon2 - 1) : std::string::npos;
          std::error_code ec;
          if (colon3 != std::string::npos && colon3 > 0 &&
              is_decimal(arg.substr(colon3 + 1, colon2 - colon3 - 1)) && !fs::exists(r.path, ec))
            throw Error("--lora '" + arg +
                        "': at most two strengths (FILE:STRENGTH, or FILE:HIGH:LOW for a Wan "
                        "2.2 pair's two experts)");
          return r;
        }
      }
      return {arg.substr(0, colon), strength(tail)};
    }
    // "FILE:abc" where FILE exists: a strength that is not a number.
    std::error_code ec;
    if (fs::exists(arg.substr(0, colon), ec) && !fs::exists(arg, ec))
      throw Error("--lora '" + arg + "': '" + tail +
                  "' is not a strength (a number from -100 to 100)");
  }
  return {arg, 1.0};
}

std::function<int()> add_lora_command(CLI::App& app) {
  auto args = std::make_shared<LoraArgs>();
  auto* cmd = app.add_subcommand("lora", "Inspect a LoRA file, or merge LoRAs into a model file");
  cmd->require_subcommand(1);
  auto* ins = cmd->add_subcommand(
      "inspect", "What a LoRA holds (format, rank, alpha, updates); with --model, what it matches");
  ins->add_option("file", args->files,
                  "the LoRA (.safetensors), or its NAME in loras/ of --models-dir (else of the "
                  "embedded model, or beside --model)")
      ->required()
      ->expected(1);
  ins->add_option("--models-dir", args->models_dir,
                  "a models folder (ComfyUI layout) whose loras/ holds the LoRA given by name")
      ->check(CLI::ExistingDirectory);
  ins->add_option("--model", args->model,
                  "a Wan or FLUX DiT, or an SDXL UNet or single-file checkpoint (with its text "
                  "encoders), to match it against: a file, or a name under --models-dir");
  ins->add_option("--clip", args->clip,
                  "SDXL: its CLIP-L file (or a name under --models-dir), to check the LoRA's "
                  "text encoder updates too");
  ins->add_option("--text-encoder", args->text_encoder,
                  "SDXL: its OpenCLIP bigG file (or a name under --models-dir), to check the "
                  "LoRA's text encoder updates too");
  ins->add_flag("--verbose,-v", args->verbose, "list every update and where it lands");
  auto* mer = cmd->add_subcommand(
      "merge",
      "Write a model file with LoRAs merged in (the model's own layout and dtypes; the merge "
      "recorded in its metadata as kinora.lora_merge)");
  mer->add_option("--model", args->model,
                  "the DiT or SDXL UNet file (a single-file checkpoint: its UNet), or its name "
                  "under --models-dir")
      ->required();
  mer->add_option("--lora", args->files,
                  "FILE[:STRENGTH] (or a NAME in loras/ of --models-dir, else in loras/ "
                  "beside the model), repeat to stack")
      ->required();
  mer->add_option("--models-dir", args->models_dir,
                  "a models folder (ComfyUI layout) whose loras/ holds the LoRAs given by name")
      ->check(CLI::ExistingDirectory);
  mer->add_option("--out,-o", args->out, "the .safetensors file to write")->required();
  mer->add_flag("--overwrite", args->overwrite, "replace an existing output file");
  return [=]() -> int {
    if (!*cmd) return -1;
    try {
      if (!args->model.empty()) args->model = find_model(*args, *ins ? "inspect" : "merge");
      if (*ins) return inspect(*args);
      install_cancel_signals();
      return merge(*args);
    } catch (const Cancelled&) {
      std::cerr << "kinora: cancelled; nothing was written\n";
      return cancel_exit_status();
    } catch (const std::exception& e) {
      std::cerr << "kinora: " << error_message(e) << "\n";
      return 1;
    }
  };
}

}  // namespace kinora::cli
