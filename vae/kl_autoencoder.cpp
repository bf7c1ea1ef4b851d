#include "vae/kl_autoencoder.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <regex>

#include "base/error.h"
#include "base/json.h"
#include "io/layout.h"
#include "layers/conv2d.h"
#include "layers/load.h"
#include "layers/ops.h"

namespace kinora::vae {
namespace F = torch::nn::functional;

namespace {

// The modules hold their parameters under the LDM names; convolutions run
// in the precision's matmul dtype, GroupNorm in float32 (layers/conv2d.h).
using Ctx = layers::ConvContext;
using layers::conv2d;
using layers::GroupNorm32;
using layers::run_conv2d;

struct ResnetBlockImpl : torch::nn::Module {
  ResnetBlockImpl(int64_t in, int64_t out) {
    norm1 = register_module("norm1", GroupNorm32(in, 1e-6));
    conv1 = register_module("conv1", conv2d(in, out, 3));
    norm2 = register_module("norm2", GroupNorm32(out, 1e-6));
    conv2 = register_module("conv2", conv2d(out, out, 3));
    if (in != out) nin_shortcut = register_module("nin_shortcut", conv2d(in, out, 1));
  }
  torch::Tensor forward(const torch::Tensor& x, const Ctx& ctx) {
    auto h = run_conv2d(conv1, torch::silu(norm1->forward(x, ctx)), ctx);
    h = run_conv2d(conv2, torch::silu(norm2->forward(h, ctx)), ctx).to(torch::kFloat32);
    return (nin_shortcut ? run_conv2d(nin_shortcut, x, ctx).to(torch::kFloat32)
                         : x.to(torch::kFloat32)) +
           h;
  }
  GroupNorm32 norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, nin_shortcut{nullptr};
};
TORCH_MODULE(ResnetBlock);

struct AttnBlockImpl : torch::nn::Module {
  explicit AttnBlockImpl(int64_t ch) {
    norm = register_module("norm", GroupNorm32(ch, 1e-6));
    q = register_module("q", conv2d(ch, ch, 1));
    k = register_module("k", conv2d(ch, ch, 1));
    v = register_module("v", conv2d(ch, ch, 1));
    proj_out = register_module("proj_out", conv2d(ch, ch, 1));
  }
  // Single-head attention over the h·w positions.
  torch::Tensor forward(const torch::Tensor& x, const Ctx& ctx) {
    const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    const auto h = norm->forward(x, ctx);
    auto tokens = [&](const torch::nn::Conv2d& c) {  // [B, HW, 1, C]
      return run_conv2d(c, h, ctx).flatten(2).transpose(1, 2).unsqueeze(2);
    };
    const auto a = layers::attention(tokens(q), tokens(k), tokens(v));  // [B, HW, 1, C]
    const auto img = a.squeeze(2).transpose(1, 2).reshape({B, C, H, W});
    return x.to(torch::kFloat32) + run_conv2d(proj_out, img, ctx).to(torch::kFloat32);
  }
  GroupNorm32 norm{nullptr};
  torch::nn::Conv2d q{nullptr}, k{nullptr}, v{nullptr}, proj_out{nullptr};
};
TORCH_MODULE(AttnBlock);

struct MidImpl : torch::nn::Module {
  explicit MidImpl(int64_t ch) {
    block_1 = register_module("block_1", ResnetBlock(ch, ch));
    attn_1 = register_module("attn_1", AttnBlock(ch));
    block_2 = register_module("block_2", ResnetBlock(ch, ch));
  }
  torch::Tensor forward(const torch::Tensor& x, const Ctx& ctx) {
    return block_2->forward(attn_1->forward(block_1->forward(x, ctx), ctx), ctx);
  }
  ResnetBlock block_1{nullptr}, block_2{nullptr};
  AttnBlock attn_1{nullptr};
};
TORCH_MODULE(Mid);

// One resolution level: its blocks, and the conv of its down- or upsampling.
struct LevelImpl : torch::nn::Module {
  LevelImpl(int64_t in, int64_t out, int64_t blocks, const char* resample) {
    block = register_module("block", torch::nn::ModuleList());
    for (int64_t i = 0; i < blocks; ++i) block->push_back(ResnetBlock(i == 0 ? in : out, out));
    if (resample) {
      auto m = register_module(resample, std::make_shared<torch::nn::Module>());
      resample_conv = m->register_module("conv", conv2d(out, out, 3));
    }
  }
  torch::Tensor blocks(torch::Tensor x, const Ctx& ctx) {
    for (const auto& b : *block) x = b->as<ResnetBlockImpl>()->forward(x, ctx);
    return x;
  }
  torch::nn::ModuleList block{nullptr};
  torch::nn::Conv2d resample_conv{nullptr};
};
TORCH_MODULE(Level);

struct EncoderImpl : torch::nn::Module {
  explicit EncoderImpl(const KLAutoencoderConfig& c) {
    conv_in = register_module("conv_in", conv2d(c.in_channels, c.ch, 3));
    down = register_module("down", torch::nn::ModuleList());
    int64_t in = c.ch;
    for (std::size_t i = 0; i < c.ch_mult.size(); ++i) {
      const int64_t out = c.ch * c.ch_mult[i];
      down->push_back(
          Level(in, out, c.num_res_blocks, i + 1 < c.ch_mult.size() ? "downsample" : nullptr));
      in = out;
    }
    mid = register_module("mid", Mid(in));
    norm_out = register_module("norm_out", GroupNorm32(in, 1e-6));
    conv_out = register_module("conv_out", conv2d(in, 2 * c.z_channels, 3));
  }
  torch::Tensor forward(const torch::Tensor& x, const Ctx& ctx) {
    auto h = run_conv2d(conv_in, x, ctx).to(torch::kFloat32);
    for (const auto& l : *down) {
      auto* level = l->as<LevelImpl>();
      h = level->blocks(h, ctx);
      // Zero padding on the right and bottom, then a stride-2 conv without padding.
      if (level->resample_conv)
        h = run_conv2d(level->resample_conv, F::pad(h, F::PadFuncOptions({0, 1, 0, 1})), ctx, 2, 0)
                .to(torch::kFloat32);
    }
    h = mid->forward(h, ctx);
    return run_conv2d(conv_out, torch::silu(norm_out->forward(h, ctx)), ctx).to(torch::kFloat32);
  }
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down{nullptr};
  Mid mid{nullptr};
  GroupNorm32 norm_out{nullptr};
};
TORCH_MODULE(Encoder);

struct DecoderImpl : torch::nn::Module {
  explicit DecoderImpl(const KLAutoencoderConfig& c) {
    const std::size_t n = c.ch_mult.size();
    int64_t in = c.ch * c.ch_mult[n - 1];
    conv_in = register_module("conv_in", conv2d(c.z_channels, in, 3));
    mid = register_module("mid", Mid(in));
    // up.0 is the highest resolution; the decoder runs from up.(n−1) down to up.0.
    std::vector<Level> levels(n, Level(nullptr));
    for (std::size_t i = n; i-- > 0;) {
      const int64_t out = c.ch * c.ch_mult[i];
      levels[i] = Level(in, out, c.num_res_blocks + 1, i > 0 ? "upsample" : nullptr);
      in = out;
    }
    up = register_module("up", torch::nn::ModuleList());
    for (auto& l : levels) up->push_back(l);
    norm_out = register_module("norm_out", GroupNorm32(in, 1e-6));
    conv_out = register_module("conv_out", conv2d(in, c.out_ch, 3));
  }
  torch::Tensor forward(const torch::Tensor& z, const Ctx& ctx) {
    auto h = mid->forward(run_conv2d(conv_in, z, ctx).to(torch::kFloat32), ctx);
    for (std::size_t i = up->size(); i-- > 0;) {
      auto* level = up[i]->as<LevelImpl>();
      h = level->blocks(h, ctx);
      if (level->resample_conv)
        h = run_conv2d(level->resample_conv,
                       F::interpolate(h.to(ctx.dtype), F::InterpolateFuncOptions()
                                                           .scale_factor(std::vector<double>{2, 2})
                                                           .mode(torch::kNearest)),
                       ctx)
                .to(torch::kFloat32);
    }
    return run_conv2d(conv_out, torch::silu(norm_out->forward(h, ctx)), ctx).to(torch::kFloat32);
  }
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList up{nullptr};
  Mid mid{nullptr};
  GroupNorm32 norm_out{nullptr};
};
TORCH_MODULE(Decoder);

}  // namespace

class KLAutoencoderImpl : public torch::nn::Module {
 public:
  explicit KLAutoencoderImpl(const KLAutoencoderConfig& c) : config(c) {
    ctx.groups = c.groups;
    encoder = register_module("encoder", Encoder(c));
    decoder = register_module("decoder", Decoder(c));
    if (c.quant_conv) {
      quant_conv = register_module("quant_conv", conv2d(2 * c.z_channels, 2 * c.z_channels, 1));
      post_quant_conv = register_module("post_quant_conv", conv2d(c.z_channels, c.z_channels, 1));
    }
  }
  torch::Tensor encode(const torch::Tensor& image) {
    auto moments = encoder->forward(image.to(encoder->conv_in->weight.device()), ctx);
    if (quant_conv) moments = run_conv2d(quant_conv, moments, ctx).to(torch::kFloat32);
    const auto mean = moments.chunk(2, 1)[0];
    return config.scale_factor * (mean - config.shift_factor);
  }
  torch::Tensor decode(const torch::Tensor& latent) {
    auto z = latent.to(decoder->conv_in->weight.device(), torch::kFloat32) / config.scale_factor +
             config.shift_factor;
    if (post_quant_conv) z = run_conv2d(post_quant_conv, z, ctx).to(torch::kFloat32);
    return decoder->forward(z, ctx);
  }

