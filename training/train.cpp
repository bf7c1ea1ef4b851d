#include "training/train.h"

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <fstream>
#include <optional>
#include <set>

#include "base/error.h"
#include "base/files.h"
#include "base/json.h"
#include "base/strings.h"
#include "diffusion/wan_dit.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "layers/linear.h"
#include "pipeline/pipeline.h"
#include "schedulers/registry.h"
#include "text/t5.h"
#include "text/tokenizer.h"
#include "vae/wan_vae.h"

namespace kinora::training {
namespace fs = std::filesystem;
using torch::Tensor;

namespace {

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t z = a * 0x9E3779B97F4A7C15ull + b + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void say(const StageOptions& o, const std::string& msg) {
  if (o.on_message) o.on_message(msg);
}

bool cancelled(const StageOptions& o) {
  return o.cancel && o.cancel->load();
}

double lr_at(const StageOptions& o, int64_t step) {
  if (step < o.warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup);
  const double p = static_cast<double>(step - o.warmup) /
                   static_cast<double>(std::max<int64_t>(1, o.steps - o.warmup));
  return o.lr * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * std::min(1.0, p))));
}

// Group i gets lr × factors[i] (1 where no factor is given).
void set_lr(torch::optim::AdamW& opt, double lr, const std::vector<double>& factors = {}) {
  auto& groups = opt.param_groups();
  for (std::size_t i = 0; i < groups.size(); ++i)
    static_cast<torch::optim::AdamWOptions&>(groups[i].options())
        .lr(lr * (i < factors.size() ? factors[i] : 1.0));
}

// ---------------------------------------------------------------- initialisation

void uniform_(Tensor& t, double bound) {
  t.uniform_(-bound, bound);
}

// PyTorch's default for convolutions: U(±1/√fan_in); norms 1, biases 0.
void init_vae(torch::nn::Module& m, uint64_t seed) {
  torch::NoGradGuard g;
  torch::manual_seed(seed);
  for (auto& item : m.named_parameters()) {
    const auto& name = item.key();
    auto& p = item.value();
    if (ends_with(name, "gamma"))
      p.fill_(1);
    else if (ends_with(name, "bias"))
      p.zero_();
    else
      uniform_(p, 1.0 / std::sqrt(static_cast<double>(p[0].numel())));
  }
  // The posterior's log-variance starts at −6 (σ ≈ 0.05), so that early training
  // is not swamped by sampling noise while the means are still small.
  auto b = m.named_parameters()["conv1.bias"];
  b.slice(0, b.size(0) / 2).fill_(-6);
}

// T5's: embeddings N(0, 1), projections N(0, 1/fan_in), relative biases small, norms 1.
void init_t5(torch::nn::Module& m, uint64_t seed) {
  torch::NoGradGuard g;
  torch::manual_seed(seed);
  for (auto& item : m.named_parameters()) {
    const auto& name = item.key();
    auto& p = item.value();
    if (name == "token_embedding.weight")
      p.normal_(0, 1);
    else if (name.find("pos_embedding") != std::string::npos)
      // Relative-position biases that differ by O(1) between distances, so each
      // head weighs neighbours by where they stand from the first step: started
      // near zero (and moved at AdamW's step size) the encoder stays a bag of
      // words for thousands of steps, and "a red circle on a blue background"
      // reads as "a blue circle on a red background".
      p.normal_(0, 1);
    else if (p.dim() == 1)
      p.fill_(1);  // RMS norm weights
    else
      p.normal_(0, 1.0 / std::sqrt(static_cast<double>(p.size(1))));
  }
}

// Wan's init_weights: Xavier-uniform linears (and patch embedding), N(0, 0.02) for
// the text and time embeddings, a zero output head, modulation N(0, 1/dim).
void init_dit(torch::nn::Module& m, uint64_t seed, int64_t dim) {
  torch::NoGradGuard g;
  torch::manual_seed(seed);
  for (auto& item : m.named_parameters()) {
    const auto& name = item.key();
    auto& p = item.value();
    const bool embed = starts_with(name, "text_embedding.") || starts_with(name, "time_embedding.");
    if (ends_with(name, "modulation"))
      p.normal_(0, 1.0 / std::sqrt(static_cast<double>(dim)));
    else if (name == "head.head.weight" || name == "head.head.bias" || ends_with(name, ".bias"))
      p.zero_();
    else if (p.dim() == 1)
      p.fill_(1);  // norm weights
    else if (embed)
      p.normal_(0, 0.02);
    else {
      const double fan_out = static_cast<double>(p.size(0));
      const double fan_in = static_cast<double>(p[0].numel());
      uniform_(p, std::sqrt(6.0 / (fan_in + fan_out)));
    }
  }
}

}  // namespace

namespace {

// A head started as a position kernel: its attention peaks at the key that is
// (dt, dy, dx) latent frames / tokens from the query (key − query); without
// dt, at that place in every frame alike.
struct HeadKernel {
  int64_t head;
  std::optional<int64_t> dt;
  int64_t dy = 0, dx = 0;
  // 0: sharp in space (the two highest-frequency pairs of height and width).
  // Otherwise broad: only the second pair of each, its score ≈ a Gaussian of
  // this many tokens' width around (dy, dx).
  double spread = 0;
};

// On the two highest-frequency RoPE pairs of each axis the kernel sets, q and
// k get a constant part only (weight rows zeroed, the bias set), k's turned by
// the offset. With `outweigh` 1 the bias is the typical size of a row's output
// and the norm gain is `depth`. Wan normalises q and k over the whole width,
// so each token's constant part is divided by that token's scale, which its
// content sets; with many such channels in a narrow head (8 heads of 24) that
// scale's spread from key to key outweighs a token's step in the kernel (on
// random content half the queries' strongest key was the wrong one). So with
// `outweigh` K > 1 the bias is K times the typical size, the scale is then
// mostly the constant parts', and the gain is set so that the constant parts
// come out of the norm at `depth` all the same.
void init_head_kernels(torch::nn::Module& dit, int64_t num_heads,
                       const std::vector<HeadKernel>& kernels, double depth, double outweigh) {
  torch::NoGradGuard g;
  auto named = dit.named_parameters();
  for (int64_t block = 0;; ++block) {
    const std::string at = "blocks." + std::to_string(block) + ".self_attn.";
    if (!named.contains(at + "q.weight")) break;
    for (const std::string which : {"q", "k"}) {
      auto w = named[at + which + ".weight"];
      auto b = named[at + which + ".bias"];
      auto gain = named[at + "norm_" + which + ".weight"];
      const int64_t d = w.size(0) / num_heads, d6 = d / 6, dt = d - 4 * d6;
      // The typical size of a row's output for inputs of unit size.
      const double typical = std::sqrt(w.pow(2).sum(1).mean().item<double>());
      std::vector<std::pair<int64_t, double>> channels;  // and their depth
      // A pair with constant parts q = c·(1, 0) and k = c·(cos ψ, sin ψ) scores
      // c²·cos((m − n)θ − ψ) between query position m and key position n: it
      // peaks where m − n = ψ/θ, so a key `offset` from the query takes
      // ψ = −offset·θ.
      auto constant = [&](int64_t ch, double psi, double at_depth) {
        const bool is_k = which == "k";
        const double c = outweigh * typical;
        w.narrow(0, ch, 2).zero_();
        b[ch].fill_(is_k ? c * std::cos(psi) : c);
        b[ch + 1].fill_(is_k ? c * std::sin(psi) : 0.0);
        channels.emplace_back(ch, at_depth);
      };
      // The two highest-frequency pairs of one axis: `first` in the head, `dims`
      // channels (RoPE's frequencies θ_j = 10000^(−2j/dims)).
      // A broad kernel uses the second pair alone: c²/√d·cos(θΔ) ≈ a Gaussian in
      // Δ of variance √d/(c²θ²), so c = d^¼/(θ·spread).
      auto axis = [&](int64_t head, int64_t first, int64_t dims, int64_t offset, double spread) {
        for (const int64_t j : {0, 1}) {
          const double theta = std::pow(10000.0, -2.0 * j / static_cast<double>(dims));
          if (spread > 0 && j == 0) continue;
          const double at_depth =
              spread > 0 ? std::pow(static_cast<double>(d), 0.25) / (theta * spread) : depth;
          constant(head * d + 2 * (first + j), -static_cast<double>(offset) * theta, at_depth);
        }
      };
      const int64_t h0 = dt / 2, w0 = h0 + d6;  // first height / width pair
      for (const auto& k : kernels) {
        axis(k.head, h0, 2 * d6, k.dy, k.spread);
        axis(k.head, w0, 2 * d6, k.dx, k.spread);
        if (k.dt) axis(k.head, 0, dt, *k.dt, 0);
      }
      // The norm's scale for inputs of unit size: the root mean square of every
      // row's output, constant parts included.
      const double scale =
          outweigh == 1.0 ? typical : std::sqrt((w.pow(2).sum(1) + b.pow(2)).mean().item<double>());
      for (const auto& [ch, at_depth] : channels)
        gain.narrow(0, ch, 2).fill_(at_depth * scale / (outweigh * typical));
    }
  }
}

}  // namespace

