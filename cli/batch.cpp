#include "cli/batch.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "base/device.h"
#include "base/error.h"
#include "base/files.h"
#include "base/json.h"
#include "base/sha256.h"
#include "base/strings.h"
#include "cli/error_message.h"
#include "media/codecs.h"
#include "media/format.h"
#include "media/output.h"
#include "pipeline/lora_check.h"
#include "pipeline/pipeline.h"
#include "render/render.h"
#include "render/sweep.h"

namespace kinora::cli {
namespace fs = std::filesystem;
using nlohmann::json;
using pipeline::Preset;

void Placement::apply(Preset& p, const std::string& source) const {
  if (!device.empty()) p.device = device;
  if (!block_swap.empty()) p.block_swap = block_swap;
  if (fp8) p.fp8 = true;
  if (no_fp8) p.fp8 = false;
  if (p.models_dir.empty() && !models_dir.empty()) p.models_dir = fs::absolute(models_dir).string();
  if (!output_dir.empty() && !p.output.empty()) p.place_output_in(output_dir, source);
}

CLI::Validator block_swap_validator() {
  return CLI::Validator(
      [](std::string& v) {
        try {
          pipeline::block_swap_count(v, "it");
          return std::string();
        } catch (const Error& e) {
          return std::string(e.what()).substr(3);  // CLI11 names the option
        }
      },
      "auto|N");
}

std::vector<Entry> collect_presets(const std::vector<std::string>& paths, std::ostream& notes,
                                   const std::string& models_dir) {
  std::vector<fs::path> files;
  std::set<fs::path> given;  // files named, not found in a folder
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      for (const auto& e : fs::recursive_directory_iterator(p, ec)) {
        if (!e.is_regular_file() || e.path().extension() != ".json") continue;
        const auto name = e.path().filename().string();
        if (name[0] == '.') continue;  // temporaries and hidden files
        files.push_back(e.path());
      }
    } else if (fs::is_regular_file(p, ec)) {
      files.push_back(p);
      given.insert(fs::path(p));
    } else {
      throw Error(p + (fs::exists(p, ec) ? ": not a preset file or a folder of them"
                                         : ": no such file or folder"));
    }
  }
  // Each file once, however often and however spelled it was given.
  std::sort(files.begin(), files.end());
  std::vector<fs::path> unique;
  std::set<fs::path> seen;
  for (const auto& f : files) {
    std::error_code ec;
    if (seen.insert(fs::weakly_canonical(f, ec)).second) unique.push_back(f);
  }
  std::vector<Entry> out;
  int renders_in_folders = 0;
  for (const auto& f : unique) {
    json j;
    try {
      j = read_json_file(f);
    } catch (const Error& e) {
      out.push_back({f.string(), std::nullopt, e.what()});
      continue;
    }
    // The parameters Kinora writes beside its outputs (and into a frame
    // sequence's folder) describe renders; they are not presets.
    // A folder that holds its own outputs has one per render: counted, and
    // said once.
    if (media::is_kinora_parameters(j)) {
      if (given.count(f))
        notes << "kinora: " << f.string()
              << ": the parameters of a render, not a preset; skipped\n";
      else
        ++renders_in_folders;
      continue;
    }
    auto add = [&](const std::string& source, const json& item, const std::string& name) {
      try {
        Preset p = Preset::from_json(item, source);
        p.base_dir = f.parent_path();
        p = Preset::with_family_defaults(item, std::move(p), source, models_dir);
        // No output (a preset `restore` printed): named after its file.
        if (p.output.empty()) {
          p.output =
              name + (!p.format.empty() ? media::format_extension(media::parse_format(p.format))
                      : p.frames == 1   ? ".png"
                                        : ".mp4");
        }
        out.push_back({source, std::move(p), {}});
      } catch (const Error& e) {
        out.push_back({source, std::nullopt, e.what()});
      }
    };
    const auto stem = f.stem().string();
    if (j.is_array()) {
      for (std::size_t i = 0; i < j.size(); ++i)
        add(f.string() + "[" + std::to_string(i) + "]", j[i], stem + "-" + std::to_string(i));
    } else {
      add(f.string(), j, stem);
    }
  }
  if (renders_in_folders)
    notes << "kinora: left out "
          << counted(renders_in_folders, "parameters file", "parameters files")
          << " of renders found in the folders (they are not presets)\n";
  return out;
}

