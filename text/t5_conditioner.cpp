#include "text/t5_conditioner.h"

#include "base/error.h"

namespace kinora::text {

T5Conditioner::T5Conditioner(T5Encoder encoder, Tokenizer tokenizer, int64_t max_tokens)
    : encoder_(std::move(encoder)), tokenizer_(std::move(tokenizer)), max_tokens_(max_tokens) {
  if (max_tokens_ < 1) throw Error("text conditioner: at least one token");
}

T5Conditioner T5Conditioner::load(const std::filesystem::path& encoder,
                                  const std::filesystem::path& tokenizer, int64_t max_tokens,
                                  layers::Precision precision) {
  auto e = T5Encoder::load(encoder, precision);
  auto t = Tokenizer::load(tokenizer);
  // A token the encoder's table has no row for would stop the first prompt
  // that uses it deep inside LibTorch ("index out of range in self").
  if (t.vocab_size() > e.config().vocab)
    throw Error(tokenizer.string() + ": a tokenizer of " + std::to_string(t.vocab_size()) +
                " tokens, but the text encoder " + encoder.string() + " has " +
                std::to_string(e.config().vocab) +
                " (a tokenizer of another text encoder: give the one that came with it)");
  return T5Conditioner(std::move(e), std::move(t), max_tokens);
}

layers::Conditioning T5Conditioner::encode(const std::string& prompt,
                                           const std::function<void(const std::string&)>& note) {
  const auto tokens = tokenizer_.encode(prompt, max_tokens_);
  if (tokens.truncated && note)
    note("prompt truncated to " + std::to_string(max_tokens_) + " tokens");
  const auto device = encoder_.device();
  // Only the real tokens: with the padding masked out of every attention and
  // T5's position bias a function of distance alone, their states are those of
  // the padded sequence (the reference pads to text_len and trims after), at a
  // fraction of the cost (a short prompt is a few dozen of umT5's 512).
  const auto L = tokens.length;
  layers::Conditioning c;
  c.context = encoder_.forward(tokens.ids.slice(1, 0, L).to(device),
                               tokens.mask.slice(1, 0, L).to(device));  // [1, L, dim]
  return c;
}

}  // namespace kinora::text
