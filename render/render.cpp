#include "render/render.h"

#include <chrono>

#include "media/output.h"

namespace kinora::render {
namespace fs = std::filesystem;

pipeline::Result render(pipeline::Pipeline& pipe, const pipeline::Preset& preset,
                        const pipeline::RunCallbacks& cb, bool overwrite) {
  if (preset.output.empty())
    throw Error("preset: key 'output' is empty: where should the video go?");
  // Everything about the destination is checked before sampling, not after.
  pipeline::Preset snapped = preset;
  pipeline::snap_sizes(snapped);
  const auto target =
      media::prepare_output(preset.output_path(), preset.format, snapped.frames, overwrite);
  auto r = pipe.generate(preset, cb);
  r.metadata["kinora"]["ffmpeg"] = media::ffmpeg_version();
  r.metadata["preset"]["output"] = target.path.filename().string();
  media::WriteOptions o;
  o.fps = r.preset.fps;
  o.crf = r.preset.crf;
  o.metadata_json = r.metadata.dump();
  // A1111-style text for PNG readers that know only that.
  o.parameters_text =
      r.preset.prompt + "\nNegative prompt: " + r.preset.negative_prompt +
      "\nSteps: " + std::to_string(r.preset.steps) + ", Sampler: " + r.preset.sampler +
      ", CFG scale: " + nlohmann::json(r.preset.guidance).dump() +
      ", Seed: " + std::to_string(r.preset.seed) + ", Size: " + std::to_string(r.preset.width) +
      "x" + std::to_string(r.preset.height) + ", Shift: " + nlohmann::json(r.preset.shift).dump() +
      ", Model: " + fs::path(r.preset.model).filename().string() + ", Version: Kinora";
  const auto t0 = std::chrono::steady_clock::now();
  media::write_output(target, r.frames, o, cb.cancel);
  r.timings.encode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.output = target.path;
  r.preset.output = target.path.string();
  return r;
}

}  // namespace kinora::render
