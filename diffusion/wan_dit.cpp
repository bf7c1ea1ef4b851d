#include "diffusion/wan_dit.h"

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
using layers::NormParams;
namespace F = torch::nn::functional;

namespace {

// Numbered children with parameter-free placeholders, so that names match the
// reference's nn.Sequential indices ("ffn.0", "ffn.2").
torch::nn::ModuleList sequential(std::vector<std::shared_ptr<torch::nn::Module>> items) {
  torch::nn::ModuleList list;
  for (auto& m : items) list->push_back(m ? m : std::make_shared<torch::nn::IdentityImpl>());
  return list;
}
LinearImpl& lin(const torch::nn::ModuleList& l, std::size_t i) {
  return *l->ptr<LinearImpl>(i);
}
layers::NormParamsImpl& norm_at(const torch::nn::ModuleList& l, std::size_t i) {
  return *l->ptr<layers::NormParamsImpl>(i);
}

// cos/sin of the 3D RoPE angles for a (F, H, W) token grid, [L, head_dim/2] float64.
// Channels split t : h : w = d − 4⌊d/6⌋ : 2⌊d/6⌋ : 2⌊d/6⌋, theta 10000 each.
std::pair<torch::Tensor, torch::Tensor> rope_tables(int64_t head_dim, int64_t f, int64_t h,
                                                    int64_t w, torch::Device device) {
  const int64_t d6 = head_dim / 6;
  const int64_t dims[3] = {head_dim - 4 * d6, 2 * d6, 2 * d6};
  const int64_t sizes[3] = {f, h, w};
  const auto opts = torch::TensorOptions().dtype(torch::kFloat64).device(device);
  std::vector<torch::Tensor> angles;
  for (int a = 0; a < 3; ++a) {
    const auto inv = 1.0 / torch::pow(10000.0, torch::arange(0, dims[a], 2, opts) /
                                                   static_cast<double>(dims[a]));
    angles.push_back(torch::outer(torch::arange(sizes[a], opts), inv));  // [size, dims/2]
  }
  const auto ft = angles[0].view({f, 1, 1, -1}).expand({f, h, w, -1});
  const auto fh = angles[1].view({1, h, 1, -1}).expand({f, h, w, -1});
  const auto fw = angles[2].view({1, 1, w, -1}).expand({f, h, w, -1});
  const auto all = torch::cat({ft, fh, fw}, -1).reshape({f * h * w, -1});  // [L, d/2]
  return {all.cos(), all.sin()};
}

// Rotates interleaved pairs (x[2j], x[2j+1]) of x [B, L, H, D] by the angles.
torch::Tensor rope_apply(const torch::Tensor& x, const torch::Tensor& cos,
                         const torch::Tensor& sin) {
  const auto dt = cos.scalar_type();
  const auto xs = x.to(dt).unflatten(-1, {-1, 2});        // [B, L, H, D/2, 2]
  const auto a = xs.select(-1, 0), b = xs.select(-1, 1);  // [B, L, H, D/2]
  const auto c = cos.unsqueeze(1), s = sin.unsqueeze(1);  // [L, 1, D/2]
  return torch::stack({a * c - b * s, a * s + b * c}, -1).flatten(-2).to(torch::kFloat32);
}

}  // namespace

// ---------------------------------------------------------------- modules

struct WanAttentionImpl : torch::nn::Module {
  WanAttentionImpl(int64_t dim, int64_t num_heads, double norm_eps, bool image_branch)
      : heads(num_heads), eps(norm_eps) {
    q = register_module("q", Linear(dim, dim, true));
    k = register_module("k", Linear(dim, dim, true));
    v = register_module("v", Linear(dim, dim, true));
    o = register_module("o", Linear(dim, dim, true));
    norm_q = register_module("norm_q", NormParams(dim, false));
    norm_k = register_module("norm_k", NormParams(dim, false));
    if (image_branch) {
      k_img = register_module("k_img", Linear(dim, dim, true));
      v_img = register_module("v_img", Linear(dim, dim, true));
      norm_k_img = register_module("norm_k_img", NormParams(dim, false));
    }
  }
  // q/k RMSNorm over the full width (before the split into heads), in float32;
  // the result goes back to the projection's dtype as in the reference.
  torch::Tensor qk(LinearImpl& proj, layers::NormParamsImpl& norm, const torch::Tensor& x) {
    auto y = proj.forward(x);
    return layers::rms_norm(y, torch::Tensor(), eps).to(y.scalar_type()) *
           norm.weight.to(y.scalar_type());
  }
  torch::Tensor heads_of(const torch::Tensor& t) const {
    return t.unflatten(-1, {heads, -1});
  }  // [B, L, H, d]

