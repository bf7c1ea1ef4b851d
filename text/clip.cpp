#include "text/clip.h"

#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <map>
#include <utility>

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
    if (c.projection_dim > 0)
      text_projection =
          register_module("text_projection", Linear(c.hidden_size, c.projection_dim, false));
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
    // The first end token of each row (argmax of the ids where there is none);
    // OpenCLIP's text tower always takes argmax(ids), the end token being the
    // vocabulary's last entry.
    const auto is_eos = (ids == c.eos_token_id);
    const auto pos =
        c.pool_at_argmax
            ? ids.argmax(1)
            : torch::where(is_eos.any(1), is_eos.to(torch::kInt32).argmax(1), ids.argmax(1));
    out.pooled = out.last_hidden.index({torch::arange(ids.size(0), pos.options()), pos});  // [B, D]
    if (text_projection)
      out.pooled_projected = text_projection->forward(out.pooled).to(torch::kFloat32);  // [B, P]
    return out;
  }
  CLIPTextConfig config;
  Embeddings embeddings{nullptr};
  std::shared_ptr<torch::nn::Module> encoder;
  torch::nn::ModuleList layers_{nullptr};
  NormParams final_layer_norm{nullptr};
  Linear text_projection{nullptr};  // [P, D] as transformers holds it; none when P = 0
};

namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// transformers' CLIPTextModelWithProjection keeps its projection beside
// `text_model.`, not under it.
std::string hf_projection_key(const std::string& prefix) {
  const std::string tm = "text_model.";
  return (ends_with(prefix, tm) ? prefix.substr(0, prefix.size() - tm.size()) : prefix) +
         "text_projection.weight";
}

// An OpenCLIP text tower's name (prefix stripped) → the module's; "" for the
// keys that are not ours or are assembled (in_proj, text_projection).
std::string from_openclip(const std::string& k) {
  static const std::array<std::pair<const char*, const char*>, 4> whole = {{
      {"token_embedding.weight", "embeddings.token_embedding.weight"},
      {"positional_embedding", "embeddings.position_embedding.weight"},
      {"ln_final.weight", "final_layer_norm.weight"},
      {"ln_final.bias", "final_layer_norm.bias"},
  }};
  for (const auto& [from, to] : whole)
    if (k == from) return to;
  const std::string stem = "transformer.resblocks.";
  if (k.rfind(stem, 0) != 0) return {};
  const auto dot = k.find('.', stem.size());
  if (dot == std::string::npos) return {};
  const std::string layer = k.substr(stem.size(), dot - stem.size());
  const std::string rest = k.substr(dot + 1);
  static const std::array<std::pair<const char*, const char*>, 5> parts = {{
      {"ln_1.", "layer_norm1."},
      {"ln_2.", "layer_norm2."},
      {"attn.out_proj.", "self_attn.out_proj."},
      {"mlp.c_fc.", "mlp.fc1."},
      {"mlp.c_proj.", "mlp.fc2."},
  }};
  for (const auto& [from, to] : parts)
    if (const std::string f = from; rest.rfind(f, 0) == 0)
      return std::string("encoder.layers.")
          .append(layer)
          .append(".")
          .append(to)
          .append(rest.substr(f.size()));
  return {};
}

// A single-file checkpoint's metadata describes the whole file, not this
// encoder: only a file of its own has a config for it.
bool own_file(const std::string& prefix) {
  return prefix.rfind("conditioner.", 0) != 0 && prefix.rfind("cond_stage_model.", 0) != 0;
}

