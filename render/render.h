#pragma once
// A render: the pipeline's frames written to the preset's output with the
// parameters embedded. The destination is checked before sampling starts
// (media::prepare_output: an existing output is replaced only with
// `overwrite`), and the file and its sidecar appear only when complete. This
// is the layer above both the pipeline (which links no FFmpeg) and media.
#include "pipeline/pipeline.h"

namespace kinora::render {

// Throws kinora::Error (nothing written) or kinora::Cancelled.
pipeline::Result render(pipeline::Pipeline& pipe, const pipeline::Preset& preset,
                        const pipeline::RunCallbacks& callbacks = {}, bool overwrite = false);

}  // namespace kinora::render
