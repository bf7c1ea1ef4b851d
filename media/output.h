#pragma once
// Writing generated frames to files, and reading back the parameters embedded
// in them. Video through FFmpeg (libavformat / libavcodec / libswscale), images
// through libpng. Every output is written under a temporary name beside the
// final one and renamed when complete: a failed or cancelled write leaves
// nothing under the output name.
#include <torch/torch.h>

#include <atomic>
#include <filesystem>
#include <string>

namespace kinora::media {

enum class Format {
  Mp4H264,      // H.264 in MP4, yuv420p, CRF
  Mp4H265,      // H.265 in MP4 (hvc1), yuv420p, CRF
  WebmVp9,      // VP9 in WebM, yuv420p, CRF
  MovProres,    // ProRes 422 HQ in MOV, yuv422p10le
  PngSequence,  // a folder of lossless PNG frames
  Png,          // a single PNG (the first frame)
};

// "mp4" | "h264" | "mp4-h265" | "h265" | "webm" | "vp9" | "mov" | "prores" | "png-seq" | "png"
Format parse_format(const std::string& name);
const char* format_name(Format f);
const char* format_extension(Format f);  // ".mp4", ".webm", ".mov", "" (folder), ".png"
// The format an output path asks for by its extension (".mp4" → H.264 …).
Format format_for_path(const std::filesystem::path& path);

struct WriteOptions {
  Format format = Format::Mp4H264;
  int fps = 16;
  int crf = 18;                 // H.264/H.265/VP9 quality (lower is better)
  std::string metadata_json;    // the generation parameters, embedded and in the sidecar
  std::string parameters_text;  // A1111-style "parameters" text for PNG
};

// frames [F, H, W, 3] uint8 RGB (H and W even). Also writes the sidecar
// `<path without extension>.json`. Throws kinora::Error naming the file.
// `cancel` is polled between frames; a cancelled write throws and leaves nothing.
void write_output(const std::filesystem::path& path, const torch::Tensor& frames,
                  const WriteOptions& options, const std::atomic<bool>* cancel = nullptr);

// The Kinora JSON embedded in an output: the MP4/WebM/MOV "comment" tag, the PNG
// "kinora" text chunk, or a PNG sequence folder's metadata file. Throws
// kinora::Error when the file has none.
std::string read_embedded_json(const std::filesystem::path& path);

// Decodes a video or image file (any format FFmpeg reads) to RGB frames
// [F, H, W, 3] uint8, the first `max_frames` (0: all). Throws kinora::Error.
torch::Tensor read_frames(const std::filesystem::path& path, int64_t max_frames = 0);

std::string sidecar_path(const std::filesystem::path& output);
std::string ffmpeg_version();

}  // namespace kinora::media
