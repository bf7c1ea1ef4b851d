#pragma once
// The semantic judgement of the embedded model (issue 5), run as a user runs
// the model: each prompt of training::semantic_prompts and held_out_prompts
// rendered to an MP4 by the pipeline with its own seed, the file decoded with
// FFmpeg, the pixels measured (training::measure). The semantic test uses the
// defaults; `kinora score` any prompt and noise seeds, sampling settings and
// model folder.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "pipeline/preset.h"
#include "pipeline/wan_pipeline.h"
#include "training/semantic.h"

namespace kinora::pipeline {

struct SemanticRun {
  // Sampling settings and models of every render; its prompt, seed and output
  // are set per prompt. Default: the embedded model with its own defaults.
  Preset preset = Preset::embedded_defaults();
  std::size_t prompts = 36;      // at least this many trained combinations
  uint64_t prompt_seed = 7000;   // training::semantic_prompts' first seed
  int64_t noise_seed = 100;      // prompt i of each set renders with seed noise_seed + i
  std::filesystem::path folder;  // where the MP4s are written (must exist)
  const std::atomic<bool>* cancel = nullptr;  // polled every step (then Cancelled is thrown)
  // One line per prompt: `set i  "prompt"  seed N  →  what it shows`.
  std::function<void(const std::string&)> on_line;
};

struct SemanticResult {
  training::SemanticScore trained, held_out;
};

// Throws kinora::Error (a model that does not load, a render that fails).
SemanticResult score_semantics(WanPipeline& pipe, const SemanticRun& run);

}  // namespace kinora::pipeline
