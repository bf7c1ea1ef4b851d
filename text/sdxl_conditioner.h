#pragma once
// SDXL's text conditioning: generative-models' GeneralConditioner over
// FrozenCLIPEmbedder (CLIP-L, the states entering its last layer) and
// FrozenOpenCLIPEmbedder2 (OpenCLIP bigG, the states entering its last block,
// and its projected pooled vector), with AUTOMATIC1111's long prompts and
// emphasis (text/prompt_weights.h):
//
//   - the prompt's weighted pieces are tokenized (CLIP's BPE, shared by both
//     encoders) and cut into chunks of 75 tokens; BREAK ends a chunk, an empty
//     prompt is one chunk;
//   - each chunk is [BOS, tokens, EOS, padding] of 77 ids, the padding being
//     the end token for CLIP-L and 0 for bigG (as generative-models tokenizes);
//   - per encoder and chunk, the states are multiplied by each token's weight
//     (BOS, EOS and padding: 1) and rescaled so that their mean is the
//     unweighted one (the web UI's "original" emphasis);
//   - the two encoders' states are joined along the width per chunk, the
//     chunks along the tokens: context [1, 77·chunks, width_l + width_g]
//     float32, mask ones [1, 77·chunks] int64, pooled [1, projection] = bigG's
//     projected pooled vector of the first chunk (unweighted).
#include <string>
#include <vector>

#include "text/clip.h"
#include "text/clip_tokenizer.h"
#include "text/conditioner.h"

namespace kinora::text {

// A prompt as the two encoders read it.
struct SDXLPromptChunks {
  torch::Tensor ids_l;    // [N, 77] int64, padded with the end token
  torch::Tensor ids_g;    // [N, 77] int64, padded with 0
  torch::Tensor weights;  // [N, 77] float32, 1 at BOS, EOS and padding
  int64_t tokens = 0;     // the prompt's tokens, all chunks together
  bool has_break = false;
  int64_t chunks() const { return ids_l.defined() ? ids_l.size(0) : 0; }
};

class SDXLConditioner : public TextConditioner {
 public:
  static constexpr int64_t kChunkTokens = 75;
  static constexpr int64_t kContext = kChunkTokens + 2;

  // `clip_g` must have its text projection (the pooled vector); both encoders
  // must read 77 positions and embed every id of `tokenizer`. Throws
  // kinora::Error saying which does not fit.
  SDXLConditioner(CLIPTextModel clip_l, CLIPTextModel clip_g, ClipTokenizer tokenizer);

  // `note` hears when a prompt spans several chunks.
  layers::Conditioning encode(const std::string& prompt,
                              const std::function<void(const std::string&)>& note) override;
  // clip_l's width + clip_g's (768 + 1280 = 2048 for SDXL).
  int64_t context_dim() const override;
  // clip_g's projection (1280 for SDXL).
  int64_t pooled_dim() const;
  void to(torch::Device device) override;
  int64_t weight_bytes() const override { return clip_l_.weight_bytes() + clip_g_.weight_bytes(); }

  // The prompt's chunks, without running the encoders.
  SDXLPromptChunks chunk(const std::string& prompt) const;

  // The encoders, for LoRA (lora_te1_ is CLIP-L, lora_te2_ bigG).
  CLIPTextModel& clip_l() { return clip_l_; }
  CLIPTextModel& clip_g() { return clip_g_; }
  const ClipTokenizer& tokenizer() const { return tokenizer_; }

  void release_resident() override {
    clip_l_.release_resident();
    clip_g_.release_resident();
  }
  std::vector<std::pair<std::string, const layers::Model*>> encoders() const override {
    return {{"clip", &clip_l_}, {"text_encoder", &clip_g_}};
  }

 private:
  CLIPTextModel clip_l_;
  CLIPTextModel clip_g_;
  ClipTokenizer tokenizer_;
};

}  // namespace kinora::text
