// The tokenizer's own code on arbitrary bytes (invalid UTF-8 included): Wan's
// prompt cleaning, then the embedded model's BPE tokenizer (text/spm_bpe.h),
// whose ids must lie in its vocabulary; and the same bytes read as a tokenizer
// model file, which SpmBpe either reads or refuses. (libsentencepiece, the
// other backend, is not ours to fuzz, and cannot be loaded under the
// sanitizers beside LibTorch's protobuf.)
#include <optional>
#include <string>

#include "text/spm_bpe.h"
#include "text/tokenizer.h"

namespace {
std::optional<kinora::text::SpmBpe> g_bpe;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_bpe = kinora::text::SpmBpe::from_file(KINORA_FUZZ_ASSETS "/kinora-tiny-spm.model");
  if (!g_bpe) __builtin_trap();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const auto cleaned = kinora::text::Tokenizer::clean(bytes);
  if (cleaned.size() > 4 * bytes.size() + 8) __builtin_trap();  // entities only shrink, at most ×4
  if (const auto ids = g_bpe->encode(cleaned))
    for (const int id : *ids)
      if (id < 0 || id >= g_bpe->size()) __builtin_trap();
  if (const auto model = kinora::text::SpmBpe::parse(bytes))
    if (const auto ids = model->encode("a red circle"))
      for (const int id : *ids)
        if (id < 0 || id >= model->size()) __builtin_trap();
  return 0;
}