  KLAutoencoderConfig config;
  Ctx ctx;
  Encoder encoder{nullptr};
  Decoder decoder{nullptr};
  torch::nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};
};

// ---------------------------------------------------------------- configuration

std::string kl_diffusers_to_original(const std::string& key, int64_t levels) {
  static const std::regex down_res(R"(^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$)");
  static const std::regex down_conv(
      R"(^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)$)");
  static const std::regex up_res(R"(^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$)");
  static const std::regex up_conv(R"(^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)$)");
  static const std::regex mid_res(R"(^(encoder|decoder)\.mid_block\.resnets\.([01])\.(.*)$)");
  static const std::regex mid_attn(
      R"(^(encoder|decoder)\.mid_block\.attentions\.0\.([a-z_.0-9]+)\.(weight|bias)$)");
  static const std::regex norm_out(R"(^(encoder|decoder)\.conv_norm_out\.(.*)$)");
  auto resnet_part = [](std::string s) {
    return s.rfind("conv_shortcut.", 0) == 0 ? "nin_shortcut." + s.substr(14) : s;
  };
  std::smatch m;
  if (std::regex_match(key, m, down_res))
    return "encoder.down." + m[1].str() + ".block." + m[2].str() + "." + resnet_part(m[3]);
  if (std::regex_match(key, m, down_conv))
    return "encoder.down." + m[1].str() + ".downsample.conv." + m[2].str();
  if (std::regex_match(key, m, up_res))
    return "decoder.up." + std::to_string(levels - 1 - std::stoll(m[1])) + ".block." + m[2].str() +
           "." + resnet_part(m[3]);
  if (std::regex_match(key, m, up_conv))
    return "decoder.up." + std::to_string(levels - 1 - std::stoll(m[1])) + ".upsample.conv." +
           m[2].str();
  if (std::regex_match(key, m, mid_res))
    return m[1].str() + ".mid.block_" + (m[2] == "0" ? "1" : "2") + "." + resnet_part(m[3]);
  if (std::regex_match(key, m, mid_attn)) {
    static const std::map<std::string, std::string> names = {
        {"group_norm", "norm"},   {"to_q", "q"},  {"to_k", "k"}, {"to_v", "v"},
        {"to_out.0", "proj_out"}, {"query", "q"}, {"key", "k"},  {"value", "v"},
        {"proj_attn", "proj_out"}};
    const auto it = names.find(m[2]);
    if (it == names.end()) return key;
    return m[1].str() + ".mid.attn_1." + it->second + "." + m[3].str();
  }
  if (std::regex_match(key, m, norm_out)) return m[1].str() + ".norm_out." + m[2].str();
  return key;
}