void init_locality_heads(torch::nn::Module& dit, int64_t num_heads, int64_t heads, double depth,
                         int64_t first) {
  if (heads <= first) return;
  if (heads > std::min<int64_t>(num_heads, 3))
    throw Error("--locality-heads " + std::to_string(heads) + ": at most 3, and the DiT has " +
                std::to_string(num_heads) + " heads");
  std::vector<HeadKernel> kernels;
  for (int64_t head = first; head < heads; ++head) {
    if (head == 0)
      kernels.push_back({0, std::nullopt});  // every frame alike
    else
      kernels.push_back({head, head == 1 ? -1 : 1});  // the frame before / after
  }
  init_head_kernels(dit, num_heads, kernels, depth, 1.0);
}

void init_motion_heads(torch::nn::Module& dit, int64_t num_heads, int64_t first, int64_t count,
                       double depth) {
  if (count == 0) return;
  if ((count != 4 && count != 8) || first < 0 || first + count > num_heads)
    throw Error("--motion-heads " + std::to_string(count) + ": 4 or 8, after the " +
                std::to_string(first) + " locality heads, within the DiT's " +
                std::to_string(num_heads) + " heads");
  // Where an object moving left / right / up / down was one latent frame
  // before (key − query: the rows and columns grow downwards and rightwards).
  const int64_t came_from[4][2] = {{0, 1}, {0, -1}, {1, 0}, {-1, 0}};
  std::vector<HeadKernel> kernels;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t s = i < 4 ? 1 : -1;  // the frame before, then the frame after
    const auto& c = came_from[i % 4];
    kernels.push_back({first + i, -s, s * c[0], s * c[1]});
  }
  init_head_kernels(dit, num_heads, kernels, depth, 4.0);
}

void init_pool_heads(torch::nn::Module& dit, int64_t num_heads, int64_t first, int64_t count,
                     double depth) {
  if (count == 0) return;
  if ((count != 2 && count != 4) || first < 0 || first + count > num_heads)
    throw Error("--pool-heads " + std::to_string(count) + ": 2 or 4, after the " +
                std::to_string(first) + " locality and motion heads, within the DiT's " +
                std::to_string(num_heads) + " heads");
  std::vector<HeadKernel> kernels;
  for (int64_t i = 0; i < count; ++i) {
    const double spread = i % 2 == 0 ? 1.0 : 2.0;
    if (i < 2)
      kernels.push_back({first + i, 0, 0, 0, spread});  // the same frame
    else
      kernels.push_back({first + i, std::nullopt, 0, 0, spread});  // every frame
  }
  init_head_kernels(dit, num_heads, kernels, depth, 4.0);
}

namespace {

// ---------------------------------------------------------------- persistence

std::vector<std::pair<std::string, Tensor>> params_of(torch::nn::Module& m) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& item : m.named_parameters())
    out.emplace_back(item.key(),
                     item.value().detach().to(torch::kCPU, torch::kFloat32).contiguous());
  return out;
}

void save_module(torch::nn::Module& m, const fs::path& path,
                 const std::map<std::string, std::string>& metadata) {
  io::save_safetensors(path, params_of(m), metadata);
}

// The module's parameters from the file, each by name and shape; with `only`,
// those it accepts alone (the others keep their values).
void load_into(torch::nn::Module& m, const io::Checkpoint& ck, const fs::path& path,
               const std::function<bool(const std::string&)>& only = {}) {
  torch::NoGradGuard g;
  for (auto& item : m.named_parameters()) {
    const auto& name = item.key();
    if (only && !only(name)) continue;
    auto& p = item.value();
    if (!ck.contains(name)) fail_file(path, "training checkpoint has no tensor '" + name + "'");
    const auto t = ck.get(name);
    if (t.sizes() != p.sizes()) fail_file(path, "tensor '" + name + "' has the wrong shape");
    p.copy_(t);
  }
}

void load_into(torch::nn::Module& m, const fs::path& path) {
  load_into(m, io::Checkpoint::open(path), path);
}

// A trained model's file for a fresh run to start from (load_into): its config
// (metadata) must be the run's, key for key, so that a model of other heads or
// patches (the same shapes, another meaning) is refused by name rather than
// trained on. Reads the header only.
io::Checkpoint open_trained(const fs::path& path, const std::string& config) {
  if (!fs::exists(path)) fail_file(path, "no such file (--init-from wants a trained run's folder)");
  auto ck = io::Checkpoint::open(path);
  const auto it = ck.metadata().find("config");
  if (it == ck.metadata().end()) fail_file(path, "has no config in its metadata");
  const auto want = parse_json(config, "the run's config");
  const auto had = parse_json(it->second, path.string() + " (metadata 'config')");
  for (const auto& [key, value] : want.items())
    if (!had.contains(key) || had[key] != value)
      fail_file(path, "its config has " + key + " = " +
                          (had.contains(key) ? had[key].dump() : std::string("nothing")) +
                          "; this run's is " + value.dump());
  return ck;
}

void write_json(const fs::path& path, const nlohmann::json& j) {
  write_file_atomically(path, j.dump(2) + "\n");
}

nlohmann::json read_json(const fs::path& path) {
  return read_json_file(path);
}

// The optimizer through a temporary name, like every other file written here.
void save_optimizer(torch::optim::Optimizer& opt, const fs::path& path) {
  const auto tmp = temp_beside(path);
  try {
    torch::save(opt, tmp.string());
  } catch (const c10::Error& e) {
    std::error_code ec;
    fs::remove(tmp, ec);
    fail_file(path,
              std::string("could not write the optimizer state: ") + e.what_without_backtrace());
  }
  commit_temp(tmp, path);
}

// One line per logged step: step, the stage's losses, lr, seconds so far.
class LossLog {
 public:
  LossLog(const fs::path& path, const std::string& header) : path_(path) {
    if (!fs::exists(path_)) std::ofstream(path_) << header << "\n";
  }
  void add(int64_t step, const std::vector<double>& values, double lr, double seconds) {
    std::ofstream f(path_, std::ios::app);
    f << step;
    for (double v : values) f << "," << v;
    f << "," << lr << "," << seconds << "\n";
  }

 private:
  fs::path path_;
};

// Drops log lines past `step` (a resumed stage repeats them).
void truncate_log(const fs::path& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  bool header = true;
  while (std::getline(in, line)) {
    if (!header && std::stoll(line.substr(0, line.find(','))) > step) break;
    kept += line + "\n";
    header = false;
  }
  in.close();
  write_file_atomically(path, kept);
}

// A binary PPM: a dependency-free image of training samples.
void write_ppm(const fs::path& path, const Tensor& rgb) {  // [H, W, 3] uint8
  const auto t = rgb.contiguous();
  std::string bytes =
      "P6\n" + std::to_string(t.size(1)) + " " + std::to_string(t.size(0)) + "\n255\n";
  bytes.append(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()),
               static_cast<std::size_t>(t.numel()));
  write_file_atomically(path, bytes);
}

// Clips [B, 3, F, H, W] in [−1, 1] → one image [B·H, n·W, 3] uint8: a row per
// clip, `n` frames spread evenly from the first to the last.
Tensor strip(const Tensor& v, int64_t n = 3) {
  const int64_t F = v.size(2);
  std::vector<Tensor> rows;
  for (int64_t b = 0; b < v.size(0); ++b) {
    std::vector<Tensor> cols;
    for (int64_t k = 0; k < n; ++k)
      cols.push_back(v[b].select(1, k * (F - 1) / std::max<int64_t>(1, n - 1)));
    rows.push_back(torch::cat(cols, 2));
  }
  return torch::cat(rows, 1).permute({1, 2, 0}).add(1).mul(127.5).clamp(0, 255).to(torch::kUInt8);
}

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

Tensor frames_to_video(const Tensor& frames) {
  return frames.permute({3, 0, 1, 2}).to(torch::kFloat32).div(127.5).sub(1);
}

std::vector<std::string> grammar_captions() {
  std::vector<std::string> out;
  for (auto c : kColours)
    for (auto b : kColours)
      for (auto s : kShapes)
        for (auto d : kDirections) {
          if (b == c) continue;
          Scene sc;
          sc.object = c, sc.background = b, sc.shape = s, sc.direction = d;
          if (!held_out(sc)) out.push_back(sc.caption());
        }
  return out;
}

std::pair<Tensor, std::vector<std::string>> clip_batch(uint64_t first_seed, int64_t count,
                                                       const ClipSpec& spec) {
  std::vector<Scene> scenes;
  std::vector<std::string> captions;
  for (uint64_t s = first_seed; static_cast<int64_t>(scenes.size()) < count; ++s) {
    const auto scene = random_scene(s, spec);
    if (held_out(scene)) continue;
    scenes.push_back(scene);
    captions.push_back(scene.caption());
  }
  // Rendering is pure per scene, and on a GPU machine the device would
  // otherwise wait for one CPU core to draw the dataset.
  std::vector<Tensor> clips(scenes.size());
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const auto k = static_cast<std::size_t>(i);
      clips[k] = render(scenes[k], spec);
    }
  });
  for (auto& c : clips) c = frames_to_video(c);
  return {torch::stack(clips), captions};
}

