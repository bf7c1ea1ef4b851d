#include "render/render.h"

#include <chrono>

#include "media/output.h"

namespace kinora::render {
namespace fs = std::filesystem;

namespace {

// A1111-style text for PNG readers that know only that (FLUX's guidance as
// Forge writes it: a distilled scale beside a CFG scale of 1).
std::string parameters_text(const pipeline::Preset& p) {
  const std::string guidance =
      p.family == "flux" ? "CFG scale: 1, Distilled CFG Scale: " + nlohmann::json(p.guidance).dump()
                         : "CFG scale: " + nlohmann::json(p.guidance).dump();
  return p.prompt + "\nNegative prompt: " + p.negative_prompt +
         "\nSteps: " + std::to_string(p.steps) + ", Sampler: " + p.sampler + ", " + guidance +
         ", Seed: " + std::to_string(p.seed) + ", Size: " + std::to_string(p.width) + "x" +
         std::to_string(p.height) + ", Shift: " + nlohmann::json(p.shift).dump() +
         ", Model: " + fs::path(p.model).filename().string() + ", Version: Kinora";
}

// Writes one result to its checked destination, with the parameters embedded.
void write_result(pipeline::Result& r, const media::OutputTarget& target,
                  const pipeline::RunCallbacks& cb) {
  r.metadata["kinora"]["ffmpeg"] = media::ffmpeg_version();
  r.metadata["preset"]["output"] = target.path.filename().string();
  media::WriteOptions o;
  o.fps = r.preset.fps;
  o.crf = r.preset.crf;
  o.metadata_json = r.metadata.dump();
  o.parameters_text = parameters_text(r.preset);
  const auto t0 = std::chrono::steady_clock::now();
  media::write_output(target, r.frames, o, cb.cancel);
  r.timings.encode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.output = target.path;
  r.preset.output = target.path.string();
}

}  // namespace

pipeline::Result render(pipeline::Pipeline& pipe, const pipeline::Preset& preset,
                        const pipeline::RunCallbacks& cb, bool overwrite) {
  return std::move(render_batch(pipe, preset, 1, cb, overwrite).front());
}

fs::path batch_output(const pipeline::Preset& preset, int count, int i) {
  const fs::path out = preset.output_path();
  if (count == 1) return out;
  return out.parent_path() /
         (out.stem().string() + "-" + std::to_string(preset.seed + i) + out.extension().string());
}

std::vector<pipeline::Result> render_batch(pipeline::Pipeline& pipe, const pipeline::Preset& preset,
                                           int count, const pipeline::RunCallbacks& cb,
                                           bool overwrite) {
  if (preset.output.empty())
    throw Error("preset: key 'output' is empty: where should the video go?");
  if (count > 1 && preset.seed < 0) throw Error("a batch needs its first seed resolved");
  // Everything about the destinations is checked before sampling, not after.
  pipeline::Preset snapped = preset;
  pipeline::snap_sizes(snapped);
  std::vector<media::OutputTarget> targets;
  for (int i = 0; i < count; ++i)
    targets.push_back(media::prepare_output(batch_output(preset, count, i), preset.format,
                                            snapped.frames, overwrite));
  auto results = pipe.generate_batch(preset, count, cb);
  for (int i = 0; i < count; ++i) write_result(results[i], targets[i], cb);
  return results;
}

}  // namespace kinora::render
