#include "diffusion/flux_dit.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <regex>

#include "base/error.h"
#include "base/json.h"
#include "io/layout.h"
#include "layers/fused.h"
#include "layers/linear.h"
#include "layers/load.h"
#include "layers/ops.h"

namespace kinora::diffusion {
using layers::Linear;
using layers::LinearImpl;
namespace F = torch::nn::functional;

namespace {

// A parameter-only module holding `scale` [dim] (BFL's RMSNorm of q and k).
struct ScaleImpl : torch::nn::Module {
  explicit ScaleImpl(int64_t dim) {
    scale = register_parameter("scale", torch::ones({dim}), false);
  }
  torch::Tensor scale;
};
TORCH_MODULE(Scale);

// BFL's QKNorm: query_norm and key_norm, RMSNorm over the head width.
struct QKNormImpl : torch::nn::Module {
  explicit QKNormImpl(int64_t head_dim) {
    query_norm = register_module("query_norm", Scale(head_dim));
    key_norm = register_module("key_norm", Scale(head_dim));
  }
  // x [B, L, H, D] in the matmul dtype: normalised in float32, back to x's
  // dtype, times the scale (as BFL's RMSNorm does).
  static torch::Tensor apply(const torch::Tensor& x, const Scale& s) {
    return layers::rms_norm(x, torch::Tensor(), 1e-6).to(x.scalar_type()) *
           s->scale.to(x.scalar_type());
  }
  Scale query_norm{nullptr}, key_norm{nullptr};
};
TORCH_MODULE(QKNorm);

// in_layer → SiLU → out_layer.
struct MLPEmbedderImpl : torch::nn::Module {
  MLPEmbedderImpl(int64_t in, int64_t hidden) {
    in_layer = register_module("in_layer", Linear(in, hidden, true));
    out_layer = register_module("out_layer", Linear(hidden, hidden, true));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return out_layer->forward(torch::silu(in_layer->forward(x))).to(torch::kFloat32);
  }
  Linear in_layer{nullptr}, out_layer{nullptr};
};
TORCH_MODULE(MLPEmbedder);

// Modulation: lin(SiLU(vec)) chunked into (shift, scale, gate) triples, float32.
struct ModulationImpl : torch::nn::Module {
  ModulationImpl(int64_t dim, int64_t triples) : n(3 * triples) {
    lin = register_module("lin", Linear(dim, n * dim, true));
  }
  std::vector<torch::Tensor> forward(const torch::Tensor& vec) {
    return lin->forward(torch::silu(vec)).to(torch::kFloat32).unsqueeze(1).chunk(n, -1);
  }
  int64_t n;
  Linear lin{nullptr};
};
TORCH_MODULE(Modulation);

// (1 + scale)·LN(x) + shift, LayerNorm without affine parameters, eps 1e-6,
// float32; fused (layers/fused.h): in one pass, in `dt`.
torch::Tensor modulate(const torch::Tensor& x, const torch::Tensor& shift,
                       const torch::Tensor& scale, bool fused = false,
                       torch::ScalarType dt = torch::kFloat32) {
  if (fused) return layers::modulated_layer_norm(x, shift, scale, 1e-6, dt);
  return layers::layer_norm(x, {}, {}, 1e-6) * (1 + scale) + shift;
}

// x + gate · y in float32; fused: in place, in one pass.
torch::Tensor gated(torch::Tensor x, const torch::Tensor& gate, const torch::Tensor& y,
                    bool fused) {
  if (!fused) return x + gate * y.to(torch::kFloat32);
  x = x.contiguous();
  layers::gated_add_(x, y, gate);
  return x;
}

// The rotation tables of the positions `ids` [B, L, n_axes]: cos and sin
// [B, L, D/2], float32, axis by axis (ω_j = θ^(−2j/d_a), computed in float64).
std::pair<torch::Tensor, torch::Tensor> rope_tables(const torch::Tensor& ids,
                                                    const std::vector<int64_t>& axes_dim,
                                                    double theta) {
  std::vector<torch::Tensor> angles;
  const auto opts = torch::TensorOptions().dtype(torch::kFloat64).device(ids.device());
  for (std::size_t a = 0; a < axes_dim.size(); ++a) {
    const int64_t d = axes_dim[a];
    const auto omega =
        1.0 / torch::pow(theta, torch::arange(0, d, 2, opts) / static_cast<double>(d));
    angles.push_back(ids.select(-1, static_cast<int64_t>(a)).to(torch::kFloat64).unsqueeze(-1) *
                     omega);  // [B, L, d/2]
  }
  const auto all = torch::cat(angles, -1);
  return {all.cos().to(torch::kFloat32), all.sin().to(torch::kFloat32)};
}

// Rotates adjacent pairs (x[2j], x[2j+1]) of x [B, L, H, D] in float32, back to x's dtype.
torch::Tensor rope_apply(const torch::Tensor& x, const torch::Tensor& cos,
                         const torch::Tensor& sin) {
  const auto xs = x.to(torch::kFloat32).unflatten(-1, {-1, 2});
  const auto a = xs.select(-1, 0), b = xs.select(-1, 1);  // [B, L, H, D/2]
  const auto c = cos.unsqueeze(2), s = sin.unsqueeze(2);  // [B, L, 1, D/2]
  return torch::stack({c * a - s * b, s * a + c * b}, -1).flatten(-2).to(x.scalar_type());
}

// q, k, v [B, L, H, D] from a fused projection [B, L, 3·H·D] (K, H, D order).
std::array<torch::Tensor, 3> split_qkv(const torch::Tensor& qkv, int64_t heads) {
  const auto t = qkv.unflatten(-1, {3, heads, -1});
  return {t.select(2, 0), t.select(2, 1), t.select(2, 2)};
}

// Joint attention over [txt; img] with RoPE on q and k → [B, L, H·D].
torch::Tensor rope_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const torch::Tensor& cos, const torch::Tensor& sin) {
  const auto dt = v.scalar_type();
  return layers::attention(rope_apply(q, cos, sin).to(dt), rope_apply(k, cos, sin).to(dt), v)
      .flatten(2);
}

}  // namespace

