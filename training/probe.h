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
//            → triangle → circle): from which σ₀ the word decides the shape;
//   first    (with fit steps) the clips' first fit_frames frames (1: the first
//            alone, its own latent frame by the first-chunk rule) encoded
//            and decoded: the VAE's reconstruction of them;
//   fit      the same latents moved by gradient descent through the
//            frozen decoder towards the frame (fit_latents): what the decoder
//            can draw given the best latent it is handed, not the encoder's.
//            Where fit reads no better than first, the decoder is what rounds
//            a shape; where it reads better, the encoder is;
//   first+noise, fit+noise  both with each nonzero noise level's noise: what
//            a fitted latent gains and a DiT's error would take away again.
//
// `kinora train probe` prints it; docs/training.md reads its tables.
#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "embedded/clips.h"
#include "layers/precision.h"
#include "training/train.h"

namespace kinora::training {

struct ProbeOptions {
  // The four kinora-tiny-* files (a run folder); empty: the embedded model's
  // folder, found as `kinora generate` finds it (embedded::model_dir()).
  std::filesystem::path model_dir;
  int64_t clips_per_shape = 4;
  std::vector<double> noise_levels = {0, 0.1, 0.2, 0.5};
  std::vector<double> redraw_sigmas = {0.3, 0.5, 0.7, 0.9, 1.0};
  double guidance = kDefaults.guidance;
  double shift = 3.0;      // of the redraw's time grid, as the sampler shifts it
  int64_t steps = 30;      // Euler steps of a redraw from σ₀ 1; from lower, in proportion
  uint64_t seed = 1;       // of the scenes (unseen by training) and the noise
  int64_t fit_steps = 0;   // Adam steps of the "fit" rows' latents; 0: no such rows
  double fit_lr = 0.01;    // their learning rate, in the VAE's un-normalised units
  int64_t fit_frames = 1;  // frames of each clip fitted, 1 + 4k (a clip's all: the DiT's case)
  layers::Precision precision = layers::Precision::F32;
  ClipSpec clip;
  std::function<void(const std::string&)> on_message;
};

struct ProbeRow {
  std::string kind;  // "clip", "noise", "redraw", "swapped", "first" or "fit"
  double level = 0;  // the noise's RMS, or σ₀
  // By the clip's shape (Circle, Square, Triangle): clips read as the shape
  // aimed at (the clip's own; the caption's for "swapped"), and their mean
  // fill ratio.
  std::array<int, 3> right{};
  std::array<double, 3> fill{};
  // "first" and "fit": the object-weighted L1 of the frames' reconstruction
  // (the VAE's training loss); −1 for the other rows.
  double l1 = -1;
};

std::vector<ProbeRow> probe_shapes(const ProbeOptions& o);
// The rows as a Markdown table.
std::string probe_table(const std::vector<ProbeRow>& rows, int64_t clips_per_shape);

}  // namespace kinora::training
