#include "vae/wan_vae.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <regex>
#include <vector>

#include "base/error.h"
#include "base/json.h"
#include "base/torch_compat.h"
#include "io/layout.h"
#include "layers/fused.h"
#include "layers/linear.h"
#include "layers/load.h"

namespace kinora::vae {
namespace F = torch::nn::functional;
using torch::Tensor;

namespace {
constexpr int64_t kCacheT = 2;  // frames each causal conv keeps from its last input

// Parameter-free placeholder so that children keep the reference's indices.
std::shared_ptr<torch::nn::Module> gap() {
  return std::make_shared<torch::nn::IdentityImpl>();
}

// Whether the video x [B, C, T, H, W] is on the CPU and channels-last ([B, T,
// H, W, C] in memory): the layout in which the encoder and the decoder run in
// bf16 on the CPU (WanVAEImpl::set_by_frames), their operations keeping it.
bool channels_last(const Tensor& x) {
  return x.dim() == 5 && x.is_cpu() && x.size(1) > 1 && x.stride(1) == 1 &&
         x.is_contiguous(torch::MemoryFormat::ChannelsLast3d);
}

// a's frames, then b's ([B, C, T, H, W] joined in time), channels-last where b
// is. (LibTorch's cat picks the layout from strides, which are ambiguous
// where a size is 1.)
Tensor cat_time(const Tensor& a, const Tensor& b) {
  if (!channels_last(b)) return torch::cat({a, b}, 2);
  auto out = torch::empty({b.size(0), b.size(1), a.size(2) + b.size(2), b.size(3), b.size(4)},
                          b.options().memory_format(torch::MemoryFormat::ChannelsLast3d));
  out.slice(2, 0, a.size(2)).copy_(a);
  out.slice(2, a.size(2)).copy_(b);
  return out;
}
// A copy of x, in x's layout.
Tensor copy_of(const Tensor& x) {
  return channels_last(x) ? x.clone(torch::MemoryFormat::ChannelsLast3d) : x.clone();
}

std::atomic<int64_t> frames_convolutions{0};
}  // namespace

int64_t convolutions_by_frames() {
  return frames_convolutions.load();
}

// ---------------------------------------------------------------- layers

// A 3D convolution, causal in time: 2·p_t frames of front padding, which a
// cache of the previous chunk's frames replaces.
struct CausalConv3dImpl : torch::nn::Module {
  // Kernel (k_t, k_s, k_s), padding (p_t, p_s, p_s), stride (s_t, 1, 1).
  CausalConv3dImpl(int64_t in, int64_t out, int64_t k_t, int64_t k_s, int64_t p_t = 0,
                   int64_t p_s = 0, int64_t s_t = 1)
      : pad{p_t, p_s, p_s}, stride{s_t, 1, 1} {
    weight = register_parameter("weight", torch::empty({out, in, k_t, k_s, k_s}), false);
    bias = register_parameter("bias", torch::zeros({out}), false);
  }
  // x [B, C, T, H, W]; `cache` (frames of the previous input) replaces front padding.
  Tensor forward(const Tensor& x, const Tensor& cache = {}) {
    Tensor in = x;
    int64_t front = 2 * pad[0];
    if (cache.defined() && front > 0) {
      in = cat_time(cache.to(x.scalar_type()), x);
      front -= cache.size(2);
    }
    if (frames_) return by_frames(in.contiguous(torch::MemoryFormat::ChannelsLast3d), front);
    // Time's front padding by hand (causal: none behind); space's by the
    // convolution, which saves a padded copy of the input.
    if (front > 0) in = F::pad(in, F::PadFuncOptions({0, 0, 0, 0, front, 0}));
    const auto dt = x.scalar_type();
    return torch::conv3d(in, weight.to(dt), bias.to(dt), {stride[0], stride[1], stride[2]},
                         {0, pad[1], pad[2]});
  }
  // The same convolution of a channels-last input ([B, T, H, W, C] in memory)
  // as 2D convolutions of its frames, one per temporal tap: output frame t is
  // Σ_k conv2d(input frame t·s + k − front, W[:, :, k]), frames before the
  // input (the causal zero padding) left out. LibTorch 1.13's oneDNN
  // convolves channels-last bf16 frames in place, where its conv3d reorders
  // the input and the output to and from a blocked layout: a quarter less
  // time on the decoder's shapes (bench/RESULTS.md). The output is
  // channels-last; each tap's sum is rounded to the dtype.
  Tensor by_frames(const Tensor& in, int64_t front) {
    const int64_t b = in.size(0), t_in = in.size(2), kt = weight.size(2), st = stride[0];
    TORCH_CHECK(front + t_in >= kt && front < kt, "CausalConv3d: ", t_in, " frames and ", front,
                " of padding for a kernel of ", kt);
    const int64_t t_out = (front + t_in - kt) / st + 1;
    ++frames_convolutions;
    const auto dt = in.scalar_type();
    const auto w = weight.to(dt);
    const auto bias_dt = bias.to(dt);
    // Output t reads input frame t·st + k − front through tap k, where that
    // frame exists: tap `front` reads one for every output (front < kt, and t_out
    // is set so), and starts the sum, with the bias; the others add theirs.
    struct Tap {
      int64_t k, lo, hi;  // the outputs lo..hi whose frame exists
    };
    std::vector<Tap> taps{{front, 0, t_out - 1}};
    for (int64_t k = 0; k < kt; ++k) {
      const int64_t lo = std::max<int64_t>(0, (front - k + st - 1) / st);
      const int64_t hi = std::min(t_out - 1, (t_in - 1 + front - k) / st);
      if (k != front && lo <= hi) taps.push_back({k, lo, hi});
    }
    std::vector<Tensor> videos;
    for (int64_t i = 0; i < b; ++i) {
      // [T, C, H, W], channels-last, with the strides written out: where a size
      // is 1, LibTorch 1.13's convolution takes other strides for contiguous.
      const auto f = in.select(0, i).transpose(0, 1);
      const int64_t fc = f.size(1), fh = f.size(2), fw = f.size(3);
      const auto frames = f.as_strided(f.sizes(), {fh * fw * fc, 1, fw * fc, fc});
      Tensor sum;
      for (const auto& p : taps) {
        const int64_t first = p.lo * st + p.k - front;
        const auto part = torch::conv2d(frames.slice(0, first, first + (p.hi - p.lo) * st + 1, st),
                                        w.select(2, p.k), sum.defined() ? Tensor() : bias_dt, 1,
                                        {pad[1], pad[2]});
        if (sum.defined())
          sum.slice(0, p.lo, p.hi + 1).add_(part);
        else
          sum = part;
      }
      videos.push_back(sum.transpose(0, 1).unsqueeze(0));  // [1, O, T', H, W], channels-last
    }
    return b == 1 ? videos[0]
                  : torch::cat(videos, 0).contiguous(torch::MemoryFormat::ChannelsLast3d);
  }
  // The chunked form: conv with this conv's cache, then remember the last frames.
  Tensor forward_cached(const Tensor& x) {
    auto next = x.slice(2, std::max<int64_t>(0, x.size(2) - kCacheT));
    if (next.size(2) < kCacheT && cache_.defined())
      next = cat_time(cache_.slice(2, cache_.size(2) - 1), next);  // last frame of the chunk before
    auto out = forward(x, cache_);
    cache_ = copy_of(next);
    return out;
  }
  std::array<int64_t, 3> pad, stride;
  Tensor weight, bias, cache_;
  bool frames_ = false;  // by_frames (set by WanVAEImpl::set_by_frames)
};
TORCH_MODULE(CausalConv3d);

// L2-normalise over channels, times √C and gamma.
struct RMSNormImpl : torch::nn::Module {
  RMSNormImpl(int64_t dim, bool images) : scale(std::sqrt(static_cast<double>(dim))) {
    gamma = register_parameter(
        "gamma", images ? torch::ones({dim, 1, 1}) : torch::ones({dim, 1, 1, 1}), false);
  }
  // In float32 whatever the compute dtype: a bf16 norm alone costs ~1% of accuracy.
  // With `silu`, SiLU of the result. Where layers::use_fused says (a GPU; bf16
  // on the CPU), one fused pass over x; otherwise composed() and torch::silu.
  Tensor forward(const Tensor& x, bool silu = false) {
    if ((x.is_cpu() || x.is_cuda()) && layers::use_fused(x.device(), x.scalar_type()))
      return layers::channel_rms_norm(x, gamma, scale, silu);
    const auto y = composed(x);
    return silu ? torch::silu(y) : y;
  }
  // F.normalize's formula, x / max(‖x‖, 1e-12), written out: LibTorch 1.13's
  // vector norm over a strided channel dimension takes a slow path on the CPU,
  // and the embedded model's decode takes a third less without it
  // (bench/RESULTS.md).
  Tensor composed(const Tensor& x) {
    const auto xf = x.to(torch::kFloat32);
    const auto norm = xf.square().sum(1, /*keepdim=*/true).sqrt().clamp_min(1e-12);
    return (xf / norm * scale * gamma.to(torch::kFloat32)).to(x.scalar_type());
  }
  double scale;
  Tensor gamma;
};
TORCH_MODULE(RMSNorm);

struct Conv2dParamsImpl : torch::nn::Module {
  Conv2dParamsImpl(int64_t in, int64_t out, int64_t k) {
    weight = register_parameter("weight", torch::empty({out, in, k, k}), false);
    bias = register_parameter("bias", torch::zeros({out}), false);
  }
  Tensor forward(const Tensor& x, int64_t stride = 1, int64_t padding = 0) {
    const auto dt = x.scalar_type();
    return torch::conv2d(x, weight.to(dt), bias.to(dt), {stride, stride}, {padding, padding});
  }
  Tensor weight, bias;
};
TORCH_MODULE(Conv2dParams);

// [B, C, T, H, W] ↔ [B·T, C, H, W]
Tensor frames_of(const Tensor& x) {
  return x.transpose(1, 2).flatten(0, 1);
}
Tensor video_of(const Tensor& x, int64_t b) {
  return x.unflatten(0, {b, -1}).transpose(1, 2);
}

struct ResidualBlockImpl : torch::nn::Module {
  ResidualBlockImpl(int64_t in, int64_t out) {
    residual = register_module("residual", torch::nn::ModuleList());
    residual->push_back(RMSNorm(in, false));
    residual->push_back(gap());  // SiLU
    residual->push_back(CausalConv3d(in, out, 3, 3, 1, 1));
    residual->push_back(RMSNorm(out, false));
    residual->push_back(gap());  // SiLU
    residual->push_back(gap());  // Dropout
    residual->push_back(CausalConv3d(out, out, 3, 3, 1, 1));
    if (in != out) shortcut = register_module("shortcut", CausalConv3d(in, out, 1, 1));
  }
  Tensor forward(const Tensor& x) {
    const auto h = shortcut ? shortcut->forward(x) : x;
    auto y = residual->ptr<RMSNormImpl>(0)->forward(x, /*silu=*/true);
    y = residual->ptr<CausalConv3dImpl>(2)->forward_cached(y);
    y = residual->ptr<RMSNormImpl>(3)->forward(y, /*silu=*/true);
    y = residual->ptr<CausalConv3dImpl>(6)->forward_cached(y);
    return y + h;
  }
  void clear() {
    residual->ptr<CausalConv3dImpl>(2)->cache_ = Tensor();
    residual->ptr<CausalConv3dImpl>(6)->cache_ = Tensor();
  }
  torch::nn::ModuleList residual{nullptr};
  CausalConv3d shortcut{nullptr};
};
TORCH_MODULE(ResidualBlock);

// Single-head self-attention within each frame.
struct AttentionBlockImpl : torch::nn::Module {
  explicit AttentionBlockImpl(int64_t dim) {
    norm = register_module("norm", RMSNorm(dim, true));
    to_qkv = register_module("to_qkv", Conv2dParams(dim, 3 * dim, 1));
    proj = register_module("proj", Conv2dParams(dim, dim, 1));
  }
  Tensor forward(const Tensor& x) {
    const int64_t b = x.size(0), c = x.size(1), h = x.size(3), w = x.size(4);
    auto f = norm->forward(frames_of(x));  // [BT, C, H, W]
    const bool last = channels_last(x);
    // [BT, 1, HW, 3C] (a view where f is channels-last)
    const auto qkv =
        last ? to_qkv->forward(f).permute({0, 2, 3, 1}).reshape({-1, 1, h * w, 3 * c}).chunk(3, -1)
             : to_qkv->forward(f).reshape({-1, 1, 3 * c, h * w}).permute({0, 1, 3, 2}).chunk(3, -1);
    // softmax(q·kᵀ/√C)·v without the [HW, HW] scores whole (17 GB a frame for
    // a 256×256 latent in float32). Contiguous: LibTorch 2's fused kernels
    // take only a unit last stride (else its composed path, scores whole).
    f = compat::scaled_dot_product_attention(qkv[0].contiguous(), qkv[1].contiguous(),
                                             qkv[2].contiguous())
            .squeeze(1);
    // [BT, HW, C] → [BT, C, H, W], x's layout
    f = last ? f.reshape({-1, h, w, c}).permute({0, 3, 1, 2})
             : f.permute({0, 2, 1}).reshape({-1, c, h, w});
    return video_of(proj->forward(f), b) + x;
  }
  RMSNorm norm{nullptr};
  Conv2dParams to_qkv{nullptr}, proj{nullptr};
};
TORCH_MODULE(AttentionBlock);

enum class Mode { Up2d, Up3d, Down2d, Down3d };

struct ResampleImpl : torch::nn::Module {
  ResampleImpl(int64_t dim, Mode m) : mode(m) {
    resample = register_module("resample", torch::nn::ModuleList());
    resample->push_back(gap());  // Upsample or ZeroPad2d
    const bool up = mode == Mode::Up2d || mode == Mode::Up3d;
    resample->push_back(Conv2dParams(dim, up ? dim / 2 : dim, 3));
    if (mode == Mode::Up3d)
      time_conv = register_module("time_conv", CausalConv3d(dim, 2 * dim, 3, 1, 1, 0));
    if (mode == Mode::Down3d)
      time_conv = register_module("time_conv", CausalConv3d(dim, dim, 3, 1, 0, 0, 2));
  }