// ---------------------------------------------------------------- blocks

struct SelfAttentionImpl : torch::nn::Module {
  SelfAttentionImpl(int64_t dim, int64_t n_heads) : heads(n_heads) {
    qkv = register_module("qkv", Linear(dim, 3 * dim, true));
    norm = register_module("norm", QKNorm(dim / n_heads));
    proj = register_module("proj", Linear(dim, dim, true));
  }
  // Normalised q, k and v of x, [B, L, H, D] each, in v's dtype.
  std::array<torch::Tensor, 3> qkv_of(const torch::Tensor& x) {
    auto [q, k, v] = split_qkv(qkv->forward(x), heads);
    return {QKNormImpl::apply(q, norm->query_norm).to(v.scalar_type()),
            QKNormImpl::apply(k, norm->key_norm).to(v.scalar_type()), v};
  }
  int64_t heads;
  Linear qkv{nullptr}, proj{nullptr};
  QKNorm norm{nullptr};
};
TORCH_MODULE(SelfAttention);

torch::nn::ModuleList mlp_of(int64_t dim, int64_t hidden) {
  torch::nn::ModuleList l;
  l->push_back(Linear(dim, hidden, true));
  l->push_back(torch::nn::Identity());  // GELU (tanh), "img_mlp.1"
  l->push_back(Linear(hidden, dim, true));
  return l;
}
// fused: the GELU in the first matmul's epilogue where the device has one.
torch::Tensor run_mlp(const torch::nn::ModuleList& mlp, const torch::Tensor& x, bool fused) {
  auto& in = *mlp->ptr<LinearImpl>(0);
  return mlp->ptr<LinearImpl>(2)->forward(fused ? in.forward_gelu_tanh(x)
                                                : layers::gelu_tanh(in.forward(x)));
}

