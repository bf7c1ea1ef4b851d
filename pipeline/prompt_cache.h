#pragma once
// Prompt encodings remembered between renders. A large text encoder (umT5-XXL,
// T5-XXL) takes tens of seconds a prompt on a CPU, and most renders repeat
// their prompts: the default negative prompt, a prompt rendered again with
// another seed, every cell of a sweep. An encoding is kept, in memory for
// the process and as a small safetensors file in the user's cache folder,
// under a key naming everything it depends on (the family, the encoders' and
// tokenizers' fingerprints, the precision, the LoRAs applied to the text
// encoders, Kinora's version) and the text itself. What the conditioner told
// the user (a prompt cut to the encoder's length) is kept with it and said
// again on a hit.
//
// The cache is only ever a shortcut: a file that cannot be read, written or
// parsed is an encoding computed again, never an error. The folder is bounded
// in size, the least recently used files removed first.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <list>
#include <string>
#include <vector>

#include "layers/conditioning.h"

namespace kinora::pipeline {

class PromptCache {
 public:
  // `dir`: where encodings are kept on disk (empty: in memory only), at most
  // `max_bytes` of them.
  explicit PromptCache(std::filesystem::path dir, uint64_t max_bytes = uint64_t{1} << 30);

  // The folder a render uses: user_cache_dir()/prompts, or empty (memory
  // only) when KINORA_PROMPT_CACHE is "0" or no cache folder can be named.
  static std::filesystem::path default_dir();

  // The conditioning of `text` under `key`, as CPU tensors: remembered, else
  // computed by `encode` (whose notes go to `note` and are kept). `hit` tells
  // which.
  layers::Conditioning get(const std::string& key, const std::string& text,
                           const std::function<layers::Conditioning(
                               const std::function<void(const std::string&)>& note)>& encode,
                           const std::function<void(const std::string&)>& note,
                           bool* hit = nullptr);

  const std::filesystem::path& dir() const { return dir_; }

 private:
  struct Entry {
    std::string id;
    layers::Conditioning cond;
    std::vector<std::string> notes;
  };
  std::filesystem::path dir_;
  uint64_t max_bytes_;
  std::list<Entry> memory_;  // most recent first
};

}  // namespace kinora::pipeline
