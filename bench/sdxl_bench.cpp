// Reports (does not assert) the speed and memory of the SDXL UNet and the
// SD/SDXL autoencoder at their real shapes, with random weights made here
// (the UNet's in bf16, as checkpoints store it in half precision):
//   - one guided step: the UNet on a batch of two (prompt and negative
//     prompt), 77 text tokens of width 2048, a pooled vector of 1280 and the
//     size conditioning, as the pipeline runs it;
//   - the autoencoder's decode of one image (tiled above 512 px a side, as
//     renders decode).
//
//   sdxl_bench [--width 1024 --height 1024] [--device cpu|cuda]
//              [--precision bf16|fp32] [--skip-ae] [--repeat N]
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <string>

#include "base/runtime.h"
#include "bench/bench_util.h"
#include "diffusion/sdxl_unet.h"
#include "vae/kl_autoencoder.h"

using namespace kinora;
using bench::randomise;

int main(int argc, char** argv) {
  CLI::App app{"SDXL UNet and autoencoder speed and memory", "sdxl_bench"};
  std::string device_name = "cpu", precision = "bf16";
  int64_t width = 1024, height = 1024;
  int repeat = 1;
  bool skip_ae = false;
  app.add_option("--width", width);
  app.add_option("--height", height);
  app.add_option("--device", device_name)->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--precision", precision)->check(CLI::IsMember({"bf16", "fp32"}));
  app.add_option("--repeat", repeat, "timed runs after one warm-up (reported: the mean)");
  app.add_flag("--skip-ae", skip_ae);
  CLI11_PARSE(app, argc, argv);
  const int threads = configure_threads();
  const torch::Device device(device_name);
  const auto prec = layers::parse_precision(precision);
  torch::manual_seed(0);

  struct Row {
    std::string what;
    double seconds, peak_mib;
  };
  std::vector<Row> rows;
  const int64_t lh = height / 8, lw = width / 8;
  const std::string size = std::to_string(width) + "×" + std::to_string(height);
  {
    const diffusion::SDXLUNetConfig c;  // SDXL base: 320 channels, [1, 2, 4], depth [0, 2, 10]
    diffusion::SDXLUNet unet(c);
    randomise(unet.module(), torch::kBFloat16, device);
    unet.set_precision(prec);
    int64_t params = 0;
    for (const auto& p : unet.module().parameters()) params += p.numel();
    layers::Conditioning cond;
    cond.context = torch::randn({2, 77, c.context_dim}).to(device);
    cond.pooled = torch::randn({2, c.pooled_dim()}).to(device);
    const auto x = torch::randn({2, 4, 1, lh, lw}).to(device);
    const auto t = torch::full({2}, 500.0).to(device);
    torch::NoGradGuard g;
    const double s =
        bench::mean_seconds([&] { unet.denoise(x, t, cond); }, repeat, device, /*warm_up=*/true);
    char what[160];
    std::snprintf(what, sizeof what,
                  "UNet guided step (batch 2), SDXL base real shape (%.2f B parameters), %s",
                  static_cast<double>(params) / 1e9, size.c_str());
    rows.push_back({what, s, bench::peak_rss_mib()});
  }
  if (!skip_ae) {
    vae::KLAutoencoderConfig c;  // base 128, [1, 2, 4, 4]
    c.z_channels = 4;
    c.quant_conv = true;
    c.scale_factor = 0.13025;
    c.shift_factor = 0;
    vae::KLAutoencoder ae(c);
    randomise(ae.module(), torch::kFloat32, device);
    ae.set_precision(prec);
    const auto z = torch::randn({1, 4, 1, lh, lw}).to(device);
    torch::NoGradGuard g;
    rows.push_back({"VAE decode (tiled above 512 px), " + size,
                    bench::mean_seconds([&] { ae.decode_video(z); }, repeat, device, true),
                    bench::peak_rss_mib()});
  }

  std::cout << "# " << version_string() << bench::blas_note() << ", " << threads << " threads, "
            << device_name << ", " << precision << "\n\n";
  std::cout << "| what | seconds | peak RSS (MiB) |\n|---|---|---|\n";
  for (const auto& r : rows) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3f | %.0f", r.seconds, r.peak_mib);
    std::cout << "| " << r.what << " | " << buf << " |\n";
  }
  return 0;
}