struct DoubleStreamBlockImpl : torch::nn::Module {
  explicit DoubleStreamBlockImpl(const FluxConfig& c) {
    img_mod = register_module("img_mod", Modulation(c.hidden_size, 2));
    img_attn = register_module("img_attn", SelfAttention(c.hidden_size, c.num_heads));
    img_mlp = register_module("img_mlp", mlp_of(c.hidden_size, c.mlp_hidden));
    txt_mod = register_module("txt_mod", Modulation(c.hidden_size, 2));
    txt_attn = register_module("txt_attn", SelfAttention(c.hidden_size, c.num_heads));
    txt_mlp = register_module("txt_mlp", mlp_of(c.hidden_size, c.mlp_hidden));
  }
  // img [B, N, D], txt [B, L, D] float32; cos/sin over [txt; img]. fused: the
  // passes of layers/fused.h, img and txt updated in place.
  void forward(torch::Tensor& img, torch::Tensor& txt, const torch::Tensor& vec,
               const torch::Tensor& cos, const torch::Tensor& sin, bool fused) {
    const auto dt = layers::matmul_dtype(img_attn->qkv->precision);
    const auto im = img_mod->forward(vec), tm = txt_mod->forward(vec);
    const auto [iq, ik, iv] = img_attn->qkv_of(modulate(img, im[0], im[1], fused, dt));
    const auto [tq, tk, tv] = txt_attn->qkv_of(modulate(txt, tm[0], tm[1], fused, dt));
    const int64_t L = txt.size(1);
    const auto attn = rope_attention(torch::cat({tq, iq}, 1), torch::cat({tk, ik}, 1),
                                     torch::cat({tv, iv}, 1), cos, sin);
    img = gated(img, im[2], img_attn->proj->forward(attn.slice(1, L)), fused);
    img = gated(img, im[5], run_mlp(img_mlp, modulate(img, im[3], im[4], fused, dt), fused), fused);
    txt = gated(txt, tm[2], txt_attn->proj->forward(attn.slice(1, 0, L)), fused);
    txt = gated(txt, tm[5], run_mlp(txt_mlp, modulate(txt, tm[3], tm[4], fused, dt), fused), fused);
  }
  Modulation img_mod{nullptr}, txt_mod{nullptr};
  SelfAttention img_attn{nullptr}, txt_attn{nullptr};
  torch::nn::ModuleList img_mlp{nullptr}, txt_mlp{nullptr};
};
TORCH_MODULE(DoubleStreamBlock);

struct SingleStreamBlockImpl : torch::nn::Module {
  explicit SingleStreamBlockImpl(const FluxConfig& c)
      : hidden(c.hidden_size), mlp_hidden(c.mlp_hidden), heads(c.num_heads) {
    linear1 = register_module("linear1", Linear(hidden, 3 * hidden + mlp_hidden, true));
    linear2 = register_module("linear2", Linear(hidden + mlp_hidden, hidden, true));
    norm = register_module("norm", QKNorm(c.head_dim()));
    modulation = register_module("modulation", Modulation(hidden, 1));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& vec, const torch::Tensor& cos,
                        const torch::Tensor& sin, bool fused) {
    const auto m = modulation->forward(vec);
    const auto xm = modulate(x, m[0], m[1], fused, layers::matmul_dtype(linear1->precision));
    // Fused: linear1's attention and MLP columns as two products (the GELU in
    // the second's epilogue where the device has one), and linear2 summed over
    // the two inputs' products, so that neither half is copied out of or into
    // a concatenation.
    const bool split = fused && linear1->plain() && linear2->plain();
    const auto h = split ? linear1->forward_rows(xm, 0, 3 * hidden) : linear1->forward(xm);
    auto [q, k, v] = split_qkv(split ? h : h.slice(-1, 0, 3 * hidden), heads);
    q = QKNormImpl::apply(q, norm->query_norm).to(v.scalar_type());
    k = QKNormImpl::apply(k, norm->key_norm).to(v.scalar_type());
    const auto attn = rope_attention(q, k, v, cos, sin);
    if (split)
      return gated(x, m[2],
                   linear2->forward_cat({attn, linear1->forward_gelu_tanh(xm, 3 * hidden)}), fused);
    const auto mlp = layers::gelu_tanh(h.slice(-1, 3 * hidden));
    return gated(x, m[2], linear2->forward(torch::cat({attn, mlp.to(attn.scalar_type())}, -1)),
                 fused);
  }
  int64_t hidden, mlp_hidden, heads;
  Linear linear1{nullptr}, linear2{nullptr};
  QKNorm norm{nullptr};
  Modulation modulation{nullptr};
};
TORCH_MODULE(SingleStreamBlock);

struct LastLayerImpl : torch::nn::Module {
  explicit LastLayerImpl(const FluxConfig& c) {
    linear = register_module("linear", Linear(c.hidden_size, c.out_channels, true));
    adaLN_modulation = register_module("adaLN_modulation", torch::nn::ModuleList());
    adaLN_modulation->push_back(torch::nn::Identity());  // SiLU
    adaLN_modulation->push_back(Linear(c.hidden_size, 2 * c.hidden_size, true));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& vec, bool fused) {
    const auto ss = adaLN_modulation->ptr<LinearImpl>(1)
                        ->forward(torch::silu(vec))
                        .to(torch::kFloat32)
                        .unsqueeze(1)
                        .chunk(2, -1);  // (shift, scale)
    return linear
        ->forward(modulate(x, ss[0], ss[1], fused, layers::matmul_dtype(linear->precision)))
        .to(torch::kFloat32);
  }
  Linear linear{nullptr};
  torch::nn::ModuleList adaLN_modulation{nullptr};
};
TORCH_MODULE(LastLayer);