namespace {
int64_t shape_at(const io::ShapeMap& m, const std::string& key, std::size_t i,
                 const io::Checkpoint& ck) {
  const auto it = m.find(key);
  if (it == m.end() || it->second.size() <= i)
    fail_file(ck.path(), "not a complete autoencoder checkpoint: no tensor '" + key + "'");
  return it->second[i];
}
}  // namespace

KLAutoencoderConfig KLAutoencoderConfig::from_checkpoint(const io::Checkpoint& ck) {
  KLAutoencoderConfig c;
  const auto det = io::detect_layout(ck.shapes(), {io::Family::KLAutoencoder});
  if (det.family != io::Family::KLAutoencoder)
    fail_file(ck.path(), "not a 2D image autoencoder checkpoint");
  io::ShapeMap m;
  const int64_t levels =
      io::count_indexed(io::strip_prefix(ck.shapes(), det.prefix),
                        det.layout == io::Layout::Diffusers ? "decoder.up_blocks." : "decoder.up.");
  for (const auto& [k, v] : io::strip_prefix(ck.shapes(), det.prefix))
    m[det.layout == io::Layout::Diffusers ? kl_diffusers_to_original(k, levels) : k] = v;
  c.z_channels = shape_at(m, "decoder.conv_in.weight", 1, ck);
  c.out_ch = shape_at(m, "decoder.conv_out.weight", 0, ck);
  c.quant_conv = m.count("post_quant_conv.weight") != 0;
  c.ch = shape_at(m, "decoder.conv_out.weight", 1, ck);
  c.ch_mult.clear();
  for (int64_t i = 0; i < levels; ++i)
    c.ch_mult.push_back(
        shape_at(m, "decoder.up." + std::to_string(i) + ".block.0.conv1.weight", 0, ck) / c.ch);
  c.num_res_blocks = io::count_indexed(m, "decoder.up.0.block.") - 1;
  c.in_channels = m.count("encoder.conv_in.weight") ? m["encoder.conv_in.weight"][1] : 3;
  if (c.z_channels != 16) {  // the SD / SDXL VAE
    c.scale_factor = 0.13025;
    c.shift_factor = 0;
  }
  const auto md = ck.metadata().find("config");
  if (md != ck.metadata().end()) {
    try {
      const auto j = parse_json(md->second, ck.path().string() + " (metadata 'config')");
      // BFL's names or diffusers' (whose shift_factor is null for SD/SDXL).
      for (const char* key : {"scale_factor", "scaling_factor"})
        if (j.contains(key) && j[key].is_number()) c.scale_factor = j[key].get<double>();
      if (j.contains("shift_factor") && j["shift_factor"].is_number())
        c.shift_factor = j["shift_factor"].get<double>();
      c.groups = j.value("norm_num_groups", j.value("groups", c.groups));
    } catch (const nlohmann::json::exception& e) {
      fail_file(ck.path(), std::string("metadata 'config' is not a valid autoencoder "
                                       "configuration: ") +
                               e.what());
    }
  }
  if (c.num_res_blocks < 1 || c.ch_mult.empty())
    fail_file(ck.path(), "not a complete autoencoder checkpoint: no decoder levels");
  return c;
}