// ---------------------------------------------------------------- stage 1

void train_tokenizer(const fs::path& run_dir, int64_t vocab_size) {
  fs::create_directories(run_dir);
  auto sentences = grammar_captions();
  sentences.emplace_back("");  // the empty caption (classifier-free guidance)
  text::Tokenizer::train(sentences, run_dir / kTokenizerFile, vocab_size);
}

// ---------------------------------------------------------------- stage 2

namespace {
// Per-channel mean and standard deviation of the posterior means of
// `o.stats_clips` full-length clips.
std::pair<std::vector<double>, std::vector<double>> latent_statistics(vae::WanVAE& model,
                                                                      const VaeOptions& o) {
  torch::NoGradGuard g;
  std::vector<Tensor> mus;
  for (int64_t i = 0; i < o.stats_clips; i += 16) {
    const auto x =
        clip_batch(mix(o.seed, 0x57A7 + i), std::min<int64_t>(16, o.stats_clips - i), o.clip).first;
    mus.push_back(model.posterior(x).first);
  }
  const auto all = torch::cat(mus).transpose(0, 1).flatten(1).to(torch::kFloat64);  // [z, N]
  const auto mean = all.mean(1).contiguous(), spread = all.std(1).contiguous();
  return {{mean.data_ptr<double>(), mean.data_ptr<double>() + mean.numel()},
          {spread.data_ptr<double>(), spread.data_ptr<double>() + spread.numel()}};
}

// See VaeOptions::inflate_from.
void inflate_from_images(torch::nn::Module& m, const fs::path& path) {
  const auto ck = io::Checkpoint::open(path);
  torch::NoGradGuard g;
  int copied = 0;
  for (auto& item : m.named_parameters()) {
    const auto& name = item.key();
    auto& p = item.value();
    if (!ck.contains(name)) continue;
    const auto t = ck.get(name);
    if (t.sizes() != p.sizes())
      fail_file(path, "tensor '" + name + "' has shape " + c10::str(t.sizes()) + ", this VAE " +
                          c10::str(p.sizes()) + " (another --dim?)");
    p.copy_(t);
    ++copied;
    // Causal 3D kernels [out, in, t, h, w]: the taps on past frames (all but the last).
    if (p.dim() == 5 && p.size(2) > 1) p.slice(2, 0, p.size(2) - 1).zero_();
  }
  if (copied == 0) fail_file(path, "no tensor of this VAE in it: not a Wan VAE checkpoint");
  // The temporal resampling an image model lacks starts as the identity on the
  // newest frame: each stride-2 time convolution of the encoder keeps the later
  // frame of each pair, each one of the decoder repeats its frame. At 4× the
  // video VAE so begins as the image model on every fourth frame and only has
  // to learn the frames between.
  for (auto& item : m.named_parameters()) {
    const auto& name = item.key();
    if (ck.contains(name) || name.find("time_conv.") == std::string::npos) continue;
    auto& p = item.value();
    p.zero_();
    if (p.dim() != 5) continue;  // the bias stays zero
    const int64_t in = p.size(1), t = p.size(2);
    const auto eye = torch::eye(in, p.options()).view({in, in, 1, 1});
    for (int64_t o = 0; o + in <= p.size(0); o += in)
      p.slice(0, o, o + in).select(2, t - 1).copy_(eye);
  }
}

// The best the DiT can do: the scene measures (what the semantic test checks)
// on the VAE's reconstructions of full-length clips from seeds no stage trains
// on. Written to <run>/vae-report.json and said.
void report_reconstructions(const VaeOptions& o, vae::WanVAE& model) {
  constexpr int kClips = 48;
  int background = 0, object = 0, shape = 0, direction = 0, truth = 0;
  for (uint64_t seed = 0x7E57'0000; seed < 0x7E57'0000 + kClips; ++seed) {
    const auto scene = random_scene(seed, o.clip);
    const auto frames = render(scene, o.clip);
    torch::Tensor rec;
    {
      torch::NoGradGuard g;
      rec = model.decode_unnormalised(model.posterior(frames_to_video(frames).unsqueeze(0)).first);
    }
    const auto pixels =
        rec[0].permute({1, 2, 3, 0}).add(1).mul(127.5).round().clamp(0, 255).to(torch::kUInt8);
    const auto m = measure(pixels), t = measure(frames);
    background += m.background == scene.background;
    object += m.object_found && m.object == scene.object;
    shape += m.object_found && m.shape == scene.shape;
    direction += m.object_found && m.direction == scene.direction;
    truth += t.object_found && t.shape == scene.shape && t.object == scene.object &&
             t.background == scene.background && t.direction == scene.direction;
  }
  const auto pct = [&](int k) { return std::round(1000.0 * k / kClips) / 10; };
  const nlohmann::json j{{"clips", kClips},
                         {"background_pct", pct(background)},
                         {"object_pct", pct(object)},
                         {"shape_pct", pct(shape)},
                         {"direction_pct", pct(direction)},
                         {"originals_all_pct", pct(truth)}};
  write_json(o.run_dir / "vae-report.json", j);
  char line[256];
  std::snprintf(line, sizeof line,
                "vae: measures on reconstructions of %d unseen clips: background %.1f%%, "
                "object %.1f%%, shape %.1f%%, direction %.1f%% (the originals: %.1f%% on all four)",
                kClips, pct(background), pct(object), pct(shape), pct(direction), pct(truth));
  say(o, line);
}
}  // namespace

// How much more the object's pixels weigh in the VAE's loss than the
// background's (train_vae, and fit_latents, which descends that loss).
constexpr double kObjectLossWeight = 10;

Tensor object_mask(const Tensor& video) {
  const auto border = torch::cat({video.select(3, 0), video.select(3, -1)}, 3).flatten(2);
  const auto bg = std::get<0>(border.median(2)).view({-1, 3, 1, 1, 1});  // [B, 3, 1, 1, 1]
  return ((video - bg).abs().sum(1, true) > 0.1).to(torch::kFloat32);
}

FittedLatents fit_latents(vae::WanVAE& vae, const Tensor& video, int64_t steps, double lr,
                          const std::function<void(int64_t, double)>& on_step) {
  if (steps < 0 || !(lr > 0)) throw Error("fit_latents: steps must be ≥ 0 and the rate > 0");
  const auto weight = (1 + (kObjectLossWeight - 1) * object_mask(video)).expand_as(video);
  const auto weighted_l1 = [&](const Tensor& rec) {
    return ((rec - video).abs() * weight).sum() / weight.sum();
  };
  // What the steps descend: each clip's own weighted L1, summed, so that a
  // clip's gradient (and with Adam its path) does not depend on the others
  // fitted beside it.
  const std::vector<int64_t> per_clip = {1, 2, 3, 4};
  const auto clip_weight = weight.sum(per_clip);
  const auto fit_loss = [&](const Tensor& rec) {
    return (((rec - video).abs() * weight).sum(per_clip) / clip_weight).sum();
  };
  FittedLatents out;
  Tensor z;
  {
    torch::NoGradGuard g;
    z = vae.posterior(video).first;
    out.l1_encoded = weighted_l1(vae.decode_unnormalised(z)).item<double>();
  }
  if (steps > 0) {
    // The VAE's calls build graphs; its weights take no gradient and stay put.
    vae.set_trainable(true);
    for (auto& p : vae.module().parameters()) p.set_requires_grad(false);
    z = z.clone().set_requires_grad(true);
    torch::AutoGradMode grad(true);
    torch::optim::Adam opt({z}, torch::optim::AdamOptions(lr));
    for (int64_t k = 0; k < steps; ++k) {
      const auto rec = vae.decode_unnormalised(z);
      opt.zero_grad();
      fit_loss(rec).backward();
      opt.step();
      if (on_step) on_step(k + 1, weighted_l1(rec.detach()).item<double>());
    }
    vae.set_trainable(false);
    z = z.detach();
  }
  torch::NoGradGuard g;
  out.l1_fitted = weighted_l1(vae.decode_unnormalised(z)).item<double>();
  out.z = z;
  return out;
}

