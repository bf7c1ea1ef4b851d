// Stage 1, the tokenizer, and the caption grammar it is trained on.
#include <fstream>
#include <iterator>
#include <optional>
#include <string>

#include "base/error.h"
#include "base/files.h"
#include "text/tokenizer.h"
#include "training/train.h"

namespace kinora::training {

std::vector<std::string> grammar_captions() {
  std::vector<std::string> out;
  for (auto c : kColours)
    for (auto b : kColours)
      for (auto s : kShapes)
        for (auto d : kDirections) {
          if (b == c) continue;
          Scene sc;
          sc.object = c, sc.background = b, sc.shape = s, sc.direction = d;
          if (!held_out(sc)) out.push_back(sc.caption());
        }
  return out;
}

namespace {

// A SentencePiece ModelProto's top-level fields but its trainer_spec (field
// 2: the options it was trained with, which record the path of its
// temporary sentence file), in order: the pieces (1), the normalizer (3), ...
// Two models with the same rest tokenize alike. nullopt when the bytes are
// not such a message.
std::optional<std::string> without_trainer_spec(const std::string& b) {
  std::string kept;
  std::size_t at = 0;
  const auto varint = [&](uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64 && at < b.size(); shift += 7) {
      const auto c = static_cast<unsigned char>(b[at++]);
      v |= static_cast<uint64_t>(c & 0x7f) << shift;
      if (!(c & 0x80)) return true;
    }
    return false;
  };
  while (at < b.size()) {
    const auto start = at;
    uint64_t tag = 0, v = 0;
    if (!varint(tag)) return std::nullopt;
    switch (tag & 7) {
      case 0:
        if (!varint(v)) return std::nullopt;
        break;
      case 1:
        at += 8;
        break;
      case 2:
        if (!varint(v) || v > b.size() - at) return std::nullopt;
        at += static_cast<std::size_t>(v);
        break;
      case 5:
        at += 4;
        break;
      default:
        return std::nullopt;
    }
    if (at > b.size()) return std::nullopt;
    if ((tag >> 3) != 2) kept.append(b, start, at - start);
  }
  return kept;
}

}  // namespace

bool train_tokenizer(const std::filesystem::path& run_dir, int64_t vocab_size, bool overwrite) {
  namespace fs = std::filesystem;
  fs::create_directories(run_dir);
  auto sentences = grammar_captions();
  sentences.emplace_back("");  // the empty caption (classifier-free guidance)
  const auto path = run_dir / kTokenizerFile;
  ScopedTemp made(path);
  text::Tokenizer::train(sentences, made.path(), vocab_size);
  // A file that is what this stage makes (the same pieces) stays as it is. Any other may be what a
  // DiT of this folder was trained with, which reads its ids.
  std::error_code ec;
  if (fs::exists(fs::symlink_status(path, ec))) {
    const auto bytes = [](const fs::path& p) {
      std::ifstream in(p, std::ios::binary);
      return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    };
    // The same pieces and normalizer: the trainer's options it records may
    // differ only in where its sentences were (a temporary file's name).
    const auto had = without_trainer_spec(bytes(path));
    if (had && had == without_trainer_spec(bytes(made.path()))) return false;
    if (!overwrite)
      fail_file(path,
                "exists and is not the tokenizer this stage makes (--vocab " +
                    std::to_string(vocab_size) +
                    "); a DiT trained with it reads its ids. Give --overwrite to replace it, or "
                    "another --run folder");
  }
  made.commit(true);
  return true;
}

}  // namespace kinora::training