void validate_entries(std::vector<Entry>& entries, const Placement& placement) {
  std::map<fs::path, std::string> first_of;
  pipeline::LoraChecker loras;  // each model loaded once for all the presets
  for (auto& e : entries) {
    if (!e.preset) continue;
    try {
      Preset& p = *e.preset;
      p.source = e.source;
      placement.apply(p, e.source);
      std::error_code ec;
      // A finished output is skipped (or judged by --status): its folder
      // need not be writable.
      render::check_output_name(p, !fs::exists(fs::symlink_status(p.output_path(), ec)));
      const auto key = fs::weakly_canonical(fs::absolute(p.output_path()), ec);
      const auto [it, inserted] = first_of.try_emplace(key, e.source);
      if (!inserted)
        throw Error(e.source + ": key 'output' " + p.output_path().string() +
                    " is also the output of " + it->second + "; not rendered twice");
      // The files' kinds and fit from their headers, as the render checks
      // them first: a VAE of another model fails here, not on a node.
      const auto& family = pipeline::family_for(p);
      family.check_files(pipeline::resolve_models(p, family));
      pipeline::check_sampler(p);
      loras.check(p);  // found, a LoRA, and for this model
      resolve_device(p.device);
    } catch (const std::exception& err) {  // LibTorch's, or memory, while a model loads too
      const std::string what = error_message(err);
      e.error = what.rfind(e.source, 0) == 0 ? what : e.source + ": " + what;  // name the preset
      e.preset.reset();
    }
  }
}

namespace {
// An entry's source ("presets/a.json", "list.json[3]") as an absolute path, so
// that a task's FAIL line (written with the paths the task was given) and the
// paths a user types name the same preset.
std::string source_key(const std::string& source) {
  std::string file = source, index;
  if (!source.empty() && source.back() == ']')
    if (const auto at = source.rfind('['); at != std::string::npos)
      file = source.substr(0, at), index = source.substr(at);
  std::error_code ec;
  return fs::weakly_canonical(fs::absolute(file), ec).string() + index;
}
}  // namespace

std::string entries_fingerprint(const std::vector<Entry>& entries) {
  std::string all;
  for (const auto& e : entries) all.append(source_key(e.source)).append("\n");
  return sha256_hex(all).substr(0, 16);
}

ExistingOutput existing_output(const fs::path& path, const pipeline::Preset& preset) {
  using State = ExistingOutput::State;
  std::error_code ec;
  const fs::path side = path.string() + ".json";
  // A frame sequence's parameters are inside its folder (kinora.json), not
  // beside it.
  const bool sequence = [&] {
    try {
      return media::is_sequence(media::output_format(path, preset.format, preset.frames));
    } catch (const Error&) {  // the preset's check says what is wrong
      return false;
    }
  }();
  if (!fs::exists(fs::symlink_status(path, ec))) {
    // Its parameters file's name taken by a file of the user's: the render
    // would refuse to write beside it.
    if (!sequence && fs::exists(fs::symlink_status(side, ec)) && !media::is_kinora_sidecar(side))
      return {State::foreign, side.string()};
    return {};
  }
  // An empty folder is where a frame sequence may be written, as render does.
  if (sequence && fs::is_directory(fs::symlink_status(path, ec)) && fs::is_empty(path, ec))
    return {};
  nlohmann::json parameters;
  std::string why;
  bool has_parameters = false;
  try {
    parameters = media::read_embedded_parameters(path);
    has_parameters = true;
    why = media::cut_short(path);
  } catch (const Error& e) {
    why = e.what();
  }
  const bool has_sidecar = media::is_kinora_sidecar(side);
  // Another render copied over this one: its own parameters are not those its
  // parameters file beside it records.
  if (why.empty() && has_sidecar) try {
      const auto recorded = read_json_file(side);
      if (recorded.contains("preset") && parameters.contains("preset") &&
          recorded["preset"] != parameters["preset"])
        why = "another render was written over it: its parameters are not those " +
              side.filename().string() + " records";
    } catch (const Error&) {
    }
  if (why.empty()) {
    bool same = true;  // nothing to compare it with: taken as it is
    try {
      same = render::holds_render_of(parameters, path.string(), preset);
    } catch (const Error&) {
    }
    if (!same) return {State::stale, ""};
    // The same settings, but a file saved again under its name since (a
    // LoRA trained again): made with other weights than a render now uses.
    std::vector<std::string> changed;
    try {
      changed = render::changed_since(parameters, preset);
    } catch (const Error&) {
    }
    if (!changed.empty()) {
      std::string files;
      for (const auto& f : changed) files.append(files.empty() ? "" : ", ").append(f);
      return {State::stale, files + (changed.size() == 1 ? " is" : " are") +
                                " not the file it was made with (its contents differ)"};
    }
    return {State::done, ""};
  }
  if (!has_parameters && !has_sidecar) return {State::foreign, ""};
  // A build without FFmpeg cannot read a video's tags: not checked there.
  const auto ext = path.extension().string();
  if (!media::codecs::available() && !fs::is_directory(path, ec) && ext != ".png" && ext != ".PNG")
    return {State::done, ""};
  return {State::damaged, why};
}

