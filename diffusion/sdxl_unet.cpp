#include "diffusion/sdxl_unet.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <regex>

#include "base/error.h"
#include "base/json.h"
#include "base/torch_compat.h"
#include "io/layout.h"
#include "layers/conv2d.h"
#include "layers/linear.h"
#include "layers/load.h"
#include "layers/ops.h"

namespace kinora::diffusion {
namespace F = torch::nn::functional;

namespace {

using Ctx = layers::ConvContext;
using GroupNorm = layers::GroupNorm32;
using layers::conv2d;

// A convolution in ctx.dtype, its result in float32.
torch::Tensor run_conv(const torch::nn::Conv2d& c, const torch::Tensor& x, const Ctx& ctx,
                       int64_t stride = 1) {
  return layers::run_conv2d(c, x, ctx, stride).to(torch::kFloat32);
}

// A Sequential-like container whose children are named by index ("0", "2",
// …) as in the reference's nn.Sequential, with gaps where parameter-free
// layers (SiLU, Dropout) sit.
std::shared_ptr<torch::nn::Module> seq(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

struct ResBlockImpl : torch::nn::Module {
  ResBlockImpl(int64_t in, int64_t out, int64_t emb_dim) {
    auto in_layers = seq(*this, "in_layers");
    norm_in = in_layers->register_module("0", GroupNorm(in, 1e-5));
    conv_in = in_layers->register_module("2", conv2d(in, out, 3));
    auto emb_layers = seq(*this, "emb_layers");
    emb = emb_layers->register_module("1", layers::Linear(emb_dim, out, true));
    auto out_layers = seq(*this, "out_layers");
    norm_out = out_layers->register_module("0", GroupNorm(out, 1e-5));
    conv_out = out_layers->register_module("3", conv2d(out, out, 3));
    if (in != out) skip = register_module("skip_connection", conv2d(in, out, 1));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& emb_silu, const Ctx& ctx) {
    auto h = run_conv(conv_in, torch::silu(norm_in->forward(x, ctx)), ctx);
    h = h + emb->forward(emb_silu).to(torch::kFloat32).unsqueeze(-1).unsqueeze(-1);
    h = run_conv(conv_out, torch::silu(norm_out->forward(h, ctx)), ctx);
    return (skip ? run_conv(skip, x, ctx) : x.to(torch::kFloat32)) + h;
  }
  GroupNorm norm_in{nullptr}, norm_out{nullptr};
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr}, skip{nullptr};
  layers::Linear emb{nullptr};
};
TORCH_MODULE(ResBlock);

struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int64_t dim, int64_t context_dim, int64_t n_heads) : heads(n_heads) {
    to_q = register_module("to_q", layers::Linear(dim, dim, false));
    to_k = register_module("to_k", layers::Linear(context_dim, dim, false));
    to_v = register_module("to_v", layers::Linear(context_dim, dim, false));
    auto out = seq(*this, "to_out");
    to_out = out->register_module("0", layers::Linear(dim, dim, true));
  }
  // x [B, N, dim], context [B, L, context_dim] (x itself for self-attention),
  // key_mask [B, L] bool or undefined.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context,
                        const torch::Tensor& key_mask) {
    const int64_t B = x.size(0);
    auto split = [&](const torch::Tensor& t) { return t.view({B, t.size(1), heads, -1}); };
    const auto q = split(to_q->forward(x)), k = split(to_k->forward(context)),
               v = split(to_v->forward(context));
    const auto a = layers::attention(q, k, v, key_mask);  // [B, N, H, D]
    return to_out->forward(a.reshape({B, x.size(1), -1})).to(torch::kFloat32);
  }
  int64_t heads;
  layers::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, to_out{nullptr};
};
TORCH_MODULE(Attention);

struct NormImpl : torch::nn::Module {
  explicit NormImpl(int64_t dim) {
    weight = register_parameter("weight", torch::ones({dim}), false);
    bias = register_parameter("bias", torch::zeros({dim}), false);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return layers::layer_norm(x, weight, bias, 1e-5);
  }
  torch::Tensor weight, bias;
};
TORCH_MODULE(Norm);

