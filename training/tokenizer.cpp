// Stage 1, the tokenizer, and the caption grammar it is trained on.
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

void train_tokenizer(const std::filesystem::path& run_dir, int64_t vocab_size) {
  std::filesystem::create_directories(run_dir);
  auto sentences = grammar_captions();
  sentences.emplace_back("");  // the empty caption (classifier-free guidance)
  text::Tokenizer::train(sentences, run_dir / kTokenizerFile, vocab_size);
}

}  // namespace kinora::training
