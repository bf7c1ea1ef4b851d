#include "cli/train_command.h"

#include <atomic>
#include <iostream>
#include <limits>
#include <memory>

#include "base/signals.h"
#include "cli/error_message.h"
#include "layers/precision.h"
#include "training/probe.h"
#include "training/train.h"

namespace kinora::cli {
namespace {

struct TrainArgs {
  std::string run_dir = "runs/tiny";
  int64_t vocab = 96;
  training::VaeOptions vae;
  training::DitOptions dit;
  training::LoraOptions lora;
  std::string precision = "auto";
  std::string sigma = "uniform";
  std::string placement = "anywhere";
  std::string device = "cpu";
  training::ProbeOptions probe;
  std::string probe_precision = "fp32";
  bool overwrite = false;
};

// A stage's options refused as the command line's other mistakes are (exit
// status 2), before anything is read or written.
template <class Options>
void check_stage_options(CLI::App* c, const Options& o) {
  c->final_callback([&o] {
    if (const auto problem = training::options_problem(o); !problem.empty())
      throw CLI::ValidationError(problem);
  });
}

void add_overwrite(CLI::App* c, TrainArgs& a) {
  c->add_flag("--overwrite", a.overwrite,
              "Replace the stage's outputs in the run folder (model files, report, logs) that "
              "this run did not write; without it such a file is refused by name");
}

// CLI11 reads "-1" into an unsigned option as its largest value; refused in the
// words its range errors have (cli/main.cpp says them in the command line's).
const CLI::Validator kUnsigned(
    [](std::string& v) {
      return v.find('-') == std::string::npos
                 ? std::string()
                 : "Value " + v + " not in range 0 to " +
                       std::to_string(std::numeric_limits<uint64_t>::max());
    },
    "UINT");

// --model of `train lora` and `train probe`: without it, the embedded model
// as `kinora generate` finds it (training::LoraOptions::model_dir).
constexpr const char* kModelHelp =
    "Folder with the four kinora-tiny-* files (default: the embedded model's folder, found as "
    "`kinora generate` finds it: $KINORA_ASSETS, else the installed assets, else the source "
    "tree's assets/)";

void add_common(CLI::App* c, TrainArgs& a, training::StageOptions& o) {
  c->add_option("--run", a.run_dir, "Run folder (checkpoints, loss log, models)")
      ->capture_default_str();
  c->add_option("--steps", o.steps, "Optimizer steps in total (a resumed run goes on to this)")
      ->capture_default_str();
  c->add_option("--batch", o.batch, "Clips per step")->capture_default_str();
  c->add_option("--lr", o.lr, "Peak learning rate (AdamW; warm-up, then cosine)")
      ->capture_default_str();
  c->add_option("--warmup", o.warmup, "Warm-up steps")->capture_default_str();
  c->add_option("--seed", o.seed, "Seed of the data, noise and initialisation")
      ->check(kUnsigned)
      ->capture_default_str();
  c->add_option("--precision", a.precision,
                "Compute precision: auto (bf16 on Ampere or later GPUs and on CPUs with bf16 "
                "arithmetic, else fp32), bf16 or fp32")
      ->check(CLI::IsMember({"auto", "bf16", "fp32"}))
      ->capture_default_str();
  c->add_option("--save-every", o.save_every, "Checkpoint every N steps")->capture_default_str();
  c->add_option("--log-every", o.log_every, "Loss log line every N steps")->capture_default_str();
}

}  // namespace

std::function<int()> add_train_command(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  auto* train = app.add_subcommand(
      "train",
      "Train the embedded default model (docs/training.md): tokenizer, then vae, then dit (and "
      "lora); each stage resumes from its last checkpoint, Ctrl-C saves before stopping, and "
      "a stage never replaces files it did not write unless given --overwrite");
  train->require_subcommand(1);
  auto* tok = train->add_subcommand("tokenizer", "SentencePiece vocabulary of the caption grammar");
  tok->add_option("--run", a->run_dir, "Run folder")->capture_default_str();
  tok->add_option("--vocab", a->vocab, "Vocabulary size (a soft limit)")
      ->check(CLI::Range(8, 1 << 20))
      ->capture_default_str();
  tok->add_flag("--overwrite", a->overwrite,
                "Replace a kinora-tiny-spm.model that is not the one these options make (a DiT "
                "trained with it no longer reads its captions right)");
  auto* vae = train->add_subcommand("vae", "The Wan 2.1 VAE (small base width) on clips");
  add_common(vae, *a, a->vae);
  add_overwrite(vae, *a);
  check_stage_options(vae, a->vae);
  vae->add_option("--dim", a->vae.dim, "Base width (the released VAE: 96)")->capture_default_str();
  vae->add_option("--crop", a->vae.crop, "Train on square crops of this size (0: whole frames)")
      ->capture_default_str();
  vae->add_option("--frames", a->vae.train_frames, "Frames per training clip (4k+1)")
      ->capture_default_str();
  vae->add_option("--spatial-compression", a->vae.spatial_compression,
                  "Pixels per latent cell: 8 (the released VAE) or 4 (one stage fewer)")
      ->check(CLI::IsMember({4, 8}))
      ->capture_default_str();
  vae->add_option("--time-compression", a->vae.time_compression,
                  "Frames per latent frame: 4 (the released VAE), 2, or 1")
      ->check(CLI::IsMember({1, 2, 4}))
      ->capture_default_str();
  vae->add_option("--inflate-from", a->vae.inflate_from,
                  "Start from a VAE trained on single frames, past-frame taps zeroed")
      ->check(CLI::ExistingFile);
  vae->add_option("--init-from", a->vae.init_from,
                  "A trained VAE of the same architecture (e.g. "
                  "assets/kinora-tiny-wan-vae.safetensors) to start a fresh run from; with "
                  "--decoder-only its latent statistics are kept")
      ->check(CLI::ExistingFile);
  vae->add_flag("--decoder-only", a->vae.decoder_only,
                "Train the decoder alone (the encoder and its latents stay as they are)");
  vae->add_option("--decoder-from", a->vae.decoder_from,
                  "With --init-from and --decoder-only: a VAE file whose decoder replaces "
                  "the --init-from file's before training (its encoder and statistics are kept)")
      ->check(CLI::ExistingFile);
  vae->add_option("--kl", a->vae.kl_weight, "Weight of the KL term")->capture_default_str();
  auto* dit = train->add_subcommand("dit", "umT5 and the Wan DiT, flow matching on VAE latents");
  add_common(dit, *a, a->dit);
  add_overwrite(dit, *a);
  check_stage_options(dit, a->dit);
  dit->add_option("--sample-every", a->dit.sample_every,
                  "Every N steps, clips sampled with the EMA weights: dit-state/samples-N.ppm, "
                  "and the loss with one caption word wrong: dit-state/word-gaps.csv (0: never)")
      ->capture_default_str();
  dit->add_option(
         "--locality-heads", a->dit.locality_heads,
         "Heads per block started as the same place in every frame / in the frame before / "
         "after (0-3; at a fresh start, or added to a run that has fewer)")
      ->capture_default_str();
  dit->add_option("--motion-heads", a->dit.motion_heads,
                  "Heads per block, after the locality heads, started as where an object "
                  "moving left / right / up / down was a latent frame before (4), and will "
                  "be a latent frame on (8); at a fresh start, or added to a run that has none")
      ->check(CLI::IsMember({0, 4, 8}))
      ->capture_default_str();
  dit->add_option("--pool-heads", a->dit.pool_heads,
                  "Heads per block, after the locality and motion heads, started as broad "
                  "averages around the token's place, in its frame (2) and also in every "
                  "frame (4); at a fresh start only")
      ->check(CLI::IsMember({0, 2, 4}))
      ->capture_default_str();
  dit->add_option("--device", a->device,
                  "Where to train: cpu, or cuda (a CUDA build of LibTorch; docs/training.md)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  dit->add_option("--dataset", a->dit.dataset, "Clips encoded once into latents")
      ->capture_default_str();
  dit->add_option("--window", a->dit.window,
                  "Latent frames per sample, random windows of the clips (0: whole clips; "
                  "a VAE without temporal compression only)")
      ->capture_default_str();
  dit->add_option("--dim", a->dit.dim, "DiT width")->capture_default_str();
  dit->add_option("--ffn", a->dit.ffn_dim, "DiT feed-forward width")->capture_default_str();
  dit->add_option("--patch", a->dit.patch, "Latent cells per token along height and width")
      ->check(CLI::IsMember({1, 2, 4}))
      ->capture_default_str();
  dit->add_option("--time-patch", a->dit.time_patch,
                  "Latent frames per token (1 as released; all of a clip's frames: each token "
                  "draws its place's whole course at once)")
      ->capture_default_str();
  dit->add_option("--heads", a->dit.num_heads, "DiT heads")->capture_default_str();
  dit->add_option("--layers", a->dit.num_layers, "DiT blocks")->capture_default_str();
  dit->add_option("--text-len", a->dit.text_len, "Text rows the DiT attends to")
      ->capture_default_str();
  dit->add_option("--text-dim", a->dit.text_dim, "umT5 width")->capture_default_str();
  dit->add_option("--text-layers", a->dit.text_layers, "umT5 blocks")->capture_default_str();
  dit->add_option("--text-position-lr", a->dit.text_position_lr,
                  "Learning-rate factor of umT5's relative-position tables (word order)")
      ->capture_default_str();
  dit->add_option("--caption-dropout", a->dit.caption_dropout,
                  "Share of steps trained on the empty caption")
      ->capture_default_str();
  dit->add_option("--given-frame", a->dit.given_frame,
                  "Share of clips with one latent frame noised less and left out of the loss, "
                  "so that the rest follows it (the direction word pays at every noise level)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  dit->add_option("--object-weight", a->dit.object_weight,
                  "Extra loss weight of the latent cells where the object is (0: none), so "
                  "its edge, where the shape is, is not outweighed by the background")
      ->check(CLI::Range(0.0, 100.0))
      ->capture_default_str();
  dit->add_option("--refine-steps", a->dit.refine_steps,
                  "Adam steps moving each cached clip's latents through the frozen decoder "
                  "towards the clip before training (0: the encoder's own), so that the DiT "
                  "learns latents the decoder draws sharper")
      ->check(CLI::Range(0, 10000))
      ->capture_default_str();
  dit->add_option("--refine-lr", a->dit.refine_lr, "Learning rate of that refinement")
      ->capture_default_str();
  dit->add_option("--refine-batch", a->dit.refine_batch,
                  "Clips refined together (a GPU wants hundreds; each clip is fitted as if alone, "
                  "up to float rounding)")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  dit->add_option("--init-from", a->dit.init_from,
                  "A trained model's folder (its kinora-tiny-wan-dit and kinora-tiny-umt5 "
                  "files, e.g. assets/) to start a fresh run from; same configs")
      ->check(CLI::ExistingDirectory);
  dit->add_option("--shift", a->dit.shift,
                  "Noise levels drawn are shifted as the sampler's schedule is (its --shift)")
      ->check(CLI::Range(1.0, 20.0))
      ->capture_default_str();
  dit->add_option("--sigma", a->sigma, "How noise levels are drawn before the shift")
      ->check(CLI::IsMember({"uniform", "logit-normal"}))
      ->capture_default_str();
  dit->add_option("--placement", a->placement,
                  "Where the clips' paths lie: anywhere in view, or centred (±3 px), so the "
                  "layout follows from the caption")
      ->check(CLI::IsMember({"anywhere", "centred"}))
      ->capture_default_str();

  auto* lora = train->add_subcommand(
      "lora",
      "A LoRA on a trained embedded model that teaches it the word \"big\" (objects twice "
      "the size it ever drew; <run>/kinora-tiny-big.safetensors; docs/training.md, \"L: the "
      "project's LoRA\")");
  a->lora.steps = 1500, a->lora.batch = 16, a->lora.lr = 1e-3, a->lora.warmup = 50;
  a->lora.dataset = 1024, a->lora.object_weight = 4, a->lora.log_every = 50;
  add_common(lora, *a, a->lora);
  add_overwrite(lora, *a);
  check_stage_options(lora, a->lora);
  lora->add_option("--model", a->lora.model_dir, kModelHelp)->check(CLI::ExistingDirectory);
  lora->add_option("--rank", a->lora.rank, "Rank of each update")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  lora->add_option("--alpha", a->lora.alpha, "Alpha (the updates scale by alpha / rank)")
      ->capture_default_str();
  lora->add_option("--dataset", a->lora.dataset, "Clips encoded once into latents")
      ->check(CLI::Range(16, 1 << 20))
      ->capture_default_str();
  lora->add_option("--concept-share", a->lora.concept_share,
                   "Share of the clips that are big (the rest: the base grammar's "
                   "scenes, so that what the model draws already stays)")
      ->check(CLI::Range(0.01, 1.0))
      ->capture_default_str();
  lora->add_option("--object-weight", a->lora.object_weight,
                   "Extra loss weight of the latent cells where the object is")
      ->check(CLI::Range(0.0, 100.0))
      ->capture_default_str();
  lora->add_option("--caption-dropout", a->lora.caption_dropout,
                   "Share of steps trained on the empty caption")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  lora->add_option("--shift", a->lora.shift, "Noise levels drawn at the sampler's shift")
      ->check(CLI::Range(1.0, 20.0))
      ->capture_default_str();

  auto* probe = train->add_subcommand(
      "probe",
      "Where a trained model loses an object's shape: real clips' latents with noise added, "
      "and redrawn from noise levels with their own caption and with the shape word swapped, "
      "measured as the semantic test measures (a Markdown table on standard output)");
  probe->add_option("--model", a->probe.model_dir, kModelHelp)->check(CLI::ExistingDirectory);
  probe->add_option("--clips", a->probe.clips_per_shape, "Clips of each shape")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  probe
      ->add_option("--noise", a->probe.noise_levels,
                   "RMS of the Gaussian noise added to the latents (normalised units)")
      ->capture_default_str();
  probe
      ->add_option("--sigmas", a->probe.redraw_sigmas,
                   "Noise levels the latents are redrawn from (in (0, 1]; 1: from pure noise)")
      ->capture_default_str();
  probe->add_option("--guidance", a->probe.guidance, "Classifier-free guidance of the redraws")
      ->capture_default_str();
  probe->add_option("--shift", a->probe.shift, "Shift of the redraws' time grid")
      ->check(CLI::Range(1.0, 20.0))
      ->capture_default_str();
  probe->add_option("--steps", a->probe.steps, "Euler steps of a redraw from σ 1 (fewer below)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  probe->add_option("--seed", a->probe.seed, "Seed of the scenes and the noise")
      ->capture_default_str();
  probe
      ->add_option("--fit-steps", a->probe.fit_steps,
                   "Adam steps of latents fitted to the clips' first frames through the decoder "
                   "(rows first and fit; 0: none)")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  probe->add_option("--fit-lr", a->probe.fit_lr, "Learning rate of the fitted latents")
      ->capture_default_str();
  probe
      ->add_option("--fit-frames", a->probe.fit_frames,
                   "Frames of each clip fitted (1 + 4k; the clip's 17: as the DiT stage's "
                   "--refine-steps fits them)")
      ->capture_default_str();
  probe->add_option("--precision", a->probe_precision, "Compute precision: fp32 or bf16")
      ->capture_default_str();

  return [=]() -> int {
    if (!*train) return -1;
    try {
      auto print = [](const std::string& s) { std::cout << s << std::endl; };
      if (*tok) {
        const bool wrote = training::train_tokenizer(a->run_dir, a->vocab, a->overwrite);
        std::cout << (wrote ? "wrote " : "unchanged (already this tokenizer): ") << a->run_dir
                  << "/" << embedded::kTokenizerFile << "\n";
        return 0;
      }
      if (*probe) {
        a->probe.precision = layers::parse_precision(a->probe_precision);
        a->probe.on_message = [](const std::string& s) { std::cerr << s << std::endl; };
        const auto rows = training::probe_shapes(a->probe);
        std::cout << training::probe_table(rows, a->probe.clips_per_shape);
        return 0;
      }
      // Ctrl-C, SIGTERM (Slurm, `timeout`) and SIGHUP: the stage saves its
      // checkpoint and stops; a second signal ends it at once.
      install_cancel_signals();
      training::StageOptions& o = *vae    ? static_cast<training::StageOptions&>(a->vae)
                                  : *lora ? static_cast<training::StageOptions&>(a->lora)
                                          : static_cast<training::StageOptions&>(a->dit);
      o.run_dir = a->run_dir;
      o.overwrite = a->overwrite;
      a->dit.device = torch::Device(a->device);
      const auto device = *vae || *lora ? torch::Device(torch::kCPU) : a->dit.device;
      o.precision = layers::resolve_precision(a->precision, device);
      o.on_message = print;
      if (const auto w = layers::precision_warning(o.precision, device); !w.empty()) print(w);
      o.cancel = &cancel_requested();
      a->dit.sigma =
          a->sigma == "uniform" ? training::SigmaDraw::Uniform : training::SigmaDraw::LogitNormal;
      a->dit.clip.placement =
          a->placement == "centred" ? training::Placement::Centred : training::Placement::Anywhere;
      if (*vae)
        training::train_vae(a->vae);
      else if (*lora)
        training::train_lora(a->lora);
      else
        training::train_dit(a->dit);
      return cancel_requested() ? cancel_exit_status() : 0;
    } catch (const std::exception& e) {
      std::cerr << "kinora: " << error_message(e) << "\n";
      return cancel_requested() ? cancel_exit_status() : 1;  // stopped before training
    }
  };
}

}  // namespace kinora::cli
