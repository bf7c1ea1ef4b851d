#pragma once
// The output formats by name and extension, and the rule that a name and a
// format agree: what presets validate with, without FFmpeg (media/output.h
// writes them).
#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace kinora::media {

enum class Format {
  Mp4H264,      // H.264 in MP4, yuv420p, CRF
  Mp4H265,      // H.265 in MP4 (hvc1), yuv420p, CRF
  WebmVp9,      // VP9 in WebM, yuv420p, CRF
  MovProres,    // ProRes 422 HQ in MOV, yuv422p10le
  PngSequence,  // a folder of lossless PNG frames
  Png,          // a single PNG (the first frame)
  PpmSequence,  // a folder of PPM frames (binary P6), written without any library
};

// A folder of frames (png-seq, ppm-seq) rather than one file.
inline bool is_sequence(Format f) {
  return f == Format::PngSequence || f == Format::PpmSequence;
}

// "mp4" | "h264" | "mp4-h265" | "h265" | "webm" | "vp9" | "mov" | "prores" | "png-seq" | "png" |
// "ppm-seq"
Format parse_format(const std::string& name);
const char* format_name(Format f);
const char* format_extension(Format f);  // ".mp4", ".webm", ".mov", "" (folder), ".png"
// The formats and extensions, for messages: "mp4 (.mp4), mp4-h265 (.mp4), …".
std::string format_list();

// The format an output asks for: `format` when given ("" for none), which must
// agree with the name's extension, else the one the extension names. Refused,
// with a message naming `path`: a name without an extension (unless png-seq),
// a name that ends in '/', a format that contradicts the extension
// (webm into "x.mp4"), and more than one frame into a single image. Touches no
// file.
Format output_format(const std::filesystem::path& path, const std::string& format, int64_t frames);

// Whether `j` is the parameters Kinora embeds in an output and writes beside
// it: "kinora" (with a "Kinora …" version), "preset", and nothing but
// "model_files", "loras" and a sweep's "sweep" besides; not a preset, not anyone else's JSON.
bool is_kinora_parameters(const nlohmann::json& j);

// The name's extension in lower case (".mp4" for "CLIP.MP4").
std::string lower_extension(const std::filesystem::path& path);

}  // namespace kinora::media