struct TransformerBlockImpl : torch::nn::Module {
  TransformerBlockImpl(int64_t dim, int64_t context_dim, int64_t heads) {
    attn1 = register_module("attn1", Attention(dim, dim, heads));
    attn2 = register_module("attn2", Attention(dim, context_dim, heads));
    auto ff = seq(*this, "ff");
    auto net = seq(*ff, "net");
    auto geglu = seq(*net, "0");
    ff_in = geglu->register_module("proj", layers::Linear(dim, 8 * dim, true));
    ff_out = net->register_module("2", layers::Linear(4 * dim, dim, true));
    norm1 = register_module("norm1", Norm(dim));
    norm2 = register_module("norm2", Norm(dim));
    norm3 = register_module("norm3", Norm(dim));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& context,
                        const torch::Tensor& key_mask) {
    auto h = norm1->forward(x);
    x = x + attn1->forward(h, h, {});
    x = x + attn2->forward(norm2->forward(x), context, key_mask);
    // GEGLU: the first half times GELU (exact) of the second.
    const auto ab = ff_in->forward(norm3->forward(x)).chunk(2, -1);
    return x + ff_out->forward(ab[0] * torch::gelu(ab[1])).to(torch::kFloat32);
  }
  Attention attn1{nullptr}, attn2{nullptr};
  layers::Linear ff_in{nullptr}, ff_out{nullptr};
  Norm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
};
TORCH_MODULE(TransformerBlock);

// The spatial transformer: GroupNorm, a linear (or 1×1 conv) projection in,
// `depth` transformer blocks over the h·w positions, a projection out, added
// to the input.
struct SpatialTransformerImpl : torch::nn::Module {
  SpatialTransformerImpl(int64_t ch, int64_t depth, int64_t heads, int64_t context_dim) {
    norm = register_module("norm", GroupNorm(ch, 1e-6));
    proj_in = register_module("proj_in", layers::Linear(ch, ch, true));
    blocks = register_module("transformer_blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < depth; ++i) blocks->push_back(TransformerBlock(ch, context_dim, heads));
    proj_out = register_module("proj_out", layers::Linear(ch, ch, true));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context,
                        const torch::Tensor& key_mask, const Ctx& ctx) {
    const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    auto h = norm->forward(x, ctx).flatten(2).transpose(1, 2);  // [B, HW, C]
    h = proj_in->forward(h).to(torch::kFloat32);
    for (const auto& b : *blocks) h = b->as<TransformerBlockImpl>()->forward(h, context, key_mask);
    h = proj_out->forward(h).to(torch::kFloat32);
    return x.to(torch::kFloat32) + h.transpose(1, 2).reshape({B, C, H, W});
  }
  GroupNorm norm{nullptr};
  layers::Linear proj_in{nullptr}, proj_out{nullptr};
  torch::nn::ModuleList blocks{nullptr};
};
TORCH_MODULE(SpatialTransformer);

// One of input_blocks / middle_block / output_blocks: the reference's
// TimestepEmbedSequential, children by index: a residual block or the first
// conv, a spatial transformer, a down- or upsampling conv.
struct StageImpl : torch::nn::Module {
  ResBlock res{nullptr}, res2{nullptr};
  SpatialTransformer attn{nullptr};
  torch::nn::Conv2d conv_first{nullptr}, down{nullptr}, up{nullptr};

  torch::Tensor forward(torch::Tensor x, const torch::Tensor& emb_silu,
                        const torch::Tensor& context, const torch::Tensor& key_mask,
                        const Ctx& ctx) {
    if (conv_first) x = run_conv(conv_first, x, ctx);
    if (res) x = res->forward(x, emb_silu, ctx);
    if (attn) x = attn->forward(x, context, key_mask, ctx);
    if (res2) x = res2->forward(x, emb_silu, ctx);
    if (down) x = run_conv(down, x, ctx, 2);
    if (up)
      x = run_conv(up,
                   F::interpolate(x, F::InterpolateFuncOptions()
                                         .scale_factor(std::vector<double>{2, 2})
                                         .mode(torch::kNearest)),
                   ctx);
    return x;
  }
};
TORCH_MODULE(Stage);

}  // namespace

