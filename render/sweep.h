#pragma once
// A sweep: one preset rendered for every combination of a few keys' values
// (LoRA strengths, seeds, guidance, steps, sampler, shift, prompt, …), each
// cell rendered and written as a single render of its preset is (restorable
// on its own), and a labelled contact sheet of them all: a PNG grid of the frames for
// images, a tiled MP4 for videos. The first axis runs along the columns, the
// others down the rows. The CLI's `kinora sweep` and the studio's "Sweep…"
// both run it.
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeline/pipeline.h"

namespace kinora::render {

// One swept key and its values, as given: "seed=1,2,3", "guidance=1.5,3",
// "lora=0.5,1" (the preset's one LoRA), "lora:NAME=0.5,1" (a LoRA of the
// preset by file name or stem, or one added: a path or a name in loras/).
// A LoRA axis gets an "off" value first (the LoRA removed: the no-LoRA
// column) unless its values hold "off" or 0.
struct SweepAxis {
  std::string key;    // "seed", "lora", "lora:NAME"
  std::string label;  // as drawn and in file names: the key, "lora" for lora:NAME
  std::vector<std::string> values;
};

// "KEY=V1,V2,…" → an axis. Throws kinora::Error for a key that cannot be
// swept (one that changes a cell's size, length or destination), an empty or
// repeated value, or a malformed argument.
SweepAxis parse_sweep_axis(const std::string& arg);

struct SweepCell {
  std::vector<std::string> values;  // one per axis
  pipeline::Preset preset;          // the base preset with those values, its own output
};

struct SweepPlan {
  std::vector<SweepAxis> axes;
  std::vector<SweepCell> cells;  // rows (the later axes) outer, columns (the first axis) inner
  int columns = 1, rows = 1;
  std::filesystem::path sheet;  // the contact sheet: STEM-sweep.png or .mp4
};

// The cells of `base` (validated, its seed resolved: every cell shares it
// unless seed is swept) over `axes`: each cell's output is the base output's
// folder and stem with "-LABEL=VALUE" per axis ("fox-lora=0.5-seed=2.mp4").
// A preset without a seed takes the seed of the cells an earlier run of the
// same sweep left, so that it resumes; else a random one. Throws
// kinora::Error for no axes, a key given twice, more than 256 cells, a LoRA
// axis naming no LoRA, or a value the preset refuses (naming the axis).
SweepPlan plan_sweep(const pipeline::Preset& base, const std::vector<SweepAxis>& axes);

struct SweepCallbacks {
  pipeline::RunCallbacks run;  // every cell's render
  // Before each cell: its index, the count, its values as "lora=0.5 seed=2".
  std::function<void(std::size_t, std::size_t, const std::string&)> on_cell;
  // A cell whose output exists and holds this cell's render (a sweep run
  // again after a cancel) is reused, not rendered.
  std::function<void(const std::filesystem::path&)> on_reused;
};

struct SweepResult {
  std::vector<std::filesystem::path> cells;
  std::filesystem::path sheet;
  int rendered = 0, reused = 0;
  bool sheet_kept = false;  // every cell reused and the sheet complete: left as it was
};

// Whether the file at `path` holds the render of `p`, as its embedded preset
// records it: the prompts, seed (any, for a preset without one), steps,
// sampler, shift, guidance, size after snapping, LoRAs by name and strength,
// precision and FP8. False for a file that holds no Kinora parameters.
bool holds_render_of(const std::filesystem::path& path, const pipeline::Preset& p);
// The same for parameters already read (read_embedded_parameters) from the
// file `where`.
bool holds_render_of(const nlohmann::json& parameters, const std::string& where,
                     const pipeline::Preset& p);

// The files of `p` as they are found now (its LoRAs, then its model files)
// whose contents are not those the render with parameters `meta`
// (read_embedded_parameters) recorded by fingerprint: a LoRA saved again
// under its name, say. A file not recorded, not found or not readable is
// left out; with `missing`, why each recorded file that cannot be found now
// is not (the resolver's message) is added there.
std::vector<std::string> changed_since(const nlohmann::json& meta, const pipeline::Preset& p,
                                       std::vector<std::string>* missing = nullptr);

// What can be known before sampling: every LoRA of the cells found and
// matched against the model, every destination (an existing cell that does
// not hold its render is an error unless `overwrite`; the sheet may be
// replaced when it is a sweep's own). Returns which cells are reused. Throws
// kinora::Error naming the file.
std::vector<bool> check_sweep(const SweepPlan& plan, bool overwrite);

// Renders every cell (models stay loaded; a LoRA's strength changes re-merge
// only the weights it touches), then writes the sheet from the cells' files as
// written (a video's decoded frames, so a sweep run again makes the same
// sheet), after check_sweep. With every cell reused and this sweep's complete
// sheet there, the sheet is left as it is. Throws kinora::Error or
// kinora::Cancelled; cells finished before stay (each complete), the sheet
// appears only complete.
SweepResult run_sweep(pipeline::Pipeline& pipe, const SweepPlan& plan,
                      const SweepCallbacks& callbacks = {}, bool overwrite = false);

// The contact sheet of frames [F, H, W, 3] uint8 of every cell (plan order):
// a header row of the first axis' values, a column of the other axes' values,
// the corner naming the axes; dark grey between cells. [F, H', W', 3], H' and
// W' even.
torch::Tensor contact_sheet(const SweepPlan& plan, const std::vector<torch::Tensor>& frames);

}  // namespace kinora::render
