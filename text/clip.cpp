#include "text/clip.h"

#include <nlohmann/json.hpp>

#include <cmath>

#include "base/error.h"
#include "base/json.h"
#include "io/layout.h"
#include "layers/linear.h"
#include "layers/load.h"
#include "layers/ops.h"

namespace kinora::text {
using layers::Linear;
using layers::NormParams;

namespace {

struct EmbeddingsImpl : torch::nn::Module {
  explicit EmbeddingsImpl(const CLIPTextConfig& c) {
    token_embedding = register_module("token_embedding", std::make_shared<torch::nn::Module>());
    token = token_embedding->register_parameter("weight",
                                                torch::empty({c.vocab_size, c.hidden_size}), false);
    position_embedding =
        register_module("position_embedding", std::make_shared<torch::nn::Module>());
    position = position_embedding->register_parameter(
        "weight", torch::empty({c.max_position_embeddings, c.hidden_size}), false);
  }
  std::shared_ptr<torch::nn::Module> token_embedding, position_embedding;
  torch::Tensor token, position;
};
TORCH_MODULE(Embeddings);

struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int64_t dim, int64_t n_heads) : heads(n_heads) {
    q_proj = register_module("q_proj", Linear(dim, dim, true));
    k_proj = register_module("k_proj", Linear(dim, dim, true));
    v_proj = register_module("v_proj", Linear(dim, dim, true));
    out_proj = register_module("out_proj", Linear(dim, dim, true));
  }
  // Causal self-attention; the softmax in float32.
  torch::Tensor forward(const torch::Tensor& x) {
    auto split = [&](const torch::Tensor& t) {
      return t.unflatten(-1, {heads, -1}).transpose(1, 2);  // [B, H, L, d]
    };
    const auto q = split(q_proj->forward(x)), k = split(k_proj->forward(x)),
               v = split(v_proj->forward(x));
    const int64_t L = x.size(1);
    const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
    auto scores = torch::matmul(q, k.transpose(-2, -1)).to(torch::kFloat32) * scale;
    const auto future =
        torch::ones({L, L}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(1);
    scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
    const auto out = torch::matmul(scores.softmax(-1).to(v.scalar_type()), v);
    return out_proj->forward(out.transpose(1, 2).flatten(2)).to(torch::kFloat32);
  }
  int64_t heads;
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
};
TORCH_MODULE(Attention);

struct LayerImpl : torch::nn::Module {
  explicit LayerImpl(const CLIPTextConfig& c) : eps(c.layer_norm_eps), quick(c.quick_gelu) {
    layer_norm1 = register_module("layer_norm1", NormParams(c.hidden_size, true));
    self_attn = register_module("self_attn", Attention(c.hidden_size, c.num_attention_heads));
    layer_norm2 = register_module("layer_norm2", NormParams(c.hidden_size, true));
    mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
    fc1 = mlp->register_module("fc1", Linear(c.hidden_size, c.intermediate_size, true));
    fc2 = mlp->register_module("fc2", Linear(c.intermediate_size, c.hidden_size, true));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h =
        x + self_attn->forward(layers::layer_norm(x, layer_norm1->weight, layer_norm1->bias, eps));
    auto m = fc1->forward(layers::layer_norm(h, layer_norm2->weight, layer_norm2->bias, eps));
    m = quick ? m * torch::sigmoid(1.702 * m) : torch::gelu(m);
    return h + fc2->forward(m).to(torch::kFloat32);
  }
  double eps;
  bool quick;
  NormParams layer_norm1{nullptr}, layer_norm2{nullptr};
  Attention self_attn{nullptr};
  std::shared_ptr<torch::nn::Module> mlp;
  Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Layer);

}  // namespace

class CLIPTextModelImpl : public torch::nn::Module {
 public:
  explicit CLIPTextModelImpl(const CLIPTextConfig& c) : config(c) {
    embeddings = register_module("embeddings", Embeddings(c));
    encoder = register_module("encoder", std::make_shared<torch::nn::Module>());
    layers_ = encoder->register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers_->push_back(Layer(c));
    final_layer_norm = register_module("final_layer_norm", NormParams(c.hidden_size, true));
  }
  CLIPTextOutput forward(const torch::Tensor& ids_in) {
    const auto& c = config;
    TORCH_CHECK(ids_in.dim() == 2 && ids_in.size(1) <= c.max_position_embeddings,
                "CLIPTextModel: ids must be [B, L ≤ ", c.max_position_embeddings, "], got ",
                ids_in.sizes());
    const auto dev = embeddings->token.device();
    const auto ids = ids_in.to(dev, torch::kInt64);
    const int64_t L = ids.size(1);
    auto h = (embeddings->token.index_select(0, ids.flatten()).view({ids.size(0), L, -1}) +
              embeddings->position.slice(0, 0, L).unsqueeze(0))
                 .to(torch::kFloat32);
    CLIPTextOutput out;
    for (std::size_t i = 0; i < layers_->size(); ++i) {
      if (i + 1 == layers_->size()) out.penultimate = h;
      h = layers_[i]->as<LayerImpl>()->forward(h);
    }
    out.last_hidden =
        layers::layer_norm(h, final_layer_norm->weight, final_layer_norm->bias, c.layer_norm_eps);
    // The first end token of each row (argmax of the ids where there is none).
    const auto is_eos = (ids == c.eos_token_id);
    const auto pos = torch::where(is_eos.any(1), is_eos.to(torch::kInt32).argmax(1), ids.argmax(1));
    out.pooled = out.last_hidden.index({torch::arange(ids.size(0), pos.options()), pos});
    return out;
  }
  CLIPTextConfig config;
  Embeddings embeddings{nullptr};
  std::shared_ptr<torch::nn::Module> encoder;
  torch::nn::ModuleList layers_{nullptr};
  NormParams final_layer_norm{nullptr};
};

