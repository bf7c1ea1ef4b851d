#pragma once
// CLIP's byte-level BPE tokenizer, from the vocab.json and merges.txt that
// ship beside CLIP text encoders (Hugging Face's openai/clip-vit-large-patch14
// `tokenizer/` folder, ComfyUI's bundled copy). As transformers' CLIPTokenizer
// runs without ftfy: whitespace runs collapsed, lower-cased, split by CLIP's
// pattern (contractions, letter runs, single digits, other runs), each piece's
// UTF-8 bytes mapped to GPT-2's printable characters, merged by rank with
// `</w>` marking a word's end; then BOS, the tokens (cut to fit), EOS, and
// padding to the context length.
//
// Letters, digits and spaces outside ASCII are classified by ranges (Latin,
// Greek, Cyrillic, CJK and the other scripts count as letters; punctuation,
// symbol and emoji blocks do not), and lower-casing covers ASCII, Latin-1,
// Greek and Cyrillic: prompts in other scripts may split differently from
// Python's Unicode tables.
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace kinora::text {

struct ClipTokens {
  torch::Tensor ids;   // [1, context] int64
  int64_t length = 0;  // BOS + tokens + EOS
  bool truncated = false;
};

class ClipTokenizer {
 public:
  // `path`: a folder holding vocab.json and merges.txt, or the vocab.json
  // itself (merges.txt beside it). Throws kinora::Error naming the file.
  static ClipTokenizer load(const std::filesystem::path& path);
  // From the two files' contents (tests; `source` names them in messages).
  static ClipTokenizer from_strings(const std::string& vocab_json, const std::string& merges,
                                    const std::string& source);

  // The BPE token ids of `text`, without BOS/EOS.
  std::vector<int64_t> tokenize(const std::string& text) const;
  // BOS, tokens (cut to context − 2), EOS, then `pad` (the end token when −1)
  // to `context` ids.
  ClipTokens encode(const std::string& text, int64_t context = 77, int64_t pad = -1) const;

  int64_t bos() const { return bos_; }
  int64_t eos() const { return eos_; }
  int64_t vocab_size() const { return static_cast<int64_t>(vocab_.size()); }
  // The largest id in the vocabulary (an encoder needs an embedding for each).
  int64_t max_id() const { return max_id_; }
  // Where it was read from, for messages.
  const std::string& source() const { return source_; }

  // Whitespace runs to one space, ends stripped, lower-cased.
  static std::string normalise(const std::string& text);
  // CLIP's pre-tokenisation pattern over normalised text.
  static std::vector<std::string> pre_tokenize(const std::string& text);

 private:
  std::string bpe(const std::string& piece) const;  // space-separated symbols
  std::unordered_map<std::string, int64_t> vocab_;
  std::map<std::pair<std::string, std::string>, int> ranks_;
  std::vector<std::string> byte_char_;  // byte → its printable UTF-8 character
  int64_t bos_ = 0, eos_ = 0, max_id_ = 0;
  std::string source_;
  mutable std::unordered_map<std::string, std::string> cache_;
};

// Where a CLIP encoder's tokenizer is: `given` when set (a folder or a
// vocab.json), else a folder beside `encoder`, beside its folder (a diffusers
// folder's tokenizer/) or under `models_dir` holding vocab.json and merges.txt
// (the folder itself, `tokenizer/`, `clip_tokenizer/`, `clip_l_tokenizer/`,
// `clip_l/`), or ComfyUI's `comfy/sd1_tokenizer/` beside `models_dir`. Throws
// kinora::Error naming every place it looked.
std::filesystem::path find_clip_tokenizer(const std::filesystem::path& given,
                                          const std::filesystem::path& encoder,
                                          const std::filesystem::path& models_dir);

}  // namespace kinora::text
