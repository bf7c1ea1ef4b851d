#pragma once
// What `kinora render`, `batch`, `sweep` and `slurm submit` share: where
// outputs go and models are found (Placement), and a batch's presets
// collected from files, folders and JSON lists and checked before anything
// is rendered.
#include <CLI/CLI.hpp>

#include <filesystem>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "pipeline/preset.h"

namespace kinora::cli {

// Where outputs go, where models are found, and where and how they compute.
struct Placement {
  std::string output_dir, models_dir, device, block_swap;
  bool fp8 = false, no_fp8 = false;  // --fp8 / --no-fp8: over the presets' fp8
  bool overwrite = false;
  void apply(pipeline::Preset& p, const std::string& source) const;
};

// --block-swap's check: "auto" or a count, as the preset key block_swap.
CLI::Validator block_swap_validator();

// A batch entry: a preset, where it came from, or why it is not one.
struct Entry {
  std::string source;  // "file.json" or "list.json[3]"
  std::optional<pipeline::Preset> preset;
  std::string error;
};

// The presets of files, folders (recursively, *.json) and JSON lists, each
// file once, sorted; a preset without output is named after its file. The
// parameters Kinora writes beside its outputs are skipped with a note.
// A preset naming a model but no family gets its family's defaults (found
// with `models_dir`, a batch's --models-dir, when it has none of its own).
// Throws kinora::Error for a path that is neither a file nor a folder.
std::vector<Entry> collect_presets(const std::vector<std::string>& paths, std::ostream& notes,
                                   const std::string& models_dir = "");

// Everything about each valid entry that can be known before rendering: its
// output (inside --output-dir, a name that fits its format, in a folder that
// exists, not the output of an earlier entry), its model files, its device.
// An entry that fails gets its error and loses its preset.
void validate_entries(std::vector<Entry>& entries, const Placement& placement);

// What lies at an entry's output, its parameters read once.
struct ExistingOutput {
  enum class State {
    none,     // nothing: the entry is rendered
    foreign,  // a file that is no Kinora render: never replaced
    damaged,  // Kinora's parameters file beside a file that does not read as a render
    stale,    // a render of other settings than the preset's now
    done,     // the preset's render (or one that cannot be told apart: a video
              // in a build without FFmpeg)
  } state = State::none;
  std::string why;  // damaged: the reason (a file written over it, cut short, …);
                    // foreign: the parameters file in the way, if it is that;
                    // stale: the files saved again since it was made, if that is why
  // The line `batch` and `slurm submit` give for a foreign or damaged output
  // at `path`: what it is and what to do.
  std::string explain(const std::filesystem::path& path) const;
};
ExistingOutput existing_output(const std::filesystem::path& path, const pipeline::Preset& preset);

// `kinora batch --status`: one line per entry, "done", "stale" (made from
// other settings than the preset's now), "missing" (with the
// reason a batch would not render it: a parameters file left from an earlier
// render), "failed" (a "FAIL  SOURCE" line for it in a log of `log_dir`, when
// given, and no output), "damaged" (Kinora's parameters file beside a file
// that does not read as a render), "foreign" (a file that is no Kinora
// render at the output's name) or "invalid", then the counts. Returns 0 when
// every entry is done, else 1.
int batch_status(const std::vector<Entry>& entries, const std::string& log_dir, std::ostream& out);

// The entries' sources (absolute, in order), hashed: what `slurm submit`
// records so that each task can tell whether it finds the presets that were
// submitted (a preset added or removed meanwhile shifts every shard).
std::string entries_fingerprint(const std::vector<Entry>& entries);

// Entry k of `count` belongs to shard `index` when k mod count = index.
inline bool in_shard(std::size_t k, int index, int count) {
  return static_cast<int>(k % static_cast<std::size_t>(count)) == index;
}

}  // namespace kinora::cli
