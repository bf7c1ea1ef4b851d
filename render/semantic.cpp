#include "render/semantic.h"

#include <filesystem>

#include "base/error.h"
#include "embedded/clips.h"
#include "media/output.h"
#include "render/render.h"

namespace kinora::render {

namespace fs = std::filesystem;

namespace {
// Whether `file` is a render a score kept: made under this name (not a
// render copied there) of a caption of the embedded model's grammar.
bool kept_by_a_score(const fs::path& file) {
  try {
    const auto j = media::read_embedded_parameters(file);
    const auto& preset = j.at("preset");
    return preset.value("output", std::string()) == file.filename().string() &&
           embedded::parse_caption(preset.value("prompt", std::string())).has_value();
  } catch (const std::exception&) {
    return false;
  }
}
}  // namespace

embedded::SemanticScore score_scenes(pipeline::Pipeline& pipe, const SemanticRun& run,
                                     const std::vector<embedded::Scene>& scenes,
                                     const std::string& tag) {
  embedded::SemanticScore into;
  pipeline::RunCallbacks callbacks;
  callbacks.cancel = run.cancel;
  for (std::size_t i = 0; i < scenes.size(); ++i) {
    pipeline::Preset p = run.preset;
    p.prompt = scenes[i].caption();
    p.seed = run.noise_seed + static_cast<int64_t>(i);
    p.output = (run.folder / (tag + std::to_string(i) + ".mp4")).string();
    // overwrite replaces what an earlier score kept, not a file of the user's.
    std::error_code ec;
    if (run.overwrite && fs::exists(p.output, ec) && !kept_by_a_score(p.output))
      throw Error(p.output +
                  ": exists and is not a render an earlier score kept; --overwrite replaces only "
                  "those (move it, or keep the score elsewhere)");
    render(pipe, p, callbacks, run.overwrite);
    const auto m = embedded::measure(media::read_frames(p.output));
    into.add(scenes[i], m);
    if (run.on_line)
      run.on_line(tag + " " + std::to_string(i) + "  \"" + p.prompt + "\"  seed " +
                  std::to_string(p.seed) + "  →  " + embedded::describe(m));
  }
  return into;
}

SemanticResult score_semantics(pipeline::Pipeline& pipe, const SemanticRun& run) {
  SemanticResult result;
  result.trained =
      score_scenes(pipe, run, embedded::semantic_prompts(run.prompts, run.prompt_seed), "prompt");
  result.held_out = score_scenes(pipe, run, embedded::held_out_prompts(), "held-out");
  return result;
}

}  // namespace kinora::render