// Applies a metadata "config" (transformers' or OpenCLIP's JSON) over `c`.
void apply_config_json(const nlohmann::json& top, CLIPTextConfig& c,
                       const std::filesystem::path& path) {
  if (!top.is_object()) fail_file(path, "metadata 'config' is not a JSON object");
  // OpenCLIP's model configs hold the text tower's under text_cfg.
  const nlohmann::json& j =
      top.contains("text_cfg") && top["text_cfg"].is_object() ? top["text_cfg"] : top;
  auto get = [&](const char* hf, const char* oc) -> const nlohmann::json* {
    for (const auto* src : {&j, &top})
      for (const char* name : {hf, oc})
        if (src->contains(name)) return &(*src)[name];
    return nullptr;
  };
  auto check = [&](const char* hf, const char* oc, int64_t have, const char* what) {
    if (const auto* v = get(hf, oc); v && v->get<int64_t>() != have)
      fail_file(path, std::string("metadata 'config' says ")
                          .append(what)
                          .append(" ")
                          .append(std::to_string(v->get<int64_t>()))
                          .append(", but the tensors have ")
                          .append(std::to_string(have)));
  };
  check("hidden_size", "width", c.hidden_size, "width");
  check("num_hidden_layers", "layers", c.num_hidden_layers, "layers");
  if (const auto* v = get("num_attention_heads", "heads"))
    c.num_attention_heads = v->get<int64_t>();
  if (const auto* v = get("hidden_act", "act"))
    c.quick_gelu = v->get<std::string>() == "quick_gelu";
  if (const auto* v = get("quick_gelu", "quick_gelu")) c.quick_gelu = v->get<bool>();
  if (const auto* v = get("layer_norm_eps", "ln_eps")) c.layer_norm_eps = v->get<double>();
  if (const auto* v = get("bos_token_id", "sot_token")) c.bos_token_id = v->get<int64_t>();
  if (const auto* v = get("eos_token_id", "eot_token")) {
    c.eos_token_id = v->get<int64_t>();
    // The legacy OpenAI configs say eos 2; their end token is the last entry.
    if (c.eos_token_id == 2 && j.contains("eos_token_id")) c.eos_token_id = c.vocab_size - 1;
  }
  if (c.num_attention_heads < 1) fail_file(path, "metadata 'config': heads must be at least 1");
}

// The text model of `prefer`'s family when the file holds one, else the first
// text model found.
io::Detection detect_text_model(const io::ShapeMap& shapes, io::Family prefer) {
  const auto d = io::detect_layout(shapes, {prefer});
  if (d.family == prefer) return d;
  return io::detect_layout(shapes, {io::Family::CLIP, io::Family::OpenCLIP});
}

}  // namespace