  Tensor forward(Tensor x) {
    const int64_t b = x.size(0), c = x.size(1), t = x.size(2), h = x.size(3), w = x.size(4);
    if (mode == Mode::Up3d) {
      // First chunk: no time upsampling (1 latent frame → 1 frame), only a marker.
      if (!seen_first_) {
        seen_first_ = true;
      } else {
        auto next = x.slice(2, std::max<int64_t>(0, t - kCacheT));
        if (next.size(2) < kCacheT) {
          // After the first chunk the frame before is zeros; later, the cached one.
          next = cat_time(
              cache_.defined() ? cache_.slice(2, cache_.size(2) - 1) : torch::zeros_like(next),
              next);
        }
        x = cache_.defined() ? time_conv->forward(x, cache_)
                             : time_conv->forward(x);  // [B, 2C, T, H, W]
        cache_ = copy_of(next);
        // Interleave the two halves in time: [B, 2, C, T, H, W] → [B, C, 2T, H, W].
        if (channels_last(x)) {  // the same in [B, T, H, W, 2, C], staying channels-last
          x = x.permute({0, 2, 3, 4, 1})
                  .reshape({b, t, h, w, 2, c})
                  .permute({0, 1, 4, 2, 3, 5})
                  .contiguous()  // (reshape alone would view it where t is 1)
                  .view({b, 2 * t, h, w, c})
                  .permute({0, 4, 1, 2, 3});
        } else {
          x = x.reshape({b, 2, c, t, h, w});
          x = torch::stack({x.select(1, 0), x.select(1, 1)}, 3).reshape({b, c, 2 * t, h, w});
        }
      }
    }
    auto f = frames_of(x);
    auto& conv = *resample->ptr<Conv2dParamsImpl>(1);
    if (mode == Mode::Up2d || mode == Mode::Up3d) {
      // Nearest ×2: each value copied into a 2×2 square, in one pass
      // (repeat_interleave gathers through an index, several times slower).
      const int64_t fn = f.size(0), fc = f.size(1), fh = f.size(2), fw = f.size(3);
      if (channels_last(x)) {  // the same in [N, H, W, C], staying channels-last
        f = f.permute({0, 2, 3, 1})
                .unsqueeze(2)
                .unsqueeze(4)
                .expand({fn, fh, 2, fw, 2, fc})
                .reshape({fn, 2 * fh, 2 * fw, fc})
                .permute({0, 3, 1, 2});
      } else {
        f = f.unsqueeze(3)
                .unsqueeze(5)
                .expand({fn, fc, fh, 2, fw, 2})
                .reshape({fn, fc, 2 * fh, 2 * fw});
      }
      f = conv.forward(f, 1, 1);
    } else {
      f = conv.forward(F::pad(f, F::PadFuncOptions({0, 1, 0, 1})), 2, 0);
    }
    x = video_of(f, b);
    if (mode == Mode::Down3d) {
      if (!cache_.defined()) {
        cache_ = copy_of(x);  // first chunk: kept, not downsampled in time
      } else {
        const auto next = copy_of(x.slice(2, x.size(2) - 1));
        x = time_conv->forward(cat_time(cache_.slice(2, cache_.size(2) - 1), x));
        cache_ = next;
      }
    }
    return x;
  }
  void clear() {
    cache_ = Tensor();
    seen_first_ = false;
  }
  Mode mode;
  torch::nn::ModuleList resample{nullptr};
  CausalConv3d time_conv{nullptr};
  Tensor cache_;
  bool seen_first_ = false;
};
TORCH_MODULE(Resample);

// Runs a list of ResidualBlock / AttentionBlock / Resample children in order.
Tensor run_list(const torch::nn::ModuleList& list, Tensor x) {
  for (const auto& m : *list) {
    if (auto* r = m->as<ResidualBlockImpl>())
      x = r->forward(x);
    else if (auto* a = m->as<AttentionBlockImpl>())
      x = a->forward(x);
    else if (auto* s = m->as<ResampleImpl>())
      x = s->forward(x);
  }
  return x;
}
void clear_list(const torch::nn::ModuleList& list) {
  for (const auto& m : *list) {
    if (auto* r = m->as<ResidualBlockImpl>())
      r->clear();
    else if (auto* s = m->as<ResampleImpl>())
      s->clear();
  }
}

struct CoderImpl : torch::nn::Module {
  // Encoder3d (encoder = true) or Decoder3d.
  CoderImpl(const WanVAEConfig& c, bool encoder) {
    const auto& mult = c.dim_mult;
    const int64_t n = static_cast<int64_t>(mult.size());
    std::vector<int64_t> dims;
    if (encoder) {
      dims.push_back(c.dim);
      for (auto m : mult) dims.push_back(c.dim * m);
      conv1 = register_module("conv1", CausalConv3d(3, dims[0], 3, 3, 1, 1));
      stages = register_module("downsamples", torch::nn::ModuleList());
      int64_t out = dims[0];
      for (int64_t i = 0; i < n; ++i) {
        int64_t in = dims[i];
        out = dims[i + 1];
        for (int64_t r = 0; r < c.num_res_blocks; ++r) {
          stages->push_back(ResidualBlock(in, out));
          in = out;
        }
        if (i != n - 1)
          stages->push_back(Resample(out, c.temporal_downsample[i] ? Mode::Down3d : Mode::Down2d));
      }
      out_dim = 2 * c.z_dim;
      mid = out;
    } else {
      dims.push_back(c.dim * mult.back());
      for (auto it = mult.rbegin(); it != mult.rend(); ++it) dims.push_back(c.dim * *it);
      conv1 = register_module("conv1", CausalConv3d(c.z_dim, dims[0], 3, 3, 1, 1));
      mid = dims[0];
      out_dim = 3;
    }
    middle = register_module("middle", torch::nn::ModuleList());
    middle->push_back(ResidualBlock(mid, mid));
    middle->push_back(AttentionBlock(mid));
    middle->push_back(ResidualBlock(mid, mid));
    int64_t last = mid;
    if (!encoder) {
      stages = register_module("upsamples", torch::nn::ModuleList());
      std::vector<bool> temporal_up(c.temporal_downsample.rbegin(), c.temporal_downsample.rend());
      for (int64_t i = 0; i < n; ++i) {
        int64_t in = (i >= 1) ? dims[i] / 2 : dims[i];
        const int64_t out = dims[i + 1];
        for (int64_t r = 0; r < c.num_res_blocks + 1; ++r) {
          stages->push_back(ResidualBlock(in, out));
          in = out;
        }
        if (i != n - 1) stages->push_back(Resample(out, temporal_up[i] ? Mode::Up3d : Mode::Up2d));
        last = out;
      }
    }
    head = register_module("head", torch::nn::ModuleList());
    head->push_back(RMSNorm(last, false));
    head->push_back(gap());  // SiLU
    head->push_back(CausalConv3d(last, out_dim, 3, 3, 1, 1));
    encoder_ = encoder;
  }