void train_vae(const VaeOptions& o) {
  const auto state = o.run_dir / "vae-state";
  vae::WanVAEConfig cfg;
  cfg.dim = o.dim;
  if (o.spatial_compression != 8 && o.spatial_compression != 4)
    throw Error("kinora train vae: --spatial-compression must be 8 or 4, got " +
                std::to_string(o.spatial_compression));
  if (o.time_compression != 4 && o.time_compression != 2 && o.time_compression != 1)
    throw Error("kinora train vae: --time-compression must be 4, 2 or 1, got " +
                std::to_string(o.time_compression));
  // One stage fewer at 4× (the released VAE's last, 4×-wide stage dropped);
  // time is halved by the last stages, as in the released VAE.
  if (o.spatial_compression == 4) cfg.dim_mult = {1, 2, 4};
  const std::size_t stages = cfg.dim_mult.size() - 1;
  cfg.temporal_downsample.assign(stages, false);
  for (int64_t t = o.time_compression, i = static_cast<int64_t>(stages) - 1; t > 1; t /= 2, --i)
    cfg.temporal_downsample[static_cast<std::size_t>(i)] = true;
  vae::WanVAE model(cfg);
  init_vae(model.module(), o.seed);
  const bool resuming = fs::exists(state / "state.json");
  if (!o.inflate_from.empty() && !o.init_from.empty())
    throw Error("kinora train vae: --inflate-from and --init-from are two starts; give one");
  if (!o.inflate_from.empty() && !resuming) inflate_from_images(model.module(), o.inflate_from);
  if (!o.decoder_from.empty() && (o.init_from.empty() || !o.decoder_only))
    throw Error(
        "kinora train vae: --decoder-from replaces the decoder of --init-from's file "
        "in a --decoder-only run; give both");
  // Statistics kept from the file a decoder-only run starts from (and recorded
  // in its state, so that a resumed run keeps them too).
  std::optional<std::pair<std::vector<double>, std::vector<double>>> kept_statistics;
  if (!o.init_from.empty() && !resuming) {
    auto arch = nlohmann::json::parse(cfg.to_json());
    arch.erase("latents_mean"), arch.erase("latents_std");
    const auto ck = open_trained(o.init_from, arch.dump());
    load_into(model.module(), ck, o.init_from);
    if (!o.decoder_from.empty()) {
      load_into(model.module(), open_trained(o.decoder_from, arch.dump()), o.decoder_from,
                [](const std::string& key) {
                  return starts_with(key, "decoder.") || starts_with(key, "conv2.");
                });
      say(o, "vae: the decoder from " + o.decoder_from.string());
    }
    if (o.decoder_only) {
      const auto had = vae::WanVAEConfig::from_checkpoint(ck);
      kept_statistics.emplace(had.latents_mean, had.latents_std);
    }
    say(o, "vae: starting from " + o.init_from.string());
  }
  fs::create_directories(state);  // after the options and the file to start from are checked
  model.set_precision(o.precision);
  model.set_trainable(true);
  if (o.decoder_only)
    for (auto& item : model.module().named_parameters())
      if (starts_with(item.key(), "encoder.") || starts_with(item.key(), "conv1."))
        item.value().requires_grad_(false);  // no gradient: AdamW leaves them alone
  torch::optim::AdamW opt(model.module().parameters(),
                          torch::optim::AdamWOptions(o.lr).betas({0.9, 0.99}).weight_decay(0.0));
  int64_t step = 0;
  double seconds = 0;
  if (resuming) {
    const auto j = read_json(state / "state.json");
    step = j.at("step"), seconds = j.at("seconds");
    if (j.contains("latents_mean"))
      kept_statistics.emplace(j.at("latents_mean").get<std::vector<double>>(),
                              j.at("latents_std").get<std::vector<double>>());
    load_into(model.module(), state / "vae.safetensors");
    torch::load(opt, (state / "optimizer.pt").string());
    say(o, "vae: resuming at step " + std::to_string(step));
  }
  const auto log_path = state / "loss.csv";
  truncate_log(log_path, step);
  LossLog log(log_path, "step,loss,l1,mse,kl,lr,seconds");
  // Reconstructions of the same four clips at every checkpoint: originals on the
  // left, the decoded posterior means on the right.
  const auto samples = clip_batch(mix(o.seed, 0x5A11), 4, o.clip).first;
  auto save = [&] {
    {
      torch::NoGradGuard g;
      const auto rec = model.decode_unnormalised(model.posterior(samples).first).clamp(-1, 1);
      write_ppm(state / ("samples-" + std::to_string(step) + ".ppm"),
                torch::cat({strip(samples), strip(rec)}, 1));
    }
    save_module(model.module(), state / "vae.safetensors", {});
    save_optimizer(opt, state / "optimizer.pt");
    nlohmann::json j = {{"step", step}, {"seconds", seconds}};
    if (kept_statistics)
      j["latents_mean"] = kept_statistics->first, j["latents_std"] = kept_statistics->second;
    write_json(state / "state.json", j);
  };
  ClipSpec spec = o.clip;
  spec.frames = o.train_frames;
  double sum[4] = {0, 0, 0, 0};
  int64_t n = 0;
  while (step < o.steps && !cancelled(o)) {
    const auto t0 = Clock::now();
    const double lr = lr_at(o, step);
    set_lr(opt, lr);
    torch::manual_seed(mix(o.seed, 1000000 + step));
    auto x = clip_batch(mix(o.seed, step), o.batch, spec).first;
    // The object's pixels (far from the clip's background, the median of its
    // border) weigh 10× in the loss: they are a small share of each frame, and an
    // autoencoder first learns to draw backgrounds alone.
    auto fg = object_mask(x);  // [B, 1, F, H, W]
    if (o.crop > 0 && o.crop < spec.width && o.crop < spec.height) {
      // Crops around the object three times in four (its centre in the middle
      // frame, jittered), anywhere otherwise.
      std::vector<Tensor> xs, fs;
      for (int64_t b = 0; b < o.batch; ++b) {
        const uint64_t r = mix(o.seed ^ 0xC209, step * 131 + b);
        int64_t y0 = static_cast<int64_t>(r % static_cast<uint64_t>(spec.height - o.crop + 1));
        int64_t x0 =
            static_cast<int64_t>((r >> 20) % static_cast<uint64_t>(spec.width - o.crop + 1));
        const auto mid = fg[b][0][spec.frames / 2];
        if ((r >> 40) % 4 != 0 && mid.sum().item<double>() > 0) {
          const auto nz = mid.nonzero().to(torch::kFloat32).mean(0);
          const auto jitter = [&](int shift) {
            return static_cast<int64_t>((r >> shift) % 17) - 8;
          };
          y0 = std::clamp<int64_t>(std::lround(nz[0].item<double>()) - o.crop / 2 + jitter(44), 0,
                                   spec.height - o.crop);
          x0 = std::clamp<int64_t>(std::lround(nz[1].item<double>()) - o.crop / 2 + jitter(52), 0,
                                   spec.width - o.crop);
        }
        xs.push_back(x[b].slice(2, y0, y0 + o.crop).slice(3, x0, x0 + o.crop));
        fs.push_back(fg[b].slice(2, y0, y0 + o.crop).slice(3, x0, x0 + o.crop));
      }
      x = torch::stack(xs);
      fg = torch::stack(fs);
    }
    const auto weight = (1 + (kObjectLossWeight - 1) * fg).expand_as(x);
    const auto wsum = weight.sum();
    auto [mu, logvar] = model.posterior(x);
    logvar = logvar.clamp(-30, 20);
    const auto z = mu + torch::exp(0.5 * logvar) * torch::randn_like(mu);
    const auto rec = model.decode_unnormalised(z);
    const auto l1 = ((rec - x).abs() * weight).sum() / wsum;
    const auto mse = ((rec - x).pow(2) * weight).sum() / wsum;
    const auto kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean();
    const auto loss = l1 + mse + o.kl_weight * kl;
    opt.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model.module().parameters(), 1.0);
    opt.step();
    ++step;
    seconds += seconds_since(t0);
    sum[0] += loss.item<double>(), sum[1] += l1.item<double>(), sum[2] += mse.item<double>(),
        sum[3] += kl.item<double>(), ++n;
    if (step % o.log_every == 0 || step == o.steps) {
      log.add(step, {sum[0] / n, sum[1] / n, sum[2] / n, sum[3] / n}, lr, seconds);
      char line[160];
      std::snprintf(line, sizeof line,
                    "vae step %lld/%lld  loss %.4f  l1 %.4f  kl %.2f  %.2f s/step",
                    static_cast<long long>(step), static_cast<long long>(o.steps), sum[0] / n,
                    sum[1] / n, sum[3] / n, seconds / static_cast<double>(step));
      say(o, line);
      sum[0] = sum[1] = sum[2] = sum[3] = 0, n = 0;
    }
    if (step % o.save_every == 0) save();
  }
  save();
  if (step < o.steps) {
    say(o, "vae: stopped at step " + std::to_string(step) + "; run again to resume");
    return;
  }

  // The latent statistics that normalise the DiT's inputs; a decoder-only run
  // from a trained file keeps that file's.
  model.set_trainable(false);
  const auto [mean, spread] = kept_statistics ? *kept_statistics : latent_statistics(model, o);
  model.set_latent_statistics(mean, spread);
  save_module(
      model.module(), o.run_dir / kVaeFile,
      {{"config", model.config().to_json()},
       {"kinora",
        nlohmann::json{{"model", "Kinora tiny Wan 2.1 VAE"}, {"trained_steps", step}}.dump()}});
  say(o, "vae: wrote " + (o.run_dir / kVaeFile).string());
  report_reconstructions(o, model);
}

// ---------------------------------------------------------------- stage 3

