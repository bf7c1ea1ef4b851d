#pragma once
// A render: the pipeline's frames written to the preset's output with the
// parameters embedded. The destination is checked before sampling starts
// (media::prepare_output: an existing output is replaced only with
// `overwrite`), and the file and its sidecar appear only when complete. This
// is the layer above both the pipeline (which links no FFmpeg) and media.
#include "media/format.h"
#include "pipeline/pipeline.h"

namespace kinora::render {

// Throws kinora::Error (nothing written) or kinora::Cancelled.
pipeline::Result render(pipeline::Pipeline& pipe, const pipeline::Preset& preset,
                        const pipeline::RunCallbacks& callbacks = {}, bool overwrite = false);

// `count` outputs of the preset sampled in one batch (Pipeline::generate_batch),
// seeds seed … seed + count − 1, to batch_outputs(): every destination checked
// before sampling. The preset's seed must be resolved (not random).
std::vector<pipeline::Result> render_batch(pipeline::Pipeline& pipe, const pipeline::Preset& preset,
                                           int count, const pipeline::RunCallbacks& callbacks = {},
                                           bool overwrite = false);
// Where output i of a batch goes: the preset's output with "-SEED" before its
// extension ("fox.png" → "fox-7.png", "fox-8.png" …); one output keeps the name.
std::filesystem::path batch_output(const pipeline::Preset& preset, int count, int i);

// Throws kinora::Error where one image (a .png) is asked of a model whose
// clips are longer (`snapped`: the preset after pipeline::snap_sizes), saying
// so rather than "this render makes N frames; ask for 1 frame".
void check_one_image(const pipeline::Preset& preset, const pipeline::Preset& snapped);

// What can be known of a preset's output before anything is loaded, as
// `batch` and the studio's queue check it: one image asked of a clip model,
// a name that fits its format (after snapping the sizes), a folder that
// exists and can be written (unless not `writable`: a batch skips an output
// that exists, so its folder may be read-only), not a file the render reads
// (a model, a LoRA). Returns the format; throws kinora::Error.
media::Format check_output_name(const pipeline::Preset& preset, bool writable = true);

// Refuses (kinora::Error) an output that is one of the files a render of
// `preset` reads, or a folder holding one (pipeline::input_files).
void check_not_an_input(const std::filesystem::path& output, const pipeline::Preset& preset);

}  // namespace kinora::render
