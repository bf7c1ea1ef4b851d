#include "text/t5.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <regex>

#include "base/error.h"
#include "base/json.h"
#include "io/layout.h"
#include "layers/load.h"
#include "layers/ops.h"

namespace kinora::text {
using layers::Linear;

// ---------------------------------------------------------------- modules

// T5's bidirectional relative-position bias: embedding [buckets, heads].
struct RelativeBiasImpl : torch::nn::Module {
  RelativeBiasImpl(int64_t buckets, int64_t heads, int64_t max_dist)
      : num_buckets(buckets), max_distance(max_dist) {
    embedding = register_module("embedding", torch::nn::Embedding(buckets, heads));
  }
  // → [1, heads, L, L] float32
  torch::Tensor forward(int64_t len) {
    const auto dev = embedding->weight.device();
    const auto pos = torch::arange(len, torch::TensorOptions().dtype(torch::kInt64).device(dev));
    auto rel = pos.unsqueeze(0) - pos.unsqueeze(1);  // key − query, [L, L]
    const int64_t half = num_buckets / 2;
    auto buckets = (rel > 0).to(torch::kInt64) * half;
    rel = rel.abs();
    const int64_t max_exact = half / 2;
    auto large =
        max_exact + (torch::log(rel.to(torch::kFloat32) / max_exact) /
                     std::log(static_cast<double>(max_distance) / max_exact) * (half - max_exact))
                        .to(torch::kInt64);
    large = torch::clamp_max(large, half - 1);
    buckets = buckets + torch::where(rel < max_exact, rel, large);
    return embedding->forward(buckets).to(torch::kFloat32).permute({2, 0, 1}).unsqueeze(0);
  }
  int64_t num_buckets, max_distance;
  torch::nn::Embedding embedding{nullptr};
};
TORCH_MODULE(RelativeBias);

struct T5AttentionImpl : torch::nn::Module {
  T5AttentionImpl(int64_t dim, int64_t dim_attn, int64_t num_heads) : heads(num_heads) {
    q = register_module("q", Linear(dim, dim_attn, false));
    k = register_module("k", Linear(dim, dim_attn, false));
    v = register_module("v", Linear(dim, dim_attn, false));
    o = register_module("o", Linear(dim_attn, dim, false));
  }
  // x [B, L, dim]; bias [B or 1, heads, L, L] float32 (relative bias + mask)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias) {
    const int64_t b = x.size(0), l = x.size(1);
    const auto qh = q->forward(x).view({b, l, heads, -1}).transpose(1, 2);  // [B, H, L, d]
    const auto kh = k->forward(x).view({b, l, heads, -1}).transpose(1, 2);
    const auto vh = v->forward(x).view({b, l, heads, -1}).transpose(1, 2);
    // No 1/√d scaling in T5, so the logits are large: they are formed in float32
    // even in bf16 mode (a bf16 product alone is off by ~8% on the cases), and
    // the softmax runs in float32 as in the reference.
    auto scores = torch::matmul(qh.to(torch::kFloat32), kh.to(torch::kFloat32).transpose(-2, -1)) +
                  bias;  // [B, H, L, L]
    const auto attn = scores.softmax(-1).to(vh.scalar_type());
    const auto out = torch::matmul(attn, vh).transpose(1, 2).reshape({b, l, -1});  // [B, L, H·d]
    return o->forward(out);
  }
  int64_t heads;
  Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr};
};
TORCH_MODULE(T5Attention);

struct T5FeedForwardImpl : torch::nn::Module {
  T5FeedForwardImpl(int64_t dim, int64_t ffn) {
    gate = register_module("gate", torch::nn::ModuleList());
    gate->push_back(Linear(dim, ffn, false));
    fc1 = register_module("fc1", Linear(dim, ffn, false));
    fc2 = register_module("fc2", Linear(ffn, dim, false));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto g = layers::gelu_tanh(gate->ptr<layers::LinearImpl>(0)->forward(x));
    return fc2->forward(fc1->forward(x) * g);
  }
  torch::nn::ModuleList gate{nullptr};
  Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(T5FeedForward);

struct T5BlockImpl : torch::nn::Module {
  T5BlockImpl(const T5Config& c) : eps(c.eps) {
    norm1 = register_module("norm1", layers::NormParams(c.dim, false));
    attn = register_module("attn", T5Attention(c.dim, c.dim_attn, c.num_heads));
    norm2 = register_module("norm2", layers::NormParams(c.dim, false));
    ffn = register_module("ffn", T5FeedForward(c.dim, c.dim_ffn));
    if (!c.shared_pos)
      pos_embedding = register_module("pos_embedding",
                                      RelativeBias(c.num_buckets, c.num_heads, c.max_distance));
  }
  // x [B, L, dim] float32 residual stream
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& mask_bias,
                        const torch::Tensor& shared_bias) {
    const auto bias = (pos_embedding ? pos_embedding->forward(x.size(1)) : shared_bias) + mask_bias;
    x = x + attn->forward(layers::rms_norm(x, norm1->weight, eps), bias).to(torch::kFloat32);
    x = x + ffn->forward(layers::rms_norm(x, norm2->weight, eps)).to(torch::kFloat32);
    return x;
  }
  double eps;
  layers::NormParams norm1{nullptr}, norm2{nullptr};
  T5Attention attn{nullptr};
  T5FeedForward ffn{nullptr};
  RelativeBias pos_embedding{nullptr};
};
TORCH_MODULE(T5Block);

