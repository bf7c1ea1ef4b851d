#pragma once
// The T5 / umT5 tokenizer: a SentencePiece model (the user's spiece.model),
// Wan's prompt cleaning, </s> appended, padded to a fixed length with a mask.
// Reference: Wan2.1 wan/modules/tokenizers.py (HF AutoTokenizer).
#include <torch/torch.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace kinora::text {

struct Tokens {
  torch::Tensor ids;   // [1, max_len] int64, pad 0
  torch::Tensor mask;  // [1, max_len] int64, 1 for real tokens (</s> included)
  int64_t length = 0;  // real tokens
  bool truncated = false;
};

class Tokenizer {
 public:
  // Auto: a BPE model is applied by SpmBpe (text/spm_bpe.h) where it covers
  // the text, libsentencepiece otherwise. Library: always libsentencepiece.
  enum class Backend { Auto, Library };
  // Throws kinora::Error naming the file when it is not a SentencePiece model.
  static Tokenizer load(const std::filesystem::path& spiece_model, Backend backend = Backend::Auto);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Trains a SentencePiece (BPE) model on `sentences` with T5's special ids
  // (<pad> 0, </s> 1, <unk> 2) and writes it to `model_path` (atomically).
  static void train(const std::vector<std::string>& sentences,
                    const std::filesystem::path& model_path, int64_t vocab_size);

  Tokens encode(const std::string& text, int64_t max_len = 512) const;
  int64_t vocab_size() const;

  // Wan's "whitespace" cleaning: HTML entities unescaped twice, whitespace runs
  // collapsed to one space, ends stripped. (ftfy's mojibake repair is not done.)
  static std::string clean(const std::string& text);

  static constexpr int64_t kPad = 0, kEos = 1;

 private:
  Tokenizer() = default;
  struct Model;  // the SentencePiece model: SpmBpe, and/or the library's behind the C shim
  std::unique_ptr<Model> sp_;
};

}  // namespace kinora::text