  torch::Tensor self_attention(const torch::Tensor& x, const torch::Tensor& cos,
                               const torch::Tensor& sin, bool fused) {
    if (fused) {  // the same, one pass each for q and k
      const auto qh = layers::rms_norm_rope(q->forward(x), norm_q->weight, heads, cos, sin, eps);
      const auto kh = layers::rms_norm_rope(k->forward(x), norm_k->weight, heads, cos, sin, eps);
      return o->forward(layers::attention(qh, kh, heads_of(v->forward(x))).flatten(2));
    }
    const auto qh = rope_apply(heads_of(qk(*q, *norm_q, x)), cos, sin);
    const auto kh = rope_apply(heads_of(qk(*k, *norm_k, x)), cos, sin);
    const auto vh = heads_of(v->forward(x));
    const auto dt = vh.scalar_type();
    return o->forward(layers::attention(qh.to(dt), kh.to(dt), vh).flatten(2));
  }

  // context [B, 512, dim] (text) with, for i2v, [B, 257, dim] image tokens before it.
  // fused: the q/k norms in one pass each.
  torch::Tensor cross_attention(const torch::Tensor& x, const torch::Tensor& context,
                                const torch::Tensor& context_img, bool fused) {
    const auto normed = [&](LinearImpl& proj, layers::NormParamsImpl& norm,
                            const torch::Tensor& in) {
      if (!fused) return heads_of(qk(proj, norm, in));
      const torch::Tensor none;
      return layers::rms_norm_rope(proj.forward(in), norm.weight, heads, none, none, eps);
    };
    const auto qh = normed(*q, *norm_q, x);
    const auto kh = normed(*k, *norm_k, context);
    const auto vh = heads_of(v->forward(context));
    auto out = layers::attention(qh, kh.to(qh.scalar_type()), vh.to(qh.scalar_type())).flatten(2);
    if (k_img && context_img.defined()) {
      const auto ki = normed(*k_img, *norm_k_img, context_img);
      const auto vi = heads_of(v_img->forward(context_img));
      out =
          out + layers::attention(qh, ki.to(qh.scalar_type()), vi.to(qh.scalar_type())).flatten(2);
    }
    return o->forward(out);
  }

  int64_t heads;
  double eps;
  Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr}, k_img{nullptr}, v_img{nullptr};
  NormParams norm_q{nullptr}, norm_k{nullptr}, norm_k_img{nullptr};
};
TORCH_MODULE(WanAttention);

struct WanBlockImpl : torch::nn::Module {
  WanBlockImpl(const WanConfig& c) : eps(c.eps) {
    const bool i2v = c.model_type == "i2v";
    self_attn = register_module("self_attn", WanAttention(c.dim, c.num_heads, c.eps, false));
    norm3 = register_module("norm3", NormParams(c.dim, true));
    cross_attn = register_module("cross_attn", WanAttention(c.dim, c.num_heads, c.eps, i2v));
    ffn = register_module("ffn",
                          sequential({std::make_shared<LinearImpl>(c.dim, c.ffn_dim, true), nullptr,
                                      std::make_shared<LinearImpl>(c.ffn_dim, c.dim, true)}));
    modulation = register_parameter("modulation", torch::zeros({1, 6, c.dim}), false);
  }