namespace {

// The VAE's latents of `n` clips, encoded once and cached in the run folder.
std::pair<Tensor, std::vector<std::string>> latent_dataset(const DitOptions& o, vae::WanVAE& vae) {
  const auto path = o.run_dir / "dit-state" / "latents.safetensors";
  // A cache made before placements were recorded holds clips placed anywhere,
  // and one made before refinement was recorded the encoder's own latents.
  const std::string placement = name(o.clip.placement);
  const std::string refine =
      o.refine_steps == 0 ? "0"
                          : std::to_string(o.refine_steps) + " steps at " + c10::str(o.refine_lr);
  if (fs::exists(path)) {
    const auto ck = io::Checkpoint::open(path);
    const auto& meta = ck.metadata();
    const auto it = meta.find("placement");
    const std::string cached = it == meta.end() ? name(Placement::Anywhere) : it->second;
    // From the header: a cache of other clips is not read.
    const auto rf = meta.find("refine");
    if (cached == placement && ck.shapes().at("latents").at(0) == o.dataset &&
        (rf == meta.end() ? std::string("0") : rf->second) == refine) {
      const auto caps = parse_json(meta.at("captions"), path.string() + " (metadata 'captions')",
                                   {std::size_t{256} << 20, JsonLimits{}.max_depth});
      // A copy (the file is mapped), on the stage's device.
      return {ck.get("latents").to(o.device, torch::kFloat32, false, /*copy=*/true),
              caps.template get<std::vector<std::string>>()};
    }
    say(o, "dit: the cached latents (" + path.string() + ") are of other clips; encoding anew");
  }
  std::vector<Tensor> lats;
  std::vector<std::string> caps;
  double refined_before = 0, refined_after = 0;
  int64_t refined = 0;
  // Clips wait here to be refined together, refine_batch at a time: the fit's
  // steps are sequential, so a GPU wants many clips in each.
  std::vector<Tensor> pending;
  int64_t pending_clips = 0;
  const auto refine_pending = [&] {
    if (pending.empty()) return;
    const auto fit = fit_latents(vae, torch::cat(pending), o.refine_steps, o.refine_lr);
    lats.push_back(vae.normalise(fit.z));  // as encode() returns latents
    const auto n = static_cast<double>(pending_clips);
    refined_before += n * fit.l1_encoded, refined_after += n * fit.l1_fitted;
    refined += pending_clips;
    pending.clear(), pending_clips = 0;
  };
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < o.dataset; i += 16) {
    auto [x, c] =
        clip_batch(mix(o.seed, 0xDA7A000 + i), std::min<int64_t>(16, o.dataset - i), o.clip);
    if (o.refine_steps == 0) {
      lats.push_back(vae.encode(x.to(o.device)));
    } else {
      pending_clips += x.size(0);
      pending.push_back(x.to(o.device));
      if (pending_clips >= o.refine_batch) refine_pending();
    }
    caps.insert(caps.end(), c.begin(), c.end());
    if ((i / 16) % 32 == 0)
      say(o, "dit: encoding clips " + std::to_string(i) + "/" + std::to_string(o.dataset) + " (" +
                 std::to_string(static_cast<int>(seconds_since(t0))) + " s)");
  }
  refine_pending();
  if (refined > 0) {
    // The script that trains on a GPU reads the seconds from this line.
    char line[200];
    std::snprintf(line, sizeof line,
                  "dit: latents refined (%s) in %.1f s: weighted L1 of their decoding %.4f -> "
                  "%.4f",
                  refine.c_str(), seconds_since(t0), refined_before / static_cast<double>(refined),
                  refined_after / static_cast<double>(refined));
    say(o, line);
  }
  auto lat = torch::cat(lats);
  io::save_safetensors(
      path, {{"latents", lat.to(torch::kCPU)}},
      {{"captions", nlohmann::json(caps).dump()}, {"placement", placement}, {"refine", refine}});
  return {lat, caps};
}

// One kernel per operation for the whole list, not per tensor: on a GPU a
// small model's step is otherwise bound by kernel launches.
void ema_update(std::vector<Tensor>& ema, const std::vector<Tensor>& params, double decay) {
  torch::NoGradGuard g;
  at::_foreach_mul_(ema, decay);
  at::_foreach_add_(ema, params, 1 - decay);
}

// Gradients scaled so that their joint L2 norm is at most `max_norm`, as
// torch::nn::utils::clip_grad_norm_ does, but without reading the norm back
// to the host: that would wait for the device at every step.
void clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  torch::NoGradGuard g;
  std::vector<Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return;
  const auto norms = at::_foreach_norm(grads);
  const auto total = torch::stack(norms).to(torch::kFloat32).norm();
  const auto coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
  for (auto& grad : grads) grad.mul_(coef);
}

// Copies `values` into the module's parameters (same order as parameters()).
void assign(torch::nn::Module& m, const std::vector<Tensor>& values) {
  torch::NoGradGuard g;
  auto ps = m.parameters();
  for (std::size_t i = 0; i < ps.size(); ++i) ps[i].copy_(values[i]);
}
std::vector<Tensor> clones(torch::nn::Module& m) {
  std::vector<Tensor> out;
  for (auto& p : m.parameters()) out.push_back(p.detach().clone());
  return out;
}

}  // namespace

Tensor encode_captions(text::T5Encoder& te, const text::Tokenizer& tok,
                       const std::vector<std::string>& captions, int64_t text_len,
                       torch::Device device) {
  std::vector<Tensor> ids, masks;
  for (const auto& c : captions) {
    const auto t = tok.encode(c, text_len);
    ids.push_back(t.ids[0]), masks.push_back(t.mask[0]);
  }
  const auto mask = torch::stack(masks).to(device);
  return te.forward(torch::stack(ids).to(device), mask) * mask.unsqueeze(-1).to(torch::kFloat32);
}

namespace {

// What a DiT checkpoint draws: four fixed captions sampled from noise as the
// pipeline samples the embedded model (UniPC, 20 steps, kDefaults.guidance, the
// training shift, seed 0), decoded, frames 0, 4, 8, 12 and 16 of each in a row.
// Called with the EMA weights in the modules.
void write_dit_samples(const fs::path& path, diffusion::WanModel& dit, text::T5Encoder& te,
                       const text::Tokenizer& tok, vae::WanVAE& vae, const DitOptions& o,
                       torch::IntArrayRef latent_shape) {  // [C, F, H, W]
  static const std::vector<std::string> captions = {
      "a red circle moving left on a blue background",
      "a yellow square moving down on a black background",
      "a white triangle moving right on a green background",
      "a blue circle moving up on a yellow background", ""};
  torch::NoGradGuard no_grad;
  const auto ctx = encode_captions(te, tok, captions, o.text_len, o.device);
  const int64_t n = static_cast<int64_t>(captions.size()) - 1;
  const layers::Conditioning cond{ctx.slice(0, 0, n)}, uncond{ctx.slice(0, n).expand({n, -1, -1})};
  std::vector<int64_t> shape = {n};
  shape.insert(shape.end(), latent_shape.begin(), latent_shape.end());
  torch::manual_seed(0);                      // each training step seeds its own draws
  auto x = torch::randn(shape).to(o.device);  // the same noise on every device
  auto sampler = schedulers::make_scheduler("flow_unipc");
  sampler->set_timesteps(kDefaults.steps, {.shift = o.shift, .mu = std::nullopt});
  for (int i = 0; i < sampler->num_steps(); ++i) {
    const auto t = sampler->timesteps()[i].to(o.device, torch::kFloat32).view({1});
    x = sampler->step(pipeline::guided_prediction(dit, x, t, cond, &uncond, kDefaults.guidance), i,
                      x);
  }
  write_ppm(path, strip(vae.decode(x).to(torch::kCPU, torch::kFloat32).clamp(-1, 1), 5));
}
}  // namespace

Tensor draw_sigmas(const DitOptions& o, int64_t n) {
  const auto u =
      o.sigma == SigmaDraw::Uniform ? torch::rand({n}) : torch::sigmoid(torch::randn({n}));
  return o.shift * u / (1 + (o.shift - 1) * u);
}

Tensor object_weights(const Tensor& x0, double k, double threshold) {
  if (x0.dim() != 5) throw Error("object_weights: latents must be [B, C, F, H, W]");
  const auto background = std::get<0>(x0.flatten(3).median(3)).unsqueeze(-1).unsqueeze(-1);
  const auto distance = (x0 - background).pow(2).mean(1, true).sqrt();  // [B, 1, F, H, W]
  const auto object = torch::max_pool3d((distance > threshold).to(x0.scalar_type()), {1, 3, 3},
                                        {1, 1, 1}, {0, 1, 1});
  return 1 + k * object;
}

