// Reports (does not assert) each model's speed against the hardware it runs on:
// random weights of the real shapes, drawn on the device, batch 1.
//   - the device's own rates, measured first: a square matmul and the fused
//     scaled-dot-product attention (12 heads of 128, Wan 1.3B's), both in the
//     compute precision;
//   - the Wan 2.1 1.3B DiT forward, its guided step (the two forwards batched,
//     the guidance and the Euler update), the same step replayed from a CUDA
//     graph (on a GPU), the 14B forward, the FLUX.1-dev forward, the Wan 2.1 VAE
//     decode, and umT5-XXL encoding two prompts of 512 tokens.
// Each row: the median of the timed runs after warm-up (CUDA events on a GPU),
// the FLOPs (bench/flops.h), the rate they were done at, the floor (the linear
// FLOPs at the measured matmul rate plus the attention FLOPs at the measured
// attention rate) and the floor as a share of the time; and the device memory
// the call took beyond what was allocated before it (the weights, the inputs).
//
//   speed_bench [--device auto|cpu|cuda] [--precision bf16|fp32]
//               [--size 832x480x81] [--flux-size 1024x1024] [--only LIST]
//               [--warm-up 2] [--repeat 5] [--tiny] [--wan-file PATH]
//               [--profile N] [--block-swap N] [--fp8]
//
// --only takes a comma-separated list of rates, wan-1.3b, wan-1.3b-step,
// wan-1.3b-graph, wan-14b, wan-14b-swap, flux-dev, wan-vae, wan-vae-encode, umt5.
// wan-14b-swap is the 14B forward with block swap (a GPU only): --block-swap
// blocks in host memory, by default as many as a 24 GB card needs. --tiny shrinks every model
// to a few narrow layers (the same code at a size a CPU runs in seconds).
// --fp8 multiplies the DiTs' block layers in FP8 (layers/fp8.h: E4M3 weights
// quantized from the random ones, inputs quantized per call) and measures the
// FP8 matmul rate beside the others; those rows' floors take their linear
// FLOPs at it.
// --profile N runs each workload once more after its timed runs and reports
// its N costliest LibTorch operators by self time (bench/op_profile.h; on a
// GPU the GPU's time, from CUDA events around each operator).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <set>
#include <sstream>
#include <string>

#include "base/device.h"
#include "base/runtime.h"
#include "base/torch_compat.h"
#include "bench/bench_util.h"
#include "bench/flops.h"
#include "bench/op_profile.h"
#include "diffusion/flux_dit.h"
#include "diffusion/wan_dit.h"
#include "layers/fp8.h"
#include "text/t5.h"
#include "vae/wan_vae.h"

#ifdef KINORA_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

using namespace kinora;

namespace {

struct Row {
  std::string what;
  bench::Flops flops;  // zero: not counted
  std::vector<double> seconds;
  double extra_bytes = 0;  // beyond what was allocated before the call
  std::string note;
  bool fp8 = false;  // linear FLOPs at the FP8 matmul rate
};

struct Size {
  int64_t width, height, frames;
};

Size parse_size(const std::string& s, bool with_frames) {
  Size z{0, 0, 1};
  char x1 = 0, x2 = 0;
  std::istringstream in(s);
  in >> z.width >> x1 >> z.height;
  if (with_frames) in >> x2 >> z.frames;
  const bool form = in && x1 == 'x' && (!with_frames || x2 == 'x') && in.peek() == EOF;
  if (!form)
    throw std::runtime_error("size '" + s + "': expected " +
                             (with_frames ? "WIDTHxHEIGHTxFRAMES" : "WIDTHxHEIGHT"));
  if (z.width < 16 || z.height < 16 || z.frames < 1)
    throw std::runtime_error("size '" + s + "': width and height from 16, at least one frame");
  return z;
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}
// Three significant digits (FLOP counts from a tiny model to a 14B one).
std::string sig(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

diffusion::WanConfig wan_config(bool big, bool tiny) {
  diffusion::WanConfig c;  // the 1.3B
  if (big) c.dim = 5120, c.ffn_dim = 13824, c.num_heads = 40, c.num_layers = 40;
  if (tiny) c.dim = 64, c.ffn_dim = 128, c.num_heads = 2, c.num_layers = 2, c.text_dim = 64;
  return c;
}

}  // namespace

int run(int argc, char** argv);

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "speed_bench: " << e.what() << "\n";
    return 2;
  }
}

