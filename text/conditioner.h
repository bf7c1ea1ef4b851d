#pragma once
// The text side of a diffusion model, as the pipeline sees it: a prompt to the
// tensors its denoiser takes (layers/conditioning.h), over one or more encoders
// and their tokenizers. Wan's (umT5 and its SentencePiece tokenizer) is the
// first: text/t5_conditioner.h.
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "layers/conditioning.h"
#include "layers/model.h"

namespace kinora::text {

class TextConditioner {
 public:
  virtual ~TextConditioner() = default;
  // One prompt → conditioning of one row. `note` receives what the user should
  // know (a prompt cut to the encoder's length).
  virtual layers::Conditioning encode(const std::string& prompt,
                                      const std::function<void(const std::string&)>& note) = 0;
  // The width of the per-token states it makes.
  virtual int64_t context_dim() const = 0;
  // The encoders to `device`. The CPU tensors they leave stay, and moving back
  // to the CPU returns to them (layers::Model::to with keep_host): on a GPU the
  // pipeline moves the encoders there only while it encodes prompts, so that
  // the denoiser has the device's memory.
  virtual void to(torch::Device device) = 0;
  // The bytes of the encoders' weights (what a visit to a GPU needs there).
  virtual int64_t weight_bytes() const = 0;
  // Once the prompts are encoded: the encoders' mapped weights leave the
  // process's resident memory (layers::Model::release_resident) until the next
  // prompt that is not in the cache.
  virtual void release_resident() {}
  // Its encoders by the preset key their file comes from ("text_encoder",
  // "clip"), so that a message can name the file of the one at fault.
  virtual std::vector<std::pair<std::string, const layers::Model*>> encoders() const { return {}; }
};

}  // namespace kinora::text
