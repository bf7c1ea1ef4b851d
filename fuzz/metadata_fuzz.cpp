// The parameters embedded in an output, as `restore`, the studio's drop and
// its gallery read them from files made elsewhere: the first byte picks the
// kind of file (PNG text chunks, a container FFmpeg demuxes, a sidecar JSON),
// the rest is the file. Each input gives a preset or a kinora::Error.
#include <string>

#include "base/error.h"
#include "fuzz/fuzz_util.h"
#include "media/output.h"
#include "pipeline/preset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  static const char* const kinds[] = {".png", ".mp4", ".webm", ".mov", ".json"};
  const std::string name = std::string("input") + kinds[data[0] % 5];
  const auto path = kinora::fuzz::write_scratch(name, data + 1, size - 1);
  try {
    const auto j = kinora::media::read_embedded_parameters(path);
    const auto p = kinora::pipeline::Preset::restored(j, path.string());
    (void)p.to_json().dump();
  } catch (const kinora::Error&) {
  }
  return 0;
}
