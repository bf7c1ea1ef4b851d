// Reports (does not assert) a whole Wan text-to-video job at real sizes, the
// way a user runs it, with what the process costs the system beside the seconds:
// random-weight files of the real shapes (Wan 2.1 1.3B in bf16, the Wan 2.1 VAE,
// umT5-XXL in bf16: 24 layers, vocabulary 256,384, 11.4 GB), written to a
// scratch folder once; then the job (the prompt and Wan's default negative
// prompt, guided steps) rendered twice in one process: cold (models loaded,
// prompts encoded) and again (models kept, prompts from the memory cache; the
// disk cache is off). Each stage reports seconds, minor and major page faults,
// user and system CPU seconds; the run reports the process's peak resident
// memory (VmHWM).
//
//   render_bench [--scratch DIR] [--width 256 --height 256 --frames 17]
//                [--steps 2] [--sampler euler] [--precision auto]
//                [--evict] [--device cpu|cuda] [--repeat 2] [--fp8]
//
// --evict drops the weight files from the page cache first (posix_fadvise), as
// after another program has pushed them out; the tokenizer is the fixtures'
// tiny SentencePiece model (the real one is not in the repository), so the
// token counts differ a little from umT5's own.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include "base/runtime.h"
#include "bench/bench_util.h"
#include "diffusion/wan_dit.h"
#include "pipeline/pipeline.h"
#include "text/t5.h"
#include "vae/wan_vae.h"

using namespace kinora;
namespace fs = std::filesystem;