torch::Tensor sinusoidal_embedding(const torch::Tensor& t, int64_t dim) {
  const int64_t half = dim / 2;
  const auto freqs =
      torch::exp(-std::log(10000.0) *
                 torch::arange(0, half, torch::TensorOptions().dtype(torch::kFloat32)) /
                 static_cast<double>(half))
          .to(t.device());
  const auto args = t.to(torch::kFloat32).unsqueeze(-1) * freqs.unsqueeze(0);
  auto emb = torch::cat({torch::cos(args), torch::sin(args)}, -1);
  if (dim % 2) emb = torch::cat({emb, torch::zeros_like(emb.slice(-1, 0, 1))}, -1);
  return emb;
}

class SDXLUNetImpl : public torch::nn::Module {
 public:
  explicit SDXLUNetImpl(const SDXLUNetConfig& c) : config(c) {
    ctx.groups = c.groups;
    const int64_t mc = c.model_channels, ted = c.time_embed_dim();
    auto te = seq(*this, "time_embed");
    time_1 = te->register_module("0", layers::Linear(mc, ted, true));
    time_2 = te->register_module("2", layers::Linear(ted, ted, true));
    if (c.adm_in_channels > 0) {
      auto le = seq(*seq(*this, "label_emb"), "0");
      label_1 = le->register_module("0", layers::Linear(c.adm_in_channels, ted, true));
      label_2 = le->register_module("2", layers::Linear(ted, ted, true));
    }
    auto transformer = [&](int64_t ch, int64_t depth, std::size_t level) {
      return SpatialTransformer(ch, depth, c.heads_at(level, ch), c.context_dim);
    };
    input_blocks = register_module("input_blocks", torch::nn::ModuleList());
    {
      Stage s;
      s->conv_first = s->register_module("0", conv2d(c.in_channels, mc, 3));
      input_blocks->push_back(s);
    }
    std::vector<int64_t> skip_ch = {mc};
    int64_t ch = mc;
    const std::size_t levels = c.channel_mult.size();
    for (std::size_t level = 0; level < levels; ++level) {
      for (int64_t i = 0; i < c.num_res_blocks; ++i) {
        Stage s;
        const int64_t out = mc * c.channel_mult[level];
        s->res = s->register_module("0", ResBlock(ch, out, ted));
        ch = out;
        if (c.transformer_depth[level] > 0)
          s->attn = s->register_module("1", transformer(ch, c.transformer_depth[level], level));
        input_blocks->push_back(s);
        skip_ch.push_back(ch);
      }
      if (level + 1 < levels) {
        Stage s;
        auto op = seq(*s, "0");
        s->down = op->register_module("op", conv2d(ch, ch, 3));
        input_blocks->push_back(s);
        skip_ch.push_back(ch);
      }
    }
    middle_block = register_module("middle_block", Stage());
    middle_block->res = middle_block->register_module("0", ResBlock(ch, ch, ted));
    if (c.transformer_depth_middle > 0) {
      middle_block->attn = middle_block->register_module(
          "1", transformer(ch, c.transformer_depth_middle, levels - 1));
      middle_block->res2 = middle_block->register_module("2", ResBlock(ch, ch, ted));
    } else {
      middle_block->res2 = middle_block->register_module("1", ResBlock(ch, ch, ted));
    }
    output_blocks = register_module("output_blocks", torch::nn::ModuleList());
    std::size_t out_index = 0;
    for (std::size_t level = levels; level-- > 0;) {
      for (int64_t i = 0; i <= c.num_res_blocks; ++i) {
        Stage s;
        const int64_t out = mc * c.channel_mult[level];
        s->res = s->register_module("0", ResBlock(ch + skip_ch.back(), out, ted));
        skip_ch.pop_back();
        ch = out;
        int next = 1;
        const int64_t depth = c.transformer_depth_output[out_index++];
        if (depth > 0)
          s->attn = s->register_module(std::to_string(next++), transformer(ch, depth, level));
        if (level > 0 && i == c.num_res_blocks)
          s->up = seq(*s, std::to_string(next))->register_module("conv", conv2d(ch, ch, 3));
        output_blocks->push_back(s);
      }
    }
    auto out = seq(*this, "out");
    norm_out = out->register_module("0", GroupNorm(ch, 1e-5));
    conv_out = out->register_module("2", conv2d(ch, c.out_channels, 3));
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& timesteps,
                        const torch::Tensor& context, const torch::Tensor& pooled,
                        const torch::Tensor& size_ids, const torch::Tensor& context_mask) {
    const auto& c = config;
    const int64_t B = x.size(0);
    auto emb = time_2->forward(torch::silu(
        time_1->forward(sinusoidal_embedding(timesteps.to(x.device()), c.model_channels))));
    emb = emb.to(torch::kFloat32);
    if (label_1) {
      if (!pooled.defined() || !size_ids.defined())
        throw Error("SDXL UNet: the pooled text vector and the size conditioning are required");
      const auto sizes =
          sinusoidal_embedding(size_ids.to(x.device()).reshape({-1}), c.size_embed_dim)
              .reshape({B, -1});
      const auto y = torch::cat({pooled.to(x.device(), torch::kFloat32), sizes}, 1);
      if (y.size(1) != c.adm_in_channels)
        throw Error("SDXL UNet: a pooled text vector of width " + std::to_string(pooled.size(1)) +
                    " and six size embeddings of " + std::to_string(c.size_embed_dim) + " make " +
                    std::to_string(y.size(1)) + " values; the UNet's label_emb takes " +
                    std::to_string(c.adm_in_channels) + " (a pooled width of " +
                    std::to_string(c.pooled_dim()) + ")");
      emb = emb + label_2->forward(torch::silu(label_1->forward(y))).to(torch::kFloat32);
    }
    const auto emb_silu = torch::silu(emb);
    const auto ctx_states = context.to(x.device(), torch::kFloat32);
    // Masking only when some key is masked: an all-ones mask changes nothing.
    torch::Tensor key_mask;
    if (context_mask.defined() && !context_mask.to(torch::kBool).all().item<bool>())
      key_mask = context_mask.to(x.device(), torch::kBool);

    std::vector<torch::Tensor> hs;
    auto h = x.to(torch::kFloat32);
    for (const auto& m : *input_blocks) {
      h = m->as<StageImpl>()->forward(h, emb_silu, ctx_states, key_mask, ctx);
      hs.push_back(h);
    }
    h = middle_block->forward(h, emb_silu, ctx_states, key_mask, ctx);
    for (const auto& m : *output_blocks) {
      h = torch::cat({h, hs.back()}, 1);
      hs.pop_back();
      h = m->as<StageImpl>()->forward(h, emb_silu, ctx_states, key_mask, ctx);
    }
    return run_conv(conv_out, torch::silu(norm_out->forward(h, ctx)), ctx);
  }