  // x [B, L, dim] float32; e0 [B, 6, dim] float32
  // fused: the elementwise passes of layers/fused.h, x updated in place.
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& e0, const torch::Tensor& cos,
                        const torch::Tensor& sin, const torch::Tensor& context,
                        const torch::Tensor& context_img, bool fused) {
    const auto e = (modulation.to(torch::kFloat32) + e0).chunk(6, 1);  // 6 × [B, 1, dim]
    const torch::Tensor none;
    if (fused) {
      const auto mdt = layers::matmul_dtype(self_attn->q->precision);
      x = x.contiguous();
      layers::gated_add_(x,
                         self_attn->self_attention(
                             layers::modulated_layer_norm(x, e[0], e[1], eps, mdt), cos, sin, true),
                         e[2]);
      // norm3's affine LayerNorm as a modulated one: · (1 + (weight − 1)) + bias
      // (the weight widened first: a bf16 weight − 1 would round).
      const auto per_batch = [&](const torch::Tensor& t) {
        return t.view({1, 1, -1}).expand({x.size(0), 1, -1});
      };
      const auto shift = per_batch(norm3->bias.to(torch::kFloat32));
      const auto scale = per_batch(norm3->weight.to(torch::kFloat32) - 1);
      layers::gated_add_(
          x,
          cross_attn->cross_attention(layers::modulated_layer_norm(x, shift, scale, eps, mdt),
                                      context, context_img, true),
          torch::Tensor());
      const auto hidden =
          lin(ffn, 0).forward_gelu_tanh(layers::modulated_layer_norm(x, e[3], e[4], eps, mdt));
      layers::gated_add_(x, lin(ffn, 2).forward(hidden), e[5]);
      return x;
    }
    // Self-attention on the modulated, non-affine LayerNorm (float32), gated.
    auto y = self_attn->self_attention(layers::layer_norm(x, none, none, eps) * (1 + e[1]) + e[0],
                                       cos, sin, false);
    x = x + y.to(torch::kFloat32) * e[2];
    // Cross-attention: affine LayerNorm, no modulation and no gate.
    x = x + cross_attn
                ->cross_attention(layers::layer_norm(x, norm3->weight, norm3->bias, eps), context,
                                  context_img, false)
                .to(torch::kFloat32);
    // FFN on the modulated LayerNorm, gated.
    y = lin(ffn, 2).forward(layers::gelu_tanh(
        lin(ffn, 0).forward(layers::layer_norm(x, none, none, eps) * (1 + e[4]) + e[3])));
    return x + y.to(torch::kFloat32) * e[5];
  }

  double eps;
  WanAttention self_attn{nullptr}, cross_attn{nullptr};
  NormParams norm3{nullptr};
  torch::nn::ModuleList ffn{nullptr};
  torch::Tensor modulation;
};
TORCH_MODULE(WanBlock);

struct WanHeadImpl : torch::nn::Module {
  WanHeadImpl(const WanConfig& c) : eps(c.eps) {
    head =
        register_module("head", Linear(c.dim, c.patch_t * c.patch_h * c.patch_w * c.out_dim, true));
    modulation = register_parameter("modulation", torch::zeros({1, 2, c.dim}), false);
  }
  // x [B, L, dim]; e [B, dim] (the time embedding, not e0) → [B, L, p·out_dim] float32
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& e, bool fused) {
    const auto m = (modulation.to(torch::kFloat32) + e.unsqueeze(1)).chunk(2, 1);
    const torch::Tensor none;
    // The head runs in float32 in the reference (autocast disabled).
    const auto normed = fused ? layers::modulated_layer_norm(x, m[0], m[1], eps, torch::kFloat32)
                              : layers::layer_norm(x, none, none, eps) * (1 + m[1]) + m[0];
    return torch::nn::functional::linear(normed, head->weight_as(torch::kFloat32),
                                         head->bias.to(torch::kFloat32));
  }
  double eps;
  Linear head{nullptr};
  torch::Tensor modulation;
};
TORCH_MODULE(WanHead);