namespace {

// umT5-XXL without ever holding it: one layer's names and shapes, repeated.
void save_random_umt5_xxl(const fs::path& path) {
  text::T5Config one;
  one.vocab = 8, one.num_layers = 1;
  text::T5Encoder e(one);
  const text::T5Config xxl;  // the defaults are umT5-XXL's
  std::vector<io::TensorSpec> specs;
  for (const auto& p : e.module().named_parameters()) {
    auto shape = p.value().sizes().vec();
    if (p.key() == "token_embedding.weight") shape[0] = xxl.vocab;
    const bool per_layer = p.key().rfind("blocks.0.", 0) == 0;
    for (int64_t l = 0; l < (per_layer ? xxl.num_layers : 1); ++l)
      specs.push_back({per_layer ? "blocks." + std::to_string(l) + p.key().substr(8) : p.key(),
                       shape, torch::kBFloat16});
  }
  io::save_safetensors(
      path, specs,
      [&](std::size_t i) {
        return bench::random_like(specs[i].name, torch::empty(specs[i].shape)).to(torch::kBFloat16);
      },
      {{"config", xxl.to_json()}});
}

// Drops a file's pages from the page cache (those no process maps).
void evict(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

struct Mark {
  double wall = 0, user = 0, sys = 0;
  long minflt = 0, majflt = 0;
  static Mark now() {
    static const auto t0 = std::chrono::steady_clock::now();
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    auto secs = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
    return {std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
            secs(u.ru_utime), secs(u.ru_stime), u.ru_minflt, u.ru_majflt};
  }
};

void row(const std::string& run, const std::string& stage, const Mark& a, const Mark& b) {
  std::printf("| %s | %s | %.1f | %.1f | %.1f | %.2f | %.2f |\n", run.c_str(), stage.c_str(),
              b.wall - a.wall, b.user - a.user, b.sys - a.sys, (b.minflt - a.minflt) / 1e6,
              (b.majflt - a.majflt) / 1e6);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"A whole Wan render at real sizes: seconds, page faults, CPU time", "render_bench"};
  std::string scratch = "/tmp/kinora-bench", sampler = "euler", precision = "auto", device = "cpu";
  int64_t width = 256, height = 256, frames = 17;
  int steps = 2, repeat = 2;
  bool evict_first = false, fp8 = false;
  app.add_option("--scratch", scratch, "where the random-weight files are written (15 GB)");
  app.add_option("--width", width);
  app.add_option("--height", height);
  app.add_option("--frames", frames);
  app.add_option("--steps", steps);
  app.add_option("--sampler", sampler);
  app.add_option("--precision", precision);
  app.add_option("--device", device);
  app.add_option("--repeat", repeat, "renders in one process (the later ones warm)");
  app.add_flag("--evict", evict_first, "drop the weight files from the page cache first");
  app.add_flag("--fp8", fp8, "the DiT's block layers multiply in FP8 (the preset key fp8)");
  CLI11_PARSE(app, argc, argv);

  fs::create_directories(scratch);
  const fs::path dit = fs::path(scratch) / "wan2.1_t2v_1.3B_random_bf16.safetensors";
  const fs::path vae = fs::path(scratch) / "wan_2.1_vae_random.safetensors";
  const fs::path te = fs::path(scratch) / "umt5_xxl_random_bf16.safetensors";
  if (!fs::exists(dit)) {
    std::cout << "writing " << dit << "\n" << std::flush;
    diffusion::WanModel m{diffusion::WanConfig{}};
    bench::save_random(m.module(), dit, torch::kBFloat16);
  }
  if (!fs::exists(vae)) {
    std::cout << "writing " << vae << "\n" << std::flush;
    vae::WanVAE v{vae::WanVAEConfig{}};
    bench::save_random(v.module(), vae, torch::kBFloat16);
  }
  if (!fs::exists(te)) {
    std::cout << "writing " << te << "\n" << std::flush;
    save_random_umt5_xxl(te);
  }
  if (evict_first)
    for (const auto& f : {dit, vae, te}) evict(f);

  pipeline::Preset p;
  p.prompt = "a red fox running through fresh snow at dawn, cinematic";
  p.model = dit.string(), p.vae = vae.string(), p.text_encoder = te.string();
  p.tokenizer = std::string(KINORA_FIXTURES) + "/spm_tiny.model";
  p.width = width, p.height = height, p.frames = frames, p.steps = steps;
  p.sampler = sampler, p.precision = precision, p.device = device;
  p.guidance = 5, p.seed = 1;
  p.fp8 = fp8;

  const int threads = configure_threads();
  std::cout << "# " << version_string() << bench::blas_note() << ", " << threads << " threads; "
            << width << "×" << height << "×" << frames << ", " << steps << " guided " << sampler
            << " steps" << (evict_first ? ", weight files evicted from the page cache first" : "")
            << "\n\n| run | stage | seconds | user s | system s | minor faults (M) | major "
               "faults (M) |\n|---|---|---|---|---|---|---|\n";
  // Prompt encodings are cached in memory only, so the cold run encodes them.
  ::setenv("KINORA_PROMPT_CACHE", "0", 1);
  pipeline::Pipeline pipe;
  bench::reset_peak_rss();
  const Mark start = Mark::now();
  for (int run = 0; run < repeat; ++run) {
    const std::string name = run == 0 ? "cold" : "again";
    Mark last = Mark::now();
    const Mark first = last;
    std::string stage = "load";
    pipeline::RunCallbacks cb;
    // A stage ends where the next one's first event arrives.
    auto next = [&](const std::string& to) {
      const Mark m = Mark::now();
      row(name, stage, last, m);
      last = m, stage = to;
    };
    cb.on_progress = [&](const pipeline::Progress& e) {
      if (e.stage == "text") next("text (prompt and negative prompt)");
      if (e.stage == "sample") next("step 1 (guided)");
      if (e.stage == "decode" && stage != "VAE decode") next("VAE decode");
    };
    cb.on_step = [&](const pipeline::StepEvent& e) {
      if (e.step < e.total) next("step " + std::to_string(e.step + 1) + " (guided)");
    };
    const auto results = pipe.generate_batch(p, 1, cb);
    const Mark end = Mark::now();
    row(name, stage, last, end);
    const auto& t = results.at(0).timings;
    std::printf(
        "| %s | (pipeline's own: load %.1f, text %.1f, sampling %.1f, decode %.1f) | | | | "
        "| |\n",
        name.c_str(), t.load_s, t.text_s, t.sampling_s, t.decode_s);
    row(name, "**whole render**", first, end);
  }
  std::printf("\npeak resident: %.2f GiB; process total: ", bench::peak_rss_mib() / 1024);
  const Mark end = Mark::now();
  std::printf("%.1f s wall, %.1f s user, %.1f s system, %.2f M minor faults\n",
              end.wall - start.wall, end.user - start.user, end.sys - start.sys,
              (end.minflt - start.minflt) / 1e6);
  return 0;
}
