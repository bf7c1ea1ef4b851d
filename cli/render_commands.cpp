#include "cli/render_commands.h"

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "media/output.h"
#include "pipeline/embedded.h"
#include "pipeline/semantic.h"
#include "pipeline/wan_pipeline.h"
#include "training/train.h"

namespace kinora::cli {
namespace fs = std::filesystem;
using nlohmann::json;
using pipeline::Preset;

namespace {

// Ctrl-C: the first asks the render to stop (within a step, leaving no file);
// the second ends the process.
std::atomic<bool> g_cancel{false};
void on_sigint(int) {
  if (g_cancel.exchange(true)) std::_Exit(130);
}

std::string clock_string(double seconds) {
  const int s = static_cast<int>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

pipeline::RunCallbacks terminal_callbacks() {
  pipeline::RunCallbacks cb;
  const bool tty = ::isatty(STDERR_FILENO);
  cb.cancel = &g_cancel;
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
  return cb;
}

int render_one(pipeline::WanPipeline& pipe, const Preset& p) {
  if (p.uses_embedded_model())
    if (const auto note = pipeline::embedded_prompt_note(p.prompt))
      std::cerr << "kinora: note: " << *note << "\n";
  const auto r = pipe.render(p, terminal_callbacks());
  std::cerr << "kinora: wrote " << r.output.string() << " (" << r.preset.width << "x"
            << r.preset.height << ", " << r.preset.frames << " frames, seed " << r.preset.seed
            << "; text " << clock_string(r.timings.text_s) << ", sampling "
            << clock_string(r.timings.sampling_s) << ", decode " << clock_string(r.timings.decode_s)
            << ", encode " << clock_string(r.timings.encode_s) << ")\n";
  std::cout << r.output.string() << "\n";
  return 0;
}

// Runs `fn`, turning errors into a message and an exit code.
int guarded(const std::function<int()>& fn) {
  try {
    return fn();
  } catch (const pipeline::Cancelled&) {
    std::cerr << "\nkinora: cancelled; no output was written\n";
    return 130;
  } catch (const std::exception& e) {
    std::cerr << "\nkinora: " << e.what() << "\n";
    return 1;
  }
}

// A batch entry: a preset and where it came from.
struct Entry {
  std::string source;  // "file.json" or "list.json[3]"
  json preset;
};

std::vector<Entry> collect_presets(const std::vector<std::string>& paths) {
  std::vector<fs::path> files;
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      for (const auto& e : fs::recursive_directory_iterator(p))
        if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
    } else if (fs::is_regular_file(p, ec)) {
      files.push_back(p);
    } else {
      throw Error(p + ": no such file or folder");
    }
  }
  std::sort(files.begin(), files.end());
  std::vector<Entry> out;
  for (const auto& f : files) {
    std::ifstream in(f);
    json j;
    try {
      j = json::parse(in);
    } catch (const json::parse_error& e) {
      throw Error(f.string() + ": not valid JSON: " + e.what());
    }
    if (j.is_array()) {
      for (std::size_t i = 0; i < j.size(); ++i)
        out.push_back({f.string() + "[" + std::to_string(i) + "]", j[i]});
    } else {
      out.push_back({f.string(), j});
    }
  }
  return out;
}

}  // namespace