CLIPTextConfig CLIPTextConfig::from_checkpoint(const io::Checkpoint& ck) {
  const auto det = io::detect_layout(ck.shapes());
  if (det.family != io::Family::CLIP) fail_file(ck.path(), "not a CLIP text encoder checkpoint");
  const auto m = io::strip_prefix(ck.shapes(), det.prefix);
  CLIPTextConfig c;
  const auto& tok = m.at("embeddings.token_embedding.weight");
  c.vocab_size = tok[0];
  c.hidden_size = tok[1];
  const auto pos = m.find("embeddings.position_embedding.weight");
  const auto fc1 = m.find("encoder.layers.0.mlp.fc1.weight");
  if (pos == m.end() || fc1 == m.end())
    fail_file(ck.path(), "not a complete CLIP text encoder checkpoint");
  c.max_position_embeddings = pos->second[0];
  c.intermediate_size = fc1->second[0];
  c.num_hidden_layers = io::count_indexed(m, "encoder.layers.");
  c.num_attention_heads = std::max<int64_t>(1, c.hidden_size / 64);
  c.quick_gelu = c.hidden_size == 768;
  c.eos_token_id = c.vocab_size - 1;
  c.bos_token_id = c.vocab_size - 2;
  const auto md = ck.metadata().find("config");
  if (md != ck.metadata().end()) {
    try {
      const auto j = parse_json(md->second, ck.path().string() + " (metadata 'config')");
      c.num_attention_heads = j.value("num_attention_heads", c.num_attention_heads);
      if (j.contains("hidden_act"))
        c.quick_gelu = j["hidden_act"].get<std::string>() == "quick_gelu";
      c.layer_norm_eps = j.value("layer_norm_eps", c.layer_norm_eps);
      c.eos_token_id = j.value("eos_token_id", c.eos_token_id);
      c.bos_token_id = j.value("bos_token_id", c.bos_token_id);
      // The legacy OpenAI configs say eos 2; their end token is the last entry.
      if (c.eos_token_id == 2) c.eos_token_id = c.vocab_size - 1;
    } catch (const nlohmann::json::exception& e) {
      fail_file(ck.path(),
                std::string("metadata 'config' is not a valid CLIP configuration: ") + e.what());
    }
  }
  if (c.hidden_size % c.num_attention_heads)
    fail_file(ck.path(), "CLIP text encoder: width " + std::to_string(c.hidden_size) +
                             " is not divisible into " + std::to_string(c.num_attention_heads) +
                             " heads");
  return c;
}

CLIPTextModel::CLIPTextModel(const CLIPTextConfig& config)
    : impl_(std::make_shared<CLIPTextModelImpl>(config)) {
  adopt(impl_);
}
CLIPTextModel::~CLIPTextModel() = default;
CLIPTextModel::CLIPTextModel(CLIPTextModel&&) noexcept = default;
CLIPTextModel& CLIPTextModel::operator=(CLIPTextModel&&) noexcept = default;

CLIPTextModel CLIPTextModel::load(const std::filesystem::path& path, layers::Precision precision) {
  auto [ck, det] = layers::open_checkpoint(path, {io::Family::CLIP}, "CLIP text encoder");
  CLIPTextModel model(CLIPTextConfig::from_checkpoint(*ck));
  // Keys outside the text model (a projection, a vision tower) are not ours.
  layers::load_parameters(*model.impl_, *ck,
                          layers::prefixed(det.prefix,
                                           [](const std::string& k) {
                                             return k.rfind("embeddings.", 0) == 0 ||
                                                            k.rfind("encoder.", 0) == 0 ||
                                                            k.rfind("final_layer_norm.", 0) == 0
                                                        ? k
                                                        : std::string();
                                           }),
                          "CLIP text encoder");
  model.adopt(model.impl_, std::move(ck));
  model.set_precision(precision);
  return model;
}

const CLIPTextConfig& CLIPTextModel::config() const {
  return impl_->config;
}

CLIPTextOutput CLIPTextModel::forward(const torch::Tensor& ids) {
  torch::AutoGradMode grad(trainable());
  return impl_->forward(ids);
}

}  // namespace kinora::text
