#pragma once
// Training of the embedded default model, in three stages that run the same
// modules as inference (the Wan VAE, umT5 and Wan DiT classes, made trainable):
//
//   1. tokenizer  a SentencePiece vocabulary of the caption grammar
//   2. vae        the Wan 2.1 VAE, small base width, as an autoencoder of clips
//   3. dit        umT5 and the Wan DiT together, flow matching on the VAE's
//                 latents, with caption dropout for classifier-free guidance
//
// Each stage writes into one run folder: its model as safetensors in the real
// layout with the config in the metadata, its optimizer state and step (so a
// stopped stage resumes where it was), and a loss log (CSV). The recipe that
// made the shipped weights is docs/training.md.
#include <torch/torch.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "embedded/clips.h"
#include "embedded/model.h"
#include "layers/precision.h"

namespace kinora::diffusion {
class WanModel;
}
namespace kinora::vae {
class WanVAE;
}
namespace kinora::text {
class T5Encoder;
class Tokenizer;
}  // namespace kinora::text

namespace kinora::training {

// The trainer makes the embedded model: its vocabulary (clips, captions,
// measures, file names, defaults) is embedded/'s.
using namespace kinora::embedded;

struct StageOptions {
  std::filesystem::path run_dir;
  int64_t steps = 1000;  // total optimizer steps (a resumed stage continues to this)
  int64_t batch = 8;
  double lr = 2e-4;
  int64_t warmup = 100;  // linear warm-up, then cosine decay to lr/10
  uint64_t seed = 1;
  layers::Precision precision = layers::Precision::BF16;  // compute dtype (weights stay fp32)
  int64_t save_every = 200;
  int64_t log_every = 20;
  ClipSpec clip;  // 64×64×17 by default
  std::function<void(const std::string&)> on_message;
  const std::atomic<bool>* cancel = nullptr;  // stops after the current step, saving first
  // Replace outputs this run did not write (the stage's model files, report
  // and logs in run_dir): without it a stage refuses, naming the file, to
  // start afresh where they exist, or to replace one that another run wrote.
  bool overwrite = false;
};

// Every caption of the grammar except held-out combinations.
std::vector<std::string> grammar_captions();

// Stage 1: <run>/kinora-tiny-spm.model.
// BPE with 96 pieces: each word of the grammar becomes one piece. The same
// options give the same bytes, so an existing file that is what this stage
// makes is left as it is; any other is refused unless `overwrite` (a DiT
// trained with it reads its ids). Returns whether it wrote the file.
bool train_tokenizer(const std::filesystem::path& run_dir, int64_t vocab_size = 96,
                     bool overwrite = false);

struct VaeOptions : StageOptions {
  int64_t dim = 16;                 // base width (the released VAE: 96)
  int64_t train_frames = 5;         // frames per training clip (1 + 4k, the causal chunks)
  int64_t time_compression = 4;     // 4: the released VAE's; 1: no temporal downsampling
  int64_t spatial_compression = 8;  // 8: the released VAE's (3 halving stages); 4: two
  int64_t crop = 32;                // square crops of this size (0: whole frames); the VAE is
                                    // convolutional, so it then runs on whole frames
  double kl_weight = 1e-5;          // KL term of the posterior, per element
  // A VAE trained on single frames (train_frames 1) to start from: its weights, with
  // the past-frame taps of every causal convolution set to zero, so that each
  // frame starts out encoded and decoded as that image model does it. Names and
  // shapes must match. The temporal resampling it lacks starts as "keep each
  // chunk's last frame" (encoder) and "repeat each latent frame" (decoder).
  std::filesystem::path inflate_from;
  // A trained VAE file of the same architecture (e.g. assets/'s) to start a
  // fresh run from, weights as they are. With decoder_only its latent
  // statistics are kept as well: a DiT trained on its latents was normalised
  // with them, and the encoder does not change.
  std::filesystem::path init_from;
  // Train the decoder alone: the encoder, and so the latents a DiT learns from
  // (and their statistics), stay exactly as they are.
  bool decoder_only = false;
  // With init_from and decoder_only: another VAE file of the same
  // architecture whose decoder (conv2, decoder) replaces init_from's before
  // training, e.g. a decoder trained jointly with a drifted encoder, to be
  // taught init_from's latents again.
  std::filesystem::path decoder_from;
  int64_t stats_clips = 64;  // clips whose latents give the normalisation statistics
};
// Stage 2: <run>/kinora-tiny-wan-vae.safetensors (+ vae-state/).
void train_vae(const VaeOptions& o);

// What is wrong with a stage's options on their own, in the command line's
// words ("--frames 4: …"), or "" when nothing is. Each stage refuses such
// options (an Error with this message) before it reads or writes anything,
// and `kinora train` refuses them as it refuses any bad command line.
std::string options_problem(const VaeOptions& o);

// The object's pixels of clips [B, 3, F, H, W] in [−1, 1]: those far from the
// clip's background (the median of its top and bottom rows). [B, 1, F, H, W]
// float32, 1 on the object. The VAE's loss weighs them 10×.
torch::Tensor object_mask(const torch::Tensor& video);

// Latents fitted to clips through the VAE's frozen decoder: the encoder's
// posterior means moved by `steps` Adam steps (rate `lr`, in the VAE's
// un-normalised units) down the object-weighted L1 of their decoding, the
// VAE's own reconstruction loss. An encoder amortises this fit and falls
// short of it: the decoder draws sharper corners from fitted latents than
// from the encoder's (probe_shapes with fit_steps, in probe.h).
struct FittedLatents {
  torch::Tensor z;        // [B, z, T, h, w] float32, un-normalised, no gradient
  double l1_encoded = 0;  // the weighted L1 of the encoder's latents, decoded
  double l1_fitted = 0;   // … and of the fitted ones
};
FittedLatents fit_latents(vae::WanVAE& vae, const torch::Tensor& video, int64_t steps, double lr,
                          const std::function<void(int64_t step, double l1)>& on_step = {});

enum class SigmaDraw { Uniform, LogitNormal };

struct DitOptions : StageOptions {
  int64_t dataset = 4096;  // clips encoded once by the VAE (latents cached in the run)
  // Latent frames per training sample (0: whole clips): random windows of the
  // cached latents, a few times cheaper per step than whole clips. Only for a
  // VAE without temporal compression, whose latent frames are frames: with its
  // past-frame taps at zero (an inflated image VAE) any window is exactly the
  // latent of the clip that starts there.
  int64_t window = 0;
  // DiT
  int64_t dim = 128, ffn_dim = 512, num_heads = 2, num_layers = 4;
  // Latent cells per token along height and width (the released: 2). `dim` must
  // be at least patch² × the VAE's channels: the values of one token.
  int64_t patch = 2;
  // Latent frames per token (the released: 1). With all of a clip's latent
  // frames in one token, each token draws its place's whole course through
  // the clip at once, so what is there in one frame cannot come apart from
  // what is there in the next; the clips' latent frame count must be a
  // multiple, and `dim` at least time_patch × patch² × channels.
  int64_t time_patch = 1;
  // Text rows the DiT attends to (the released models: 512). The captions are
  // short, and cross-attention over 512 rows would cost more than the rest.
  int64_t text_len = 32;
  // umT5
  int64_t text_dim = 128, text_ffn = 256, text_heads = 4, text_layers = 2;
  double text_position_lr = 20;  // learning-rate factor of umT5's relative-position tables
  double caption_dropout = 0.1;
  // Share of training clips in which one latent frame, chosen at random, is
  // noised less than the rest (σ·u, u uniform) and left out of the loss
  // (noise_batch). The DiT is told the clip's σ; the frame shows it where the
  // object is, and the direction word where it goes next, so the word pays at
  // every σ and not only where an ideal model would need it (0.93 and above).
  double given_frame = 0;
  // Extra loss weight of the latent cells where the object is (object_weights):
  // 0 weighs every cell alike. The object is a tenth of a frame, and its shape
  // a few cells at its edge; the background outweighs them in the mean.
  double object_weight = 0;
  // Adam steps of fit_latents on every cached clip's latents before training
  // (0: the encoder's own), at rate refine_lr: the DiT then learns latents
  // that the decoder draws with sharper outlines than the encoder's. The
  // cache records the two numbers; a cache made otherwise is encoded anew.
  int64_t refine_steps = 0;
  double refine_lr = 0.04;
  int64_t refine_batch = 16;  // clips fitted together (each fitted as if alone, up to rounding)
  // Noise levels σ are drawn (uniform, or logit-normal as in SD3) and shifted as
  // the sampler shifts its schedule (σ' = sσ / (1 + (s − 1)σ)), so training
  // visits the levels sampling does, σ near 1 included, where the caption alone
  // says what to draw. The embedded model samples with shift 3.
  SigmaDraw sigma = SigmaDraw::Uniform;
  double shift = 3.0;
  double ema = 0.999;
  // A trained model to start a fresh run from: a folder holding its
  // kinora-tiny-wan-dit and kinora-tiny-umt5 files (any float dtype, the
  // shipped bf16 ones too), whose configs must be this run's. Live and EMA
  // weights start as that model; the optimizer and the schedule start afresh.
  // Ignored when the run resumes from its own state.
  std::filesystem::path init_from;
  // Every this many steps (and when the stage completes), clips sampled from
  // noise with the EMA weights: dit-state/samples-STEP.ppm. 0: never.
  int64_t sample_every = 1000;
  // Heads per self-attention block started as position kernels (at most 3:
  // the same place in every frame, in the frame before, in the frame after;
  // init_locality_heads). At a fresh start, or added to a resumed run that has
  // fewer (its state.json records how many).
  int64_t locality_heads = 0;
  // Heads per block, after the locality heads, started as "where an object
  // moving left / right / up / down was one latent frame before" (4), and
  // also "… will be one latent frame on" (8); init_motion_heads. At a fresh
  // start, or added to a resumed run that has none.
  int64_t motion_heads = 0;
  // Heads per block after those, started as broad averages (init_pool_heads;
  // 2 or 4). At a fresh start only.
  int64_t pool_heads = 0;
  double locality_depth = 6.0;  // their q and k on the chosen RoPE pairs after the norm
  // Where the stage computes: the models, the latents and every step's tensors
  // live there (CPU or CUDA; the same code). Checkpoints are written on the CPU
  // in float32, so a run moves between machines.
  torch::Device device = torch::kCPU;
};
// Starts heads `first`..`heads` − 1 of every DiT block's self-attention as
// position kernels: head 0 "the same place in every frame", head 1 "the same
// place in the frame before", head 2 "… in the frame after" (at most 3). On the
// two highest-frequency height and width RoPE pairs of such a head (and for
// heads 1 and 2 the two highest time pairs), q and k get a constant part only:
// their weight rows zeroed, the bias at the typical size of the rest, the norm
// gain = `depth`, with k's time pairs turned so the score peaks one frame off.
// The score falls off with spatial distance (≈ depth²/√d · 0.54 logits a token
// away); the head's other channels keep their content. Wan normalises q and k
// over the whole width, so constant parts on these few channels leave the
// other heads as they were. An initialisation, not a change of architecture:
// the model stays a Wan DiT and trains on. Motion here is a fraction of a
// token per frame, so a token's content carries it; heads 1 and 2 hand each
// frame its neighbours' content at the same place to shift.
void init_locality_heads(torch::nn::Module& dit, int64_t num_heads, int64_t heads, double depth,
                         int64_t first = 0);

// Starts heads `first`..`first` + `count` − 1 (count 4 or 8) of every block as
// the same kind of kernel, peaked one latent frame back and one token against
// the motion for an object moving left, right, up, down (heads first + 0..3),
// then one latent frame on and one token with it (first + 4..7). With 2×2
// patches of a 4×-in-time VAE the objects move 0.7–1 token per latent frame,
// so such a head hands a token what the object held one frame earlier (or
// later) along one of the four paths, and the caption's direction word could
// choose between them (a DiT trained with them did not learn to: docs/training.md,
// "What was tried and did not help"). RoPE scores a sum of a time and a space
// term, so one head peaks at one (Δt, Δy, Δx) and not along a whole path;
// stacked blocks reach further.
void init_motion_heads(torch::nn::Module& dit, int64_t num_heads, int64_t first, int64_t count,
                       double depth);

// Starts heads `first`..`first` + `count` − 1 (count 2 or 4) of every block as
// broad averages around the token's own place: a Gaussian of 1 and of 2 tokens'
// width in the same frame (heads first + 0, 1), and the same in every frame
// (first + 2, 3). At high noise one token shows little of the object and the
// tokens around it, in its frame and the others, show more: an ideal model
// finds nearly all of the object by σ 0.93 (tools/direction-gap-toy.py), DiTs
// of one latent frame per token about 60% of it at 0.9 (docs/training.md,
// "What was tried and did not help").
void init_pool_heads(torch::nn::Module& dit, int64_t num_heads, int64_t first, int64_t count,
                     double depth);

// The noise levels of one training batch: `n` draws of o.sigma, shifted by o.shift.
torch::Tensor draw_sigmas(const DitOptions& o, int64_t n);

// The flow-matching input of one batch: x_σ = (1 − σ)·x0 + σ·ε for clips x0
// [B, C, F, H, W] at noise levels σ [B], except that with probability
// `given_frame` one latent frame of a clip, chosen at random, is noised to σ·u
// (u uniform in [0, 1)) and weighs 0 in the loss; every other frame weighs 1.
// Draws on the CPU generator (the same on every device); nothing is drawn when
// `given_frame` is 0, so such runs draw what they drew before the option.
struct NoisedBatch {
  torch::Tensor xt;      // [B, C, F, H, W]
  torch::Tensor weight;  // [B, 1, F, 1, 1]: 0 for a given frame, else 1
};
NoisedBatch noise_batch(const torch::Tensor& x0, const torch::Tensor& sigma,
                        const torch::Tensor& noise, double given_frame);

// Per-cell loss weights [B, 1, F, H, W] of latents x0 [B, C, F, H, W]: 1 + k
// where the object is, 1 elsewhere. The object's cells are those whose RMS
// distance (over channels) from their frame's background, the per-channel
// median of the frame, exceeds `threshold`, grown by one cell every way so that
// its edge, where the shape is, counts whole.
torch::Tensor object_weights(const torch::Tensor& x0, double k, double threshold = 0.8);

// How much the DiT listens to each word of the caption: the flow-matching loss
// on clips (latents [N, C, F, H, W], their captions of the grammar's form) with
// one word of every caption made wrong, relative to the loss with the true
// captions, in percent. The wrong word: the opposite direction, the next shape,
// the next colour that is neither the object's nor the background's. The same
// noise and noise levels (o.sigma, o.shift; a fixed seed) for every variant.
// A model that ignores a word scores 0 for it, whatever its loss; one that has
// learned it, clearly more. The loss alone does not show this: for DiTs of one
// latent frame per token the direction word was worth under 0.5% of it
// (docs/training.md, "What was tried and did not help").
struct WordGaps {
  double object = 0, background = 0, shape = 0, direction = 0;
  // The direction word again, with one latent frame of each clip given clean
  // (frame i mod F of clip i), over the other frames: how much the DiT uses
  // the word to follow an object it has been shown.
  double direction_given_frame = 0;
};
WordGaps word_gaps(diffusion::WanModel& dit, text::T5Encoder& te, const text::Tokenizer& tok,
                   const torch::Tensor& latents, const std::vector<std::string>& captions,
                   const DitOptions& o);

// How well the DiT finds what the clip holds at each noise level: the mean
// squared error of its x₀ estimate (x_σ − σ·v̂) on clips (latents [N, C, F, H,
// W], their captions) noised to each σ in `sigmas` (the same noise for every
// σ; a fixed seed). At σ near 1 nothing in x_σ says where the object is, so
// the error there is what a model that does not find it gets; how far below
// that it falls at σ 0.8–0.97 is how much of the object it finds in the
// noise. An ideal model of the embedded layout finds nearly all of it by σ
// 0.93 (tools/direction-gap-toy.py), and only a model that finds the object
// along its path can gain anything from the direction word.
std::vector<double> denoise_errors(diffusion::WanModel& dit, text::T5Encoder& te,
                                   const text::Tokenizer& tok, const torch::Tensor& latents,
                                   const std::vector<std::string>& captions, const DitOptions& o,
                                   const std::vector<double>& sigmas);
// The noise levels the DiT stage logs in dit-state/denoise.csv with every sheet.
extern const std::vector<double> kDenoiseSigmas;

// Stage 3: <run>/kinora-tiny-umt5.safetensors and kinora-tiny-wan-dit.safetensors
// (the EMA weights; + dit-state/). Needs stages 1 and 2 in the same run.
void train_dit(const DitOptions& o);
std::string options_problem(const DitOptions& o);

// A LoRA on a trained model's DiT that teaches it a word its grammar never
// had, "big" (objects about twice the size it ever drew): big clips and, as many,
// clips of the base grammar (so that what the model already draws stays),
// encoded by the model's VAE; the flow-matching loss of the DiT stage with the
// base weights frozen and low-rank updates (rank, alpha) on every Linear of the
// DiT's blocks and its text embedding, trained through layers::LinearAdapter.
// The DiT stage's options say the data and noise (dataset, batch, lr, warmup,
// shift, sigma, object_weight, caption_dropout, clip); its architecture
// options are ignored: the base model's files say it.
struct LoraOptions : DitOptions {
  // The base model's four kinora-tiny-* files; empty: the embedded model's
  // folder, found as `kinora generate` finds it (embedded::model_dir()).
  std::filesystem::path model_dir;
  double concept_share = 0.5;  // share of the clips that are big
  int64_t rank = 8;
  double alpha = 8;
};
// Writes <run>/kinora-tiny-big.safetensors (original-key LoRA, bf16, the
// recipe in its metadata) and <run>/lora-loss.csv; like the other stages it
// checkpoints every save_every steps and when cancelled (lora-state/), and
// resumes from there.
void train_lora(const LoraOptions& o);
std::string options_problem(const LoraOptions& o);

// [F, H, W, 3] uint8 (a render) → [3, F, H, W] float32 in [−1, 1] (a model's input).
torch::Tensor frames_to_video(const torch::Tensor& frames);

// umT5's output for `captions`, padding rows zeroed as the training step has it:
// [N, text_len, dim] on `device`.
torch::Tensor encode_captions(text::T5Encoder& te, const text::Tokenizer& tok,
                              const std::vector<std::string>& captions, int64_t text_len,
                              torch::Device device);

// Clips for training: `count` scenes from `first_seed` on, held-out combinations
// skipped. [B, 3, F, H, W] float32 in [−1, 1], and their captions.
std::pair<torch::Tensor, std::vector<std::string>> clip_batch(uint64_t first_seed, int64_t count,
                                                              const ClipSpec& spec);

}  // namespace kinora::training
