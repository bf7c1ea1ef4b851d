// The stand-ins of a build without FFmpeg and libpng (the GPU machine's image
// has neither): such a build writes PPM frame sequences only, and says so.
#include "base/error.h"
#include "media/codecs.h"

namespace kinora::media {
namespace fs = std::filesystem;

std::string ffmpeg_version() {
  return "none (built without FFmpeg)";
}

namespace codecs {

namespace {
[[noreturn]] void unavailable(const fs::path& path) {
  fail_file(path,
            "this build of Kinora has no FFmpeg and libpng: it writes --format ppm-seq "
            "only, and reads parameters from sidecars and sequence folders");
}
}  // namespace

bool available() {
  return false;
}
void write_video(const fs::path& path, const fs::path&, const torch::Tensor&, Format,
                 const WriteOptions&, const std::atomic<bool>*) {
  unavailable(path);
}
void write_png(const fs::path& path, const fs::path&, const torch::Tensor&, const WriteOptions&) {
  unavailable(path);
}
std::pair<std::string, std::string> container_tags(const fs::path& path) {
  unavailable(path);
}

}  // namespace codecs

torch::Tensor read_frames(const fs::path& path, int64_t) {
  codecs::container_tags(path);  // says why
  return {};
}

}  // namespace kinora::media
