#include "pipeline/semantic.h"

#include "media/output.h"

namespace kinora::pipeline {

SemanticResult score_semantics(WanPipeline& pipe, const SemanticRun& run) {
  SemanticResult result;
  RunCallbacks callbacks;
  callbacks.cancel = run.cancel;
  const auto score = [&](const std::vector<training::Scene>& scenes, const std::string& tag,
                         training::SemanticScore& into) {
    for (std::size_t i = 0; i < scenes.size(); ++i) {
      Preset p = run.preset;
      p.prompt = scenes[i].caption();
      p.seed = run.noise_seed + static_cast<int64_t>(i);
      p.output = (run.folder / (tag + std::to_string(i) + ".mp4")).string();
      pipe.render(p, callbacks);
      const auto m = training::measure(media::read_frames(p.output));
      into.add(scenes[i], m);
      if (run.on_line)
        run.on_line(tag + " " + std::to_string(i) + "  \"" + p.prompt + "\"  seed " +
                    std::to_string(p.seed) + "  →  " + training::describe(m));
    }
  };
  score(training::semantic_prompts(run.prompts, run.prompt_seed), "prompt", result.trained);
  score(training::held_out_prompts(), "held-out", result.held_out);
  return result;
}

}  // namespace kinora::pipeline