class FluxModelImpl : public torch::nn::Module {
 public:
  explicit FluxModelImpl(const FluxConfig& c) : config(c) {
    img_in = register_module("img_in", Linear(c.in_channels, c.hidden_size, true));
    time_in = register_module("time_in", MLPEmbedder(256, c.hidden_size));
    vector_in = register_module("vector_in", MLPEmbedder(c.vec_in_dim, c.hidden_size));
    if (c.guidance_embed)
      guidance_in = register_module("guidance_in", MLPEmbedder(256, c.hidden_size));
    txt_in = register_module("txt_in", Linear(c.context_in_dim, c.hidden_size, true));
    double_blocks = register_module("double_blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.depth; ++i) double_blocks->push_back(DoubleStreamBlock(c));
    single_blocks = register_module("single_blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.depth_single_blocks; ++i)
      single_blocks->push_back(SingleStreamBlock(c));
    final_layer = register_module("final_layer", LastLayer(c));
  }

  // BFL's timestep_embedding: t·1000 against float32 frequencies, [cos, sin].
  static torch::Tensor timestep_embedding(const torch::Tensor& t, int64_t dim = 256) {
    const int64_t half = dim / 2;
    const auto freqs =
        torch::exp(-std::log(10000.0) * torch::arange(half, t.options().dtype(torch::kFloat32)) /
                   static_cast<double>(half));
    const auto args = (t.to(torch::kFloat32) * 1000.0).unsqueeze(1) * freqs.unsqueeze(0);
    return torch::cat({args.cos(), args.sin()}, -1);
  }

  torch::Tensor forward(const torch::Tensor& img_tokens, const torch::Tensor& img_ids,
                        const torch::Tensor& txt_tokens, const torch::Tensor& txt_ids,
                        const torch::Tensor& timesteps, const torch::Tensor& y,
                        const torch::Tensor& guidance) {
    const auto& c = config;
    TORCH_CHECK(img_tokens.dim() == 3 && img_tokens.size(2) == c.in_channels,
                "FluxModel: img must be [B, N, ", c.in_channels, "], got ", img_tokens.sizes());
    TORCH_CHECK(txt_tokens.dim() == 3 && txt_tokens.size(2) == c.context_in_dim,
                "FluxModel: txt must be [B, L, ", c.context_in_dim, "], got ", txt_tokens.sizes());
    TORCH_CHECK(y.dim() == 2 && y.size(1) == c.vec_in_dim, "FluxModel: y must be [B, ",
                c.vec_in_dim, "], got ", y.sizes());
    const auto dev = img_in->weight.device();
    const int64_t B = img_tokens.size(0);
    auto img = img_in->forward(img_tokens.to(dev)).to(torch::kFloat32);
    auto vec = time_in->forward(timestep_embedding(timesteps.to(dev).reshape({-1}).expand({B})));
    if (guidance_in) {
      TORCH_CHECK(guidance.defined(), "FluxModel: this model (dev) needs a guidance value");
      vec = vec +
            guidance_in->forward(timestep_embedding(guidance.to(dev).reshape({-1}).expand({B})));
    }
    vec = vec + vector_in->forward(y.to(dev));
    auto txt = txt_in->forward(txt_tokens.to(dev)).to(torch::kFloat32);
    // Named, not bound: the blocks' lambdas capture them (C++17).
    const auto tables = rope_tables(
        torch::cat({txt_ids.to(dev), img_ids.to(dev)}, 1).expand({B, -1, -1}), c.axes_dim, c.theta);
    const auto& cos = std::get<0>(tables);
    const auto& sin = std::get<1>(tables);
    // The fused elementwise passes where they run (layers/fused.h).
    const bool fused = layers::use_fused(dev, layers::matmul_dtype(img_in->precision));
    // Block swap counts the double blocks, then the single ones.
    const std::size_t doubles = double_blocks->size();
    for (std::size_t i = 0; i < doubles; ++i)
      layers::run_block(swap, i, [&] {
        double_blocks[i]->as<DoubleStreamBlockImpl>()->forward(img, txt, vec, cos, sin, fused);
      });
    const int64_t L = txt.size(1);
    auto x = torch::cat({txt, img}, 1);
    txt = img = torch::Tensor();
    for (std::size_t i = 0; i < single_blocks->size(); ++i)
      layers::run_block(swap, doubles + i, [&] {
        x = single_blocks[i]->as<SingleStreamBlockImpl>()->forward(x, vec, cos, sin, fused);
      });
    return final_layer->forward(x.slice(1, L), vec, fused);
  }

  FluxConfig config;
  Linear img_in{nullptr}, txt_in{nullptr};
  MLPEmbedder time_in{nullptr}, vector_in{nullptr}, guidance_in{nullptr};
  torch::nn::ModuleList double_blocks{nullptr}, single_blocks{nullptr};
  LastLayer final_layer{nullptr};
  layers::BlockSwap* swap = nullptr;  // the facade's, while it swaps blocks
};

// ---------------------------------------------------------------- packing

torch::Tensor flux_pack(const torch::Tensor& latent) {
  const int64_t B = latent.size(0), C = latent.size(1), h = latent.size(2), w = latent.size(3);
  return latent.view({B, C, h / 2, 2, w / 2, 2})
      .permute({0, 2, 4, 1, 3, 5})
      .reshape({B, (h / 2) * (w / 2), C * 4});
}

torch::Tensor flux_unpack(const torch::Tensor& tokens, int64_t h, int64_t w) {
  const int64_t B = tokens.size(0), C = tokens.size(2) / 4;
  return tokens.view({B, h / 2, w / 2, C, 2, 2}).permute({0, 3, 1, 4, 2, 5}).reshape({B, C, h, w});
}

torch::Tensor flux_image_ids(int64_t batch, int64_t h, int64_t w) {
  const auto rows = torch::arange(h / 2, torch::kFloat32).view({-1, 1}).expand({h / 2, w / 2});
  const auto cols = torch::arange(w / 2, torch::kFloat32).view({1, -1}).expand({h / 2, w / 2});
  return torch::stack({torch::zeros_like(rows), rows, cols}, -1)
      .reshape({1, -1, 3})
      .expand({batch, -1, 3})
      .contiguous();
}

// ---------------------------------------------------------------- configuration

std::string FluxConfig::variant() const {
  const bool released = in_channels == 64 && hidden_size == 3072 && depth == 19 &&
                        depth_single_blocks == 38 && context_in_dim == 4096 && vec_in_dim == 768;
  if (released) return guidance_embed ? "FLUX.1-dev" : "FLUX.1-schnell";
  return std::string("FLUX-style DiT (") + (guidance_embed ? "guidance-distilled, " : "") +
         "width " + std::to_string(hidden_size) + ", " + std::to_string(depth) + " + " +
         std::to_string(depth_single_blocks) + " blocks)";
}

std::string flux_diffusers_to_original(const std::string& key) {
  static const std::vector<std::pair<std::regex, std::string>> rules = [] {
    std::vector<std::pair<std::regex, std::string>> r;
    auto add = [&](const char* from, const char* to) { r.emplace_back(std::regex(from), to); };
    // Fused or swapped by the loader.
    add(R"(^transformer_blocks\.\d+\.attn\.(to_[qkv]|add_[qkv]_proj)\.)", "");
    add(R"(^single_transformer_blocks\.\d+\.(attn\.to_[qkv]|proj_mlp)\.)", "");
    add(R"(^norm_out\.linear\.)", "");
    add(R"(^time_text_embed\.timestep_embedder\.linear_1\.)", "time_in.in_layer.");
    add(R"(^time_text_embed\.timestep_embedder\.linear_2\.)", "time_in.out_layer.");
    add(R"(^time_text_embed\.text_embedder\.linear_1\.)", "vector_in.in_layer.");
    add(R"(^time_text_embed\.text_embedder\.linear_2\.)", "vector_in.out_layer.");
    add(R"(^time_text_embed\.guidance_embedder\.linear_1\.)", "guidance_in.in_layer.");
    add(R"(^time_text_embed\.guidance_embedder\.linear_2\.)", "guidance_in.out_layer.");
    add(R"(^context_embedder\.)", "txt_in.");
    add(R"(^x_embedder\.)", "img_in.");
    add(R"(^proj_out\.)", "final_layer.linear.");
    add(R"(^transformer_blocks\.(\d+)\.norm1\.linear\.)", "double_blocks.$1.img_mod.lin.");
    add(R"(^transformer_blocks\.(\d+)\.norm1_context\.linear\.)", "double_blocks.$1.txt_mod.lin.");
    add(R"(^transformer_blocks\.(\d+)\.attn\.norm_q\.weight$)",
        "double_blocks.$1.img_attn.norm.query_norm.scale");
    add(R"(^transformer_blocks\.(\d+)\.attn\.norm_k\.weight$)",
        "double_blocks.$1.img_attn.norm.key_norm.scale");
    add(R"(^transformer_blocks\.(\d+)\.attn\.norm_added_q\.weight$)",
        "double_blocks.$1.txt_attn.norm.query_norm.scale");
    add(R"(^transformer_blocks\.(\d+)\.attn\.norm_added_k\.weight$)",
        "double_blocks.$1.txt_attn.norm.key_norm.scale");
    add(R"(^transformer_blocks\.(\d+)\.attn\.to_out\.0\.)", "double_blocks.$1.img_attn.proj.");
    add(R"(^transformer_blocks\.(\d+)\.attn\.to_add_out\.)", "double_blocks.$1.txt_attn.proj.");
    add(R"(^transformer_blocks\.(\d+)\.ff\.net\.0\.proj\.)", "double_blocks.$1.img_mlp.0.");
    add(R"(^transformer_blocks\.(\d+)\.ff\.net\.2\.)", "double_blocks.$1.img_mlp.2.");
    add(R"(^transformer_blocks\.(\d+)\.ff_context\.net\.0\.proj\.)", "double_blocks.$1.txt_mlp.0.");
    add(R"(^transformer_blocks\.(\d+)\.ff_context\.net\.2\.)", "double_blocks.$1.txt_mlp.2.");
    add(R"(^single_transformer_blocks\.(\d+)\.attn\.norm_q\.weight$)",
        "single_blocks.$1.norm.query_norm.scale");
    add(R"(^single_transformer_blocks\.(\d+)\.attn\.norm_k\.weight$)",
        "single_blocks.$1.norm.key_norm.scale");
    add(R"(^single_transformer_blocks\.(\d+)\.proj_out\.)", "single_blocks.$1.linear2.");
    add(R"(^single_transformer_blocks\.(\d+)\.norm\.linear\.)", "single_blocks.$1.modulation.lin.");
    return r;
  }();
  for (const auto& [re, to] : rules)
    if (std::regex_search(key, re))
      return to.empty() ? std::string()
                        : std::regex_replace(key, re, to, std::regex_constants::format_first_only);
  return key;
}

namespace {

const std::vector<int64_t>& need(const io::ShapeMap& m, const std::string& key,
                                 const io::Checkpoint& ck) {
  const auto it = m.find(key);
  if (it == m.end()) fail_file(ck.path(), "not a FLUX DiT checkpoint: no tensor '" + key + "'");
  return it->second;
}

// The tensors diffusers stores apart, assembled under BFL's names: q/k/v (and
// a single block's MLP input) stacked by rows, the final norm's halves swapped
// back to (shift, scale).
std::map<std::string, torch::Tensor> fuse_diffusers(const io::Checkpoint& ck,
                                                    const std::string& prefix,
                                                    const FluxConfig& c) {
  std::map<std::string, torch::Tensor> out;
  auto get = [&](const std::string& key) {
    if (!ck.contains(prefix + key))
      fail_file(ck.path(), "not a complete FLUX DiT checkpoint (diffusers layout): no tensor '" +
                               prefix + key + "'");
    return ck.get(prefix + key);
  };
  auto stack = [&](const std::vector<std::string>& keys, const std::string& name) {
    for (const char* part : {"weight", "bias"}) {
      std::vector<torch::Tensor> parts;
      for (const auto& k : keys) parts.push_back(get(k + "." + part));
      // Parts of mixed stored dtypes (rare) meet in float32.
      auto dt = parts[0].scalar_type();
      for (const auto& p : parts)
        if (p.scalar_type() != dt) dt = torch::kFloat32;
      for (auto& p : parts) p = p.to(dt);
      out[name + "." + part] = torch::cat(parts, 0);
    }
  };
  for (int64_t i = 0; i < c.depth; ++i) {
    const std::string b = "transformer_blocks." + std::to_string(i) + ".attn.";
    const std::string o = "double_blocks." + std::to_string(i) + ".";
    stack({b + "to_q", b + "to_k", b + "to_v"}, o + "img_attn.qkv");
    stack({b + "add_q_proj", b + "add_k_proj", b + "add_v_proj"}, o + "txt_attn.qkv");
  }
  for (int64_t i = 0; i < c.depth_single_blocks; ++i) {
    const std::string b = "single_transformer_blocks." + std::to_string(i) + ".";
    stack({b + "attn.to_q", b + "attn.to_k", b + "attn.to_v", b + "proj_mlp"},
          "single_blocks." + std::to_string(i) + ".linear1");
  }
  for (const char* part : {"weight", "bias"}) {
    const auto t = get(std::string("norm_out.linear.") + part);
    const auto halves = t.chunk(2, 0);  // diffusers: (scale, shift)
    out[std::string("final_layer.adaLN_modulation.1.") + part] =
        torch::cat({halves[1], halves[0]}, 0);
  }
  return out;
}

}  // namespace

FluxConfig FluxConfig::from_checkpoint(const io::Checkpoint& ck) {
  FluxConfig c;
  const auto det = io::detect_layout(ck.shapes());
  if (det.family != io::Family::FluxDiT) fail_file(ck.path(), "not a FLUX DiT checkpoint");
  const auto md = ck.metadata().find("config");
  if (md != ck.metadata().end()) {
    try {
      const auto j = parse_json(md->second, ck.path().string() + " (metadata 'config')");
      c.in_channels = j.value("in_channels", c.in_channels);
      c.out_channels = j.value("out_channels", c.in_channels);
      c.vec_in_dim = j.value("vec_in_dim", c.vec_in_dim);
      c.context_in_dim = j.value("context_in_dim", c.context_in_dim);
      c.hidden_size = j.value("hidden_size", c.hidden_size);
      c.mlp_hidden =
          static_cast<int64_t>(static_cast<double>(c.hidden_size) * j.value("mlp_ratio", 4.0));
      c.num_heads = j.value("num_heads", c.num_heads);
      c.depth = j.value("depth", c.depth);
      c.depth_single_blocks = j.value("depth_single_blocks", c.depth_single_blocks);
      c.axes_dim = j.value("axes_dim", c.axes_dim);
      c.theta = j.value("theta", c.theta);
      c.guidance_embed = j.value("guidance_embed", c.guidance_embed);
    } catch (const nlohmann::json::exception& e) {
      fail_file(ck.path(),
                std::string("metadata 'config' is not a valid FLUX configuration: ") + e.what());
    }
  } else {
    const bool diffusers = det.layout == io::Layout::Diffusers;
    const io::ShapeMap m = io::strip_prefix(ck.shapes(), det.prefix);
    auto key = [&](const char* original, const char* diff) {
      return std::string(diffusers ? diff : original);
    };
    const auto& img_in = need(m, key("img_in.weight", "x_embedder.weight"), ck);
    c.hidden_size = img_in[0];
    c.in_channels = img_in[1];
    c.out_channels = need(m, key("final_layer.linear.weight", "proj_out.weight"), ck)[0];
    c.context_in_dim = need(m, key("txt_in.weight", "context_embedder.weight"), ck)[1];
    c.vec_in_dim =
        need(m, key("vector_in.in_layer.weight", "time_text_embed.text_embedder.linear_1.weight"),
             ck)[1];
    c.mlp_hidden = need(
        m, key("double_blocks.0.img_mlp.0.weight", "transformer_blocks.0.ff.net.0.proj.weight"),
        ck)[0];
    const int64_t head_dim = need(m,
                                  key("double_blocks.0.img_attn.norm.query_norm.scale",
                                      "transformer_blocks.0.attn.norm_q.weight"),
                                  ck)[0];
    if (head_dim <= 16 || head_dim % 2 || c.hidden_size % head_dim)
      fail_file(ck.path(), "FLUX DiT: q/k norm width " + std::to_string(head_dim) +
                               " does not divide the width " + std::to_string(c.hidden_size));
    c.num_heads = c.hidden_size / head_dim;
    // BFL's (16, 56, 56) for 128-wide heads: 16 for the unused first axis, the
    // rest split evenly between rows and columns.
    c.axes_dim = {16, (head_dim - 16) / 2, (head_dim - 16) / 2};
    c.depth = io::count_indexed(m, diffusers ? "transformer_blocks." : "double_blocks.");
    c.depth_single_blocks =
        io::count_indexed(m, diffusers ? "single_transformer_blocks." : "single_blocks.");
    c.guidance_embed = m.count(
        key("guidance_in.in_layer.weight", "time_text_embed.guidance_embedder.linear_1.weight"));
  }
  if (c.in_channels != c.out_channels)
    fail_file(ck.path(), "a FLUX DiT with " + std::to_string(c.in_channels) +
                             " input channels for " + std::to_string(c.out_channels) +
                             " output channels: an image-conditioned variant (FLUX.1 Fill takes "
                             "384, Canny and Depth 128), which Kinora does not support; text to "
                             "image needs FLUX.1-dev or FLUX.1-schnell");
  int64_t axes = 0;
  for (auto a : c.axes_dim) axes += a;
  if (c.axes_dim.size() != 3 || axes != c.head_dim() || c.in_channels % 4)
    fail_file(ck.path(), "FLUX DiT: position axes do not fill the heads of width " +
                             std::to_string(c.head_dim()));
  return c;
}

// ---------------------------------------------------------------- public

FluxModel::FluxModel(const FluxConfig& config) : impl_(std::make_shared<FluxModelImpl>(config)) {
  adopt(impl_);
}
FluxModel::~FluxModel() = default;
FluxModel::FluxModel(FluxModel&&) noexcept = default;
FluxModel& FluxModel::operator=(FluxModel&&) noexcept = default;

FluxModel FluxModel::load(const std::filesystem::path& path, layers::Precision precision) {
  auto [ck, det] = layers::open_checkpoint(path, {io::Family::FluxDiT}, "FLUX DiT");
  FluxModel model(FluxConfig::from_checkpoint(*ck));
  const bool diffusers = det.layout == io::Layout::Diffusers;
  layers::load_parameters(
      *model.impl_, *ck,
      layers::prefixed(det.prefix, diffusers ? flux_diffusers_to_original
                                             : std::function<std::string(const std::string&)>()),
      "FLUX DiT",
      diffusers ? fuse_diffusers(*ck, det.prefix, model.config())
                : std::map<std::string, torch::Tensor>{});
  model.adopt(model.impl_, std::move(ck));
  model.set_precision(precision);
  return model;
}

const FluxConfig& FluxModel::config() const {
  return impl_->config;
}

std::vector<std::shared_ptr<torch::nn::Module>> FluxModel::swappable_blocks() {
  auto all = impl_->double_blocks->children();
  for (auto& b : impl_->single_blocks->children()) all.push_back(std::move(b));
  return all;
}

torch::Tensor FluxModel::forward(const torch::Tensor& img, const torch::Tensor& img_ids,
                                 const torch::Tensor& txt, const torch::Tensor& txt_ids,
                                 const torch::Tensor& timesteps, const torch::Tensor& y,
                                 const torch::Tensor& guidance) {
  torch::AutoGradMode grad(trainable());
  impl_->swap = block_swap();
  return impl_->forward(img, img_ids, txt, txt_ids, timesteps, y, guidance);
}

torch::Tensor FluxModel::denoise(const torch::Tensor& x, const torch::Tensor& t,
                                 const layers::Conditioning& c) {
  TORCH_CHECK(x.dim() == 5 && x.size(2) == 1, "FluxModel: x must be [B, C, 1, h, w], got ",
              x.sizes());
  TORCH_CHECK(c.pooled.defined(), "FluxModel: the conditioning has no pooled vector (CLIP)");
  const int64_t B = x.size(0), h = x.size(3), w = x.size(4);
  const auto dev = x.device();
  const auto img = flux_pack(x.select(2, 0).to(torch::kFloat32));
  const auto img_ids = flux_image_ids(B, h, w).to(dev);
  const auto txt_ids = torch::zeros({B, c.context.size(1), 3}, img_ids.options());
  const auto out = forward(img, img_ids, c.context, txt_ids, t.to(torch::kFloat32) / 1000.0,
                           c.pooled, c.guidance);
  return flux_unpack(out, h, w).unsqueeze(2);
}

int64_t FluxModel::latent_channels() const {
  return impl_->config.out_channels / 4;
}
int64_t FluxModel::context_dim() const {
  return impl_->config.context_in_dim;
}

}  // namespace kinora::diffusion