std::function<int()> add_render_commands(CLI::App& app) {
  auto opts = std::make_shared<Preset>();
  auto seed = std::make_shared<int64_t>(-1);
  auto gen = app.add_subcommand("generate", "Make a video from a prompt");
  gen->add_option("--prompt,-p", opts->prompt, "what to show")->required();
  gen->add_option("--negative", opts->negative_prompt,
                  "what to avoid (default: Wan's negative prompt)");
  gen->add_option("--model", opts->model,
                  "the Wan DiT (a file, or a name under --models-dir); with no model options, "
                  "the embedded default model");
  gen->add_option("--model2", opts->model2, "the low-noise expert of a Wan 2.2 A14B pair");
  gen->add_option("--vae", opts->vae, "the Wan 2.1 VAE");
  gen->add_option("--text-encoder", opts->text_encoder, "the umT5 encoder");
  gen->add_option("--tokenizer", opts->tokenizer, "the umT5 SentencePiece model (spiece.model)");
  gen->add_option(
      "--models-dir", opts->models_dir,
      "a ComfyUI models folder (diffusion_models/, vae/, text_encoders/) to find models by name");
  // Defaults: Wan 2.1's, or the embedded model's when no model is given.
  const Preset tiny = Preset::embedded_defaults();
  auto dflt = [](auto wan, auto embedded) {
    std::ostringstream s;
    s << wan << "; embedded model: " << embedded;
    return s.str();
  };
  // Each option, and how to give its field (in *opts) the embedded model's value.
  std::vector<std::pair<CLI::Option*, std::function<void()>>> sampling;
  auto add = [&](const char* flag, auto& field, const std::string& help, auto embedded_value) {
    auto* o = gen->add_option(flag, field, help)->default_str(dflt(field, embedded_value));
    sampling.emplace_back(o, [&field, embedded_value] { field = embedded_value; });
  };
  add("--width", opts->width, "multiple of 16", tiny.width);
  add("--height", opts->height, "multiple of 16", tiny.height);
  add("--frames", opts->frames, "4k+1", tiny.frames);
  add("--fps", opts->fps, "", tiny.fps);
  add("--steps", opts->steps, "", tiny.steps);
  add("--sampler", opts->sampler, "see `kinora samplers`", tiny.sampler);
  add("--shift", opts->shift, "", tiny.shift);
  add("--guidance", opts->guidance, "classifier-free guidance scale", tiny.guidance);
  gen->add_option("--seed", *seed, "default: a random seed (printed and embedded)");
  add("--precision", opts->precision,
      "auto (bf16 on Ampere or later GPUs and on CPUs with bf16 arithmetic, else fp32), fp32 "
      "or bf16",
      tiny.precision);
  gen->add_option("--out,-o", opts->output,
                  "output file (.mp4 .webm .mov .png) or folder (PNG sequence)");
  gen->add_option("--format", opts->format,
                  "mp4, mp4-h265, webm, mov, png-seq, png (default: from --out)");
  gen->add_option("--crf", opts->crf, "quality for mp4/webm, lower is better")
      ->capture_default_str();

  auto render_path = std::make_shared<std::string>();
  auto sets = std::make_shared<std::vector<std::string>>();
  auto ren = app.add_subcommand("render", "Render a preset file");
  ren->add_option("preset", *render_path, "preset JSON")->required();
  ren->add_option("--set", *sets, "override a key: --set steps=20 --set prompt=\"a cat\"");

  auto restore_path = std::make_shared<std::string>();
  auto res = app.add_subcommand(
      "restore", "Print the preset embedded in a Kinora output (PNG, MP4, WebM, MOV)");
  res->add_option("output", *restore_path)->required();

  auto batch_paths = std::make_shared<std::vector<std::string>>();
  auto shard = std::make_shared<std::string>();
  auto dry = std::make_shared<bool>(false);
  auto bat = app.add_subcommand(
      "batch", "Render many presets (files, folders, JSON lists); skips finished outputs");
  bat->add_option("paths", *batch_paths, "preset files, folders of them, or JSON lists")
      ->required();
  bat->add_option(
      "--shard", *shard,
      "i/N: render only entries k with k mod N = i (0-based, e.g. $SLURM_ARRAY_TASK_ID/N)");
  bat->add_flag("--dry-run", *dry, "validate and list, render nothing");

  auto judge = std::make_shared<pipeline::SemanticRun>();
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
  sc->add_option("--keep", *judge_keep, "keep the MP4s in this folder (default: none kept)");

  return [=]() -> int {
    std::signal(SIGINT, on_sigint);
    if (*sc) {
      return guarded([&] {
        auto run = *judge;
        if (!judge_dir->empty()) {
          const fs::path d = *judge_dir;
          run.preset.model = (d / training::kDitFile).string();
          run.preset.vae = (d / training::kVaeFile).string();
          run.preset.text_encoder = (d / training::kTextEncoderFile).string();
          run.preset.tokenizer = (d / training::kTokenizerFile).string();
        }
        run.preset = Preset::from_json(run.preset.to_json(), "command line");
        const bool keep = !judge_keep->empty();
        run.folder =
            keep ? fs::path(*judge_keep)
                 : fs::temp_directory_path() / ("kinora-score-" + std::to_string(::getpid()));
        fs::create_directories(run.folder);
        struct RemoveUnlessKept {  // the MP4s go, however the run ends
          fs::path folder;
          ~RemoveUnlessKept() {
            std::error_code ec;
            if (!folder.empty()) fs::remove_all(folder, ec);
          }
        } cleanup{keep ? fs::path() : run.folder};
        run.cancel = &g_cancel;
        run.on_line = [](const std::string& line) { std::cout << line << std::endl; };
        pipeline::WanPipeline pipe;
        const auto r = pipeline::score_semantics(pipe, run);
        std::cout << r.trained.line("trained") << "\n" << r.held_out.line("held-out") << "\n";
        return 0;
      });
    }
    if (*gen) {
      return guarded([&] {
        // The embedded model: its own defaults for what the command line did not set.
        if (opts->uses_embedded_model())
          for (const auto& [option, use_embedded] : sampling)
            if (option->count() == 0) use_embedded();
        Preset p = *opts;
        p.seed = *seed >= 0 ? *seed : static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
        if (p.output.empty()) p.output = "kinora-" + std::to_string(p.seed) + ".mp4";
        p = Preset::from_json(p.to_json(), "command line");  // one validation for every entry point
        pipeline::WanPipeline pipe;
        return render_one(pipe, p);
      });
    }
    if (*ren) {
      return guarded([&] {
        Preset p = Preset::load(*render_path);
        for (const auto& s : *sets) p.set(s);
        pipeline::WanPipeline pipe;
        return render_one(pipe, p);
      });
    }
    if (*res) {
      return guarded([&] {
        const auto j = json::parse(media::read_embedded_json(*restore_path));
        if (!j.contains("preset"))
          throw Error(*restore_path + ": the embedded parameters hold no preset");
        std::cout << j["preset"].dump(2) << "\n";
        return 0;
      });
    }
    if (*bat) {
      return guarded([&] {
        int index = 0, count = 1;
        if (!shard->empty()) {
          if (std::sscanf(shard->c_str(), "%d/%d", &index, &count) != 2 || count < 1 || index < 0 ||
              index >= count)
            throw Error("--shard '" + *shard + "': expected i/N with 0 ≤ i < N");
        }
        const auto entries = collect_presets(*batch_paths);
        std::vector<std::pair<std::string, Preset>> mine;
        for (std::size_t k = 0; k < entries.size(); ++k) {
          Preset p =
              Preset::from_json(entries[k].preset, entries[k].source);  // validate all, render ours
          if (p.output.empty())
            throw Error(entries[k].source + ": key 'output' is missing (a batch needs it)");
          if (static_cast<int>(k % static_cast<std::size_t>(count)) == index)
            mine.emplace_back(entries[k].source, p);
        }
        std::cerr << "kinora: " << entries.size() << " presets, " << mine.size() << " in shard "
                  << index << "/" << count << "\n";
        int failed = 0, skipped = 0, done = 0;
        pipeline::WanPipeline pipe;  // models stay loaded across the batch
        for (const auto& [source, p] : mine) {
          std::error_code ec;
          if (fs::exists(p.output, ec)) {  // outputs appear only when complete (renamed into place)
            std::cout << "skip  " << source << "  " << p.output << " (exists)\n";
            ++skipped;
            continue;
          }
          if (*dry) {
            std::cout << "plan  " << source << "  " << p.output << "\n";
            continue;
          }
          const int rc = guarded([&] { return render_one(pipe, p); });
          if (rc == 130) return rc;
          if (rc)
            ++failed, std::cout << "FAIL  " << source << "\n";
          else
            ++done;
        }
        std::cerr << "kinora: " << done << " rendered, " << skipped << " skipped, " << failed
                  << " failed\n";
        return failed ? 1 : 0;
      });
    }
    return -1;
  };
}

}  // namespace kinora::cli