  Tensor forward(Tensor x) {
    x = conv1->forward_cached(x);
    if (encoder_) {
      x = run_list(stages, x);
      x = run_list(middle, x);
    } else {
      x = run_list(middle, x);
      x = run_list(stages, x);
    }
    x = head->ptr<RMSNormImpl>(0)->forward(x, /*silu=*/true);
    return head->ptr<CausalConv3dImpl>(2)->forward_cached(x);
  }
  void clear() {
    conv1->cache_ = Tensor();
    clear_list(stages);
    clear_list(middle);
    head->ptr<CausalConv3dImpl>(2)->cache_ = Tensor();
  }
  bool encoder_ = true;
  int64_t mid = 0, out_dim = 0;
  CausalConv3d conv1{nullptr};
  torch::nn::ModuleList stages{nullptr}, middle{nullptr}, head{nullptr};
};
TORCH_MODULE(Coder);

class WanVAEImpl : public torch::nn::Module {
 public:
  explicit WanVAEImpl(const WanVAEConfig& c) : config(c) {
    encoder = register_module("encoder", Coder(c, true));
    conv1 = register_module("conv1", CausalConv3d(2 * c.z_dim, 2 * c.z_dim, 1, 1));
    conv2 = register_module("conv2", CausalConv3d(c.z_dim, c.z_dim, 1, 1));
    decoder = register_module("decoder", Coder(c, false));
  }
  Tensor stats(const std::vector<double>& v, const Tensor& like) const {
    return torch::tensor(v, torch::TensorOptions().dtype(torch::kFloat32))
        .to(like.device())
        .view({1, -1, 1, 1, 1});
  }

