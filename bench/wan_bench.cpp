// Reports (does not assert) the speed and memory of the Wan DiT and VAE:
//   - the DiT forward on the tiny fixture model;
//   - the DiT forward of a real-shape Wan 2.1 1.3B (random bf16 weights made
//     here) at a small size, float32 compute against bf16 compute;
//   - the VAE decode of a real-shape Wan 2.1 VAE (base width 96, random weights).
// Peak RSS is the process's high-water mark, reset before each measurement.
//
//   wan_bench [--fixtures DIR] [--width 256 --height 256 --frames 17]
//             [--device cpu|cuda] [--skip-fp32] [--skip-vae] [--repeat N]
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "base/runtime.h"
#include "bench/bench_util.h"
#include "diffusion/wan_dit.h"
#include "layers/linear.h"
#include "vae/wan_vae.h"

using namespace kinora;
using bench::randomise;

namespace {

struct Row {
  std::string what, precision, device;
  double seconds, peak_mib;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Wan DiT and VAE speed and memory", "wan_bench"};
  std::string fixtures = KINORA_FIXTURES, device_name = "cpu";
  int64_t width = 256, height = 256, frames = 17;
  int repeat = 1;
  bool skip_fp32 = false, skip_vae = false;
  app.add_option("--fixtures", fixtures, "folder with wan21_dit_tiny.safetensors");
  app.add_option("--width", width);
  app.add_option("--height", height);
  app.add_option("--frames", frames);
  app.add_option("--device", device_name)->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--repeat", repeat, "timed runs after one warm-up (reported: the mean)");
  app.add_flag("--skip-fp32", skip_fp32, "skip the float32 1.3B forward (slow on CPU)");
  app.add_flag("--skip-vae", skip_vae);
  CLI11_PARSE(app, argc, argv);
  const int threads = configure_threads();
  const torch::Device device(device_name);
  torch::manual_seed(0);
  std::vector<Row> rows;

  auto time_it = [&](const std::function<void()>& fn, bool warm_up) {
    return bench::mean_seconds(fn, repeat, device, warm_up);
  };

  // Tiny fixture model: latent [16, 3, 8, 12], 7 text tokens.
  {
    auto m = diffusion::WanModel::load(fixtures + "/wan21_dit_tiny.safetensors");
    m.to(device);
    const auto x = torch::randn({1, 16, 3, 8, 12}).to(device);
    const auto t = torch::tensor({500.0}).to(device);
    const auto ctx = torch::randn({1, 7, 64}).to(device);
    for (auto p : {layers::Precision::F32, layers::Precision::BF16}) {
      m.set_precision(p);
      const double s = time_it([&] { m.forward(x, t, ctx); }, true);
      rows.push_back({"DiT forward, tiny fixture (16×3×8×12 latent)", layers::precision_name(p),
                      device_name, s, bench::peak_rss_mib()});
    }
  }

  // Real-shape 1.3B.
  const int64_t lf = (frames - 1) / 4 + 1, lh = height / 8, lw = width / 8;
  {
    diffusion::WanConfig c;  // defaults are the 1.3B
    diffusion::WanModel m(c);
    randomise(m.module(), torch::kBFloat16, device);
    const auto x = torch::randn({1, 16, lf, lh, lw}).to(device);
    const auto t = torch::tensor({999.0}).to(device);
    const auto ctx = torch::randn({1, 24, 4096}).to(device);
    const std::string what = "DiT forward, Wan 1.3B real shape, " + std::to_string(width) + "×" +
                             std::to_string(height) + "×" + std::to_string(frames) + " (" +
                             std::to_string(lf * lh * lw / 4) + " tokens)";
    for (auto p : {layers::Precision::BF16, layers::Precision::F32}) {
      if (p == layers::Precision::F32 && skip_fp32) continue;
      m.set_precision(p);
      const double s = time_it([&] { m.forward(x, t, ctx); }, device.is_cuda());
      rows.push_back({what, layers::precision_name(p), device_name, s, bench::peak_rss_mib()});
      std::cerr << what << " " << layers::precision_name(p) << ": " << s << " s\n";
    }
  }

  if (!skip_vae) {
    vae::WanVAE v{vae::WanVAEConfig{}};
    randomise(v.module(), torch::kFloat32, device);
    const auto z = torch::randn({1, 16, lf, lh, lw}).to(device);
    for (auto p : {layers::Precision::F32, layers::Precision::BF16}) {
      v.set_precision(p);
      const double s = time_it([&] { v.decode(z); }, device.is_cuda());
      rows.push_back({"VAE decode, Wan 2.1 real shape (base 96), " + std::to_string(width) + "×" +
                          std::to_string(height) + "×" + std::to_string(frames),
                      layers::precision_name(p), device_name, s, bench::peak_rss_mib()});
      std::cerr << "VAE " << layers::precision_name(p) << ": " << s << " s\n";
    }
  }

  std::cout << "# " << version_string() << bench::blas_note() << ", " << threads << " threads\n\n";
  std::cout << "| what | compute | device | seconds | peak RSS (MiB) |\n|---|---|---|---|---|\n";
  for (const auto& r : rows) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3f | %.0f", r.seconds, r.peak_mib);
    std::cout << "| " << r.what << " | " << r.precision << " | " << r.device << " | " << buf
              << " |\n";
  }
  return 0;
}