class WanModelImpl : public torch::nn::Module {
 public:
  explicit WanModelImpl(const WanConfig& c) : config(c) {
    patch_embedding = register_module(
        "patch_embedding", torch::nn::Conv3d(torch::nn::Conv3dOptions(
                                                 c.in_dim, c.dim, {c.patch_t, c.patch_h, c.patch_w})
                                                 .stride({c.patch_t, c.patch_h, c.patch_w})));
    text_embedding = register_module(
        "text_embedding", sequential({std::make_shared<LinearImpl>(c.text_dim, c.dim, true),
                                      nullptr, std::make_shared<LinearImpl>(c.dim, c.dim, true)}));
    time_embedding = register_module(
        "time_embedding", sequential({std::make_shared<LinearImpl>(c.freq_dim, c.dim, true),
                                      nullptr, std::make_shared<LinearImpl>(c.dim, c.dim, true)}));
    time_projection = register_module(
        "time_projection",
        sequential({nullptr, std::make_shared<LinearImpl>(c.dim, 6 * c.dim, true)}));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_layers; ++i) blocks->push_back(WanBlock(c));
    head = register_module("head", WanHead(c));
    if (c.model_type == "i2v") {
      img_emb = register_module("img_emb", std::make_shared<torch::nn::Module>());
      img_proj = img_emb->register_module(
          "proj", sequential({std::make_shared<layers::NormParamsImpl>(1280, true),
                              std::make_shared<LinearImpl>(1280, 1280, true), nullptr,
                              std::make_shared<LinearImpl>(1280, c.dim, true),
                              std::make_shared<layers::NormParamsImpl>(c.dim, true)}));
    }
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t,
                        const torch::Tensor& context, const torch::Tensor& clip) {
    const auto& c = config;
    TORCH_CHECK(x.dim() == 5 && x.size(1) == c.in_dim, "WanModel: x must be [B, ", c.in_dim,
                ", F, H, W], got ", x.sizes());
    const int64_t B = x.size(0);
    const auto mm = lin(text_embedding, 0).weight.device();
    const auto mdt = layers::matmul_dtype(lin(text_embedding, 0).precision);

    // Patchify: [B, C, F, H, W] → [B, dim, F', H', W'] → tokens [B, L, dim], f-major.
    auto h = torch::conv3d(x.to(mm, mdt), patch_embedding->weight.to(mdt),
                           patch_embedding->bias.to(mdt), {c.patch_t, c.patch_h, c.patch_w});
    const int64_t gf = h.size(2), gh = h.size(3), gw = h.size(4);
    h = h.flatten(2).transpose(1, 2).to(torch::kFloat32);  // [B, L, dim]

    // Time: sinusoid [cos, sin] in float64, then the MLP in float32.
    const int64_t half = c.freq_dim / 2;
    const auto pos = t.to(mm, torch::kFloat64).reshape({-1});
    const auto freqs =
        torch::pow(10000.0, -torch::arange(half, pos.options()) / static_cast<double>(half));
    const auto sinusoid = torch::outer(pos, freqs);
    const auto temb =
        torch::cat({sinusoid.cos(), sinusoid.sin()}, 1).to(torch::kFloat32);  // [B, freq_dim]
    auto f32_linear = [](LinearImpl& l, const torch::Tensor& v) {
      return F::linear(v, l.weight_as(torch::kFloat32), l.bias.to(torch::kFloat32));
    };
    const auto e =
        f32_linear(lin(time_embedding, 2), torch::silu(f32_linear(lin(time_embedding, 0), temb)));
    const auto e0 = f32_linear(lin(time_projection, 1), torch::silu(e))
                        .unflatten(1, {6, c.dim});  // [B, 6, dim]

    // Text: zero-pad to text_len rows, embed all of them (padding included).
    TORCH_CHECK(context.dim() == 3 && context.size(0) == B && context.size(2) == c.text_dim,
                "WanModel: context must be [B, L, ", c.text_dim, "], got ", context.sizes());
    TORCH_CHECK(context.size(1) <= c.text_len, "WanModel: context longer than ", c.text_len,
                " tokens");
    const auto padded = F::pad(context.to(mm, torch::kFloat32),
                               F::PadFuncOptions({0, 0, 0, c.text_len - context.size(1)}));
    auto ctx =
        lin(text_embedding, 2).forward(layers::gelu_tanh(lin(text_embedding, 0).forward(padded)));
    torch::Tensor ctx_img;
    if (img_proj && clip.defined()) {
      auto ci = layers::layer_norm(clip.to(mm), norm_at(img_proj, 0).weight,
                                   norm_at(img_proj, 0).bias, 1e-5);
      ci = lin(img_proj, 3).forward(torch::gelu(lin(img_proj, 1).forward(ci)));
      ctx_img = layers::layer_norm(ci, norm_at(img_proj, 4).weight, norm_at(img_proj, 4).bias, 1e-5)
                    .to(ctx.scalar_type());
    }

    const auto [cos, sin] = rope_tables(c.head_dim(), gf, gh, gw, mm);
    // The fused q/k pass takes float32 angles in either precision.
    const bool fused = layers::use_fused(mm, mdt);
    const bool f64 = mdt == torch::kFloat32 && !fused;
    const auto& rc = f64 ? cos : cos.to(torch::kFloat32);
    const auto& rs = f64 ? sin : sin.to(torch::kFloat32);
    for (std::size_t i = 0; i < blocks->size(); ++i)
      layers::run_block(swap, i, [&] {
        h = blocks[i]->as<WanBlockImpl>()->forward(h, e0, rc, rs, ctx, ctx_img, fused);
      });
    auto out = head->forward(h, e, fused);  // [B, L, pt·ph·pw·C]

    // Unpatchify: token (f, h, w) holds (pt, ph, pw, C) with C fastest.
    out = out.view({B, gf, gh, gw, c.patch_t, c.patch_h, c.patch_w, c.out_dim});
    out = out.permute({0, 7, 1, 4, 2, 5, 3, 6});  // [B, C, F', pt, H', ph, W', pw]
    return out.reshape({B, c.out_dim, gf * c.patch_t, gh * c.patch_h, gw * c.patch_w})
        .to(torch::kFloat32);
  }

  WanConfig config;
  torch::nn::Conv3d patch_embedding{nullptr};
  torch::nn::ModuleList text_embedding{nullptr}, time_embedding{nullptr}, time_projection{nullptr},
      blocks{nullptr};
  WanHead head{nullptr};
  std::shared_ptr<torch::nn::Module> img_emb;
  layers::BlockSwap* swap = nullptr;  // the facade's, while it swaps blocks
  torch::nn::ModuleList img_proj{nullptr};
};