CLIPTextConfig CLIPTextConfig::from_checkpoint(const io::Checkpoint& ck, io::Family prefer) {
  const auto det = detect_text_model(ck.shapes(), prefer);
  if (det.family != io::Family::CLIP && det.family != io::Family::OpenCLIP)
    fail_file(ck.path(), "not a CLIP text encoder checkpoint");
  const bool openclip = det.family == io::Family::OpenCLIP;
  const auto m = io::strip_prefix(ck.shapes(), det.prefix);
  auto shape = [&](const std::string& k) -> const std::vector<int64_t>& {
    const auto it = m.find(k);
    if (it == m.end() || it->second.size() != 2)
      fail_file(ck.path(), std::string("not a complete CLIP text encoder checkpoint: no 2D '")
                               .append(det.prefix)
                               .append(k)
                               .append("'"));
    return it->second;
  };
  CLIPTextConfig c;
  const auto& tok =
      shape(openclip ? "token_embedding.weight" : "embeddings.token_embedding.weight");
  c.vocab_size = tok[0];
  c.hidden_size = tok[1];
  c.max_position_embeddings =
      shape(openclip ? "positional_embedding" : "embeddings.position_embedding.weight")[0];
  c.intermediate_size = shape(openclip ? "transformer.resblocks.0.mlp.c_fc.weight"
                                       : "encoder.layers.0.mlp.fc1.weight")[0];
  c.num_hidden_layers =
      io::count_indexed(m, openclip ? "transformer.resblocks." : "encoder.layers.");
  c.num_attention_heads = std::max<int64_t>(1, c.hidden_size / 64);
  c.quick_gelu = c.hidden_size == 768;
  c.eos_token_id = c.vocab_size - 1;
  c.bos_token_id = c.vocab_size - 2;
  c.pool_at_argmax = openclip;
  // The projection: OpenCLIP's [width, proj] under the prefix; transformers'
  // [proj, width] beside text_model.
  const auto& all = ck.shapes();
  if (openclip) {
    if (const auto it = m.find("text_projection"); it != m.end()) {
      if (it->second.size() != 2 || it->second[0] != c.hidden_size)
        fail_file(ck.path(), std::string("tensor '")
                                     .append(det.prefix)
                                     .append("text_projection' has shape ")
                                     .append(c10::str(at::IntArrayRef(it->second)))
                                     .append(", but a [") +
                                 std::to_string(c.hidden_size) + ", proj] projection is needed");
      c.projection_dim = it->second[1];
    }
  } else if (const auto it = all.find(hf_projection_key(det.prefix)); it != all.end()) {
    if (it->second.size() != 2 || it->second[1] != c.hidden_size)
      fail_file(ck.path(), std::string("tensor '")
                                   .append(it->first)
                                   .append("' has shape ")
                                   .append(c10::str(at::IntArrayRef(it->second)))
                                   .append(", but a [proj, ") +
                               std::to_string(c.hidden_size) + "] projection is needed");
    c.projection_dim = it->second[0];
  }
  const auto md = ck.metadata().find("config");
  if (md != ck.metadata().end() && own_file(det.prefix)) {
    try {
      apply_config_json(parse_json(md->second, ck.path().string() + " (metadata 'config')"), c,
                        ck.path());
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

CLIPTextModel CLIPTextModel::load(const std::filesystem::path& path, layers::Precision precision,
                                  io::Family prefer) {
  auto opened =
      layers::open_checkpoint(path, {io::Family::CLIP, io::Family::OpenCLIP}, "CLIP text encoder");
  auto& ck = opened.checkpoint;
  const auto detection = detect_text_model(ck->shapes(), prefer);
  const std::string prefix = detection.prefix;
  const auto config = CLIPTextConfig::from_checkpoint(*ck, prefer);
  CLIPTextModel model(config);
  std::map<std::string, torch::Tensor> assembled;
  layers::Rename rename;
  if (detection.family == io::Family::OpenCLIP) {
    // nn.MultiheadAttention's in_proj holds q; k; v stacked along the output.
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
      const std::string from =
          std::string(prefix).append("transformer.resblocks.").append(std::to_string(i)) +
          ".attn.in_proj_";
      const std::string to = "encoder.layers." + std::to_string(i) + ".self_attn.";
      for (const char* part : {"weight", "bias"}) {
        const std::string key = from + part;
        if (!ck->contains(key))
          fail_file(path, "missing tensor '" + key + "': not a complete OpenCLIP text encoder");
        const auto qkv = ck->get(key);  // [3·D, D] or [3·D]
        if (qkv.size(0) != 3 * config.hidden_size)
          fail_file(path, std::string("tensor '")
                                  .append(key)
                                  .append("' has ")
                                  .append(std::to_string(qkv.size(0)))
                                  .append(" rows, but q, k and v of width ") +
                              std::to_string(config.hidden_size) + " need " +
                              std::to_string(3 * config.hidden_size));
        const auto chunks = qkv.chunk(3, 0);
        assembled[to + "q_proj." + part] = chunks[0];
        assembled[to + "k_proj." + part] = chunks[1];
        assembled[to + "v_proj." + part] = chunks[2];
      }
    }
    // OpenCLIP applies x·P with P [D, proj]; the Linear holds Pᵀ [proj, D].
    if (config.projection_dim > 0)
      assembled["text_projection.weight"] = ck->get(prefix + "text_projection").t().contiguous();
    rename = layers::prefixed(prefix, from_openclip);
  } else {
    const std::string projection = hf_projection_key(prefix);
    // Keys outside the text model (a vision tower, logit_scale) are not ours.
    rename = [prefix, projection](const std::string& key) {
      if (key == projection) return std::string("text_projection.weight");
      if (key.rfind(prefix, 0) != 0) return std::string();
      const std::string k = key.substr(prefix.size());
      return k.rfind("embeddings.", 0) == 0 || k.rfind("encoder.", 0) == 0 ||
                     k.rfind("final_layer_norm.", 0) == 0
                 ? k
                 : std::string();
    };
  }
  layers::load_parameters(*model.impl_, *ck, rename, "CLIP text encoder", assembled);
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
