// Reports (does not assert) the time of each stage of a whole text-to-video
// render — text encoding, every sampling step, VAE decode, video encode — and
// the peak RSS: first the embedded default model with its own defaults (what
// `kinora generate --prompt TEXT` renders), cold (models loaded) and warm; then
// the fixture chain and real-shape random-weight Wan 1.3B + Wan 2.1 VAE
// (written to a scratch folder by this program).
//
//   pipeline_bench [--fixtures DIR] [--scratch DIR] [--steps 4] [--skip-real]
//                  [--embedded-only]
#include <CLI/CLI.hpp>

#include <chrono>
#include <fstream>
#include <iostream>

#include "base/runtime.h"
#include "bench/bench_util.h"
#include "diffusion/wan_dit.h"
#include "embedded/model.h"
#include "pipeline/pipeline.h"
#include "render/render.h"
#include "text/t5.h"
#include "vae/wan_vae.h"

using namespace kinora;
namespace fs = std::filesystem;

namespace {
void report(const std::string& what, const pipeline::Result& r, double peak) {
  double steps = 0;
  for (double s : r.timings.step_s) steps += s;
  std::cout << "| " << what << " | " << r.preset.precision << " | " << r.timings.text_s << " | ";
  for (std::size_t i = 0; i < r.timings.step_s.size(); ++i)
    std::cout << (i ? " / " : "") << r.timings.step_s[i];
  std::cout << " | " << r.timings.decode_s << " | " << r.timings.encode_s << " | " << peak << " |\n"
            << std::flush;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Whole-pipeline stage timings", "pipeline_bench"};
  std::string fixtures = KINORA_FIXTURES, scratch = "/tmp/kinora-bench";
  int steps = 4;
  bool skip_real = false, embedded_only = false;
  app.add_option("--fixtures", fixtures);
  app.add_option("--scratch", scratch,
                 "where the real-shape random weights are written (about 3.5 GB)");
  app.add_option("--steps", steps);
  app.add_flag("--skip-real", skip_real);
  app.add_flag("--embedded-only", embedded_only, "only the embedded default model");
  CLI11_PARSE(app, argc, argv);
  const int threads = configure_threads();
  std::cout << "# " << version_string() << bench::blas_note() << ", " << threads
            << " threads; seconds per stage\n\n";
  fs::create_directories(scratch);
  // The embedded default model, as `kinora generate --prompt TEXT` runs it: its
  // own defaults (size, frames, steps, sampler, guidance); cold includes loading.
  if (const auto dir = embedded::model_dir()) {
    std::cout << "embedded model (" << dir->string() << "), its defaults\n\n"
              << "| run | compute | steps | total (wall) | load + text | sampling | VAE decode | "
                 "encode (MP4) |\n"
              << "|---|---|---|---|---|---|---|---|\n";
    for (const char* prec : {"fp32", "bf16"}) {
      auto e = pipeline::Preset::embedded_defaults();
      e.prompt = "a red circle moving left on a blue background";
      e.seed = 1;
      e.precision = prec;
      e.output = (fs::path(scratch) / "embedded.mp4").string();
      pipeline::Pipeline pipe;
      for (const char* run : {"cold", "warm"}) {
        const auto t0 = std::chrono::steady_clock::now();
        const auto r = render::render(pipe, e, {}, /*overwrite=*/true);
        const double wall =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double other = wall - r.timings.sampling_s - r.timings.decode_s - r.timings.encode_s;
        std::cout << "| " << run << " | " << prec << " | " << r.preset.steps << " | " << wall
                  << " | " << other << " | " << r.timings.sampling_s << " | " << r.timings.decode_s
                  << " | " << r.timings.encode_s << " |\n"
                  << std::flush;
        fs::remove(e.output);
      }
    }
    std::cout << "\n";
  } else {
    std::cout << "embedded model: not found (assets/ is empty), skipped\n\n";
  }
  if (embedded_only) return 0;
  std::cout << "| run | compute | text | each step (guided: cond+uncond in one batch) | VAE decode "
               "| encode (MP4) | peak RSS MiB |\n"
            << "|---|---|---|---|---|---|---|\n";
  pipeline::Preset p;
  p.prompt = "a red circle moving left on a blue background";
  p.steps = steps;
  p.seed = 1;
  p.output = (fs::path(scratch) / "out.mp4").string();

  // Fixture chain at 256×256×17.
  p.model = fixtures + "/wan21_dit_tiny.safetensors";
  p.vae = fixtures + "/wan21_vae_tiny.safetensors";
  p.text_encoder = fixtures + "/umt5_enc_tiny.safetensors";
  p.tokenizer = fixtures + "/spm_tiny.model";
  p.width = 256, p.height = 256, p.frames = 17;
  for (const char* prec : {"fp32", "bf16"}) {
    p.precision = prec;
    pipeline::Pipeline pipe;
    render::render(pipe, p, {}, /*overwrite=*/true);  // warm
    fs::remove(p.output);
    bench::reset_peak_rss();
    const auto r = render::render(pipe, p, {}, /*overwrite=*/true);
    report("fixture chain, 256×256×17", r, bench::peak_rss_mib());
    fs::remove(p.output);
  }
  if (skip_real) return 0;

  // Real-shape Wan 1.3B (bf16) + Wan 2.1 VAE (f32); a 2-layer umT5 of the real
  // width 4096 stands in for umT5-XXL (24 layers, 11 GB), named in the table.
  const fs::path dit = fs::path(scratch) / "wan1.3B_random_bf16.safetensors";
  const fs::path vae = fs::path(scratch) / "wan21_vae_random.safetensors";
  const fs::path te = fs::path(scratch) / "umt5_4096x2_random.safetensors";
  {
    diffusion::WanModel m{diffusion::WanConfig{}};
    if (!fs::exists(dit)) bench::save_random(m.module(), dit, torch::kBFloat16);
  }
  {
    vae::WanVAE v{vae::WanVAEConfig{}};
    if (!fs::exists(vae)) bench::save_random(v.module(), vae, torch::kFloat32);
  }
  {
    text::T5Config c;
    c.vocab = 384, c.num_layers = 2;
    text::T5Encoder e(c);
    if (!fs::exists(te))
      bench::save_random(
          e.module(), te, torch::kBFloat16,
          {{"config",
            R"({"vocab": 384, "dim": 4096, "dim_attn": 4096, "dim_ffn": 10240, "num_heads": 64, "num_layers": 2, "num_buckets": 32, "shared_pos": false})"}});
  }
  p.model = dit.string(), p.vae = vae.string(), p.text_encoder = te.string();
  p.precision = "bf16";
  pipeline::Pipeline pipe;
  bench::reset_peak_rss();
  const auto r = render::render(pipe, p, {}, /*overwrite=*/true);
  report("Wan 1.3B + Wan 2.1 VAE real shapes (random weights), umT5 4096×2 layers, 256×256×17", r,
         bench::peak_rss_mib());
  return 0;
}