// ---------------------------------------------------------------- configuration

std::string WanConfig::variant() const {
  if (dim == 1536 && in_dim == 16) return "Wan 2.1 T2V 1.3B";
  if (dim == 5120 && in_dim == 16) return "Wan 2.1 T2V 14B / Wan 2.2 T2V-A14B expert";
  if (dim == 5120 && in_dim == 36 && model_type == "i2v") return "Wan 2.1 I2V 14B";
  if (dim == 5120 && in_dim == 36) return "Wan 2.2 I2V-A14B expert";
  if (dim == 3072 && in_dim == 48) return "Wan 2.2 TI2V 5B";
  return "custom size";
}

std::string wan_diffusers_to_original(const std::string& key) {
  static const std::vector<std::pair<std::regex, std::string>> rules = [] {
    std::vector<std::pair<std::regex, std::string>> r;
    auto add = [&](const char* from, const char* to) { r.emplace_back(std::regex(from), to); };
    add(R"(^condition_embedder\.time_embedder\.linear_1\.)", "time_embedding.0.");
    add(R"(^condition_embedder\.time_embedder\.linear_2\.)", "time_embedding.2.");
    add(R"(^condition_embedder\.text_embedder\.linear_1\.)", "text_embedding.0.");
    add(R"(^condition_embedder\.text_embedder\.linear_2\.)", "text_embedding.2.");
    add(R"(^condition_embedder\.time_proj\.)", "time_projection.1.");
    add(R"(^condition_embedder\.image_embedder\.norm1\.)", "img_emb.proj.0.");
    add(R"(^condition_embedder\.image_embedder\.ff\.net\.0\.proj\.)", "img_emb.proj.1.");
    add(R"(^condition_embedder\.image_embedder\.ff\.net\.2\.)", "img_emb.proj.3.");
    add(R"(^condition_embedder\.image_embedder\.norm2\.)", "img_emb.proj.4.");
    add(R"(^proj_out\.)", "head.head.");
    add(R"(^scale_shift_table$)", "head.modulation");
    add(R"(^blocks\.(\d+)\.scale_shift_table$)", "blocks.$1.modulation");
    add(R"(^blocks\.(\d+)\.attn1\.to_out\.0\.)", "blocks.$1.self_attn.o.");
    add(R"(^blocks\.(\d+)\.attn1\.to_([qkv])\.)", "blocks.$1.self_attn.$2.");
    add(R"(^blocks\.(\d+)\.attn1\.norm_([qk])\.)", "blocks.$1.self_attn.norm_$2.");
    add(R"(^blocks\.(\d+)\.attn2\.to_out\.0\.)", "blocks.$1.cross_attn.o.");
    add(R"(^blocks\.(\d+)\.attn2\.to_([qkv])\.)", "blocks.$1.cross_attn.$2.");
    add(R"(^blocks\.(\d+)\.attn2\.norm_([qk])\.)", "blocks.$1.cross_attn.norm_$2.");
    add(R"(^blocks\.(\d+)\.attn2\.add_k_proj\.)", "blocks.$1.cross_attn.k_img.");
    add(R"(^blocks\.(\d+)\.attn2\.add_v_proj\.)", "blocks.$1.cross_attn.v_img.");
    add(R"(^blocks\.(\d+)\.attn2\.norm_added_k\.)", "blocks.$1.cross_attn.norm_k_img.");
    add(R"(^blocks\.(\d+)\.ffn\.net\.0\.proj\.)", "blocks.$1.ffn.0.");
    add(R"(^blocks\.(\d+)\.ffn\.net\.2\.)", "blocks.$1.ffn.2.");
    add(R"(^blocks\.(\d+)\.norm2\.)",
        "blocks.$1.norm3.");  // diffusers' affine cross-attention norm
    return r;
  }();
  for (const auto& [re, to] : rules) {
    if (std::regex_search(key, re))
      return std::regex_replace(key, re, to, std::regex_constants::format_first_only);
  }
  return key;
}