  // Whether the coder runs channels-last, its convolutions by frames
  // (CausalConv3dImpl::by_frames): where the fused passes run on the CPU (bf16
  // by default). Returns what makes its input so (or leaves it).
  static std::function<Tensor(const Tensor&)> set_by_frames(const Coder& coder, const Tensor& x) {
    const bool last = x.is_cpu() && layers::use_fused(x.device(), x.scalar_type());
    for (const auto& m : coder->modules())
      if (auto* conv = m->as<CausalConv3dImpl>()) conv->frames_ = last;
    return [last](const Tensor& t) {
      return last ? t.contiguous(torch::MemoryFormat::ChannelsLast3d) : t;
    };
  }

  std::pair<Tensor, Tensor> posterior(const Tensor& video) {
    TORCH_CHECK(video.dim() == 5 && video.size(1) == 3 && (video.size(2) - 1) % 4 == 0,
                "WanVAE.encode: video must be [B, 3, 4k+1, H, W], got ", video.sizes());
    encoder->clear();
    const auto x = video.to(dtype);
    const auto layout = set_by_frames(encoder, x);
    std::vector<Tensor> outs;
    // Without temporal downsampling, chunks with caches compute exactly what one
    // causal pass over all frames does: one call, larger tensors.
    const int64_t chunks = config.time_compression() == 1 ? 0 : 1 + (x.size(2) - 1) / 4;
    if (chunks == 0) outs.push_back(encoder->forward(layout(x)).contiguous());
    for (int64_t i = 0; i < chunks; ++i) {
      const auto chunk = i == 0 ? x.slice(2, 0, 1) : x.slice(2, 1 + 4 * (i - 1), 1 + 4 * i);
      outs.push_back(encoder->forward(layout(chunk)).contiguous());
    }
    encoder->clear();
    const auto moments = conv1->forward(torch::cat(outs, 2)).to(torch::kFloat32).chunk(2, 1);
    return {moments[0], moments[1]};
  }

