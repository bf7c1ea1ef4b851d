#include "render/semantic.h"

#include <filesystem>

#include "base/error.h"
#include "media/output.h"
#include "render/render.h"

namespace kinora::render {

namespace fs = std::filesystem;

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
    if (run.overwrite && fs::exists(p.output, ec) && !media::is_kinora_output(p.output))
      throw Error(p.output +
                  ": exists and is not a Kinora render; --overwrite replaces only the MP4s an "
                  "earlier score kept (move it, or keep the score elsewhere)");
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