namespace {
const std::vector<int64_t>& need(const io::ShapeMap& m, const std::string& key,
                                 const io::Checkpoint& ck) {
  const auto it = m.find(key);
  if (it == m.end()) fail_file(ck.path(), "not a Wan DiT checkpoint: no tensor '" + key + "'");
  return it->second;
}
}  // namespace

std::string WanConfig::to_json() const {
  return nlohmann::json{{"model_type", model_type},
                        {"patch_size", {patch_t, patch_h, patch_w}},
                        {"text_len", text_len},
                        {"in_dim", in_dim},
                        {"dim", dim},
                        {"ffn_dim", ffn_dim},
                        {"freq_dim", freq_dim},
                        {"text_dim", text_dim},
                        {"out_dim", out_dim},
                        {"num_heads", num_heads},
                        {"num_layers", num_layers},
                        {"eps", eps}}
      .dump();
}

WanConfig WanConfig::from_checkpoint(const io::Checkpoint& ck) {
  WanConfig c;
  const auto md = ck.metadata().find("config");
  if (md != ck.metadata().end()) {
    try {
      const auto j = parse_json(md->second, ck.path().string() + " (metadata 'config')");
      c.model_type = j.value("model_type", c.model_type);
      if (j.contains("patch_size")) {
        c.patch_t = j["patch_size"][0];
        c.patch_h = j["patch_size"][1];
        c.patch_w = j["patch_size"][2];
      }
      c.text_len = j.value("text_len", c.text_len);
      c.in_dim = j.value("in_dim", c.in_dim);
      c.dim = j.value("dim", c.dim);
      c.ffn_dim = j.value("ffn_dim", c.ffn_dim);
      c.freq_dim = j.value("freq_dim", c.freq_dim);
      c.text_dim = j.value("text_dim", c.text_dim);
      c.out_dim = j.value("out_dim", c.out_dim);
      c.num_heads = j.value("num_heads", c.num_heads);
      c.num_layers = j.value("num_layers", c.num_layers);
      c.eps = j.value("eps", c.eps);
      return c;
    } catch (const nlohmann::json::exception& e) {
      fail_file(ck.path(),
                std::string("metadata 'config' is not a valid Wan configuration: ") + e.what());
    }
  }
  // From names and shapes, in the original naming.
  const auto det = io::detect_layout(ck.shapes());
  if (det.family != io::Family::WanDiT) fail_file(ck.path(), "not a Wan DiT checkpoint");
  io::ShapeMap m;
  for (const auto& [k, v] : io::strip_prefix(ck.shapes(), det.prefix))
    m[det.layout == io::Layout::Diffusers ? wan_diffusers_to_original(k) : k] = v;
  const auto& patch = need(m, "patch_embedding.weight", ck);  // [dim, in, pt, ph, pw]
  c.dim = patch[0];
  c.in_dim = patch[1];
  c.patch_t = patch[2];
  c.patch_h = patch[3];
  c.patch_w = patch[4];
  c.ffn_dim = need(m, "blocks.0.ffn.0.weight", ck)[0];
  c.text_dim = need(m, "text_embedding.0.weight", ck)[1];
  c.freq_dim = need(m, "time_embedding.0.weight", ck)[1];
  c.out_dim = need(m, "head.head.weight", ck)[0] / (c.patch_t * c.patch_h * c.patch_w);
  c.num_layers = io::count_indexed(m, "blocks.");
  c.model_type = m.count("img_emb.proj.1.weight") ? "i2v" : "t2v";
  if (c.dim % 128 != 0)
    fail_file(ck.path(), "Wan DiT width " + std::to_string(c.dim) + " is not a multiple of 128");
  c.num_heads = c.dim / 128;  // every released Wan model has 128-wide heads
  return c;
}