  SDXLUNetConfig config;
  Ctx ctx;
  layers::Linear time_1{nullptr}, time_2{nullptr}, label_1{nullptr}, label_2{nullptr};
  torch::nn::ModuleList input_blocks{nullptr}, output_blocks{nullptr};
  Stage middle_block{nullptr};
  GroupNorm norm_out{nullptr};
  torch::nn::Conv2d conv_out{nullptr};
};

// ---------------------------------------------------------------- layouts

UNetDiffusersLayout UNetDiffusersLayout::from_shapes(
    const std::map<std::string, std::vector<int64_t>>& m) {
  UNetDiffusersLayout l;
  l.layers_per_block = io::count_indexed(m, "down_blocks.0.resnets.");
  const int levels = io::count_indexed(m, "down_blocks.");
  for (int i = 0; i < levels; ++i) {
    l.down_attention.push_back(
        io::count_indexed(m, "down_blocks." + std::to_string(i) + ".attentions.") > 0);
    l.up_attention.push_back(
        io::count_indexed(m, "up_blocks." + std::to_string(i) + ".attentions.") > 0);
  }
  return l;
}

std::string unet_diffusers_to_original(const std::string& key, const UNetDiffusersLayout& l) {
  static const std::vector<std::pair<std::string, std::string>> top = {
      {"conv_in.", "input_blocks.0.0."},
      {"time_embedding.linear_1.", "time_embed.0."},
      {"time_embedding.linear_2.", "time_embed.2."},
      {"add_embedding.linear_1.", "label_emb.0.0."},
      {"add_embedding.linear_2.", "label_emb.0.2."},
      {"conv_norm_out.", "out.0."},
      {"conv_out.", "out.2."}};
  for (const auto& [from, to] : top)
    if (key.rfind(from, 0) == 0) return to + key.substr(from.size());
  // A residual block's own names.
  auto resnet = [](const std::string& rest) {
    static const std::vector<std::pair<std::string, std::string>> names = {
        {"norm1.", "in_layers.0."},          {"conv1.", "in_layers.2."},
        {"time_emb_proj.", "emb_layers.1."}, {"norm2.", "out_layers.0."},
        {"conv2.", "out_layers.3."},         {"conv_shortcut.", "skip_connection."}};
    for (const auto& [from, to] : names)
      if (rest.rfind(from, 0) == 0) return to + rest.substr(from.size());
    return rest;
  };
  static const std::regex block(
      R"(^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.*)$)");
  static const std::regex mid(R"(^mid_block\.(resnets|attentions)\.(\d+)\.(.*)$)");
  std::smatch m;
  const int64_t n = l.layers_per_block;
  if (std::regex_match(key, m, block)) {
    const bool down = m[1] == "down_blocks";
    const int64_t level = std::stoll(m[2]), j = std::stoll(m[4]);
    const std::string kind = m[3], rest = m[5];
    if (down) {
      const int64_t base = 1 + level * (n + 1);
      if (kind == "resnets")
        return "input_blocks." + std::to_string(base + j) + ".0." + resnet(rest);
      if (kind == "attentions") return "input_blocks." + std::to_string(base + j) + ".1." + rest;
      if (kind == "downsamplers" && rest.rfind("conv.", 0) == 0)
        return "input_blocks." + std::to_string(base + n) + ".0.op." + rest.substr(5);
    } else {
      const int64_t base = level * (n + 1);
      if (kind == "resnets")
        return "output_blocks." + std::to_string(base + j) + ".0." + resnet(rest);
      if (kind == "attentions") return "output_blocks." + std::to_string(base + j) + ".1." + rest;
      const bool attn = static_cast<std::size_t>(level) < l.up_attention.size() &&
                        l.up_attention[static_cast<std::size_t>(level)];
      if (kind == "upsamplers")
        return "output_blocks." + std::to_string(base + n) + (attn ? ".2." : ".1.") + rest;
    }
    return key;
  }
  if (std::regex_match(key, m, mid)) {
    const std::string rest = m[3];
    if (m[1] == "attentions") return "middle_block.1." + rest;
    return "middle_block." + std::string(std::stoll(m[2]) == 0 ? "0." : "2.") + resnet(rest);
  }
  return key;
}