  Tensor normalise(const Tensor& z) const {
    const auto inv_std = 1.0 / stats(config.latents_std, z);
    return (z.to(torch::kFloat32) - stats(config.latents_mean, z)) * inv_std;
  }

  Tensor encode(const Tensor& video) { return normalise(posterior(video).first); }

  Tensor decode(const Tensor& latent, const std::function<void(const Tensor&)>& on_frames) {
    TORCH_CHECK(latent.dim() == 5 && latent.size(1) == config.z_dim,
                "WanVAE.decode: latent must be [B, ", config.z_dim, ", T, h, w], got ",
                latent.sizes());
    decoder->clear();
    const auto inv_std = 1.0 / stats(config.latents_std, latent);
    return decode_unnormalised(
        latent.to(torch::kFloat32) / inv_std + stats(config.latents_mean, latent), on_frames);
  }

  Tensor decode_unnormalised(const Tensor& z,
                             const std::function<void(const Tensor&)>& on_frames = {}) {
    decoder->clear();
    const auto x = conv2->forward(z.to(dtype));
    const auto layout = set_by_frames(decoder, x);
    if (config.time_compression() == 1 && !on_frames) {  // exact, as in posterior()
      const auto video = decoder->forward(layout(x)).to(torch::kFloat32, false, false,
                                                        torch::MemoryFormat::Contiguous);
      decoder->clear();
      return video;
    }
    // Each chunk's frames go straight into the video, widened on the way (no
    // list of chunks concatenated at the end: one video's memory, not two).
    const int64_t total = (x.size(2) - 1) * config.time_compression() + 1;
    Tensor video;
    int64_t at = 0;
    for (int64_t i = 0; i < x.size(2); ++i) {
      const auto chunk = decoder->forward(layout(x.slice(2, i, i + 1)));
      if (!video.defined()) {
        auto shape = chunk.sizes().vec();
        shape[2] = total;
        video = torch::empty(shape, chunk.options().dtype(torch::kFloat32),
                             torch::MemoryFormat::Contiguous);
      }
      const int64_t n = chunk.size(2);
      TORCH_CHECK(at + n <= total, "WanVAE.decode: the decoder gave more than ", total, " frames");
      auto frames = video.slice(2, at, at + n);
      frames.copy_(chunk);
      at += n;
      if (on_frames) on_frames(frames);
    }
    decoder->clear();
    TORCH_CHECK(at == total, "WanVAE.decode: the decoder gave ", at, " frames, not ", total);
    return video;
  }