class T5EncoderImpl : public torch::nn::Module {
 public:
  explicit T5EncoderImpl(const T5Config& c) : config(c) {
    // A bare weight: nn::Embedding would fill umT5's 256,384 × 4096 table with
    // random numbers (4 GB, 3–6 s) only for the checkpoint to replace it.
    token_embedding = register_module("token_embedding", std::make_shared<torch::nn::Module>());
    token_table = token_embedding->register_parameter("weight", torch::empty({c.vocab, c.dim}),
                                                      /*requires_grad=*/false);
    if (c.shared_pos)
      pos_embedding = register_module("pos_embedding",
                                      RelativeBias(c.num_buckets, c.num_heads, c.max_distance));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_layers; ++i) blocks->push_back(T5Block(c));
    norm = register_module("norm", layers::NormParams(c.dim, false));
  }

  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& mask) {
    auto x = torch::embedding(token_table, ids).to(torch::kFloat32);  // [B, L, dim]
    // Padded keys get the lowest float: they receive no attention.
    const auto mask_bias =
        torch::zeros(mask.sizes(), x.options())
            .masked_fill(mask.to(x.device()) == 0, std::numeric_limits<float>::lowest())
            .view({mask.size(0), 1, 1, mask.size(1)});
    const auto shared = pos_embedding ? pos_embedding->forward(x.size(1)) : torch::Tensor();
    for (const auto& b : *blocks) x = b->as<T5BlockImpl>()->forward(x, mask_bias, shared);
    return layers::rms_norm(x, norm->weight, config.eps);
  }

  T5Config config;
  std::shared_ptr<torch::nn::Module> token_embedding;
  torch::Tensor token_table;
  RelativeBias pos_embedding{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  layers::NormParams norm{nullptr};
};

// ---------------------------------------------------------------- config and layouts

namespace {

bool is_hf(const io::Checkpoint& ck) {
  for (const auto& n : ck.names())
    if (n.rfind("encoder.block.", 0) == 0) return true;
  return false;
}

// HF T5/UMT5 names → Wan's names.
std::string hf_to_wan(const std::string& key) {
  static const std::regex block(R"(^encoder\.block\.(\d+)\.layer\.([01])\.(.+)$)");
  if (key == "shared.weight" || key == "encoder.embed_tokens.weight")
    return "token_embedding.weight";
  if (key == "encoder.final_layer_norm.weight") return "norm.weight";
  std::smatch m;
  if (!std::regex_match(key, m, block)) return "";  // decoder, lm_head, … are not used
  const std::string b = "blocks." + m[1].str() + ".", rest = m[3].str();
  if (m[2] == "0") {
    if (rest == "layer_norm.weight") return b + "norm1.weight";
    if (rest == "SelfAttention.relative_attention_bias.weight")
      return b + "pos_embedding.embedding.weight";
    static const std::regex proj(R"(^SelfAttention\.([qkvo])\.weight$)");
    if (std::regex_match(rest, m, proj)) return b + "attn." + m[1].str() + ".weight";
  } else {
    if (rest == "layer_norm.weight") return b + "norm2.weight";
    if (rest == "DenseReluDense.wi_0.weight") return b + "ffn.gate.0.weight";
    if (rest == "DenseReluDense.wi_1.weight") return b + "ffn.fc1.weight";
    if (rest == "DenseReluDense.wo.weight") return b + "ffn.fc2.weight";
  }
  return "";
}

std::vector<int64_t> shape_of(const io::Checkpoint& ck, const std::vector<std::string>& keys) {
  for (const auto& k : keys)
    if (ck.contains(k)) return ck.info(k).shape;
  fail_file(ck.path(), "not a T5/umT5 encoder: no tensor named " + keys.front());
}

}  // namespace

std::string T5Config::to_json() const {
  return nlohmann::json{{"vocab", vocab},
                        {"dim", dim},
                        {"dim_attn", dim_attn},
                        {"dim_ffn", dim_ffn},
                        {"num_heads", num_heads},
                        {"num_layers", num_layers},
                        {"num_buckets", num_buckets},
                        {"max_distance", max_distance},
                        {"shared_pos", shared_pos}}
      .dump();
}

