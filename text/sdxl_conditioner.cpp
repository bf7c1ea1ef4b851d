#include "text/sdxl_conditioner.h"

#include <utility>

#include "base/error.h"
#include "text/prompt_weights.h"

namespace kinora::text {

namespace {

constexpr const char* kNameL = "CLIP-L text encoder (SDXL's first)";
constexpr const char* kNameG = "OpenCLIP bigG text encoder (SDXL's second)";

// Ids the encoder has no embedding for would index past its table.
void check_vocabulary(int64_t max_id, const ClipTokenizer& tokenizer, const CLIPTextModel& model,
                      const char* name) {
  if (max_id >= model.config().vocab_size)
    throw Error(std::string("the CLIP tokenizer ")
                    .append(tokenizer.source())
                    .append(" has ids up to ")
                    .append(std::to_string(max_id))
                    .append(", but the ")
                    .append(name)
                    .append(" has ")
                    .append(std::to_string(model.config().vocab_size))
                    .append(" embeddings: a tokenizer for another CLIP model"));
}

// The web UI's "original" emphasis: z·w per token, rescaled so that each
// chunk's mean is the unweighted one. z [N, L, D], w [N, L].
torch::Tensor emphasise(const torch::Tensor& z, const torch::Tensor& w) {
  if ((w == 1).all().item<bool>()) return z;
  const auto before = z.mean({1, 2}, /*keepdim=*/true);  // [N, 1, 1]
  const auto weighted = z * w.unsqueeze(-1);             // [N, L, D]
  return weighted * (before / weighted.mean({1, 2}, /*keepdim=*/true));
}

}  // namespace

SDXLConditioner::SDXLConditioner(CLIPTextModel clip_l, CLIPTextModel clip_g,
                                 ClipTokenizer tokenizer)
    : clip_l_(std::move(clip_l)), clip_g_(std::move(clip_g)), tokenizer_(std::move(tokenizer)) {
  if (clip_g_.config().projection_dim <= 0)
    throw Error(std::string("the ").append(kNameG).append(
        " has no text projection, so no pooled vector: a CLIP-L or a text model without "
        "`text_projection` was given in its place"));
  const std::pair<const CLIPTextModel*, const char*> encoders[] = {{&clip_l_, kNameL},
                                                                   {&clip_g_, kNameG}};
  for (const auto& [model, name] : encoders) {
    if (model->config().max_position_embeddings < kContext)
      throw Error(std::string("the ")
                      .append(name)
                      .append(" reads ")
                      .append(std::to_string(model->config().max_position_embeddings))
                      .append(" positions; SDXL's prompts are chunks of ")
                      .append(std::to_string(kContext)));
    check_vocabulary(tokenizer_.max_id(), tokenizer_, *model, name);
  }
}

int64_t SDXLConditioner::context_dim() const {
  return clip_l_.config().hidden_size + clip_g_.config().hidden_size;
}

int64_t SDXLConditioner::pooled_dim() const {
  return clip_g_.config().projection_dim;
}

void SDXLConditioner::to(torch::Device device) {
  clip_l_.to(device, /*keep_host=*/true);
  clip_g_.to(device, /*keep_host=*/true);
}

SDXLPromptChunks SDXLConditioner::chunk(const std::string& prompt) const {
  struct Chunk {
    std::vector<int64_t> ids;
    std::vector<float> weights;
  };
  std::vector<Chunk> chunks;
  Chunk current;
  SDXLPromptChunks out;
  auto close = [&] {
    chunks.push_back(std::move(current));
    current = {};
  };
  // As the web UI's tokenize_line: a BREAK closes the chunk even when it is
  // empty; a full chunk closes when the next token comes.
  for (const auto& piece : parse_emphasis(prompt)) {
    if (piece.is_break) {
      close();
      out.has_break = true;
      continue;
    }
    for (const int64_t id : tokenizer_.tokenize(piece.text)) {
      if (static_cast<int64_t>(current.ids.size()) == kChunkTokens) close();
      current.ids.push_back(id);
      current.weights.push_back(static_cast<float>(piece.weight));
      ++out.tokens;
    }
  }
  if (!current.ids.empty() || chunks.empty()) close();

  const auto n = static_cast<int64_t>(chunks.size());
  out.ids_l = torch::full({n, kContext}, tokenizer_.eos(), torch::kInt64);
  out.ids_g = torch::zeros({n, kContext}, torch::kInt64);
  out.weights = torch::ones({n, kContext}, torch::kFloat32);
  auto l = out.ids_l.accessor<int64_t, 2>();
  auto g = out.ids_g.accessor<int64_t, 2>();
  auto w = out.weights.accessor<float, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const auto& c = chunks[static_cast<std::size_t>(i)];
    const auto len = static_cast<int64_t>(c.ids.size());
    l[i][0] = g[i][0] = tokenizer_.bos();
    for (int64_t t = 0; t < len; ++t) {
      l[i][1 + t] = g[i][1 + t] = c.ids[static_cast<std::size_t>(t)];
      w[i][1 + t] = c.weights[static_cast<std::size_t>(t)];
    }
    l[i][1 + len] = g[i][1 + len] = tokenizer_.eos();
  }
  return out;
}

layers::Conditioning SDXLConditioner::encode(const std::string& prompt,
                                             const std::function<void(const std::string&)>& note) {
  const auto c = chunk(prompt);
  check_vocabulary(c.ids_l.max().item<int64_t>(), tokenizer_, clip_l_, kNameL);
  check_vocabulary(c.ids_g.max().item<int64_t>(), tokenizer_, clip_g_, kNameG);
  if (note && c.chunks() > 1)
    note(std::string("prompt is ")
             .append(std::to_string(c.tokens))
             .append(" tokens: ")
             .append(std::to_string(c.chunks()))
             .append(" chunks of ")
             .append(std::to_string(kChunkTokens))
             .append(c.has_break ? " (split at BREAK)" : ""));
  const auto device = clip_l_.device();
  const auto weights = c.weights.to(device);
  const auto l = clip_l_.forward(c.ids_l.to(device)).penultimate;  // [N, 77, D_l]
  const auto g_out = clip_g_.forward(c.ids_g.to(clip_g_.device()));
  const auto g = g_out.penultimate.to(device);  // [N, 77, D_g]
  layers::Conditioning out;
  out.context = torch::cat({emphasise(l, weights), emphasise(g, weights)}, -1)
                    .reshape({1, c.chunks() * kContext, context_dim()});  // [1, 77·N, D_l + D_g]
  out.mask = torch::ones({1, out.context.size(1)},
                         torch::TensorOptions().dtype(torch::kInt64).device(device));
  out.pooled = g_out.pooled_projected.slice(0, 0, 1).to(device);  // [1, P], the first chunk's
  return out;
}

}  // namespace kinora::text
