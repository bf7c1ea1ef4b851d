#pragma once
// FLUX's text conditioning: T5-XXL states over the prompt padded to a fixed
// length and attended whole (512 tokens for dev, 256 for schnell, no mask, as
// BFL runs it), and CLIP-L's pooled vector (FLUX spec §4).
#include <filesystem>

#include "text/clip.h"
#include "text/clip_tokenizer.h"
#include "text/conditioner.h"
#include "text/t5.h"
#include "text/tokenizer.h"

namespace kinora::text {

class FluxConditioner : public TextConditioner {
 public:
  FluxConditioner(T5Encoder t5, Tokenizer t5_tokenizer, CLIPTextModel clip,
                  ClipTokenizer clip_tokenizer, int64_t t5_tokens);

  layers::Conditioning encode(const std::string& prompt,
                              const std::function<void(const std::string&)>& note) override;
  int64_t context_dim() const override { return t5_.config().dim; }
  int64_t pooled_dim() const { return clip_.config().hidden_size; }
  void to(torch::Device device) override {
    t5_.to(device, /*keep_host=*/true);
    clip_.to(device, /*keep_host=*/true);
  }

  int64_t weight_bytes() const override { return t5_.weight_bytes() + clip_.weight_bytes(); }

  void release_resident() override {
    t5_.release_resident();
    clip_.release_resident();
  }
  std::vector<std::pair<std::string, const layers::Model*>> encoders() const override {
    return {{"text_encoder", &t5_}, {"clip", &clip_}};
  }

 private:
  T5Encoder t5_;
  Tokenizer t5_tokenizer_;
  CLIPTextModel clip_;
  ClipTokenizer clip_tokenizer_;
  int64_t t5_tokens_;
};

}  // namespace kinora::text
