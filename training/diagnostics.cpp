// What the DiT stage shows of a model as it trains: sample sheets (PPM), the
// loss with one caption word made wrong (word_gaps) and the error of its x₀
// estimate by noise level (denoise_errors); and umT5's encoding of captions
// they share with the probe.
#include "base/error.h"
#include "base/files.h"
#include "diffusion/wan_dit.h"
#include "pipeline/pipeline.h"
#include "schedulers/registry.h"
#include "text/t5.h"
#include "text/tokenizer.h"
#include "training/internal.h"
#include "vae/wan_vae.h"

namespace kinora::training {
namespace fs = std::filesystem;
using torch::Tensor;
using namespace internal;

// ---------------------------------------------------------------- images

void internal::write_ppm(const fs::path& path, const Tensor& rgb, const std::string& run) {
  const auto t = rgb.contiguous();
  std::string bytes = "P6\n";
  bytes.append(std::to_string(t.size(1))).append(" ").append(std::to_string(t.size(0)));
  bytes.append("\n");
  if (!run.empty()) bytes.append("# kinora_run ").append(run).append("\n");
  bytes.append("255\n");
  bytes.append(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()),
               static_cast<std::size_t>(t.numel()));
  write_file_atomically(path, bytes);
}

Tensor internal::strip(const Tensor& v, int64_t n) {
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

void internal::write_dit_samples(const fs::path& path, diffusion::WanModel& dit,
                                 text::T5Encoder& te, const text::Tokenizer& tok, vae::WanVAE& vae,
                                 const DitOptions& o,
                                 torch::IntArrayRef latent_shape,  // [C, F, H, W]
                                 const std::string& run) {
  static const std::vector<std::string> captions = {
      "a red circle moving left on a blue background",
      "a yellow square moving down on a black background",
      "a white triangle moving right on a green background",
      "a blue circle moving up on a yellow background", ""};
  torch::NoGradGuard no_grad;
  const auto ctx = encode_captions(te, tok, captions, o.text_len, o.device);
  const int64_t n = static_cast<int64_t>(captions.size()) - 1;
  layers::Conditioning cond, uncond;
  cond.context = ctx.slice(0, 0, n), uncond.context = ctx.slice(0, n).expand({n, -1, -1});
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
  write_ppm(path, strip(vae.decode(x).to(torch::kCPU, torch::kFloat32).clamp(-1, 1), 5), run);
}

// ---------------------------------------------------------------- word gaps

namespace {

// The caption of `s` with one word made wrong: variant 0 none, 1 the object's
// colour, 2 the background's (each the next colour that is neither of the
// two), 3 the shape (the next one), 4 the direction (the opposite).
std::string wrong_caption(Scene s, int variant) {
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
}

std::vector<Scene> scenes_of(const std::vector<std::string>& captions) {
  std::vector<Scene> scenes;
  for (const auto& c : captions) {
    const auto s = parse_caption(c);
    if (!s) throw Error("word_gaps: not a caption of the grammar: \"" + c + "\"");
    scenes.push_back(*s);
  }
  return scenes;
}

}  // namespace

WordGaps word_gaps(diffusion::WanModel& dit, text::T5Encoder& te, const text::Tokenizer& tok,
                   const Tensor& latents, const std::vector<std::string>& captions,
                   const DitOptions& o) {
  const int64_t n = latents.size(0);
  if (n == 0 || static_cast<int64_t>(captions.size()) != n)
    throw Error("word_gaps: " + std::to_string(n) + " clips and " +
                std::to_string(captions.size()) + " captions");
  const auto scenes = scenes_of(captions);
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
    // Variant 0: the true captions; 1–4: object colour, background, shape, direction wrong.
    for (int v = 0; v < 5; ++v) {
      std::vector<std::string> variant;
      for (int64_t i = b; i < e; ++i)
        variant.push_back(wrong_caption(scenes[static_cast<std::size_t>(i)], v));
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

// ---------------------------------------------------------------- denoising errors

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

}  // namespace kinora::training