// ---------------------------------------------------------------- configuration

namespace {
const std::vector<int64_t>& need(const io::ShapeMap& m, const std::string& key,
                                 const io::Checkpoint& ck) {
  const auto it = m.find(key);
  if (it == m.end())
    fail_file(ck.path(), "not a complete SDXL UNet checkpoint: no tensor '" + key + "'");
  return it->second;
}

// The names and shapes in the original naming.
io::ShapeMap original_shapes(const io::Checkpoint& ck, const io::Detection& det) {
  const auto m = io::strip_prefix(ck.shapes(), det.prefix);
  if (det.layout != io::Layout::Diffusers) return m;
  const auto l = UNetDiffusersLayout::from_shapes(m);
  io::ShapeMap out;
  for (const auto& [k, v] : m) out[unet_diffusers_to_original(k, l)] = v;
  return out;
}
}  // namespace

std::string SDXLUNetConfig::variant() const {
  if (adm_in_channels == 0)
    return context_dim == 768 ? "SD 1.x" : context_dim == 1024 ? "SD 2.x" : "SD-style UNet";
  if (model_channels == 320 && context_dim == 2048 && adm_in_channels == 2816 &&
      channel_mult == std::vector<int64_t>{1, 2, 4} && in_channels == 4)
    return "SDXL";
  return "SDXL-style UNet (channels " + std::to_string(model_channels) + ", context " +
         std::to_string(context_dim) + ")";
}

