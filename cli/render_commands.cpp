#include "cli/render_commands.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "base/device.h"
#include "base/files.h"
#include "base/json.h"
#include "base/signals.h"
#include "base/strings.h"
#include "cli/batch.h"
#include "cli/error_message.h"
#include "cli/lora_command.h"
#include "embedded/model.h"
#include "media/output.h"
#include "pipeline/pipeline.h"
#include "render/render.h"
#include "render/semantic.h"
#include "render/sweep.h"

namespace kinora::cli {
namespace fs = std::filesystem;
using nlohmann::json;
using pipeline::Preset;

namespace {

std::string clock_string(double seconds) {
  const int s = static_cast<int>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

pipeline::RunCallbacks terminal_callbacks() {
  pipeline::RunCallbacks cb;
  const bool tty = ::isatty(STDERR_FILENO);
  cb.cancel = &cancel_requested();
  cb.on_message = [](const std::string& m) { std::cerr << "kinora: " << m << "\n"; };
  cb.on_step = [tty](const pipeline::StepEvent& e) {
    char line[160];
    if (tty) {
      const int width = 30, done = e.total ? width * e.step / e.total : width;
      std::string bar(static_cast<std::size_t>(done), '#');
      bar.resize(width, '-');
      std::snprintf(line, sizeof line, "\r[%s] step %d/%d  %.2f s/step  ETA %s ", bar.c_str(),
                    e.step, e.total, e.seconds_per_step, clock_string(e.eta_seconds).c_str());
      std::cerr << line << (e.step == e.total ? "\n" : "") << std::flush;
    } else {
      std::snprintf(line, sizeof line, "step %d/%d %.2f s/step ETA %.0f s\n", e.step, e.total,
                    e.seconds_per_step, e.eta_seconds);
      std::cerr << line << std::flush;
    }
  };
  cb.on_progress = [tty](const pipeline::Progress& p) {
    if (p.stage == "load") {
      std::cerr << "kinora: loading " << p.what << "\n";
      return;
    }
    if (p.stage != "decode") return;
    if (tty) {
      std::cerr << "\rdecoding: frame " << p.done << "/" << p.total << "   "
                << (p.done == p.total ? "\n" : "") << std::flush;
    } else if (p.done == p.total) {
      std::cerr << "decoded " << p.total << (p.total == 1 ? " frame\n" : " frames\n") << std::flush;
    }
  };
  return cb;
}

// --set KEY=VALUE and --lora of `render` and `sweep`: typed here, so a
// relative path means one from the current folder, not from the preset's.
// A model or LoRA entry that is no file here stays as typed (a name under
// models_dir, or a path from the preset's folder); a relative output lands
// in --output-dir when there is one.
void apply_command_line(Preset& p, const std::vector<std::string>& sets,
                        const std::vector<std::string>& loras, bool output_dir_given) {
  std::error_code ec;
  // only_if: a model (a file, or a diffusers folder) or a LoRA (a file) here.
  enum class If { Always, Exists, File };
  const auto from_here = [&](std::string& s, If only_if) {
    if (s.empty() || fs::path(s).is_absolute()) return;
    if (only_if == If::Always || (only_if == If::Exists && fs::exists(s, ec)) ||
        (only_if == If::File && fs::is_regular_file(s, ec)))
      s = fs::absolute(s, ec).string();
  };
  for (const auto& s : sets) {
    p.set(s);
    const std::string key = s.substr(0, s.find('='));
    if (key == "output" && !output_dir_given) from_here(p.output, If::Always);
    if (key == "models_dir") from_here(p.models_dir, If::Always);
    if (key == "loras")
      for (auto& l : p.loras) from_here(l.path, If::File);
    for (const auto& [name, member] : std::initializer_list<std::pair<const char*, std::string*>>{
             {"model", &p.model},
             {"model2", &p.model2},
             {"vae", &p.vae},
             {"text_encoder", &p.text_encoder},
             {"tokenizer", &p.tokenizer},
             {"clip", &p.clip},
             {"clip_tokenizer", &p.clip_tokenizer}})
      if (key == name) from_here(*member, If::Exists);
  }
  for (const auto& l : loras) {
    p.loras.push_back(parse_lora_arg(l));
    from_here(p.loras.back().path, If::File);
  }
}

// Renders `p` (`count` outputs of it in one batch: seeds seed …), printing
// each output's name on stdout.
int render_one(pipeline::Pipeline& pipe, const Preset& p, bool overwrite, int count = 1) {
  if (p.uses_embedded_model()) {
    // As the encoder reads it, <lora:…> tags taken out; a tag that is refused
    // stops the render, which says why, with no note first.
    std::optional<std::string> text;
    try {
      text = pipeline::prompt_loras(p.prompt).text;
    } catch (const Error&) {
    }
    if (text)
      if (const auto note = embedded::prompt_note(*text))
        std::cerr << "kinora: note: " << *note << "\n";
  }
  for (const auto& r : render::render_batch(pipe, p, count, terminal_callbacks(), overwrite)) {
    std::cerr << "kinora: wrote " << r.output.string() << " (" << r.preset.width << "x"
              << r.preset.height << ", " << r.preset.frames
              << (r.preset.frames == 1 ? " frame, seed " : " frames, seed ") << r.preset.seed
              << ", " << r.preset.device << ", " << r.preset.precision
              << (r.preset.fp8 ? " with FP8 products" : "") << "; load "
              << clock_string(r.timings.load_s) << ", text " << clock_string(r.timings.text_s)
              << ", sampling " << clock_string(r.timings.sampling_s) << ", decode "
              << clock_string(r.timings.decode_s) << ", encode " << clock_string(r.timings.encode_s)
              << ")\n";
    std::cout << r.output.string() << "\n";
  }
  return 0;
}

// A message about what the command line gave, in the command line's words:
// the preset's "command line: key 'text_encoder' …" as "--text-encoder …".
// Keys without an option of their own ('family', a LoRA's) stay keys.
std::string in_option_words(std::string m) {
  const std::string head = "command line: ";
  if (m.rfind(head, 0) != 0) return m;
  m.erase(0, head.size());
  static const std::map<std::string, std::string> options = {{"prompt", "--prompt"},
                                                             {"negative_prompt", "--negative"},
                                                             {"model", "--model"},
                                                             {"model2", "--model2"},
                                                             {"vae", "--vae"},
                                                             {"text_encoder", "--text-encoder"},
                                                             {"tokenizer", "--tokenizer"},
                                                             {"clip", "--clip"},
                                                             {"clip_tokenizer", "--clip-tokenizer"},
                                                             {"width", "--width"},
                                                             {"height", "--height"},
                                                             {"frames", "--frames"},
                                                             {"fps", "--fps"},
                                                             {"steps", "--steps"},
                                                             {"sampler", "--sampler"},
                                                             {"shift", "--shift"},
                                                             {"guidance", "--guidance"},
                                                             {"seed", "--seed"},
                                                             {"precision", "--precision"},
                                                             {"device", "--device"},
                                                             {"block_swap", "--block-swap"},
                                                             {"fp8", "--fp8"},
                                                             {"output", "--out"},
                                                             {"format", "--format"},
                                                             {"crf", "--crf"}};
  for (const auto& [key, option] : options) {
    const std::string quoted = "key '" + key + "'";
    for (auto at = m.find(quoted); at != std::string::npos; at = m.find(quoted, at)) {
      m.replace(at, quoted.size(), option);
      at += option.size();
    }
    // "(--steps on the command line)" after the option itself says nothing.
    const std::string aside = " (" + option + " on the command line)";
    if (const auto at = m.find(aside); at != std::string::npos) m.erase(at, aside.size());
  }
  for (const std::string from : {"models_dir (--models-dir)", "models_dir"})
    for (auto at = m.find(from); at != std::string::npos; at = m.find(from, at)) {
      m.replace(at, from.size(), "--models-dir");
      at += std::string("--models-dir").size();
    }
  return m;
}

// Runs `fn`, turning errors into a message and an exit code.
int guarded(const std::function<int()>& fn) {
  // On a terminal the progress bar may hold the line: end it first.
  const char* start = ::isatty(STDERR_FILENO) ? "\n" : "";
  try {
    return fn();
  } catch (const Cancelled&) {
    std::cerr << start << "kinora: cancelled; the render in progress wrote nothing\n";
    return cancel_exit_status();
  } catch (const std::exception& e) {
    std::cerr << start << "kinora: " << in_option_words(error_message(e)) << "\n";
    return 1;
  }
}

bool is_cancel_status(int rc) {
  return rc > 128 && cancel_signal() != 0;
}

// A folder given on the command line, absolute ("" stays "").
std::string absolute_or_empty(const std::string& folder) {
  return folder.empty() ? folder : fs::absolute(folder).string();
}

// A name no file has yet: kinora-SEED.EXT in `folder`, then kinora-SEED-2.EXT …;
// EXT from the format, else .png for one frame and .mp4 for more.
std::string fresh_output(const fs::path& folder, const Preset& preset) {
  const int64_t seed = preset.seed;
  const std::string ext = !preset.format.empty()
                              ? media::format_extension(media::parse_format(preset.format))
                          : preset.frames == 1 ? ".png"
                                               : ".mp4";
  const std::string stem = "kinora-" + std::to_string(seed);
  fs::path p = folder / (stem + ext);
  std::error_code ec;
  for (int k = 2; fs::exists(fs::symlink_status(p, ec)); ++k)
    p = folder / (stem + "-" + std::to_string(k) + ext);
  return p.string();
}

const char* const kBlockSwapHelp =
    "on a GPU, how many of the denoiser's blocks stay in host memory and visit the GPU in turn "
    "(a 14B model on a 24 GB card): 0 none, at most the model's blocks, or auto, as many as "
    "the free memory needs; the same video either way; ignored on the CPU";

const char* const kFp8Help =
    "FP8 products: the denoiser's block layers multiply E4M3 weights (an FP8 checkpoint's as "
    "stored, others quantized at load) by E4M3 inputs; on GPUs with FP8 tensor cores (Ada, "
    "Hopper: twice their bf16 matrix rate) in one FP8 product, with half the weight memory of "
    "bf16; elsewhere the same numbers in bf16 or fp32; frames differ slightly from a render "
    "without it (the preset key fp8)";

const char* const kDeviceHelp =
    "auto (the first CUDA device, else the CPU), cpu, cuda or cuda:N; noise is drawn on the CPU, "
    "so a seed gives the same video on every device";

}  // namespace

std::function<int()> add_render_commands(CLI::App& app) {
  auto opts = std::make_shared<Preset>();
  auto seed = std::make_shared<std::string>();
  auto gen_overwrite = std::make_shared<bool>(false);
  auto batch_size = std::make_shared<int>(1);
  auto gen_loras = std::make_shared<std::vector<std::string>>();
  auto gen = app.add_subcommand("generate", "Make a video or an image from a prompt");
  gen->add_option("--prompt,-p", opts->prompt, "what to show")->required();
  gen->add_option("--negative", opts->negative_prompt,
                  "what to avoid (default, and when empty: the model's own negative prompt, "
                  "Wan's for Wan models)");
  gen->add_option("--model", opts->model,
                  "the denoiser: a Wan or FLUX.1 DiT, an SDXL UNet or SDXL single-file "
                  "checkpoint (a file, or a name under --models-dir); its family picks the other "
                  "files and the defaults; with no model options, the embedded default model");
  gen->add_option("--model2", opts->model2, "the low-noise expert of a Wan 2.2 A14B pair");
  gen->add_option("--vae", opts->vae,
                  "the Wan 2.1 VAE, FLUX's autoencoder (ae.safetensors) or the SDXL VAE (SDXL: "
                  "default, the checkpoint's)");
  gen->add_option("--text-encoder", opts->text_encoder,
                  "umT5 (Wan), T5-XXL (FLUX) or OpenCLIP bigG (SDXL, "
                  "clip_g.safetensors; default, the checkpoint's)");
  gen->add_option("--tokenizer", opts->tokenizer,
                  "the T5 / umT5 SentencePiece model (spiece.model)");
  gen->add_option("--clip", opts->clip,
                  "FLUX and SDXL: the CLIP-L text encoder (clip_l.safetensors; SDXL: default, the "
                  "checkpoint's)");
  gen->add_option("--clip-tokenizer", opts->clip_tokenizer,
                  "FLUX and SDXL: the folder of CLIP's vocab.json and merges.txt (default: "
                  "beside the CLIP file, or under --models-dir)");
  gen->add_option("--models-dir", opts->models_dir,
                  "a ComfyUI models folder (diffusion_models/, checkpoints/, vae/, text_encoders/, "
                  "loras/) to find models by name")
      ->check(CLI::ExistingDirectory);
  // Defaults: Wan 2.1's, the embedded model's when no model is given, or the
  // family's of the model file (FLUX).
  const Preset tiny = Preset::embedded_defaults();
  auto dflt = [](auto wan, auto embedded_value) {
    std::ostringstream s;
    s << wan << "; embedded model: " << embedded_value;
    return s.str();
  };
  // Each option, and how to give its field (in *opts) the embedded model's value.
  std::vector<std::pair<CLI::Option*, std::function<void(const Preset&)>>> sampling;
  auto add = [&](const char* flag, auto Preset::*member, const std::string& help) {
    auto& field = (*opts).*member;
    auto* o = gen->add_option(flag, field, help)->default_str(dflt(field, tiny.*member));
    sampling.emplace_back(o, [opts, member](const Preset& d) { (*opts).*member = d.*member; });
  };
  add("--width", &Preset::width, "multiple of 16; FLUX: 1024; SDXL: 1024, multiple of 32");
  add("--height", &Preset::height, "multiple of 16; FLUX: 1024; SDXL: 1024, multiple of 32");
  add("--frames", &Preset::frames, "4k+1; FLUX: 1");
  add("--fps", &Preset::fps, "");
  add("--steps", &Preset::steps, "FLUX.1-dev: 28, schnell: 4; SDXL: 25");
  add("--sampler", &Preset::sampler,
      "see `kinora samplers`; FLUX: flow_euler; SDXL: dpmpp_2m_karras");
  add("--shift", &Preset::shift, "Wan; FLUX-dev shifts by the image size instead; SDXL takes none");
  add("--guidance", &Preset::guidance,
      "classifier-free guidance scale (SDXL: 6); FLUX-dev: its distilled guidance (3.5)");
  gen->add_option("--seed", *seed,
                  "0 to 2^53, or -1 for a random seed (the default; printed and embedded)");
  gen->add_option("--lora", *gen_loras,
                  "a LoRA: FILE[:STRENGTH] (a path, or a name in --models-dir's loras/, or the "
                  "embedded model's; FILE:HIGH:LOW gives a Wan 2.2 pair's experts their own "
                  "strengths, 0 leaving one out; strength 1 "
                  "by default, negative allowed); repeat to stack them");
  gen->add_option("--batch-size", *batch_size,
                  "outputs of this prompt sampled together, seeds SEED … SEED+N−1, written as "
                  "NAME-SEED.EXT (each restores on its own)")
      ->check(CLI::Range(1, pipeline::kMaxBatch))
      ->capture_default_str();
  add("--precision", &Preset::precision,
      "auto (bf16 on Ampere or later GPUs and on CPUs with bf16 arithmetic, else fp32), fp32 "
      "or bf16");
  gen->add_option("--device", opts->device, kDeviceHelp)->capture_default_str();
  gen->add_option("--block-swap", opts->block_swap, kBlockSwapHelp)
      ->check(block_swap_validator())
      ->capture_default_str();
  gen->add_flag("--fp8", opts->fp8, kFp8Help);
  gen->add_option("--out,-o", opts->output,
                  "output file (.mp4 .webm .mov .png), or a new or empty folder with --format "
                  "png-seq or ppm-seq (default: kinora-SEED.mp4, or .png for one frame)");
  gen->add_option("--format", opts->format,
                  "mp4, mp4-h265, webm, mov, png, png-seq, ppm-seq (default: from --out)");
  gen->add_option("--crf", opts->crf, "quality for mp4/webm, lower is better")
      ->capture_default_str();
  gen->add_flag("--overwrite", *gen_overwrite, "replace an existing output file");

  auto placement = std::make_shared<Placement>();
  auto add_placement = [&](CLI::App* cmd, bool overwrite) {
    cmd->add_option("--output-dir", placement->output_dir,
                    "write outputs inside this folder: relative outputs resolve in it, and an "
                    "output that would land outside it is refused")
        ->check(CLI::ExistingDirectory);
    cmd->add_option("--models-dir", placement->models_dir,
                    "find models named by presets without models_dir in this ComfyUI models "
                    "folder")
        ->check(CLI::ExistingDirectory);
    cmd->add_option("--device", placement->device,
                    std::string(kDeviceHelp) + " (default: each preset's device key)");
    cmd->add_option("--block-swap", placement->block_swap,
                    std::string(kBlockSwapHelp) + " (default: each preset's block_swap key)")
        ->check(block_swap_validator());
    auto* on = cmd->add_flag("--fp8", placement->fp8,
                             std::string(kFp8Help) + " (default: each preset's fp8 key)");
    cmd->add_flag("--no-fp8", placement->no_fp8, "no FP8 products, whatever the presets say")
        ->excludes(on);
    if (overwrite)
      cmd->add_flag("--overwrite", placement->overwrite, "replace an existing output file");
  };

  auto render_path = std::make_shared<std::string>();
  auto sets = std::make_shared<std::vector<std::string>>();
  auto ren = app.add_subcommand(
      "render",
      "Render a preset file (relative paths in it resolve against its folder, those of --set "
      "and --lora against this one; no output: kinora-SEED.mp4 here)");
  ren->add_option("preset", *render_path, "preset JSON")->required();
  ren->add_option("--set", *sets, "override a key: --set steps=20 --set prompt=\"a cat\"");
  auto ren_loras = std::make_shared<std::vector<std::string>>();
  ren->add_option("--lora", *ren_loras,
                  "add a LoRA to the preset's: FILE[:STRENGTH] (a path, or a name in loras/)");
  add_placement(ren, true);

  auto restore_path = std::make_shared<std::string>();
  auto res = app.add_subcommand(
      "restore",
      "Print the preset embedded in a Kinora output (PNG, MP4, WebM, MOV, a PNG sequence or a "
      "sidecar .json), with model file names and no output name");
  res->add_option("output", *restore_path,
                  "a Kinora output, a frame sequence folder, or a sidecar NAME.EXT.json")
      ->required();
  auto restore_models = std::make_shared<std::string>();
  res->add_option("--models-dir", *restore_models,
                  "check the files found there against those the output was made with (their "
                  "fingerprints), and say which differ and which are not found")
      ->check(CLI::ExistingDirectory);

  auto batch_paths = std::make_shared<std::vector<std::string>>();
  auto shard = std::make_shared<std::string>();
  auto dry = std::make_shared<bool>(false);
  auto bat = app.add_subcommand(
      "batch",
      "Render many presets (files, folders, JSON lists): checks them all first, renders the "
      "valid ones, skips finished outputs");
  bat->add_option("paths", *batch_paths, "preset files, folders of them, or JSON lists")
      ->required();
  bat->add_option(
      "--shard", *shard,
      "i/N: render only entries k with k mod N = i (0-based, e.g. $SLURM_ARRAY_TASK_ID/N)");
  bat->add_flag("--dry-run", *dry, "validate and list, render nothing");
  auto submitted = std::make_shared<std::string>();
  bat->add_option("--presets-fingerprint", *submitted,
                  "written by kinora slurm submit: render nothing, and fail, when the presets "
                  "found are not those submitted (one added or removed since shifts the shards)");
  auto status = std::make_shared<bool>(false);
  auto log_dir = std::make_shared<std::string>();
  bat->add_flag("--status", *status,
                "render nothing: say per preset whether its output is done, running (claimed "
                "by a batch), missing, failed (a FAIL line for it in --log-dir's task logs), "
                "damaged (does not read back as a whole render), stale (made from other "
                "settings) or foreign (a file there that is no Kinora render); exit 0 only when "
                "all are done");
  bat->add_option("--log-dir", *log_dir,
                  "with --status: the folder of the batch's task logs (kinora slurm submit's "
                  "--log-dir)")
      ->check(CLI::ExistingDirectory);
  add_placement(bat, false);

  auto sweep_path = std::make_shared<std::string>();
  auto sweep_axes = std::make_shared<std::vector<std::string>>();
  auto sweep_sets = std::make_shared<std::vector<std::string>>();
  auto sweep_loras = std::make_shared<std::vector<std::string>>();
  auto sweep_dry = std::make_shared<bool>(false);
  auto sweep_placement = std::make_shared<Placement>();
  auto sw = app.add_subcommand(
      "sweep",
      "Render a preset for every combination of a few keys' values (each cell a file of its "
      "own, restorable) and a labelled contact sheet of them: STEM-sweep-KEYS.png for images, "
      ".mp4 for videos");
  sw->add_option("preset", *sweep_path, "preset JSON")->required();
  sw->add_option("--axis", *sweep_axes,
                 "KEY=V1,V2,... (repeat; the first runs along the columns, the others down the "
                 "rows): seed, guidance, steps, sampler, shift, precision, fp8, prompt and "
                 "negative_prompt (values split by |), lora (the preset's one LoRA) or "
                 "lora:NAME (a LoRA of the preset, or one added); a LoRA axis gets an 'off' "
                 "column unless its values hold off or 0")
      ->required();
  sw->add_option("--set", *sweep_sets, "override a key of the preset: --set steps=20");
  sw->add_option("--lora", *sweep_loras,
                 "add a LoRA to the preset's: FILE[:STRENGTH] (a path, or a name in loras/)");
  sw->add_flag("--dry-run", *sweep_dry, "list the cells and where they go, render nothing");
  sw->add_option("--output-dir", sweep_placement->output_dir,
                 "write the cells and the sheet inside this folder (default: the preset's output "
                 "folder, else here)")
      ->check(CLI::ExistingDirectory);
  sw->add_option("--models-dir", sweep_placement->models_dir,
                 "find models named by the preset in this ComfyUI models folder")
      ->check(CLI::ExistingDirectory);
  sw->add_option("--device", sweep_placement->device, kDeviceHelp);
  sw->add_option("--block-swap", sweep_placement->block_swap,
                 std::string(kBlockSwapHelp) + " (default: the preset's block_swap key)")
      ->check(block_swap_validator());
  auto* sw_fp8 = sw->add_flag("--fp8", sweep_placement->fp8,
                              std::string(kFp8Help) + " (default: the preset's fp8 key)");
  sw->add_flag("--no-fp8", sweep_placement->no_fp8, "no FP8 products, whatever the preset says")
      ->excludes(sw_fp8);
  sw->add_flag("--overwrite", sweep_placement->overwrite,
               "render every cell again and replace existing cells and sheet (default: a cell "
               "whose file holds its render is reused)");

  auto judge = std::make_shared<render::SemanticRun>();
  auto judge_dir = std::make_shared<std::string>();
  auto judge_keep = std::make_shared<std::string>();
  auto sc = app.add_subcommand(
      "score",
      "Judge the embedded model (or a model folder) as its semantic test does: render the "
      "test's prompts and the held-out combinations, measure background, object colour, shape "
      "and direction from the decoded pixels");
  sc->add_option("--model-dir", *judge_dir,
                 "a folder with the four kinora-tiny-* files (a training run, assets/); default: "
                 "the embedded model")
      ->check(CLI::ExistingDirectory);
  sc->add_option("--prompts", judge->prompts, "at least this many trained combinations")
      ->capture_default_str();
  sc->add_option("--prompt-seed", judge->prompt_seed, "first seed of the prompt set (the test's)")
      ->capture_default_str();
  sc->add_option("--noise-seed", judge->noise_seed,
                 "prompt i of each set renders with seed noise-seed + i (the test's)")
      ->capture_default_str();
  sc->add_option("--steps", judge->preset.steps, "sampling steps")->capture_default_str();
  sc->add_option("--sampler", judge->preset.sampler, "see `kinora samplers`")
      ->capture_default_str();
  sc->add_option("--shift", judge->preset.shift, "the sampler's shift")->capture_default_str();
  sc->add_option("--guidance", judge->preset.guidance, "classifier-free guidance scale")
      ->capture_default_str();
  sc->add_option("--precision", judge->preset.precision, "auto, fp32 or bf16")
      ->capture_default_str();
  sc->add_option("--keep", *judge_keep,
                 "keep the MP4s in this folder, made if missing (default: none kept)");
  auto judge_overwrite = std::make_shared<bool>(false);
  sc->add_flag("--overwrite", *judge_overwrite,
               "with --keep: replace the MP4s an earlier score kept there");
  auto judge_loras = std::make_shared<std::vector<std::string>>();
  auto judge_big = std::make_shared<int>(0);
  sc->add_option("--lora", *judge_loras,
                 "render with this LoRA: FILE[:STRENGTH] (a path, or a name in the model "
                 "folder's loras/, e.g. kinora-tiny-big)");
  sc->add_option("--big", *judge_big,
                 "also render this many prompts that ask for a big object (the word the "
                 "project's LoRA teaches) and count those drawn big")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();

  return [=]() -> int {
    install_cancel_signals();
    if (*sc) {
      return guarded([&] {
        auto run = *judge;
        if (!judge_dir->empty()) {
          const fs::path d = *judge_dir;
          std::error_code ec;
          if (!fs::is_directory(d, ec))
            throw Error(*judge_dir + ": --model-dir " +
                        (fs::exists(d, ec) ? "names a file" : "does not exist") +
                        "; give a folder with the four kinora-tiny-* files");
          std::string missing;
          for (const char* f : {embedded::kDitFile, embedded::kVaeFile, embedded::kTextEncoderFile,
                                embedded::kTokenizerFile})
            if (!fs::is_regular_file(d / f, ec))
              missing.append(missing.empty() ? "" : ", ").append(f);
          if (!missing.empty())
            throw Error(*judge_dir + ": --model-dir lacks " + missing +
                        "; it holds a model's four kinora-tiny-* files (a training run's model/)");
          run.preset.model = (d / embedded::kDitFile).string();
          run.preset.vae = (d / embedded::kVaeFile).string();
          run.preset.text_encoder = (d / embedded::kTextEncoderFile).string();
          run.preset.tokenizer = (d / embedded::kTokenizerFile).string();
        }
        for (const auto& l : *judge_loras) run.preset.loras.push_back(parse_lora_arg(l));
        run.preset = Preset::from_json(run.preset.to_json(), "command line");
        const bool keep = !judge_keep->empty();
        if (keep) {
          run.folder = *judge_keep;
          std::error_code ec;
          if (fs::exists(run.folder, ec) && !fs::is_directory(run.folder, ec))
            throw Error(*judge_keep + ": --keep names a file; give a folder");
          fs::create_directories(run.folder, ec);
          if (ec) throw Error(*judge_keep + ": cannot make the folder: " + ec.message());
          run.overwrite = *judge_overwrite;
        } else {  // a new folder of this run's own, which it removes
          std::string tmpl = (fs::temp_directory_path() / "kinora-score-XXXXXX").string();
          if (!::mkdtemp(tmpl.data())) throw Error(tmpl + ": cannot make a temporary folder");
          run.folder = tmpl;
        }
        struct RemoveUnlessKept {  // the MP4s go, however the run ends
          fs::path folder;
          ~RemoveUnlessKept() {
            std::error_code ec;
            if (!folder.empty()) fs::remove_all(folder, ec);
          }
        } cleanup{keep ? fs::path() : run.folder};
        run.cancel = &cancel_requested();
        run.on_line = [](const std::string& line) { std::cout << line << std::endl; };
        pipeline::Pipeline pipe;
        const auto r = render::score_semantics(pipe, run);
        std::optional<embedded::SemanticScore> big;
        if (*judge_big > 0)
          big = render::score_scenes(
              pipe, run,
              embedded::big_prompts(static_cast<std::size_t>(*judge_big), run.prompt_seed), "big");
        std::cout << r.trained.line("trained") << "\n" << r.held_out.line("held-out") << "\n";
        if (big) std::cout << big->line("big") << "\n";
        return 0;
      });
    }
    if (*gen) {
      return guarded([&] {
        // The embedded model: its own defaults for what the command line did not set.
        std::optional<Preset> defaults;
        if (opts->uses_embedded_model()) {
          defaults = Preset::embedded_defaults();
        } else if (opts->family.empty() && !opts->model.empty()) {
          // The model file's family (an unreadable one is reported when rendering).
          try {
            defaults = pipeline::family_for(*opts).defaults_for(pipeline::resolve_dit_file(*opts));
          } catch (const Error&) {
          }
        }
        if (defaults)
          for (const auto& [option, use_default] : sampling)
            if (option->count() == 0) use_default(*defaults);
        if (defaults && opts->family.empty()) opts->family = defaults->family;
        Preset p = *opts;
        for (const auto& l : *gen_loras) p.loras.push_back(parse_lora_arg(l));
        // Given empty (a script's unset variable): refused, not a random seed.
        const bool given = gen->get_option("--seed")->count() > 0;
        p.seed = pipeline::resolve_seed(!given ? pipeline::kRandomSeed
                                               : pipeline::parse_seed(*seed, "--seed"));
        // A batch's outputs are NAME-SEED.EXT: kinora-SEED.EXT without --out.
        if (p.output.empty())
          p.output = *batch_size > 1
                         ? "kinora" + fs::path(fresh_output(".", p)).extension().string()
                         : fresh_output(".", p);
        p = Preset::from_json(p.to_json(), "command line");  // one validation for every entry point
        pipeline::Pipeline pipe;
        return render_one(pipe, p, *gen_overwrite, *batch_size);
      });
    }
    if (*ren) {
      return guarded([&] {
        Preset p = Preset::load(*render_path, absolute_or_empty(placement->models_dir));
        apply_command_line(p, *sets, *ren_loras, !placement->output_dir.empty());
        placement->apply(p, *render_path);
        if (p.output.empty()) {
          p.seed = pipeline::resolve_seed(p.seed);
          p.output =
              fresh_output(placement->output_dir.empty() ? fs::current_path()
                                                         : fs::absolute(placement->output_dir),
                           p);
        }
        pipeline::Pipeline pipe;
        return render_one(pipe, p, placement->overwrite);
      });
    }
    if (*sw) {
      return guarded([&] {
        Preset p = Preset::load(*sweep_path, absolute_or_empty(sweep_placement->models_dir));
        apply_command_line(p, *sweep_sets, *sweep_loras, !sweep_placement->output_dir.empty());
        if (p.output.empty()) {  // named after the preset file, here or in --output-dir
          const fs::path dir = sweep_placement->output_dir.empty()
                                   ? fs::current_path()
                                   : fs::absolute(sweep_placement->output_dir);
          p.output =
              (dir / (fs::path(*sweep_path).stem().string() +
                      (!p.format.empty() ? media::format_extension(media::parse_format(p.format))
                       : p.frames == 1   ? ".png"
                                         : ".mp4")))
                  .string();
        }
        sweep_placement->apply(p, *sweep_path);
        std::vector<render::SweepAxis> axes;
        for (const auto& a : *sweep_axes) axes.push_back(render::parse_sweep_axis(a));
        const auto plan = render::plan_sweep(p, axes);
        std::cerr << "kinora: sweep of " << plan.cells.size()
                  << (plan.cells.size() == 1 ? " cell (" : " cells (") << plan.columns << " x "
                  << plan.rows << ")";
        if (std::none_of(axes.begin(), axes.end(),
                         [](const render::SweepAxis& a) { return a.key == "seed"; }))
          std::cerr << ", seed " << plan.cells[0].preset.seed;
        std::cerr << "\n";
        if (*sweep_dry) {
          const auto reuse = render::check_sweep(plan, sweep_placement->overwrite);
          for (std::size_t i = 0; i < plan.cells.size(); ++i)
            std::cout << (reuse[i] ? "reuse  " : "plan   ")
                      << plan.cells[i].preset.output_path().string() << "\n";
          std::cout << "sheet  " << plan.sheet.string() << "\n";
          return 0;
        }
        render::SweepCallbacks cb;
        cb.run = terminal_callbacks();
        cb.on_cell = [](std::size_t i, std::size_t n, const std::string& values) {
          std::cerr << "kinora: cell " << i + 1 << "/" << n << ": " << values << "\n";
        };
        cb.on_reused = [](const fs::path& f) {
          std::cerr << "kinora: " << f.string() << " holds this cell already; reused\n";
        };
        pipeline::Pipeline pipe;
        const auto r = render::run_sweep(pipe, plan, cb, sweep_placement->overwrite);
        for (const auto& c : r.cells) std::cout << c.string() << "\n";
        std::cout << r.sheet.string() << "\n";
        std::cerr << "kinora: " << r.rendered << " rendered, " << r.reused
                  << " reused; contact sheet " << r.sheet.string()
                  << (r.sheet_kept ? " (as it was)\n" : "\n");
        return 0;
      });
    }
    if (*res) {
      return guarded([&] {
        const auto meta = media::read_embedded_parameters(*restore_path);
        const auto p = Preset::restored(meta, *restore_path);
        // Cut after its parameters: they are whole (they parsed), the picture not.
        if (const auto cut = media::cut_short(*restore_path); !cut.empty())
          std::cerr << "kinora: note: " << *restore_path << " is " << cut
                    << "; its parameters are whole, its frames are not\n";
        // A sweep's contact sheet records its first cell's preset: said, on
        // stderr, so that the preset on stdout stays a preset.
        if (meta.contains("sweep") && meta["sweep"].is_object()) {
          std::string axes;
          if (const auto& list = meta["sweep"]["axes"]; list.is_array())
            for (const auto& a : list)
              if (a.is_object() && a.contains("key") && a["key"].is_string())
                axes += (axes.empty() ? "" : ", ") + a["key"].get<std::string>();
          std::cerr << "kinora: " << *restore_path << " is a sweep's contact sheet (axes: " << axes
                    << "); this is its first cell's preset\n";
        }
        std::cout << p.to_json().dump(2) << "\n";
        if (!restore_models->empty()) {
          auto found = p;
          found.models_dir = fs::absolute(*restore_models).string();
          std::vector<std::string> missing;
          for (const auto& f : render::changed_since(meta, found, &missing))
            std::cerr << "kinora: " << f << " is not the file " << *restore_path
                      << " was made with (its contents differ): a render of this preset will "
                         "not match it\n";
          for (const auto& m : missing)
            std::cerr << "kinora: not found in " << *restore_models << ": " << m << "\n";
        }
        return 0;
      });
    }
    if (*bat) {
      return guarded([&] {
        int index = 0, count = 1;
        if (!shard->empty()) {
          char rest = 0;
          if (std::sscanf(shard->c_str(), "%d/%d%c", &index, &count, &rest) != 2 || count < 1 ||
              index < 0 || index >= count)
            throw Error("--shard '" + *shard + "': expected i/N with 0 ≤ i < N");
        }
        auto entries =
            collect_presets(*batch_paths, std::cerr, absolute_or_empty(placement->models_dir));
        if (entries.empty()) throw Error("no presets found in the paths given");
        validate_entries(entries, *placement);
        if (*status) return batch_status(entries, *log_dir, std::cout);
        if (!submitted->empty() && entries_fingerprint(entries) != *submitted)
          throw Error(
              "the presets found (" +
              counted(static_cast<long long>(entries.size()), "preset", "presets") +
              ") are not those submitted: a preset added or removed since shifts every task's "
              "share, so this task renders nothing; submit again (finished outputs are "
              "skipped)");
        int invalid = 0, mine = 0;
        for (std::size_t k = 0; k < entries.size(); ++k) {
          if (static_cast<int>(k % static_cast<std::size_t>(count)) != index) continue;
          ++mine;
          if (!entries[k].preset) ++invalid, std::cout << "INVALID  " << entries[k].error << "\n";
        }
        std::cerr << "kinora: "
                  << counted(static_cast<long long>(entries.size()), "preset", "presets") << ", "
                  << mine << " in shard " << index << "/" << count
                  << (invalid ? ", " + std::to_string(invalid) + " invalid" : "") << "\n";
        int failed = 0, skipped = 0, done = 0;
        pipeline::Pipeline pipe;  // models stay loaded across the batch
        // One entry; `last_look`: a second look at one another process was
        // rendering at the first (it may have died since). A cancel's exit
        // status, or nothing.
        std::vector<std::size_t> later;
        auto one = [&](std::size_t k, bool last_look) -> std::optional<int> {
          const auto& [source, preset, error] = entries[k];
          const auto out = preset->output_path();
          // Outputs appear only when complete; the user's own file, or one
          // that no longer reads as a render, is never replaced.
          using State = ExistingOutput::State;
          if (const auto existing = existing_output(out, *preset); existing.state != State::none) {
            if (existing.state == State::foreign || existing.state == State::damaged) {
              std::cerr << "kinora: " << existing.explain(out) << "\n";
              std::cout << "FAIL  " << source << "\n";
              ++failed;
              return std::nullopt;
            }
            std::cout << "skip  " << source << "  " << out.string()
                      << (existing.state == State::done
                              ? std::string(" (exists)\n")
                              : " (exists, " +
                                    (existing.why.empty()
                                         ? std::string("made from other settings than the "
                                                       "preset's now")
                                         : existing.why) +
                                    ": delete it and its .json to render it again)\n");
            ++skipped;
            return std::nullopt;
          }
          // The parameters file of an earlier render whose video is gone is
          // kept (it may be the only record of a video moved elsewhere). Only
          // Kinora's own: beside an image sequence's folder "x", "x.json" may
          // be the user's preset itself.
          if (const fs::path side = out.string() + ".json"; media::is_kinora_sidecar(side)) {
            std::cerr << "kinora: " << side.string() << " is left from an earlier render of "
                      << out.filename().string() << "; delete it to have that rendered again\n";
            std::cout << "FAIL  " << source << "\n";
            ++failed;
            return std::nullopt;
          }
          if (*dry) {
            std::cout << "plan  " << source << "  " << out.string() << "\n";
            return std::nullopt;
          }
          // Another batch over the same presets (an overlapping Slurm array)
          // may be rendering this one: it is left to it.
          const OutputClaim claim(out);
          if (!claim.held() && !last_look) {
            std::cout << "later  " << source << "  " << out.string() << " (being rendered by "
                      << claim.holder() << "; looked at again at the end)\n";
            later.push_back(k);
            return std::nullopt;
          }
          if (!claim.held()) {
            std::cout << "skip  " << source << "  " << out.string() << " (being rendered by "
                      << claim.holder() << ")\n";
            ++skipped;
            return std::nullopt;
          }
          if (existing_output(out, *preset).state == ExistingOutput::State::done) {
            std::cout << "skip  " << source << "  " << out.string()
                      << " (rendered meanwhile by another process)\n";
            ++skipped;
            return std::nullopt;
          }
          const int rc = guarded([&] { return render_one(pipe, *preset, false); });
          if (is_cancel_status(rc)) {
            std::cerr << "kinora: batch cancelled: " << done << " rendered, " << skipped
                      << " skipped, " << failed << " failed before it\n";
            return rc;
          }
          if (rc && existing_output(out, *preset).state == ExistingOutput::State::done) {
            // Another process (a second batch over the same presets) wrote
            // this render meanwhile: it is done, and kept.
            std::cout << "skip  " << source << "  " << out.string()
                      << " (rendered meanwhile by another process)\n";
            ++skipped;
          } else if (rc) {
            ++failed, std::cout << "FAIL  " << source << "\n";
          } else {
            ++done;
          }
          return std::nullopt;
        };
        for (std::size_t k = 0; k < entries.size(); ++k)
          if (static_cast<int>(k % static_cast<std::size_t>(count)) == index && entries[k].preset)
            if (const auto rc = one(k, false)) return *rc;
        // The presets another process held at the first look: rendered once
        // its claim is released or goes stale (untouched for 5 minutes: a
        // machine that died), left to it once it shows it runs (a process of
        // this machine that is there, or a claim touched since: its holder
        // touches it every 30 s). All are watched at once.
        std::vector<std::pair<std::size_t, std::int64_t>> waiting;
        for (const auto k : later) {
          const auto out = entries[k].preset->output_path();
          const auto seen = OutputClaim::seen(out);
          if (seen.holder.empty()) {
            if (const auto rc = one(k, true)) return *rc;
          } else if (seen.running) {
            std::cout << "skip  " << entries[k].source << "  " << out.string()
                      << " (being rendered by " << seen.holder << ")\n";
            ++skipped;
          } else {
            waiting.emplace_back(k, seen.touched_ns);
          }
        }
        if (!waiting.empty())
          std::cerr << "kinora: waiting on "
                    << counted(static_cast<long long>(waiting.size()), "output", "outputs")
                    << " claimed by another machine: left to it once it touches its claim, "
                       "rendered here once the claim is released or untouched for 5 minutes\n";
        while (!waiting.empty()) {
          for (int tenth = 0; tenth < 20 && !cancel_requested(); ++tenth)
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
          if (cancel_requested()) {
            std::cerr << "kinora: batch cancelled while waiting on other machines' claims: " << done
                      << " rendered, " << skipped << " skipped, " << failed
                      << " failed before it\n";
            return cancel_exit_status();
          }
          for (auto it = waiting.begin(); it != waiting.end();) {
            const auto k = it->first;
            const auto out = entries[k].preset->output_path();
            const auto seen = OutputClaim::seen(out);
            if (seen.holder.empty()) {
              it = waiting.erase(it);
              if (const auto rc = one(k, true)) return *rc;
            } else if (seen.running || seen.touched_ns != it->second) {
              std::cout << "skip  " << entries[k].source << "  " << out.string()
                        << " (being rendered by " << seen.holder << ")\n";
              ++skipped;
              it = waiting.erase(it);
            } else {
              ++it;
            }
          }
        }
        std::cerr << "kinora: " << done << " rendered, " << skipped << " skipped, " << failed
                  << " failed" << (invalid ? ", " + std::to_string(invalid) + " invalid" : "")
                  << "\n";
        return failed || invalid ? 1 : 0;
      });
    }
    return -1;
  };
}

}  // namespace kinora::cli
