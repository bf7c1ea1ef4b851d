#pragma once
// A SentencePiece BPE model read and applied without libsentencepiece.
//
// The tokenizer otherwise goes through libsentencepiece behind a shim
// (spm_shim.cpp). On the GPU machine's image (PyTorch 2.11) that library
// fails inside its protobuf copy whichever way it is loaded (docs/training.md,
// "On a GPU"), so the embedded model's tokenizer, a BPE model, is applied here:
// the ModelProto is read from its wire format, the text normalised as
// SentencePiece normalises printable ASCII, and the pieces merged as
// bpe_model.cc merges them (highest score first, leftmost on ties). What this
// does not cover (other model types, byte fallback, user-defined pieces,
// characters beyond printable ASCII) is refused, and the library does it.
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kinora::text {

class SpmBpe {
 public:
  // The model in `bytes` (a .model file's contents), if it is a BPE model this
  // class applies exactly; nullopt otherwise (or if it is not a ModelProto).
  static std::optional<SpmBpe> parse(const std::string& bytes);
  static std::optional<SpmBpe> from_file(const std::filesystem::path& path);

  // The ids of `text` (no </s>), or nullopt for text this class does not
  // cover: anything but printable ASCII and single spaces.
  std::optional<std::vector<int>> encode(std::string_view text) const;
  int64_t size() const { return static_cast<int64_t>(pieces_.size()); }

 private:
  struct Piece {
    std::string text;
    float score = 0;
    int type = 1;  // NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6
  };
  std::vector<Piece> pieces_;
  std::unordered_map<std::string, int> mergeable_;  // NORMAL and UNUSED pieces
  std::unordered_map<std::string, int> reserved_;   // CONTROL pieces
  int unk_id_ = -1;
  bool add_dummy_prefix_ = true, remove_extra_whitespaces_ = true, escape_whitespaces_ = true;
};

}  // namespace kinora::text
