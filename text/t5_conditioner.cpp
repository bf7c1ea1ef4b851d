#include "text/t5_conditioner.h"

#include "base/error.h"

namespace kinora::text {

T5Conditioner::T5Conditioner(T5Encoder encoder, Tokenizer tokenizer, int64_t max_tokens)
    : encoder_(std::move(encoder)), tokenizer_(std::move(tokenizer)), max_tokens_(max_tokens) {
  if (max_tokens_ < 1) throw Error("text conditioner: at least one token");
}

T5Conditioner T5Conditioner::load(const std::filesystem::path& encoder,
                                  const std::filesystem::path& tokenizer, int64_t max_tokens) {
  return T5Conditioner(T5Encoder::load(encoder), Tokenizer::load(tokenizer), max_tokens);
}

layers::Conditioning T5Conditioner::encode(const std::string& prompt,
                                           const std::function<void(const std::string&)>& note) {
  const auto tokens = tokenizer_.encode(prompt, max_tokens_);
  if (tokens.truncated && note)
    note("prompt truncated to " + std::to_string(max_tokens_) + " tokens");
  const auto device = encoder_.device();
  const auto hidden = encoder_.forward(tokens.ids.to(device), tokens.mask.to(device));
  layers::Conditioning c;
  c.context = hidden.slice(1, 0, tokens.length);  // [1, L, dim]
  return c;
}

}  // namespace kinora::text