int run(int argc, char** argv) {
  CLI::App app{"Model speed against the device's measured matmul and attention rates",
               "speed_bench"};
  std::string device_arg = "auto", precision = "bf16", size_arg = "832x480x81",
              flux_size_arg = "1024x1024", only_arg, wan_file;
  int warm_up = 2, repeat = 5, profile = 0;
  bool tiny = false;
  app.add_option("--device", device_arg, "auto, cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--precision", precision)
      ->check(CLI::IsMember({"bf16", "fp32"}))
      ->capture_default_str();
  app.add_option("--size", size_arg, "Wan video WIDTHxHEIGHTxFRAMES")->capture_default_str();
  app.add_option("--flux-size", flux_size_arg, "FLUX image WIDTHxHEIGHT")->capture_default_str();
  app.add_option("--only", only_arg,
                 "comma-separated workloads (default: all): rates, wan-1.3b, wan-1.3b-step, "
                 "wan-1.3b-graph, wan-14b, flux-dev, wan-vae, wan-vae-encode, umt5");
  app.add_option("--warm-up", warm_up)->check(CLI::Range(0, 100))->capture_default_str();
  app.add_option("--repeat", repeat)->check(CLI::Range(1, 1000))->capture_default_str();
  app.add_flag("--tiny", tiny, "every model a few narrow layers wide");
  app.add_option("--profile", profile,
                 "after each workload, one more run with its N costliest operators")
      ->check(CLI::Range(0, 1000));
  bool fp8 = false;
  app.add_flag("--fp8", fp8,
               "the DiTs' block layers multiply in FP8 (E4M3, per-tensor scales); their floors "
               "take the linear FLOPs at the measured FP8 matmul rate");
  int64_t block_swap = -1;
  app.add_option("--block-swap", block_swap,
                 "wan-14b-swap: the 14B's blocks kept in host memory (default: what a 24 GiB card "
                 "needs)")
      ->check(CLI::Range(0, 40));
  app.add_option("--wan-file", wan_file,
                 "the Wan 1.3B loaded from this checkpoint (mapped, as a render loads it), "
                 "written first with random bf16 weights when missing");
  CLI11_PARSE(app, argc, argv);

  std::set<std::string> only;
  for (std::istringstream in(only_arg); in.good();) {
    std::string w;
    std::getline(in, w, ',');
    if (!w.empty()) only.insert(w);
  }
  const std::set<std::string> known = {
      "rates",        "wan-1.3b", "wan-1.3b-step", "wan-1.3b-graph", "wan-14b",
      "wan-14b-swap", "flux-dev", "wan-vae",       "wan-vae-encode", "umt5"};
  for (const auto& w : only)
    if (!known.count(w)) {
      std::cerr << "speed_bench: unknown workload '" << w
                << "' (rates, wan-1.3b, wan-1.3b-step, wan-1.3b-graph, wan-14b, wan-14b-swap, "
                   "flux-dev, wan-vae, wan-vae-encode, umt5)\n";
      return 2;
    }
  auto wanted = [&](const std::string& w) { return only.empty() || only.count(w) > 0; };

  const int threads = configure_threads();
  const auto device = resolve_device(device_arg);
  const auto prec = layers::parse_precision(precision);
  const auto dt = layers::matmul_dtype(prec);
  const auto on = torch::TensorOptions().device(device);
  const Size size = parse_size(size_arg, true), flux_size = parse_size(flux_size_arg, false);
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  std::vector<Row> rows;
  std::vector<std::pair<std::string, std::string>> profiles;  // workload, table

  bool rates_done = false;  // the device's rates are measured first; profiled when asked for
  auto measure = [&](const std::string& what, const bench::Flops& flops,
                     const std::function<void()>& fn) -> Row& {
    bench::sync(device);
    const double before = bench::memory_in_use(device);
    bench::reset_peak_memory(device);
    Row r{what, flops, bench::timed_runs(fn, device, warm_up, repeat), 0, ""};
    r.extra_bytes = std::max(0.0, bench::peak_memory(device) - before);
    std::cerr << what << ": " << bench::median(r.seconds) << " s\n";
    if (profile > 0 && (rates_done || wanted("rates"))) {
      bench::OpProfile p(device);
      fn();
      profiles.emplace_back(what, p.table(profile));
    }
    rows.push_back(r);
    return rows.back();
  };

  // The device's rates.
  double matmul_rate = 0, attention_rate = 0, fp8_rate = 0;
  {
    const int64_t n = device.is_cuda() ? 8192 : tiny ? 256 : 2048;
    const auto a = torch::randn({n, n}, on.dtype(dt)), b = torch::randn({n, n}, on.dtype(dt));
    bench::Flops f;
    f.linear = 2.0 * n * n * n;
    const auto& r = measure("matmul " + std::to_string(n) + "³", f, [&] { torch::mm(a, b); });
    matmul_rate = f.linear / bench::median(r.seconds);
    const int64_t L = device.is_cuda() ? 16384 : tiny ? 256 : 2048, H = 12, d = 128;
    const auto q = torch::randn({1, H, L, d}, on.dtype(dt));
    const auto k = torch::randn({1, H, L, d}, on.dtype(dt));
    const auto v = torch::randn({1, H, L, d}, on.dtype(dt));
    bench::Flops g;
    g.attention = 4.0 * L * L * H * d;
    const auto& s = measure("attention, " + std::to_string(L) + " tokens × 12 heads × 128", g,
                            [&] { compat::scaled_dot_product_attention(q, k, v); });
    attention_rate = g.attention / bench::median(s.seconds);
    fp8_rate = matmul_rate;
    if (fp8 && layers::device_has_fp8_matmul(device)) {
      // E4M3 operands with per-tensor scales, bf16 out: what an FP8 layer runs.
      const auto a8 = layers::quantize_e4m3(a, layers::e4m3_scale(a));
      const auto b8 = layers::quantize_e4m3(b, layers::e4m3_scale(b));
      const auto one = torch::ones({}, on.dtype(torch::kFloat32));
      const auto& r8 = measure("matmul " + std::to_string(n) + "³, FP8", f, [&] {
        compat::scaled_mm_e4m3(a8, b8, one, one, {}, torch::kBFloat16);
      });
      fp8_rate = f.linear / bench::median(r8.seconds);
    }
    if (!wanted("rates")) rows.clear();
    rates_done = true;
  }

  const std::string wan_size = std::to_string(size.width) + "×" + std::to_string(size.height) +
                               "×" + std::to_string(size.frames);
  const int64_t lf = (size.frames - 1) / 4 + 1, lh = size.height / 8, lw = size.width / 8;

  // Wan DiTs.
  auto wan = [&](bool big) {
    const auto c = wan_config(big, tiny);
    diffusion::WanModel m(c);
    if (!big && !wan_file.empty()) {
      if (!std::filesystem::exists(wan_file)) {
        std::cerr << "writing " << wan_file << "\n";
        bench::save_random(m.module(), wan_file, torch::kBFloat16, {{"config", c.to_json()}});
      }
      m = diffusion::WanModel::load(wan_file, prec);
    } else {
      bench::randomise(m.module(), dt, device);
    }
    m.to(device);
    m.set_precision(prec);
    if (fp8) layers::use_fp8_matmuls(m, device);
    const auto x = torch::randn({1, c.in_dim, lf, lh, lw}, on);
    const auto t = torch::full({1}, 999.0, on);
    layers::Conditioning cond, uncond;
    cond.context = torch::randn({1, 24, c.text_dim}, on);
    uncond.context = torch::randn({1, 40, c.text_dim}, on);
    const int64_t tokens = lf * (lh / c.patch_h) * (lw / c.patch_w);
    const auto flops = bench::wan_forward_flops(c, tokens, c.text_len);
    const std::string name =
        std::string(tiny ? "tiny " : "") + (big ? "Wan 14B" : "Wan 1.3B") + (fp8 ? " FP8" : "");
    const std::string shape = wan_size + " (" + std::to_string(tokens) + " tokens)";
    if (wanted(big ? "wan-14b" : "wan-1.3b"))
      measure(name + " DiT forward, " + shape, flops, [&] { m.denoise(x, t, cond); }).fp8 = fp8;
    if (big && wanted("wan-14b-swap")) {
      const std::string what = name + " DiT forward, block swap, " + shape;
      if (!device.is_cuda()) {
        rows.push_back({what, {}, {}, 0, "block swap needs a GPU"});
        return;
      }
      // As a render places it: the weights in host memory, the blocks that do
      // not fit a 24 GiB card (beside a forward's activations and 1.5 GiB)
      // kept there.
      const auto blocks = static_cast<int64_t>(m.swappable_blocks().size());
      const int64_t n =
          block_swap >= 0
              ? block_swap
              : layers::blocks_to_swap(
                    m.weight_bytes(), m.block_bytes(), blocks,
                    (int64_t{24} << 30) - m.activation_bytes(tokens) - (int64_t{3} << 29));
      const double whole = bench::memory_in_use(device);
      m.to(torch::kCPU);
      m.set_block_swap(n);
      m.to(device);
      bench::sync(device);
      auto& r = measure(what, flops, [&] { m.denoise(x, t, cond); });
      r.fp8 = fp8;
      r.note = std::to_string(n) + " of " + std::to_string(blocks) + " blocks in host memory; " +
               sig(bench::memory_in_use(device) / (1 << 30)) + " GiB in use between forwards (" +
               sig(whole / (1 << 30)) + " with the whole model)";
    }
    if (big) return;
    // The guided step: both passes in one batch, the guidance, the Euler update.
    const auto both = layers::Conditioning::cat(cond, uncond);
    const auto tt = t.expand({2});
    auto step = [&](const torch::Tensor& xs) {
      const auto out = m.denoise(torch::cat({xs, xs}), tt, both);
      const auto cv = out.slice(0, 0, 1), uv = out.slice(0, 1);
      return xs - 0.02 * (uv + 5.0 * (cv - uv));
    };
    if (wanted("wan-1.3b-step"))
      measure(name + " guided step, " + shape, flops * 2, [&] { step(x); }).fp8 = fp8;
    if (!wanted("wan-1.3b-graph")) return;
    if (!device.is_cuda()) {
      rows.push_back({name + " guided step, CUDA graph", {}, {}, 0, "CUDA graphs need a GPU"});
      return;
    }
#ifdef KINORA_CUDA
    // The step as one CUDA graph: captured once on a side stream, replayed.
    try {
      const auto stream = c10::cuda::getStreamFromPool(false, device.index());
      at::cuda::CUDAGraph graph;
      torch::Tensor captured;
      {
        c10::cuda::CUDAStreamGuard guard(stream);
        step(x);  // warm-up on the capturing stream
        graph.capture_begin();
        captured = step(x);
        graph.capture_end();
      }
      auto& r =
          measure(name + " guided step, CUDA graph, " + shape, flops * 2, [&] { graph.replay(); });
      const double diff =
          (captured.to(torch::kFloat32) - step(x).to(torch::kFloat32)).abs().max().item<double>();
      r.fp8 = fp8;
      r.note = "max |graph − eager| " + sig(diff);
    } catch (const std::exception& e) {
      std::string what = e.what();
      rows.push_back({name + " guided step, CUDA graph",
                      {},
                      {},
                      0,
                      "capture failed: " + what.substr(0, what.find('\n'))});
    }
#endif
  };
  if (wanted("wan-1.3b") || wanted("wan-1.3b-step") || wanted("wan-1.3b-graph")) wan(false);
  if (wanted("wan-14b") || wanted("wan-14b-swap")) wan(true);

  if (wanted("flux-dev")) {
    diffusion::FluxConfig c;  // dev
    if (tiny)
      c.hidden_size = 128, c.mlp_hidden = 512, c.num_heads = 2, c.depth = 1,
      c.depth_single_blocks = 2, c.axes_dim = {16, 24, 24}, c.context_in_dim = 64;
    diffusion::FluxModel m(c);
    bench::randomise(m.module(), dt, device);
    m.to(device);
    m.set_precision(prec);
    if (fp8) layers::use_fp8_matmuls(m, device);
    const int64_t fh = flux_size.height / 8, fw = flux_size.width / 8, text_tokens = 512;
    const auto x = torch::randn({1, 16, 1, fh, fw}, on);
    layers::Conditioning cond;
    cond.context = torch::randn({1, text_tokens, c.context_in_dim}, on);
    cond.pooled = torch::randn({1, c.vec_in_dim}, on);
    cond.guidance = torch::full({1}, 3.5, on);
    const auto t = torch::full({1}, 750.0, on);
    const int64_t image_tokens = (fh / 2) * (fw / 2);
    measure(std::string(tiny ? "tiny " : "") + "FLUX.1-dev" + (fp8 ? " FP8" : "") +
                " DiT forward, " + std::to_string(flux_size.width) + "×" +
                std::to_string(flux_size.height) + " (" + std::to_string(image_tokens) +
                " + 512 tokens)",
            bench::flux_forward_flops(c, image_tokens, text_tokens), [&] { m.denoise(x, t, cond); })
        .fp8 = fp8;
  }

  if (wanted("wan-vae") || wanted("wan-vae-encode")) {
    vae::WanVAEConfig c;
    if (tiny) c.dim = 16;
    vae::WanVAE v(c);
    bench::randomise(v.module(), torch::kFloat32, device);
    v.to(device);
    v.set_precision(prec);
    if (wanted("wan-vae")) {
      const auto z = torch::randn({1, c.z_dim, lf, lh, lw}, on);
      measure(std::string(tiny ? "tiny " : "") + "Wan 2.1 VAE decode, " + wan_size, {},
              [&] { v.decode(z); });
    }
    if (wanted("wan-vae-encode")) {
      // The frames the decode gives: 4k + 1.
      const auto video = torch::rand({1, 3, 4 * (lf - 1) + 1, 8 * lh, 8 * lw}, on) * 2 - 1;
      measure(std::string(tiny ? "tiny " : "") + "Wan 2.1 VAE encode, " + wan_size, {},
              [&] { v.encode(video); });
    }
  }

  if (wanted("umt5")) {
    text::T5Config c;  // umT5-XXL
    if (tiny)
      c.vocab = 1000, c.dim = 128, c.dim_attn = 128, c.dim_ffn = 256, c.num_heads = 2,
      c.num_layers = 2;
    text::T5Encoder e(c);
    bench::randomise(e.module(), dt, device);
    e.to(device);
    e.set_precision(prec);
    const int64_t L = 512;
    const auto ids = torch::randint(c.vocab, {2, L}, on.dtype(torch::kLong));
    const auto mask = torch::ones({2, L}, on.dtype(torch::kLong));
    measure(std::string(tiny ? "tiny " : "") + "umT5-XXL, 2 prompts × 512 tokens",
            bench::t5_encoder_flops(c, L) * 2, [&] { e.forward(ids, mask); });
  }

  // The report.
  std::cout << "# " << version_string() << bench::blas_note() << "; "
            << (device.is_cuda()
                    ? compat::cuda_device_description(device.index())
                    : "CPU, " + std::to_string(threads) + (threads == 1 ? " thread" : " threads"));
#ifdef KINORA_CUDA
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  std::cout << "; CUDA driver " << driver / 1000 << "." << driver % 1000 / 10 << ", runtime "
            << runtime / 1000 << "." << runtime % 1000 / 10;
#endif
  std::cout << "; " << precision << "; median of " << repeat << " after " << warm_up
            << " warm-up\n\n";
  std::cout << "matmul " << sig(matmul_rate / 1e12) << " TFLOP/s, attention "
            << sig(attention_rate / 1e12) << " TFLOP/s";
  if (fp8)
    std::cout << ", FP8 matmul "
              << (layers::device_has_fp8_matmul(device)
                      ? sig(fp8_rate / 1e12) + " TFLOP/s"
                      : std::string("none (no FP8 units: the FP8 rows multiply in ") + precision +
                            ")");
  std::cout << " (measured above)\n\n";
  std::cout << "| workload | TFLOP | seconds (min–max) | TFLOP/s | floor (s) | floor / time | "
               "memory beyond the weights (GiB) | note |\n|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : rows) {
    std::cout << "| " << r.what << " | ";
    const double s = bench::median(r.seconds);
    if (r.seconds.empty()) {
      std::cout << "| | | | | | " << r.note << " |\n";
      continue;
    }
    const auto [lo, hi] = std::minmax_element(r.seconds.begin(), r.seconds.end());
    const bool counted = r.flops.total() > 0;
    const double floor =
        bench::floor_seconds(r.flops, r.fp8 ? fp8_rate : matmul_rate, attention_rate);
    std::cout << (counted ? sig(r.flops.total() / 1e12) : "") << " | " << sig(s) << " (" << sig(*lo)
              << "–" << sig(*hi) << ") | " << (counted ? sig(r.flops.total() / s / 1e12) : "")
              << " | " << (counted ? sig(floor) : "") << " | "
              << (counted ? fixed(100 * floor / s, 0) + " %" : "") << " | "
              << fixed(r.extra_bytes / (1 << 30), 3) << " | " << r.note << " |\n";
  }
  for (const auto& [what, table] : profiles)
    std::cout << "\n### " << what << ": one more run, operators by self time\n\n" << table;
  return 0;
}
