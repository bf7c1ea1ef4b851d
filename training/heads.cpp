// The DiT's self-attention heads started as position kernels: the locality,
// motion and pool heads of DitOptions (init_locality_heads, init_motion_heads,
// init_pool_heads in train.h).
#include <cmath>
#include <optional>

#include "base/error.h"
#include "training/train.h"

namespace kinora::training {

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
    throw Error("init_locality_heads: heads = " + std::to_string(heads) +
                ": at most 3, and the DiT has " + std::to_string(num_heads) + " heads");
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
    throw Error("init_motion_heads: count = " + std::to_string(count) + ": 4 or 8, after the " +
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
    throw Error("init_pool_heads: count = " + std::to_string(count) + ": 2 or 4, after the " +
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

}  // namespace kinora::training
