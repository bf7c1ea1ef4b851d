#pragma once
// Where a trained model loses an object's shape, measured with the semantic
// test's measure (training::measure) on real clips of each shape:
//
//   clip     the clips themselves, with no VAE: the ceiling of the rows below;
//   noise    the clips' latents plus Gaussian noise of a given RMS, decoded:
//            how much error in a latent the VAE's decoder forgives;
//   redraw   the latents noised to σ₀ and sampled back to 0 by the DiT with
//            their own caption (Euler, classifier-free guidance): whether the
//            DiT keeps a shape it is given (σ₀ 1 is drawing from pure noise);
//   swapped  the same with the caption's shape word changed (circle → square
//            → triangle → circle): from which σ₀ the word decides the shape.
//
// `kinora train probe` prints it; docs/training.md reads its tables.
#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "layers/precision.h"
#include "training/clips.h"
#include "training/train.h"

namespace kinora::training {

struct ProbeOptions {
  std::filesystem::path model_dir;  // the four kinora-tiny-* files (assets/, a run folder)
  int64_t clips_per_shape = 4;
  std::vector<double> noise_levels = {0, 0.1, 0.2, 0.5};
  std::vector<double> redraw_sigmas = {0.3, 0.5, 0.7, 0.9, 1.0};
  double guidance = kEmbeddedGuidance;
  double shift = 3.0;  // of the redraw's time grid, as the sampler shifts it
  int64_t steps = 30;  // Euler steps of a redraw from σ₀ 1; from lower, in proportion
  uint64_t seed = 1;   // of the scenes (unseen by training) and the noise
  layers::Precision precision = layers::Precision::F32;
  ClipSpec clip;
  std::function<void(const std::string&)> on_message;
};

struct ProbeRow {
  std::string kind;  // "clip", "noise", "redraw" or "swapped"
  double level = 0;  // the noise's RMS, or σ₀
  // By the clip's shape (Circle, Square, Triangle): clips read as the shape
  // aimed at (the clip's own; the caption's for "swapped"), and their mean
  // fill ratio.
  std::array<int, 3> right{};
  std::array<double, 3> fill{};
};

std::vector<ProbeRow> probe_shapes(const ProbeOptions& o);
// The rows as a Markdown table.
std::string probe_table(const std::vector<ProbeRow>& rows, int64_t clips_per_shape);

}  // namespace kinora::training
