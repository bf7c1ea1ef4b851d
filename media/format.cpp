#include "media/format.h"

#include <cctype>
#include <filesystem>

#include "base/error.h"

#include <nlohmann/json.hpp>

namespace kinora::media {
namespace fs = std::filesystem;

Format parse_format(const std::string& name) {
  std::string n = name;  // "MP4" as "mp4"
  for (auto& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (n == "mp4" || n == "h264" || n == "mp4-h264") return Format::Mp4H264;
  if (n == "mp4-h265" || n == "h265" || n == "hevc") return Format::Mp4H265;
  if (n == "webm" || n == "vp9") return Format::WebmVp9;
  if (n == "mov" || n == "prores") return Format::MovProres;
  if (n == "png-seq" || n == "png-sequence") return Format::PngSequence;
  if (n == "png") return Format::Png;
  if (n == "ppm-seq" || n == "ppm-sequence") return Format::PpmSequence;
  throw Error("unknown output format '" + name +
              "' (mp4, mp4-h265, webm, mov, png-seq, png, ppm-seq)");
}

const char* format_name(Format f) {
  switch (f) {
    case Format::Mp4H264:
      return "mp4";
    case Format::Mp4H265:
      return "mp4-h265";
    case Format::WebmVp9:
      return "webm";
    case Format::MovProres:
      return "mov";
    case Format::PngSequence:
      return "png-seq";
    case Format::Png:
      return "png";
    case Format::PpmSequence:
      return "ppm-seq";
  }
  return "?";
}

const char* format_extension(Format f) {
  switch (f) {
    case Format::Mp4H264:
    case Format::Mp4H265:
      return ".mp4";
    case Format::WebmVp9:
      return ".webm";
    case Format::MovProres:
      return ".mov";
    case Format::PngSequence:
    case Format::PpmSequence:
      return "";
    case Format::Png:
      return ".png";
  }
  return "";
}

std::string format_list() {
  return "mp4 (.mp4, H.264), mp4-h265 (.mp4), webm (.webm, VP9), mov (.mov, ProRes), png (.png, "
         "one frame), png-seq (a folder of PNG frames), ppm-seq (a folder of PPM frames)";
}

std::string lower_extension(const fs::path& path) {
  std::string s = path.extension().string();
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

namespace {
// The file formats an extension can hold.
bool extension_fits(const std::string& ext, Format f) {
  return ext == format_extension(f);
}
bool is_media_extension(const std::string& ext) {
  return ext == ".mp4" || ext == ".webm" || ext == ".mov" || ext == ".png";
}
}  // namespace

Format output_format(const fs::path& path, const std::string& format, int64_t frames) {
  const std::string s = path.string();
  if (s.empty()) fail_file(path, "no output name given");
  // "frames/" names the folder a sequence goes into; "./" or ".." no new one.
  const bool sequence = !format.empty() && is_sequence(parse_format(format));
  if (sequence && s.back() == '/' && s.find_last_not_of('/') != std::string::npos)
    return output_format(s.substr(0, s.find_last_not_of('/') + 1), format, frames);
  if (s.back() == '/' || path.filename() == "." || path.filename() == "..")
    fail_file(path, sequence ? "names this folder or the one above; frames go into a folder of "
                               "their own: give a new folder's name (frames/)"
                             : "names a folder; name the output file (clip.mp4), or for a folder "
                               "of PNG frames give a new folder's name with --format png-seq");
  const std::string ext = lower_extension(path);
  Format f;
  if (!format.empty()) {
    f = parse_format(format);
    if (is_sequence(f)) {
      if (is_media_extension(ext))
        fail_file(path, "a frame sequence is a folder, but the name ends in " + ext +
                            "; give the folder a name without it");
    } else if (!extension_fits(ext, f)) {
      fail_file(path, std::string("format ") + format_name(f) + " is written to " +
                          format_extension(f) + " files, but the name ends in " +
                          (ext.empty() ? std::string("no extension") : "'" + ext + "'") +
                          "; change one of them");
    }
  } else if (ext == ".mp4") {
    f = Format::Mp4H264;
  } else if (ext == ".webm") {
    f = Format::WebmVp9;
  } else if (ext == ".mov") {
    f = Format::MovProres;
  } else if (ext == ".png") {
    f = Format::Png;
  } else {
    std::error_code ec;
    fail_file(path, (ext.empty() ? std::string("the name has no extension")
                                 : "unknown output extension '" + ext + "'") +
                        "; the formats are " + format_list() +
                        " (a folder of frames needs --format png-seq or ppm-seq)" +
                        (ext.empty() && std::filesystem::is_directory(path, ec)
                             ? "; " + path.string() +
                                   " is an existing folder: name a file inside it, such as " +
                                   (path / "kinora.mp4").string()
                             : std::string()));
  }
  if (f == Format::Png && frames > 1)
    fail_file(path, "a .png holds one image, but this render makes " + std::to_string(frames) +
                        " frames; ask for 1 frame, a video (.mp4, .webm, .mov) or --format "
                        "png-seq");
  return f;
}

bool is_kinora_parameters(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("preset") || !j["preset"].is_object()) return false;
  const auto k = j.find("kinora");
  if (k == j.end() || !k->is_object() || !k->contains("version") || !(*k)["version"].is_string() ||
      (*k)["version"].get<std::string>().rfind("Kinora", 0) != 0)
    return false;
  // Nothing but what Kinora writes: a file with more is someone's own.
  for (const auto& item : j.items())
    if (item.key() != "kinora" && item.key() != "preset" && item.key() != "model_files" &&
        item.key() != "loras" && item.key() != "sweep")
      return false;
  return true;
}

}  // namespace kinora::media