NoisedBatch noise_batch(const Tensor& x0, const Tensor& sigma, const Tensor& noise,
                        double given_frame) {
  if (x0.dim() != 5 || sigma.dim() != 1 || sigma.size(0) != x0.size(0) ||
      noise.sizes() != x0.sizes())
    throw Error("noise_batch: clips [B, C, F, H, W], σ [B] and noise like the clips");
  const int64_t b = x0.size(0), f = x0.size(2);
  auto frame_sigma = sigma.view({-1, 1, 1, 1, 1}).expand({b, 1, f, 1, 1});
  auto weight = torch::ones({b, 1, f, 1, 1}, x0.options());
  if (given_frame > 0) {
    const auto chosen = torch::rand({b}) < given_frame;
    const auto frame = torch::randint(f, {b}, torch::kLong);
    const auto u = torch::rand({b});
    const auto given = (torch::arange(f, torch::kLong).view({1, -1}) == frame.view({-1, 1})) &
                       chosen.view({-1, 1});
    const auto g = given.view({b, 1, f, 1, 1}).to(x0.device());
    frame_sigma =
        torch::where(g, (sigma * u.to(sigma.device())).view({-1, 1, 1, 1, 1}), frame_sigma);
    weight = weight.masked_fill(g, 0);
  }
  return {(1 - frame_sigma) * x0 + frame_sigma * noise, weight};
}

WordGaps word_gaps(diffusion::WanModel& dit, text::T5Encoder& te, const text::Tokenizer& tok,
                   const Tensor& latents, const std::vector<std::string>& captions,
                   const DitOptions& o) {
  const int64_t n = latents.size(0);
  if (n == 0 || static_cast<int64_t>(captions.size()) != n)
    throw Error("word_gaps: " + std::to_string(n) + " clips and " +
                std::to_string(captions.size()) + " captions");
  std::vector<Scene> scenes;
  for (const auto& c : captions) {
    const auto s = parse_caption(c);
    if (!s) throw Error("word_gaps: not a caption of the grammar: \"" + c + "\"");
    scenes.push_back(*s);
  }
  // Variant 0: the true captions; 1–4: object colour, background, shape, direction wrong.
  auto caption_of = [](Scene s, int variant) {
    auto other_colour = [&](Colour c) {
      for (std::size_t i = 1; i < kColours.size(); ++i) {
        const auto k = kColours[(static_cast<std::size_t>(c) + i) % kColours.size()];
        if (k != s.object && k != s.background) return k;
      }
      return c;
    };
    if (variant == 1) s.object = other_colour(s.object);
    if (variant == 2) s.background = other_colour(s.background);
    if (variant == 3) s.shape = kShapes[(static_cast<std::size_t>(s.shape) + 1) % kShapes.size()];
    if (variant == 4) {
      constexpr Direction opposite[] = {Direction::Right, Direction::Left, Direction::Down,
                                        Direction::Up};
      s.direction = opposite[static_cast<int>(s.direction)];
    }
    return s.caption();
  };
  torch::NoGradGuard no_grad;
  const auto device = latents.device();
  torch::manual_seed(mix(o.seed, 3000000));  // training steps seed their own draws
  const auto sigma = draw_sigmas(o, n);
  const auto noise = torch::randn(latents.sizes());  // the same draws on every device
  double sum[5] = {}, given_sum[2] = {};
  const int64_t chunk = std::max<int64_t>(1, o.batch);
  const int64_t frames = latents.size(2);
  for (int64_t b = 0; b < n; b += chunk) {
    const int64_t e = std::min(n, b + chunk);
    const auto x0 = latents.slice(0, b, e);
    const auto eps = noise.slice(0, b, e).to(device);
    const auto sg = sigma.slice(0, b, e).to(device);
    const auto sv = sg.view({-1, 1, 1, 1, 1});
    const auto xt = (1 - sv) * x0 + sv * eps;
    const auto target = eps - x0;
    // Frame i mod F of clip i given clean, the loss over the others.
    auto xg = xt.clone();
    auto weight = torch::ones({e - b, 1, frames, 1, 1}, xt.options());
    for (int64_t i = b; i < e; ++i) {
      const int64_t k = i % frames;
      xg[i - b].select(1, k).copy_(x0[i - b].select(1, k));
      weight[i - b].select(1, k).zero_();
    }
    for (int v = 0; v < 5; ++v) {
      std::vector<std::string> variant;
      for (int64_t i = b; i < e; ++i)
        variant.push_back(caption_of(scenes[static_cast<std::size_t>(i)], v));
      const auto ctx = encode_captions(te, tok, variant, o.text_len, device);
      sum[v] += (dit.forward(xt, sg * 1000, ctx) - target).pow(2).sum().item<double>();
      if (v != 0 && v != 4) continue;
      given_sum[v == 0 ? 0 : 1] +=
          ((dit.forward(xg, sg * 1000, ctx) - target).pow(2) * weight).sum().item<double>();
    }
  }
  auto gap = [&](int v) { return 100.0 * (sum[v] / sum[0] - 1.0); };
  return {gap(1), gap(2), gap(3), gap(4), 100.0 * (given_sum[1] / given_sum[0] - 1.0)};
}

const std::vector<double> kDenoiseSigmas = {0.5, 0.8, 0.9, 0.93, 0.95, 0.97, 0.99};

std::vector<double> denoise_errors(diffusion::WanModel& dit, text::T5Encoder& te,
                                   const text::Tokenizer& tok, const Tensor& latents,
                                   const std::vector<std::string>& captions, const DitOptions& o,
                                   const std::vector<double>& sigmas) {
  const int64_t n = latents.size(0);
  if (n == 0 || static_cast<int64_t>(captions.size()) != n)
    throw Error("denoise_errors: " + std::to_string(n) + " clips and " +
                std::to_string(captions.size()) + " captions");
  torch::NoGradGuard no_grad;
  const auto device = latents.device();
  torch::manual_seed(mix(o.seed, 4000000));
  const auto noise = torch::randn(latents.sizes());  // the same draws on every device
  const int64_t chunk = std::max<int64_t>(1, o.batch);
  std::vector<Tensor> contexts;
  for (int64_t b = 0; b < n; b += chunk) {
    const auto e = std::min(n, b + chunk);
    contexts.push_back(encode_captions(
        te, tok, std::vector<std::string>(captions.begin() + b, captions.begin() + e), o.text_len,
        device));
  }
  std::vector<double> out;
  for (const double s : sigmas) {
    double sum = 0;
    for (int64_t b = 0, i = 0; b < n; b += chunk, ++i) {
      const int64_t e = std::min(n, b + chunk);
      const auto x0 = latents.slice(0, b, e);
      const auto xt = (1 - s) * x0 + s * noise.slice(0, b, e).to(device);
      const auto t = torch::full({e - b}, s * 1000, xt.options());
      const auto x0_hat = xt - s * dit.forward(xt, t, contexts[static_cast<std::size_t>(i)]);
      sum += (x0_hat - x0).pow(2).sum().item<double>();
    }
    out.push_back(sum / static_cast<double>(latents.numel()));
  }
  return out;
}

