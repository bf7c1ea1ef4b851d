// A C interface over libsentencepiece, built as its own shared library and
// loaded by the tokenizer with dlopen(RTLD_LOCAL | RTLD_DEEPBIND).
//
// Why: Debian's libsentencepiece carries a private copy of protobuf 3.14 and
// exports its symbols, while LibTorch loads the system libprotobuf 3.21. Linked
// into one program, one copy interposes the other and the process crashes at
// start-up (or aborts on protobuf's version check). Loaded locally with deep
// binding, sentencepiece resolves to its own copy and LibTorch to the system one.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstring>
#include <string>
#include <vector>

// Not in the public headers, exported by libsentencepiece (util.cc).
namespace sentencepiece::logging {
void SetMinLogLevel(int v);
}

namespace {
void set_error(char* err, std::size_t len, const std::string& what) {
  if (!err || len == 0) return;
  std::strncpy(err, what.c_str(), len - 1);
  err[len - 1] = '\0';
}
}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* kinora_spm_load(const char* path, char* err,
                                                             std::size_t errlen) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto status = sp->Load(path);
  if (!status.ok()) {
    set_error(err, errlen, status.ToString());
    delete sp;
    return nullptr;
  }
  return sp;
}

__attribute__((visibility("default"))) void kinora_spm_free(void* handle) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

__attribute__((visibility("default"))) int kinora_spm_piece_size(void* handle) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->GetPieceSize();
}

// Writes up to `cap` ids; returns the full count (call again with a larger buffer
// when it exceeds cap), or −1 with `err` filled.
__attribute__((visibility("default"))) int kinora_spm_encode(void* handle, const char* text,
                                                             std::size_t len, int* ids, int cap,
                                                             char* err, std::size_t errlen) {
  std::vector<int> out;
  const auto status = static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Encode(
      std::string(text, len), &out);
  if (!status.ok()) {
    set_error(err, errlen, status.ToString());
    return -1;
  }
  for (int i = 0; i < cap && i < static_cast<int>(out.size()); ++i)
    ids[i] = out[static_cast<std::size_t>(i)];
  return static_cast<int>(out.size());
}

// Trains a model with SentencePieceTrainer's flag string ("--input=… --model_prefix=…");
// returns 0, or −1 with `err` filled.
__attribute__((visibility("default"))) int kinora_spm_train(const char* args, char* err,
                                                            std::size_t errlen) {
  // The trainer logs to std::cerr. Under RTLD_DEEPBIND that is libstdc++'s own
  // std::cerr object, which is never constructed when the program carries a copy
  // of it (a copy relocation): writing to it crashes. So it logs errors only.
  sentencepiece::logging::SetMinLogLevel(2);
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) {
    set_error(err, errlen, status.ToString());
    return -1;
  }
  return 0;
}

}  // extern "C"