SDXLUNetConfig SDXLUNetConfig::from_checkpoint(const io::Checkpoint& ck) {
  const auto det = io::detect_layout(ck.shapes(), {io::Family::UNet});
  if (det.family != io::Family::UNet) fail_file(ck.path(), "not an SD/SDXL UNet checkpoint");
  const auto m = original_shapes(ck, det);
  SDXLUNetConfig c;
  const auto& first = need(m, "input_blocks.0.0.weight", ck);
  c.model_channels = first[0];
  c.in_channels = first[1];
  c.out_channels = need(m, "out.2.weight", ck)[0];
  const int inputs = io::count_indexed(m, "input_blocks.");
  int downs = 0;
  for (int i = 0; i < inputs; ++i)
    if (m.count("input_blocks." + std::to_string(i) + ".0.op.weight")) ++downs;
  const int levels = downs + 1;
  if ((inputs - 1 - downs) % levels != 0 || inputs - 1 - downs < levels)
    fail_file(ck.path(), "SD/SDXL UNet: " + std::to_string(inputs) + " input blocks with " +
                             std::to_string(downs) + " downsamplings do not make equal levels");
  c.num_res_blocks = (inputs - 1 - downs) / levels;
  c.channel_mult.clear();
  c.transformer_depth.clear();
  auto depth_of = [&](const std::string& stage) {
    return static_cast<int64_t>(io::count_indexed(m, stage + ".transformer_blocks."));
  };
  for (int level = 0; level < levels; ++level) {
    const std::string b = "input_blocks." + std::to_string(1 + level * (c.num_res_blocks + 1));
    c.channel_mult.push_back(need(m, b + ".0.out_layers.3.weight", ck)[0] / c.model_channels);
    c.transformer_depth.push_back(depth_of(b + ".1"));
  }
  c.transformer_depth_middle = depth_of("middle_block.1");
  c.transformer_depth_output.clear();
  for (int i = 0; i < levels * (c.num_res_blocks + 1); ++i)
    c.transformer_depth_output.push_back(depth_of("output_blocks." + std::to_string(i) + ".1"));
  c.context_dim = 0;
  for (const auto& [k, v] : m)
    if (const std::string tail = ".attn2.to_k.weight";
        k.size() > tail.size() && k.compare(k.size() - tail.size(), tail.size(), tail) == 0) {
      c.context_dim = v[1];
      if (k.find(".proj_in.") == std::string::npos) break;
    }
  for (const auto& [k, v] : m)
    if (const std::string tail = ".proj_in.weight";
        k.size() > tail.size() && k.compare(k.size() - tail.size(), tail.size(), tail) == 0) {
      c.linear_projection = v.size() == 2;
      break;
    }
  c.adm_in_channels = m.count("label_emb.0.0.weight") ? m.at("label_emb.0.0.weight")[1] : 0;
  // Heads: SDXL and SD 2.x use 64-wide heads, SD 1.x 8 heads.
  if (c.adm_in_channels == 0 && c.context_dim == 768) c.heads.assign(levels, 8);

  const auto md = ck.metadata().find("config");
  if (md != ck.metadata().end()) {
    try {
      const auto j = parse_json(md->second, ck.path().string() + " (metadata 'config')");
      c.groups = j.value("norm_num_groups", c.groups);
      c.size_embed_dim = j.value("addition_time_embed_dim", c.size_embed_dim);
      // diffusers' attention_head_dim is the head count per level (a number
      // or a list) in its UNet2DConditionModel.
      if (j.contains("attention_head_dim")) {
        const auto& a = j["attention_head_dim"];
        c.heads.assign(levels, 0);
        for (int level = 0; level < levels; ++level)
          c.heads[level] = a.is_array() ? a.at(level).get<int64_t>() : a.get<int64_t>();
      }
    } catch (const nlohmann::json::exception& e) {
      fail_file(ck.path(),
                std::string("metadata 'config' is not a valid UNet configuration: ") + e.what());
    }
  }
  if (const auto sgm = ck.metadata().find("sgm_config");
      sgm != ck.metadata().end() && md == ck.metadata().end()) {
    try {
      const auto j = parse_json(sgm->second, ck.path().string() + " (metadata 'sgm_config')");
      if (j.value("num_head_channels", int64_t{-1}) > 0) {
        c.head_width = j["num_head_channels"].get<int64_t>();
        c.heads.clear();
      } else if (j.value("num_heads", int64_t{-1}) > 0) {
        c.heads.assign(levels, j["num_heads"].get<int64_t>());
      }
    } catch (const nlohmann::json::exception& e) {
      fail_file(
          ck.path(),
          std::string("metadata 'sgm_config' is not a valid UNet configuration: ") + e.what());
    }
  }
  if (!c.linear_projection)
    fail_file(ck.path(), c.variant() +
                             " UNet with convolutional projections in its transformers: only "
                             "SDXL UNets are supported");
  for (int level = 0; level < levels; ++level) {
    // Only the levels with transformers (the middle block's is the last level's).
    bool attends =
        c.transformer_depth[level] > 0 || (level == levels - 1 && c.transformer_depth_middle > 0);
    for (int i = 0; i <= c.num_res_blocks; ++i)
      attends = attends ||
                c.transformer_depth_output[(levels - 1 - level) * (c.num_res_blocks + 1) + i] > 0;
    if (!attends) continue;
    const int64_t width = c.model_channels * c.channel_mult[level];
    const int64_t heads = c.heads_at(level, width);
    if (c.heads.empty() && width % c.head_width != 0)
      fail_file(ck.path(), "SD/SDXL UNet: width " + std::to_string(width) + " at level " +
                               std::to_string(level) + " is no whole number of " +
                               std::to_string(c.head_width) +
                               "-wide heads, and the file has no configuration (metadata "
                               "'config' or 'sgm_config') giving its heads");
    if (heads <= 0 || width % heads != 0)
      fail_file(ck.path(), "SD/SDXL UNet: width " + std::to_string(width) + " at level " +
                               std::to_string(level) + " does not split into " +
                               std::to_string(heads) + " heads");
  }
  if (c.adm_in_channels > 0 && c.pooled_dim() <= 0)
    fail_file(ck.path(), "SDXL UNet: label_emb takes " + std::to_string(c.adm_in_channels) +
                             " values, fewer than six size embeddings of " +
                             std::to_string(c.size_embed_dim));
  return c;
}

