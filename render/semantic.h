#pragma once
// The semantic judgement of the embedded model, run as a user runs
// the model: each prompt of embedded::semantic_prompts and held_out_prompts
// rendered to an MP4 by the pipeline with its own seed, the file decoded with
// FFmpeg, the pixels measured (embedded::measure). The semantic test uses the
// defaults; `kinora score` any prompt and noise seeds, sampling settings and
// model folder.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "embedded/semantic.h"
#include "pipeline/pipeline.h"
#include "pipeline/preset.h"

namespace kinora::render {

struct SemanticRun {
  // Sampling settings and models of every render; its prompt, seed and output
  // are set per prompt. Default: the embedded model with its own defaults.
  pipeline::Preset preset = pipeline::Preset::embedded_defaults();
  std::size_t prompts = 36;      // at least this many trained combinations
  uint64_t prompt_seed = 7000;   // embedded::semantic_prompts' first seed
  int64_t noise_seed = 100;      // prompt i of each set renders with seed noise_seed + i
  std::filesystem::path folder;  // where the MP4s are written (must exist)
  bool overwrite = false;        // replace MP4s of those names already there
  const std::atomic<bool>* cancel = nullptr;  // polled every step (then Cancelled is thrown)
  // One line per prompt: `set i  "prompt"  seed N  →  what it shows`.
  std::function<void(const std::string&)> on_line;
};

struct SemanticResult {
  embedded::SemanticScore trained, held_out;
};

// Throws kinora::Error (a model that does not load, a render that fails).
SemanticResult score_semantics(pipeline::Pipeline& pipe, const SemanticRun& run);

// The same judgement of any scenes (embedded::star_prompts, …): scene i
// rendered with seed run.noise_seed + i to TAG-i.mp4 in run.folder.
embedded::SemanticScore score_scenes(pipeline::Pipeline& pipe, const SemanticRun& run,
                                     const std::vector<embedded::Scene>& scenes,
                                     const std::string& tag);

}  // namespace kinora::render