T5Config T5Config::from_checkpoint(const io::Checkpoint& ck) {
  T5Config c;
  const auto md = ck.metadata().find("config");
  if (md != ck.metadata().end()) {
    try {
      const auto j = parse_json(md->second, ck.path().string() + " (metadata 'config')");
      c.vocab = j.value("vocab", c.vocab);
      c.dim = j.value("dim", c.dim);
      c.dim_attn = j.value("dim_attn", c.dim_attn);
      c.dim_ffn = j.value("dim_ffn", c.dim_ffn);
      c.num_heads = j.value("num_heads", c.num_heads);
      c.num_layers = j.value("num_layers", c.num_layers);
      c.num_buckets = j.value("num_buckets", c.num_buckets);
      c.shared_pos = j.value("shared_pos", c.shared_pos);
      c.max_distance = j.value("max_distance", c.max_distance);
      return c;
    } catch (const nlohmann::json::exception& e) {
      fail_file(ck.path(),
                std::string("metadata 'config' is not a valid T5 configuration: ") + e.what());
    }
  }
  const bool hf = is_hf(ck);
  const auto emb =
      shape_of(ck, hf ? std::vector<std::string>{"shared.weight", "encoder.embed_tokens.weight"}
                      : std::vector<std::string>{"token_embedding.weight"});
  c.vocab = emb[0];
  c.dim = emb[1];
  c.dim_attn = shape_of(
      ck, {hf ? "encoder.block.0.layer.0.SelfAttention.q.weight" : "blocks.0.attn.q.weight"})[0];
  c.dim_ffn = shape_of(ck, {hf ? "encoder.block.0.layer.1.DenseReluDense.wi_1.weight"
                               : "blocks.0.ffn.fc1.weight"})[0];
  const auto shapes = ck.shapes();
  c.num_layers = io::count_indexed(shapes, hf ? "encoder.block." : "blocks.");
  const auto bias = shape_of(
      ck,
      hf ? std::vector<
               std::string>{"encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"}
         : std::vector<std::string>{"blocks.0.pos_embedding.embedding.weight",
                                    "pos_embedding.embedding.weight"});
  c.num_buckets = bias[0];
  c.num_heads = bias[1];
  c.shared_pos =
      hf ? !ck.contains("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight")
         : !ck.contains("blocks.0.pos_embedding.embedding.weight");
  return c;
}

// ---------------------------------------------------------------- public

T5Encoder::T5Encoder(const T5Config& config) : impl_(std::make_shared<T5EncoderImpl>(config)) {
  adopt(impl_);
}
T5Encoder::~T5Encoder() = default;
T5Encoder::T5Encoder(T5Encoder&&) noexcept = default;
T5Encoder& T5Encoder::operator=(T5Encoder&&) noexcept = default;

T5Encoder T5Encoder::load(const std::filesystem::path& path, layers::Precision precision) {
  auto [ck, det] =
      layers::open_checkpoint(path, {io::Family::T5, io::Family::UMT5}, "T5/umT5 text encoder");
  T5Encoder enc(T5Config::from_checkpoint(*ck));
  std::function<std::string(const std::string&)> hf;
  if (det.layout == io::Layout::HF)
    hf = [shared = enc.impl_->config.shared_pos](const std::string& k) {
      // T5 v1.1's one table sits in block 0 in HF files.
      const std::string name = hf_to_wan(k);
      return shared && name == "blocks.0.pos_embedding.embedding.weight"
                 ? "pos_embedding.embedding.weight"
                 : name;
    };
  layers::load_parameters(*enc.impl_, *ck, layers::prefixed(det.prefix, hf),
                          det.family == io::Family::UMT5 ? "umT5 encoder" : "T5 encoder");
  enc.adopt(enc.impl_, std::move(ck));
  enc.set_precision(precision);
  return enc;
}

const T5Config& T5Encoder::config() const {
  return impl_->config;
}
void T5Encoder::on_precision(layers::Precision p) {
  // T5's attention is unscaled, so its logits are large: bf16 projections there
  // move the cases' output by 3–7%, past the bf16 bound of 2e-2. In bf16 mode
  // umT5 (Wan's encoder) runs its feed-forward layers, two thirds of its
  // weights, in bf16 and its attention in float32 (the umT5 cases then stay
  // within 1.7e-2); T5 v1.1 (FLUX's) stays in float32 throughout (2.4e-2 even
  // so). float32 layers widen their stored weights per call.
  layers::set_precision(*impl_, layers::Precision::F32);
  if (p == layers::Precision::BF16 && !impl_->config.shared_pos)
    for (auto& b : *impl_->blocks)
      layers::set_precision(*b->as<T5BlockImpl>()->ffn, layers::Precision::BF16);
}

torch::Tensor T5Encoder::forward(const torch::Tensor& ids, const torch::Tensor& mask) {
  torch::AutoGradMode grad(trainable());
  return impl_->forward(ids, mask);
}

}  // namespace kinora::text
