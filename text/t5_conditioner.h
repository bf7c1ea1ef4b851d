#pragma once
// Wan's text conditioning: the prompt tokenized by umT5's SentencePiece model
// (up to the DiT's text length), encoded by umT5, and cut to its real tokens
// (the DiT pads with zeros to its length and attends unmasked, as the reference
// does).
#include <filesystem>

#include "text/conditioner.h"
#include "text/t5.h"
#include "text/tokenizer.h"

namespace kinora::text {

class T5Conditioner : public TextConditioner {
 public:
  T5Conditioner(T5Encoder encoder, Tokenizer tokenizer, int64_t max_tokens);
  static T5Conditioner load(const std::filesystem::path& encoder,
                            const std::filesystem::path& tokenizer, int64_t max_tokens,
                            layers::Precision precision = layers::Precision::F32);

  layers::Conditioning encode(const std::string& prompt,
                              const std::function<void(const std::string&)>& note) override;
  int64_t context_dim() const override { return encoder_.config().dim; }
  void to(torch::Device device) override { encoder_.to(device, /*keep_host=*/true); }
  int64_t weight_bytes() const override { return encoder_.weight_bytes(); }
  void release_resident() override { encoder_.release_resident(); }
  std::vector<std::pair<std::string, const layers::Model*>> encoders() const override {
    return {{"text_encoder", &encoder_}};
  }

  T5Encoder& encoder() { return encoder_; }

 private:
  T5Encoder encoder_;
  Tokenizer tokenizer_;
  int64_t max_tokens_;
};

}  // namespace kinora::text
