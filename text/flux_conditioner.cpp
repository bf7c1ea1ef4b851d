#include "text/flux_conditioner.h"

#include "base/error.h"

namespace kinora::text {

FluxConditioner::FluxConditioner(T5Encoder t5, Tokenizer t5_tokenizer, CLIPTextModel clip,
                                 ClipTokenizer clip_tokenizer, int64_t t5_tokens)
    : t5_(std::move(t5)),
      t5_tokenizer_(std::move(t5_tokenizer)),
      clip_(std::move(clip)),
      clip_tokenizer_(std::move(clip_tokenizer)),
      t5_tokens_(t5_tokens) {
  if (t5_tokens_ < 1) throw Error("FLUX text conditioner: at least one T5 token");
  // Ids the encoders have no embedding for would fail inside the first prompt.
  if (clip_tokenizer_.max_id() >= clip_.config().vocab_size)
    throw Error("the CLIP tokenizer " + clip_tokenizer_.source() + " has ids up to " +
                std::to_string(clip_tokenizer_.max_id()) + ", but the CLIP encoder has " +
                std::to_string(clip_.config().vocab_size) +
                " embeddings: a tokenizer for another CLIP model");
  if (t5_tokenizer_.vocab_size() > t5_.config().vocab)
    throw Error("the T5 tokenizer has " + std::to_string(t5_tokenizer_.vocab_size()) +
                " pieces, but the T5 encoder has " + std::to_string(t5_.config().vocab) +
                " embeddings: a tokenizer for another T5 model");
}

layers::Conditioning FluxConditioner::encode(const std::string& prompt,
                                             const std::function<void(const std::string&)>& note) {
  const auto t5_tokens = t5_tokenizer_.encode(prompt, t5_tokens_);
  const int64_t context = clip_.config().max_position_embeddings;
  const auto clip_tokens = clip_tokenizer_.encode(prompt, context);
  if (note && t5_tokens.truncated)
    note("prompt cut to T5's " + std::to_string(t5_tokens_) + " tokens");
  if (note && clip_tokens.truncated)
    note("prompt cut to CLIP's " + std::to_string(context - 2) +
         " tokens for the pooled vector (T5 reads up to " + std::to_string(t5_tokens_) + ")");
  const auto device = t5_.device();
  layers::Conditioning c;
  // Padding attended, as the reference does: a mask of ones.
  c.context = t5_.forward(t5_tokens.ids.to(device), torch::ones_like(t5_tokens.ids).to(device));
  c.pooled = clip_.forward(clip_tokens.ids.to(clip_.device())).pooled.to(device);
  return c;
}

}  // namespace kinora::text
