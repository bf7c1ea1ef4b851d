// Stage 1, the tokenizer, and the caption grammar it is trained on.
#include <fstream>
#include <iterator>

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

bool train_tokenizer(const std::filesystem::path& run_dir, int64_t vocab_size, bool overwrite) {
  namespace fs = std::filesystem;
  fs::create_directories(run_dir);
  auto sentences = grammar_captions();
  sentences.emplace_back("");  // the empty caption (classifier-free guidance)
  const auto path = run_dir / kTokenizerFile;
  ScopedTemp made(path);
  text::Tokenizer::train(sentences, made.path(), vocab_size);
  // The same options make the same bytes: a file that is what this stage
  // makes stays as it is. Any other may be what a DiT of this folder was
  // trained with, which reads its ids.
  std::error_code ec;
  if (fs::exists(fs::symlink_status(path, ec))) {
    const auto bytes = [](const fs::path& p) {
      std::ifstream in(p, std::ios::binary);
      return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    };
    if (bytes(path) == bytes(made.path())) return false;
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