// ---------------------------------------------------------------- public

KLAutoencoder::KLAutoencoder(const KLAutoencoderConfig& config)
    : impl_(std::make_shared<KLAutoencoderImpl>(config)) {
  adopt(impl_);
}
KLAutoencoder::~KLAutoencoder() = default;
KLAutoencoder::KLAutoencoder(KLAutoencoder&&) noexcept = default;
KLAutoencoder& KLAutoencoder::operator=(KLAutoencoder&&) noexcept = default;

KLAutoencoder KLAutoencoder::load(const std::filesystem::path& path, layers::Precision precision) {
  auto [ck, det] =
      layers::open_checkpoint(path, {io::Family::KLAutoencoder}, "2D image autoencoder");
  KLAutoencoder model(KLAutoencoderConfig::from_checkpoint(*ck));
  const int64_t levels = static_cast<int64_t>(model.config().ch_mult.size());
  std::map<std::string, torch::Tensor> assembled;
  std::function<std::string(const std::string&)> rename;
  if (det.layout == io::Layout::Diffusers) {
    rename = [levels](const std::string& k) { return kl_diffusers_to_original(k, levels); };
    // diffusers stores the attention's 1×1 convolutions as linear weights [C, C].
    for (const auto& key : ck->names()) {
      if (key.rfind(det.prefix, 0) != 0) continue;
      const std::string name = rename(key.substr(det.prefix.size()));
      if (name.find(".attn_1.") != std::string::npos && name.size() > 7 &&
          name.compare(name.size() - 7, 7, ".weight") == 0 && ck->info(key).shape.size() == 2 &&
          name.find(".norm.") == std::string::npos)
        assembled[name] = ck->get(key).unsqueeze(-1).unsqueeze(-1);
    }
  }
  // Files with only one half (a decoder-only VAE) fail on the missing half.
  layers::load_parameters(*model.impl_, *ck, layers::prefixed(det.prefix, rename),
                          "2D image autoencoder", assembled);
  model.adopt(model.impl_, std::move(ck));
  model.set_precision(precision);
  return model;
}

const KLAutoencoderConfig& KLAutoencoder::config() const {
  return impl_->config;
}

void KLAutoencoder::on_precision(layers::Precision p) {
  impl_->ctx.dtype = layers::matmul_dtype(p);
}

torch::Tensor KLAutoencoder::encode_image(const torch::Tensor& image) {
  torch::AutoGradMode grad(trainable());
  return impl_->encode(image);
}

