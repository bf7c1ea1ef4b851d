// Reports (does not assert) the speed and memory of the FLUX.1 DiT and
// autoencoder at their real widths, with random bf16 weights made here:
//   - the DiT forward with no blocks, one double-stream block and one
//     single-stream block, from which the time of each block and of the full
//     19 + 38 block model are derived (the whole 12B model does not fit a
//     small machine; on a GPU, --full runs it);
//   - the autoencoder's decode (base width 128, 16 latent channels).
//
//   flux_bench [--width 256 --height 256] [--text-tokens 512] [--device cpu|cuda]
//              [--precision bf16|fp32] [--full] [--skip-ae] [--repeat N]
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include "base/runtime.h"
#include "bench/bench_util.h"
#include "diffusion/flux_dit.h"
#include "vae/kl_autoencoder.h"

using namespace kinora;
using bench::randomise;

namespace {

struct Row {
  std::string what;
  double seconds, peak_mib;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"FLUX.1 DiT and autoencoder speed and memory", "flux_bench"};
  std::string device_name = "cpu", precision = "bf16";
  int64_t width = 256, height = 256, text_tokens = 512;
  int repeat = 1;
  bool full = false, skip_ae = false;
  app.add_option("--width", width);
  app.add_option("--height", height);
  app.add_option("--text-tokens", text_tokens, "T5 tokens (512 dev, 256 schnell)");
  app.add_option("--device", device_name)->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--precision", precision)->check(CLI::IsMember({"bf16", "fp32"}));
  app.add_option("--repeat", repeat, "timed runs after one warm-up (reported: the mean)");
  app.add_flag("--full", full, "also the whole 19 + 38 block model (24 GB of bf16 weights)");
  app.add_flag("--skip-ae", skip_ae);
  CLI11_PARSE(app, argc, argv);
  const int threads = configure_threads();
  const torch::Device device(device_name);
  const auto prec = layers::parse_precision(precision);
  torch::manual_seed(0);
  std::vector<Row> rows;

  // Warmed up: first-touch of the weights, kernel selection.
  auto time_it = [&](const std::function<void()>& fn) {
    return bench::mean_seconds(fn, repeat, device, true);
  };

  const int64_t lh = height / 8, lw = width / 8, tokens = (lh / 2) * (lw / 2);
  const std::string size = std::to_string(width) + "×" + std::to_string(height) + " (" +
                           std::to_string(tokens) + " image + " + std::to_string(text_tokens) +
                           " text tokens)";
  auto dit_forward = [&](int64_t doubles, int64_t singles) {
    diffusion::FluxConfig c;  // FLUX.1-dev's widths
    c.depth = doubles;
    c.depth_single_blocks = singles;
    diffusion::FluxModel m(c);
    randomise(m.module(), torch::kBFloat16, device);
    m.set_precision(prec);
    const auto x = torch::randn({1, 16, 1, lh, lw}).to(device);
    layers::Conditioning cond;
    cond.context = torch::randn({1, text_tokens, 4096}).to(device);
    cond.pooled = torch::randn({1, 768}).to(device);
    cond.guidance = torch::full({1}, 3.5).to(device);
    const auto t = torch::full({1}, 750.0).to(device);
    torch::NoGradGuard g;
    return time_it([&] { m.denoise(x, t, cond); });
  };
  const double base = dit_forward(0, 0);
  rows.push_back(
      {"DiT forward, embedders and final layer only, " + size, base, bench::peak_rss_mib()});
  const double with_double = dit_forward(1, 0);
  rows.push_back({"DiT forward with 1 double-stream block", with_double, bench::peak_rss_mib()});
  const double with_single = dit_forward(0, 1);
  rows.push_back({"DiT forward with 1 single-stream block", with_single, bench::peak_rss_mib()});
  const double d = with_double - base, s = with_single - base;
  rows.push_back({"one double-stream block (derived)", d, -1});
  rows.push_back({"one single-stream block (derived)", s, -1});
  rows.push_back({"FLUX.1-dev forward, 19 + 38 blocks (derived: base + 19·double + 38·single)",
                  base + 19 * d + 38 * s, -1});
  if (full)
    rows.push_back({"FLUX.1-dev forward, 19 + 38 blocks (measured)", dit_forward(19, 38),
                    bench::peak_rss_mib()});

  if (!skip_ae) {
    vae::KLAutoencoderConfig c;  // FLUX's: base 128, [1, 2, 4, 4], 16 channels
    vae::KLAutoencoder ae(c);
    randomise(ae.module(), torch::kFloat32, device);
    ae.set_precision(prec);
    const auto z = torch::randn({1, 16, lh, lw}).to(device);
    torch::NoGradGuard g;
    rows.push_back({"autoencoder decode, " + std::to_string(width) + "×" + std::to_string(height),
                    time_it([&] { ae.decode_image(z); }), bench::peak_rss_mib()});
  }

  std::cout << "# " << version_string() << bench::blas_note() << ", " << threads << " threads, "
            << device_name << ", " << precision << "\n\n";
  std::cout << "| what | seconds | peak RSS (MiB) |\n|---|---|---|\n";
  for (const auto& r : rows) {
    char buf[64];
    if (r.peak_mib >= 0)
      std::snprintf(buf, sizeof buf, "%.3f | %.0f", r.seconds, r.peak_mib);
    else
      std::snprintf(buf, sizeof buf, "%.3f | —", r.seconds);
    std::cout << "| " << r.what << " | " << buf << " |\n";
  }
  return 0;
}