void train_dit(const DitOptions& o) {
  const auto state = o.run_dir / "dit-state";
  for (const auto& [file, stage] : {std::pair{kTokenizerFile, "tokenizer"}, {kVaeFile, "vae"}})
    if (!fs::exists(o.run_dir / file))
      fail_file(o.run_dir / file, std::string("missing: the DiT stage needs the run's ") + stage +
                                      " (kinora train " + stage + " --run " + o.run_dir.string() +
                                      ")");
  const auto tok = text::Tokenizer::load(o.run_dir / kTokenizerFile);
  if (o.device.is_cuda() && !torch::cuda::is_available())
    throw Error("kinora train dit: --device cuda, but this LibTorch sees no CUDA device");
  auto vae = vae::WanVAE::load(o.run_dir / kVaeFile, o.precision);
  vae.to(o.device);
  const int64_t frames = 1 + (o.clip.frames - 1) / vae.config().time_compression();
  if (o.window > 0 && (vae.config().time_compression() != 1 || o.window > frames))
    throw Error("kinora train dit: --window " + std::to_string(o.window) +
                " needs a VAE without temporal compression and at most " + std::to_string(frames) +
                " latent frames (this VAE compresses time " +
                std::to_string(vae.config().time_compression()) + "×)");
  // The DiT predicts ε − x₀: at high σ nearly the noise itself, every one of a
  // token's latent values. Through a narrower width a token's noise cannot pass
  // (the first embedded DiTs, width 128 for 256 values, carried 45% of it and
  // drew no objects; docs/training.md).
  if (o.time_patch < 1 || frames % o.time_patch != 0 ||
      (o.window > 0 && o.window % o.time_patch != 0))
    throw Error("kinora train dit: --time-patch " + std::to_string(o.time_patch) +
                " must divide the clips' " + std::to_string(frames) + " latent frames" +
                (o.window > 0 ? " and the --window" : ""));
  if (o.time_patch > 1 && (o.locality_heads > 0 || o.motion_heads > 0))
    throw Error(
        "kinora train dit: --locality-heads and --motion-heads look a latent frame "
        "back or on, and with --time-patch " +
        std::to_string(o.time_patch) + " a token holds " + std::to_string(o.time_patch) +
        " latent frames; use them with 1");
  const int64_t token_values = o.time_patch * o.patch * o.patch * vae.config().z_dim;
  if (o.dim < token_values)
    throw Error("kinora train dit: --dim " + std::to_string(o.dim) +
                " is narrower than a token's " + std::to_string(token_values) +
                " latent values (--patch " + std::to_string(o.patch) + ", --time-patch " +
                std::to_string(o.time_patch) + ": " + std::to_string(o.time_patch) + "×" +
                std::to_string(o.patch) + "×" + std::to_string(o.patch) + " cells × " +
                std::to_string(vae.config().z_dim) +
                " channels); the model could not carry the noise it predicts. Use --dim " +
                std::to_string(token_values) + " or more, or a smaller --patch");
  if (o.locality_heads < 0 || o.locality_heads > std::min<int64_t>(o.num_heads, 3))
    throw Error("kinora train dit: --locality-heads " + std::to_string(o.locality_heads) +
                ": from 0 to 3, and at most the DiT's " + std::to_string(o.num_heads) + " heads");
  if (o.motion_heads != 0 && ((o.motion_heads != 4 && o.motion_heads != 8) ||
                              o.locality_heads + o.motion_heads > o.num_heads))
    throw Error("kinora train dit: --motion-heads " + std::to_string(o.motion_heads) +
                ": 0, 4 or 8, and with the " + std::to_string(o.locality_heads) +
                " locality heads at most the DiT's " + std::to_string(o.num_heads) + " heads");
  if (o.pool_heads != 0 && ((o.pool_heads != 2 && o.pool_heads != 4) ||
                            o.locality_heads + o.motion_heads + o.pool_heads > o.num_heads))
    throw Error("kinora train dit: --pool-heads " + std::to_string(o.pool_heads) +
                ": 0, 2 or 4, and with the locality and motion heads at most the DiT's " +
                std::to_string(o.num_heads) + " heads");
  text::T5Config tc;
  tc.vocab = tok.vocab_size(), tc.dim = o.text_dim, tc.dim_attn = o.text_dim;
  tc.dim_ffn = o.text_ffn, tc.num_heads = o.text_heads, tc.num_layers = o.text_layers;
  tc.num_buckets = 32, tc.max_distance = 128, tc.shared_pos = false;
  diffusion::WanConfig wc;
  wc.dim = o.dim, wc.ffn_dim = o.ffn_dim, wc.num_heads = o.num_heads, wc.num_layers = o.num_layers;
  wc.text_dim = o.text_dim, wc.freq_dim = 256, wc.in_dim = wc.out_dim = vae.config().z_dim;
  wc.text_len = o.text_len;
  wc.patch_h = wc.patch_w = o.patch;
  wc.patch_t = o.time_patch;
  // The run's own state, when there is one, is resumed (read further below).
  const bool resuming = fs::exists(state / "state.json");
  // A model to start from is checked before anything is written or encoded.
  std::optional<io::Checkpoint> from_dit, from_te;
  if (!o.init_from.empty() && !resuming) {
    from_dit = open_trained(o.init_from / kDitFile, wc.to_json());
    from_te = open_trained(o.init_from / kTextEncoderFile, tc.to_json());
  }
  fs::create_directories(state);  // after every check: a refused run leaves nothing
  // Not a structured binding: the sampling lambda below captures both.
  const auto dataset = latent_dataset(o, vae);
  const auto& latents = dataset.first;
  const auto& captions = dataset.second;
  say(o,
      "dit: " + std::to_string(latents.size(0)) + " latents " + c10::str(latents.sizes().slice(1)));

  // Tokens of every caption (and of the empty one), short: the encoder's output
  // past a caption's end is dropped in inference, so padding never reaches the DiT.
  const int64_t max_tokens = o.text_len;
  const auto empty = tok.encode("", max_tokens);
  std::vector<Tensor> ids, masks;
  for (const auto& c : captions) {
    const auto t = tok.encode(c, max_tokens);
    ids.push_back(t.ids[0]), masks.push_back(t.mask[0]);
  }
  const auto all_ids = torch::stack(ids).to(o.device), all_masks = torch::stack(masks).to(o.device);
  const auto empty_ids = empty.ids.to(o.device), empty_mask = empty.mask.to(o.device);

  text::T5Encoder te(tc);
  diffusion::WanModel dit(wc);
  init_t5(te.module(), mix(o.seed, 1));
  init_dit(dit.module(), mix(o.seed, 2), wc.dim);  // on the CPU: the same start everywhere
  te.module().to(o.device), dit.to(o.device);
  dit.set_precision(o.precision);
  te.set_trainable(true), dit.set_trainable(true);

  // Two groups: everything, and umT5's relative-position tables at a higher
  // rate (what tells the encoder word order; T5 itself was trained with
  // Adafactor, whose steps scale with the weights').
  auto params = dit.module().parameters();
  std::vector<Tensor> position_tables;
  for (const auto& item : te.module().named_parameters())
    (item.key().find("pos_embedding") != std::string::npos ? position_tables : params)
        .push_back(item.value());
  const auto te_params = te.module().parameters();
  auto all_params = params;
  all_params.insert(all_params.end(), position_tables.begin(), position_tables.end());
  const auto adamw = torch::optim::AdamWOptions(o.lr).betas({0.9, 0.99}).weight_decay(0.01);
  auto faster = std::make_unique<torch::optim::AdamWOptions>(adamw);
  faster->lr(o.lr * o.text_position_lr);
  torch::optim::AdamW opt({torch::optim::OptimizerParamGroup(params),
                           torch::optim::OptimizerParamGroup(position_tables, std::move(faster))},
                          adamw);
  if (!resuming) {
    init_locality_heads(dit.module(), wc.num_heads, o.locality_heads, o.locality_depth);
    init_motion_heads(dit.module(), wc.num_heads, o.locality_heads, o.motion_heads,
                      o.locality_depth);
    init_pool_heads(dit.module(), wc.num_heads, o.locality_heads + o.motion_heads, o.pool_heads,
                    o.locality_depth);
    if (from_dit) {
      load_into(dit.module(), *from_dit, o.init_from / kDitFile);
      load_into(te.module(), *from_te, o.init_from / kTextEncoderFile);
      say(o, "dit: starting from the model in " + o.init_from.string());
    }
  }
  auto ema_dit = clones(dit.module()), ema_te = clones(te.module());
  int64_t step = 0, locality_heads = o.locality_heads, motion_heads = o.motion_heads,
          pool_heads = o.pool_heads;
  double seconds = 0;
  if (resuming) {
    const auto j = read_json(state / "state.json");
    step = j.at("step"), seconds = j.at("seconds");
    // Position heads added to a run that has fewer: to the live and EMA weights alike.
    const int64_t had = j.value("locality_heads", int64_t{0});
    const int64_t had_motion = j.value("motion_heads", int64_t{0});
    if (o.locality_heads > 0 && o.locality_heads < had)
      fail_file(state / "state.json", "this run has " + std::to_string(had) +
                                          " locality heads; they cannot be taken back "
                                          "(--locality-heads " +
                                          std::to_string(o.locality_heads) + ")");
    locality_heads = std::max(had, o.locality_heads);
    if (had_motion > 0 &&
        (locality_heads != had || (o.motion_heads != 0 && o.motion_heads != had_motion)))
      fail_file(state / "state.json",
                "this run has " + std::to_string(had_motion) + " motion heads after " +
                    std::to_string(had) +
                    " locality heads; neither can change now (--locality-heads " +
                    std::to_string(o.locality_heads) + " --motion-heads " +
                    std::to_string(o.motion_heads) + ")");
    if (had_motion == 0 && locality_heads + o.motion_heads > wc.num_heads)
      fail_file(state / "state.json", "this run's " + std::to_string(locality_heads) +
                                          " locality heads leave no room for " +
                                          std::to_string(o.motion_heads) + " motion heads");
    motion_heads = had_motion > 0 ? had_motion : o.motion_heads;
    pool_heads = j.value("pool_heads", int64_t{0});
    if (o.pool_heads != 0 && o.pool_heads != pool_heads)
      fail_file(state / "state.json", "this run has " + std::to_string(pool_heads) +
                                          " pool heads; they are started with a fresh run only "
                                          "(--pool-heads " +
                                          std::to_string(o.pool_heads) + ")");
    auto add_heads = [&] {
      init_locality_heads(dit.module(), wc.num_heads, locality_heads, o.locality_depth, had);
      if (had_motion == 0)
        init_motion_heads(dit.module(), wc.num_heads, locality_heads, motion_heads,
                          o.locality_depth);
    };
    load_into(dit.module(), state / "dit.safetensors");
    add_heads();
    load_into(te.module(), state / "umt5.safetensors");
    try {
      torch::load(opt, (state / "optimizer.pt").string(), o.device);
    } catch (const c10::Error& e) {
      fail_file(state / "optimizer.pt",
                std::string("cannot resume from this optimizer state (") +
                    e.what_without_backtrace() +
                    "); a run begun before the position tables had their own rate cannot go on");
    }
    // EMA copies: load into the modules, copy out, then restore the live weights.
    const auto live_dit = clones(dit.module()), live_te = clones(te.module());
    load_into(dit.module(), state / "ema-dit.safetensors");
    add_heads();
    load_into(te.module(), state / "ema-umt5.safetensors");
    ema_dit = clones(dit.module()), ema_te = clones(te.module());
    assign(dit.module(), live_dit), assign(te.module(), live_te);
    say(o, "dit: resuming at step " + std::to_string(step));
    const char* kinds[] = {"in every frame", "in the frame before", "in the frame after"};
    for (int64_t h = had; h < locality_heads; ++h)
      say(o, "dit: started head " + std::to_string(h) + " of every block as the same place " +
                 kinds[h]);
    if (had_motion == 0 && motion_heads > 0)
      say(o, "dit: started heads " + std::to_string(locality_heads) + "-" +
                 std::to_string(locality_heads + motion_heads - 1) +
                 " of every block as motion kernels");
  }
  const auto log_path = state / "loss.csv";
  truncate_log(log_path, step);
  LossLog log(log_path, "step,loss,lr,seconds");

  const nlohmann::json about = {{"model", "Kinora tiny Wan DiT"},
                                {"width", o.clip.width},
                                {"height", o.clip.height},
                                {"frames", o.clip.frames},
                                {"negative_prompt", ""},
                                {"training_shift", o.shift},
                                {"placement", name(o.clip.placement)}};
  const std::string dit_meta = about.dump();
  // Runs `fn` with the EMA weights in the modules, then puts the live ones back.
  auto with_ema = [&](const std::function<void()>& fn) {
    const auto live_dit = clones(dit.module()), live_te = clones(te.module());
    assign(dit.module(), ema_dit), assign(te.module(), ema_te);
    fn();
    assign(dit.module(), live_dit), assign(te.module(), live_te);
  };
  auto export_ema = [&](const fs::path& dit_path, const fs::path& te_path) {
    save_module(
        dit.module(), dit_path,
        {{"config", wc.to_json()}, {"kinora", dit_meta}, {"trained_steps", std::to_string(step)}});
    save_module(te.module(), te_path, {{"config", tc.to_json()}});
  };
  // A stage run again when complete trains nothing and logs nothing new: its
  // sheet and their lines are already there.
  const int64_t started_at = step;
  const auto gaps_path = state / "word-gaps.csv";
  truncate_log(gaps_path, step);
  LossLog gaps_log(gaps_path, "step,object,background,shape,direction,lr,seconds");
  const auto given_path = state / "direction-given-frame.csv";
  truncate_log(given_path, step);
  LossLog given_log(given_path, "step,direction_given_frame,lr,seconds");
  const auto denoise_path = state / "denoise.csv";
  truncate_log(denoise_path, step);
  std::string denoise_header = "step";
  for (const double s : kDenoiseSigmas) denoise_header += ",sigma" + std::to_string(s).substr(0, 4);
  LossLog denoise_log(denoise_path, denoise_header + ",lr,seconds");
  const int64_t gap_clips = std::min<int64_t>(64, latents.size(0));
  const std::vector<std::string> gap_captions(captions.begin(), captions.begin() + gap_clips);
  // Call with the EMA weights in the modules.
  auto sample = [&] {
    write_dit_samples(state / ("samples-" + std::to_string(step) + ".ppm"), dit, te, tok, vae, o,
                      latents.sizes().slice(1));
    const auto g = word_gaps(dit, te, tok, latents.slice(0, 0, gap_clips), gap_captions, o);
    gaps_log.add(step, {g.object, g.background, g.shape, g.direction}, lr_at(o, step), seconds);
    given_log.add(step, {g.direction_given_frame}, lr_at(o, step), seconds);
    const auto errors = denoise_errors(dit, te, tok, latents.slice(0, 0, gap_clips), gap_captions,
                                       o, kDenoiseSigmas);
    denoise_log.add(step, errors, lr_at(o, step), seconds);
    char line[256];
    std::snprintf(line, sizeof line,
                  "dit step %lld: the loss with one word wrong: object colour %+.1f%%, background "
                  "%+.1f%%, shape %+.1f%%, direction %+.2f%% (%+.2f%% with a frame given; EMA "
                  "weights, %lld clips)",
                  static_cast<long long>(step), g.object, g.background, g.shape, g.direction,
                  g.direction_given_frame, static_cast<long long>(gap_clips));
    say(o, line);
  };
  int64_t saved_at = -1;
  auto save = [&] {
    if (saved_at == step) return;  // the loop's last checkpoint may be the final one
    saved_at = step;
    save_module(dit.module(), state / "dit.safetensors", {});
    save_module(te.module(), state / "umt5.safetensors", {});
    save_optimizer(opt, state / "optimizer.pt");
    with_ema([&] {
      export_ema(state / "ema-dit.safetensors", state / "ema-umt5.safetensors");
      if (step >= o.steps) {  // complete: the sheet and the run's files, in the same swap
        if (o.sample_every > 0 && step == o.steps && step > started_at) sample();
        export_ema(o.run_dir / kDitFile, o.run_dir / kTextEncoderFile);
      }
    });
    write_json(state / "state.json", {{"step", step},
                                      {"seconds", seconds},
                                      {"locality_heads", locality_heads},
                                      {"motion_heads", motion_heads},
                                      {"pool_heads", pool_heads}});
  };

  const auto dit_params = dit.module().parameters();
  // The loss is summed where it is computed and read back only when logged.
  auto sum = torch::zeros({}, torch::TensorOptions().device(o.device));
  int64_t n = 0;
  const int64_t N = latents.size(0);
  while (step < o.steps && !cancelled(o)) {
    const auto t0 = Clock::now();
    const double lr = lr_at(o, step);
    set_lr(opt, lr, {1.0, o.text_position_lr});
    torch::manual_seed(mix(o.seed, 2000000 + step));
    // Draws on the CPU (the same batches on every device), then moved.
    const auto idx = torch::randint(N, {o.batch}, torch::kLong).to(o.device);
    auto x0 = latents.index_select(0, idx);
    if (o.window > 0 && o.window < x0.size(2)) {
      // Frames start[b] … start[b] + window − 1 of each clip, in one gather.
      const auto start = torch::randint(x0.size(2) - o.window + 1, {o.batch}, torch::kLong);
      const auto frame = (start.view({-1, 1, 1, 1, 1}) +
                          torch::arange(o.window, torch::kLong).view({1, 1, -1, 1, 1}))
                             .to(o.device);
      x0 = x0.gather(2, frame.expand({o.batch, x0.size(1), o.window, x0.size(3), x0.size(4)}));
    }
    auto tid = all_ids.index_select(0, idx), tmask = all_masks.index_select(0, idx);
    // Caption dropout: the empty caption, as the unconditional branch sees it.
    const auto drop = (torch::rand({o.batch}) < o.caption_dropout).to(o.device);
    tid = torch::where(drop.unsqueeze(1), empty_ids, tid);
    tmask = torch::where(drop.unsqueeze(1), empty_mask, tmask);
    const auto ctx = te.forward(tid, tmask) * tmask.unsqueeze(-1).to(torch::kFloat32);
    // Flow matching: x_σ = (1 − σ)·x0 + σ·ε, the model predicts ε − x0 at t = 1000σ.
    const auto sigma = draw_sigmas(o, o.batch).to(o.device);
    const auto noise = torch::randn_like(x0);  // the device's own generator
    auto [xt, weight] = noise_batch(x0, sigma, noise, o.given_frame);
    if (o.object_weight > 0) weight = weight * object_weights(x0, o.object_weight);
    const auto pred = dit.forward(xt, sigma * 1000, ctx);
    // The mean over the frames that count (all of them unless one is given).
    const auto loss = ((pred - (noise - x0)).pow(2) * weight).sum() /
                      (weight.sum() * (x0.numel() / weight.numel()));
    opt.zero_grad();
    loss.backward();
    clip_grad_norm(all_params, 1.0);
    opt.step();
    ++step;
    const double decay = std::min(o.ema, (1.0 + step) / (10.0 + step));
    ema_update(ema_dit, dit_params, decay);
    ema_update(ema_te, te_params, decay);
    seconds += seconds_since(t0);
    sum += loss.detach(), ++n;
    if (step % o.log_every == 0 || step == o.steps) {
      const double mean = sum.item<double>() / static_cast<double>(n);
      log.add(step, {mean}, lr, seconds);
      char line[128];
      std::snprintf(line, sizeof line, "dit step %lld/%lld  loss %.4f  %.2f s/step",
                    static_cast<long long>(step), static_cast<long long>(o.steps), mean,
                    seconds / static_cast<double>(step));
      say(o, line);
      sum.zero_(), n = 0;
    }
    if (step % o.save_every == 0) save();
    // Sheets on their own schedule, not only at checkpoints; the last step's
    // comes with the final save.
    if (o.sample_every > 0 && step % o.sample_every == 0 && step < o.steps) with_ema(sample);
  }
  save();
  if (step < o.steps) {
    say(o, "dit: stopped at step " + std::to_string(step) + "; run again to resume");
    return;
  }
  say(o, "dit: wrote " + (o.run_dir / kDitFile).string() + " and " +
             (o.run_dir / kTextEncoderFile).string());
}

}  // namespace kinora::training