// ---------------------------------------------------------------- public

SDXLUNet::SDXLUNet(const SDXLUNetConfig& config) : impl_(std::make_shared<SDXLUNetImpl>(config)) {
  adopt(impl_);
}
SDXLUNet::~SDXLUNet() = default;
SDXLUNet::SDXLUNet(SDXLUNet&&) noexcept = default;
SDXLUNet& SDXLUNet::operator=(SDXLUNet&&) noexcept = default;

SDXLUNet SDXLUNet::load(const std::filesystem::path& path, layers::Precision precision) {
  auto [ck, det] = layers::open_checkpoint(path, {io::Family::UNet}, "SDXL UNet");
  SDXLUNet model(SDXLUNetConfig::from_checkpoint(*ck));
  std::function<std::string(const std::string&)> rename;
  if (det.layout == io::Layout::Diffusers) {
    const auto l = UNetDiffusersLayout::from_shapes(io::strip_prefix(ck->shapes(), det.prefix));
    rename = [l](const std::string& k) { return unet_diffusers_to_original(k, l); };
  }
  layers::load_parameters(*model.impl_, *ck, layers::prefixed(det.prefix, rename), "SDXL UNet");
  model.adopt(model.impl_, std::move(ck));
  model.set_precision(precision);
  return model;
}

const SDXLUNetConfig& SDXLUNet::config() const {
  return impl_->config;
}

torch::Tensor SDXLUNet::forward(const torch::Tensor& x, const torch::Tensor& timesteps,
                                const torch::Tensor& context, const torch::Tensor& pooled,
                                const torch::Tensor& size_ids, const torch::Tensor& context_mask) {
  torch::AutoGradMode grad(trainable());
  impl_->ctx.dtype = layers::matmul_dtype(precision());
  return impl_->forward(x, timesteps, context, pooled, size_ids, context_mask);
}

torch::Tensor SDXLUNet::denoise(const torch::Tensor& x, const torch::Tensor& t,
                                const layers::Conditioning& c) {
  const int64_t B = x.size(0), h = x.size(3) * 8, w = x.size(4) * 8;
  const auto ids = torch::tensor({static_cast<float>(h), static_cast<float>(w), 0.f, 0.f,
                                  static_cast<float>(h), static_cast<float>(w)})
                       .unsqueeze(0)
                       .expand({B, 6});
  return forward(x.squeeze(2), t, c.context, c.pooled, ids, c.mask).unsqueeze(2);
}

int64_t SDXLUNet::latent_channels() const {
  return impl_->config.out_channels;
}
std::array<int64_t, 3> SDXLUNet::latent_patch() const {
  const int64_t s = int64_t{1} << (impl_->config.channel_mult.size() - 1);
  return {1, s, s};
}
int64_t SDXLUNet::context_dim() const {
  return impl_->config.context_dim;
}

}  // namespace kinora::diffusion
