#pragma once
// The encoders and demuxers media/output.cpp hands the bytes to: FFmpeg for
// video, libpng for PNG (media/ffmpeg.cpp, media/png.cpp), or, in a build
// without them (the GPU machine's), stand-ins that say so (media/no_codecs.cpp):
// such a build writes PPM frames only (--format ppm-seq).
#include <torch/torch.h>

#include <atomic>
#include <filesystem>
#include <string>

#include "media/format.h"
#include "media/output.h"

namespace kinora::media::codecs {

// Whether this build writes and reads video and PNG.
bool available();

// frames [F, H, W, 3] uint8 into `tmp` (errors name `path`), as `format`.
void write_video(const std::filesystem::path& path, const std::filesystem::path& tmp,
                 const torch::Tensor& frames, Format format, const WriteOptions& o,
                 const std::atomic<bool>* cancel);
// One frame [H, W, 3] uint8, with the "parameters" and "kinora" text chunks.
void write_png(const std::filesystem::path& path, const std::filesystem::path& tmp,
               const torch::Tensor& frame, const WriteOptions& o);
// A container's "kinora" and "comment" tags ("" where absent). Throws when it
// is not a file FFmpeg reads.
std::pair<std::string, std::string> container_tags(const std::filesystem::path& path);

}  // namespace kinora::media::codecs
