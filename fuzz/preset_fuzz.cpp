// A preset file on arbitrary bytes, read as `render` and `batch` read one:
// bounded JSON, then every key validated; then a --set override from the same
// bytes. Each is a preset or a kinora::Error; a preset that validates must
// survive a round trip through its own JSON.
#include <string>

#include "base/error.h"
#include "base/json.h"
#include "pipeline/preset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  using kinora::pipeline::Preset;
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto p = Preset::from_json(kinora::parse_json(text, "fuzz.json"), "fuzz.json");
    if (Preset::from_json(p.to_json()).to_json() != p.to_json()) __builtin_trap();
    (void)p.to_json().dump();  // valid UTF-8 everywhere, or dump() would throw
  } catch (const kinora::Error&) {
  }
  try {
    Preset p;
    p.set(text);
    (void)p.to_json().dump();
  } catch (const kinora::Error&) {
  }
  return 0;
}