torch::Tensor KLAutoencoder::decode_image(const torch::Tensor& latent) {
  torch::AutoGradMode grad(trainable());
  return impl_->decode(latent);
}

namespace {
// Tile starts along one side of `size` cells: every `tile − overlap`, the last
// flush with the end.
std::vector<int64_t> tile_starts(int64_t size, int64_t tile, int64_t overlap) {
  if (size <= tile) return {0};
  std::vector<int64_t> s;
  for (int64_t p = 0; p + tile < size; p += tile - overlap) s.push_back(p);
  s.push_back(size - tile);
  return s;
}
// The blending weight of a tile along one side: a linear ramp over `ramp`
// pixels on each edge that meets another tile, 1 elsewhere (never 0).
torch::Tensor ramp(int64_t length, int64_t ramp, bool before, bool after) {
  auto w = torch::ones({length});
  const auto up = (torch::arange(1, ramp + 1, torch::kFloat32) / static_cast<double>(ramp + 1));
  if (before) w.slice(0, 0, ramp).copy_(up);
  if (after) w.slice(0, length - ramp).copy_(up.flip(0));
  return w;
}
}  // namespace

torch::Tensor KLAutoencoder::decode_tiled(const torch::Tensor& latent, int64_t tile,
                                          int64_t overlap,
                                          const std::function<void(int64_t, int64_t)>& progress) {
  TORCH_CHECK(latent.dim() == 4, "KLAutoencoder: latent must be [B, C, h, w]");
  TORCH_CHECK(tile > 2 * overlap && overlap >= 0, "KLAutoencoder: tile must exceed 2·overlap");
  const int64_t h = latent.size(2), w = latent.size(3), f = spatial_compression();
  const auto ys = tile_starts(h, tile, overlap), xs = tile_starts(w, tile, overlap);
  const int64_t total = static_cast<int64_t>(ys.size() * xs.size());
  if (total == 1) {
    auto out = decode_image(latent);
    if (progress) progress(1, 1);
    return out;
  }
  torch::Tensor out, weight;
  int64_t done = 0;
  for (std::size_t yi = 0; yi < ys.size(); ++yi)
    for (std::size_t xi = 0; xi < xs.size(); ++xi) {
      const int64_t y0 = ys[yi], x0 = xs[xi];
      const int64_t th = std::min(tile, h - y0), tw = std::min(tile, w - x0);
      const auto img = decode_image(latent.slice(2, y0, y0 + th).slice(3, x0, x0 + tw));
      if (!out.defined()) {
        out = torch::zeros({latent.size(0), img.size(1), h * f, w * f}, img.options());
        weight = torch::zeros({h * f, w * f}, img.options());
      }
      const auto wy = ramp(th * f, overlap * f, yi > 0, yi + 1 < ys.size()).to(img.device());
      const auto wx = ramp(tw * f, overlap * f, xi > 0, xi + 1 < xs.size()).to(img.device());
      const auto wt = torch::outer(wy, wx);
      out.slice(2, y0 * f, (y0 + th) * f).slice(3, x0 * f, (x0 + tw) * f).add_(img * wt);
      weight.slice(0, y0 * f, (y0 + th) * f).slice(1, x0 * f, (x0 + tw) * f).add_(wt);
      if (progress) progress(++done, total);
    }
  return out / weight;
}

std::vector<double> KLAutoencoder::latents_mean() const {
  return std::vector<double>(config().z_channels, config().shift_factor);
}
std::vector<double> KLAutoencoder::latents_std() const {
  return std::vector<double>(config().z_channels, 1.0 / config().scale_factor);
}

torch::Tensor KLAutoencoder::encode(const torch::Tensor& video) {
  TORCH_CHECK(video.dim() == 5 && video.size(2) == 1,
              "an image autoencoder encodes one frame: [B, 3, 1, H, W], got ", video.sizes());
  return encode_image(video.select(2, 0)).unsqueeze(2);
}

torch::Tensor KLAutoencoder::decode_video(const torch::Tensor& latent,
                                          const FrameProgress& progress) {
  TORCH_CHECK(latent.dim() == 5 && latent.size(2) == 1,
              "an image autoencoder decodes one frame: [B, C, 1, h, w], got ", latent.sizes());
  // Tiles report as a fraction of the one frame.
  return decode_tiled(latent.select(2, 0), kTile, kOverlap,
                      [&](int64_t done, int64_t total) {
                        if (progress && done == total) progress(1, 1);
                      })
      .unsqueeze(2);
}

}  // namespace kinora::vae