  WanVAEConfig config;
  torch::ScalarType dtype = torch::kFloat32;
  Coder encoder{nullptr}, decoder{nullptr};
  CausalConv3d conv1{nullptr}, conv2{nullptr};
};

// ---------------------------------------------------------------- configuration and layouts

std::string wan_vae_diffusers_to_original(const std::string& key, int64_t num_res_blocks) {
  static const std::regex up_res(R"(^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$)");
  static const std::regex up_sample(R"(^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)$)");
  static const std::regex down(R"(^encoder\.down_blocks\.(\d+)\.(.*)$)");
  static const std::regex mid(
      R"(^(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.*)$)");
  auto resnet = [](const std::string& rest) -> std::string {
    if (rest == "norm1.gamma") return "residual.0.gamma";
    if (rest.rfind("conv1.", 0) == 0) return "residual.2." + rest.substr(6);
    if (rest == "norm2.gamma") return "residual.3.gamma";
    if (rest.rfind("conv2.", 0) == 0) return "residual.6." + rest.substr(6);
    if (rest.rfind("conv_shortcut.", 0) == 0) return "shortcut." + rest.substr(14);
    return rest;  // resample.1.*, time_conv.*
  };
  std::smatch m;
  if (key.rfind("quant_conv.", 0) == 0) return "conv1." + key.substr(11);
  if (key.rfind("post_quant_conv.", 0) == 0) return "conv2." + key.substr(16);
  for (const char* side : {"encoder", "decoder"}) {
    const std::string s = side;
    if (key.rfind(s + ".conv_in.", 0) == 0) return s + ".conv1." + key.substr(s.size() + 9);
    if (key == s + ".norm_out.gamma") return s + ".head.0.gamma";
    if (key.rfind(s + ".conv_out.", 0) == 0) return s + ".head.2." + key.substr(s.size() + 10);
  }
  if (std::regex_match(key, m, mid)) {
    const int i = std::stoi(m[3]);
    if (m[2] == "attentions") return m[1].str() + ".middle.1." + m[4].str();
    return m[1].str() + ".middle." + std::to_string(i == 0 ? 0 : 2) + "." + resnet(m[4]);
  }
  const int64_t stride = num_res_blocks + 2;  // res blocks + 1, then the upsampler
  if (std::regex_match(key, m, up_res))
    return "decoder.upsamples." + std::to_string(std::stoll(m[1]) * stride + std::stoll(m[2])) +
           "." + resnet(m[3]);
  if (std::regex_match(key, m, up_sample))
    return "decoder.upsamples." + std::to_string(std::stoll(m[1]) * stride + stride - 1) + "." +
           m[2].str();
  if (std::regex_match(key, m, down))
    return "encoder.downsamples." + m[1].str() + "." + resnet(m[2]);
  return key;
}

std::string WanVAEConfig::to_json() const {
  return nlohmann::json{{"dim", dim},
                        {"z_dim", z_dim},
                        {"dim_mult", dim_mult},
                        {"num_res_blocks", num_res_blocks},
                        {"temperal_downsample", temporal_downsample},
                        {"latents_mean", latents_mean},
                        {"latents_std", latents_std}}
      .dump();
}

WanVAEConfig WanVAEConfig::from_checkpoint(const io::Checkpoint& ck) {
  WanVAEConfig c;
  const auto md = ck.metadata().find("config");
  if (md != ck.metadata().end()) {
    try {
      const auto j = parse_json(md->second, ck.path().string() + " (metadata 'config')");
      c.dim = j.value("dim", c.dim);
      c.z_dim = j.value("z_dim", c.z_dim);
      c.dim_mult = j.value("dim_mult", c.dim_mult);
      c.num_res_blocks = j.value("num_res_blocks", c.num_res_blocks);
      c.temporal_downsample = j.value("temperal_downsample", c.temporal_downsample);
      c.latents_mean = j.value("latents_mean", c.latents_mean);
      c.latents_std = j.value("latents_std", c.latents_std);
      if (!j.value("attn_scales", std::vector<double>{}).empty())
        fail_file(ck.path(), "Wan VAE with attention in its stages is not supported");
      // The coders take one time flag per stage that changes the size (the
      // frame count a decode gives depends on them).
      if (c.dim <= 0 || c.z_dim <= 0 || c.num_res_blocks < 0 || c.dim_mult.size() < 2 ||
          c.temporal_downsample.size() != c.dim_mult.size() - 1)
        fail_file(ck.path(), "metadata 'config' is not a valid Wan VAE configuration: " +
                                 std::to_string(c.dim_mult.size()) + " stages in dim_mult, " +
                                 std::to_string(c.temporal_downsample.size()) +
                                 " temperal_downsample flags (one fewer than the stages), dim " +
                                 std::to_string(c.dim) + ", z_dim " + std::to_string(c.z_dim));
      if (static_cast<int64_t>(c.latents_mean.size()) != c.z_dim ||
          static_cast<int64_t>(c.latents_std.size()) != c.z_dim)
        fail_file(ck.path(),
                  "metadata 'config': latents_mean and latents_std need one value per "
                  "latent channel (" +
                      std::to_string(c.z_dim) + ")");
      return c;
    } catch (const nlohmann::json::exception& e) {
      fail_file(ck.path(),
                std::string("metadata 'config' is not a valid Wan VAE configuration: ") + e.what());
    }
  }
  const auto det = io::detect_layout(ck.shapes());
  if (det.family != io::Family::WanVAE) fail_file(ck.path(), "not a Wan 2.1 VAE checkpoint");
  const auto shapes = io::strip_prefix(ck.shapes(), det.prefix);
  const bool diff = det.layout == io::Layout::Diffusers;
  auto need = [&](const std::string& k) -> const std::vector<int64_t>& {
    const auto it = shapes.find(k);
    if (it == shapes.end())
      fail_file(ck.path(), "not a Wan 2.1 VAE checkpoint: no tensor '" + k + "'");
    return it->second;
  };
  c.dim = need(diff ? "encoder.conv_in.weight" : "encoder.conv1.weight")[0];
  c.z_dim = need(diff ? "post_quant_conv.weight" : "conv2.weight")[0];
  if (c.z_dim != 16)
    fail_file(ck.path(), "a VAE with " + std::to_string(c.z_dim) +
                             " latent channels is not the Wan 2.1 VAE (the Wan 2.2 VAE has 48 and "
                             "is not supported yet)");
  const int64_t top = need(diff ? "decoder.conv_in.weight" : "decoder.conv1.weight")[0];
  c.dim_mult = {1, 2, top / c.dim, top / c.dim};
  c.num_res_blocks = diff ? io::count_indexed(shapes, "decoder.up_blocks.0.resnets.") - 1
                          : 2;  // the released Wan 2.1 VAE
  return c;
}

// ---------------------------------------------------------------- public

WanVAE::WanVAE(const WanVAEConfig& config) : impl_(std::make_shared<WanVAEImpl>(config)) {
  adopt(impl_);
}
WanVAE::~WanVAE() = default;
WanVAE::WanVAE(WanVAE&&) noexcept = default;
WanVAE& WanVAE::operator=(WanVAE&&) noexcept = default;

WanVAE WanVAE::load(const std::filesystem::path& path, layers::Precision precision) {
  auto [ck, det] = layers::open_checkpoint(path, {io::Family::WanVAE}, "Wan VAE");
  WanVAE vae(WanVAEConfig::from_checkpoint(*ck));
  std::function<std::string(const std::string&)> diffusers;
  if (det.layout == io::Layout::Diffusers)
    diffusers = [res = vae.impl_->config.num_res_blocks](const std::string& k) {
      return wan_vae_diffusers_to_original(k, res);
    };
  layers::load_parameters(*vae.impl_, *ck, layers::prefixed(det.prefix, diffusers), "Wan 2.1 VAE");
  vae.adopt(vae.impl_, std::move(ck));
  vae.set_precision(precision);
  return vae;
}

const WanVAEConfig& WanVAE::config() const {
  return impl_->config;
}
// The convolutions compute in `p` (the norms stay float32).
void WanVAE::on_precision(layers::Precision p) {
  impl_->dtype = layers::matmul_dtype(p);
}

Tensor WanVAE::encode(const Tensor& video) {
  torch::AutoGradMode grad(trainable());
  return impl_->encode(video);
}
Tensor WanVAE::decode(const Tensor& latent, const std::function<void(const Tensor&)>& on_frames) {
  torch::AutoGradMode grad(trainable());
  return impl_->decode(latent, on_frames);
}
Tensor WanVAE::decode_video(const Tensor& latent, const FrameProgress& progress) {
  if (!progress) return decode(latent);
  const int64_t total = frames(latent.size(2));
  int64_t done = 0;
  return decode(latent, [&](const Tensor& chunk) {
    done += chunk.size(2);
    progress(done, total);
  });
}
std::pair<Tensor, Tensor> WanVAE::posterior(const Tensor& video) {
  torch::AutoGradMode grad(trainable());
  return impl_->posterior(video);
}
Tensor WanVAE::normalise(const Tensor& z) const {
  return impl_->normalise(z);
}

Tensor WanVAE::decode_unnormalised(const Tensor& z) {
  torch::AutoGradMode grad(trainable());
  return impl_->decode_unnormalised(z);
}
void WanVAE::set_latent_statistics(std::vector<double> mean, std::vector<double> std) {
  if (static_cast<int64_t>(mean.size()) != impl_->config.z_dim ||
      static_cast<int64_t>(std.size()) != impl_->config.z_dim)
    throw Error("latent statistics need one value per latent channel");
  impl_->config.latents_mean = std::move(mean);
  impl_->config.latents_std = std::move(std);
}

}  // namespace kinora::vae
