// The safetensors reader on arbitrary bytes: every input is either a file it
// opens (and then every tensor reads back with the size its header promised)
// or a kinora::Error. Anything else (a crash, a sanitizer report, another
// exception) is a bug.
#include "base/error.h"
#include "fuzz/fuzz_util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto path = kinora::fuzz::write_scratch("input.safetensors", data, size);
  try {
    const auto file = kinora::io::SafetensorsFile::open(path);
    for (const auto& t : file->tensors()) {
      const auto raw = file->raw(t.name);
      if (static_cast<uint64_t>(raw.numel()) != t.nbytes()) __builtin_trap();
      const auto v = file->get(t.name);
      if (v.numel() != t.numel()) __builtin_trap();
    }
  } catch (const kinora::Error&) {
  }
  return 0;
}