std::string wan22_expert_role(const std::filesystem::path& path) {
  for (const auto& part : path) {
    const auto p = part.string();
    if (p.find("high_noise") != std::string::npos) return "high-noise expert";
    if (p.find("low_noise") != std::string::npos) return "low-noise expert";
  }
  return "";
}

// ---------------------------------------------------------------- public

WanModel::WanModel(const WanConfig& config) : impl_(std::make_shared<WanModelImpl>(config)) {
  adopt(impl_);
}
WanModel::~WanModel() = default;
WanModel::WanModel(WanModel&&) noexcept = default;
WanModel& WanModel::operator=(WanModel&&) noexcept = default;

WanModel WanModel::load(const std::filesystem::path& path, layers::Precision precision) {
  auto [ck, det] = layers::open_checkpoint(path, {io::Family::WanDiT}, "Wan DiT");
  WanModel model(WanConfig::from_checkpoint(*ck));
  layers::load_parameters(
      *model.impl_, *ck,
      layers::prefixed(det.prefix, det.layout == io::Layout::Diffusers
                                       ? wan_diffusers_to_original
                                       : std::function<std::string(const std::string&)>()),
      "Wan DiT");
  model.adopt(model.impl_, std::move(ck));
  model.set_precision(precision);
  return model;
}

const WanConfig& WanModel::config() const {
  return impl_->config;
}

torch::Tensor WanModel::forward(const torch::Tensor& x, const torch::Tensor& t,
                                const torch::Tensor& context, const torch::Tensor& clip) {
  torch::AutoGradMode grad(trainable());
  impl_->swap = block_swap();
  return impl_->forward(x, t, context, clip);
}

std::vector<std::shared_ptr<torch::nn::Module>> WanModel::swappable_blocks() {
  return impl_->blocks->children();
}

torch::Tensor WanModel::denoise(const torch::Tensor& x, const torch::Tensor& t,
                                const layers::Conditioning& c) {
  return forward(x, t, c.context);
}
int64_t WanModel::latent_channels() const {
  return impl_->config.out_dim;  // what is sampled (in_dim adds the image condition's)
}
std::array<int64_t, 3> WanModel::latent_patch() const {
  return {impl_->config.patch_t, impl_->config.patch_h, impl_->config.patch_w};
}
int64_t WanModel::context_dim() const {
  return impl_->config.text_dim;
}

}  // namespace kinora::diffusion