std::string ExistingOutput::explain(const fs::path& path) const {
  switch (state) {
    case State::foreign:
      if (!why.empty())  // the parameters file's name is taken
        return why +
               " (where the parameters of the render are written) exists and is not Kinora's; it "
               "is not replaced: move it, or give the preset another output";
      return path.string() +
             " exists and is not a Kinora render; it is not replaced: move it, or give the preset "
             "another output";
    case State::damaged:
      return path.string() + " does not read as a complete render (" + why +
             "), though its parameters file is Kinora's; delete both to have it rendered again";
    default:
      return path.string();
  }
}

int batch_status(const std::vector<Entry>& entries, const std::string& log_dir, std::ostream& out) {
  // Sources a task reported failed, and the log that says so.
  std::map<std::string, std::string> failed_in;
  if (!log_dir.empty()) {
    std::error_code ec;
    for (const auto& f : fs::directory_iterator(log_dir, ec)) {
      if (!f.is_regular_file()) continue;
      std::ifstream in(f.path());
      for (std::string line; std::getline(in, line);)
        if (line.rfind("FAIL  ", 0) == 0) failed_in[source_key(line.substr(6))] = f.path().string();
    }
  }
  int done = 0, rendering = 0, missing = 0, failed = 0, invalid = 0, foreign = 0, damaged = 0,
      stale = 0;
  for (const auto& e : entries) {
    if (!e.preset) {
      ++invalid;
      out << "invalid  " << e.error << "\n";
      continue;
    }
    const auto path = e.preset->output_path();
    const auto existing = existing_output(path, *e.preset);
    using State = ExistingOutput::State;
    if (existing.state == State::foreign) {
      ++foreign;
      out << "foreign  " << e.source << "  " << path.string()
          << (existing.why.empty()
                  ? "  (exists and is not a Kinora render)\n"
                  : "  (its parameters file " + existing.why + " exists and is not Kinora's)\n");
    } else if (existing.state == State::damaged) {
      ++damaged;
      out << "damaged  " << e.source << "  " << path.string() << "  (" << existing.why
          << "; delete it and its .json to have it rendered again)\n";
    } else if (existing.state == State::stale) {
      ++stale;
      out << "stale    " << e.source << "  " << path.string() << "  ("
          << (existing.why.empty() ? std::string("made from other settings than the preset's now")
                                   : existing.why)
          << ": delete it and its .json to render the preset again)\n";
    } else if (existing.state == State::done) {
      ++done;
      out << "done     " << e.source << "  " << path.string() << "\n";
    } else if (const auto holder = OutputClaim::holder_of(path); !holder.empty()) {
      ++rendering;
      out << "running  " << e.source << "  " << path.string() << "  (" << holder << ")\n";
    } else if (const auto it = failed_in.find(source_key(e.source)); it != failed_in.end()) {
      ++failed;
      out << "failed   " << e.source << "  " << path.string() << "  (" << it->second << ")\n";
    } else {
      ++missing;
      out << "missing  " << e.source << "  " << path.string();
      if (const fs::path side = path.string() + ".json"; media::is_kinora_sidecar(side))
        out << "  (" << side.filename().string()
            << " is left from an earlier render: a batch renders it once that is deleted)";
      out << "\n";
    }
  }
  out << counted(static_cast<long long>(entries.size()), "preset", "presets") << ": " << done
      << " done, " << (rendering ? std::to_string(rendering) + " running, " : std::string())
      << missing << " missing, " << failed << " failed, " << invalid << " invalid"
      << (damaged ? ", " + std::to_string(damaged) + " damaged" : std::string())
      << (stale ? ", " + std::to_string(stale) + " stale" : std::string())
      << (foreign ? ", " + std::to_string(foreign) + " not Kinora's" : std::string()) << "\n";
  return done == static_cast<int>(entries.size()) ? 0 : 1;
}

}  // namespace kinora::cli
