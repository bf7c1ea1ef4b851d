#pragma once
// Writing generated frames to files, and reading back the parameters embedded
// in them. Video through FFmpeg (libavformat / libavcodec / libswscale), images
// through libpng. Every output is written under a temporary name beside the
// final one and renamed when complete: a failed or cancelled write leaves
// nothing under the output name, and a render never deletes or replaces a
// file it was not asked to (base/files.h).
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <filesystem>
#include <string>

#include "media/format.h"

namespace kinora::media {

// Where a render goes, checked before it starts (prepare_output).
struct OutputTarget {
  std::filesystem::path path;
  Format format = Format::Mp4H264;
  bool overwrite = false;
  // The parameters file beside a single-file output, "<path>.json" (fox.mp4 →
  // fox.mp4.json); none for a frame sequence, whose folder holds kinora.json.
  std::filesystem::path sidecar() const;
};

// The folder `path` goes into exists, is a folder, and can be written; else a
// kinora::Error naming `path`.
void check_output_folder(const std::filesystem::path& path);

// Everything about the destination that can fail, checked before anything is
// rendered: output_format(); the folder exists and is writable; a file output
// is not a folder, and an existing file is replaced only with `overwrite` (never
// a read-only one); a frame sequence goes into a new folder or an empty one
// (with `overwrite`, also one that holds only a Kinora sequence); the sidecar
// would replace nothing but an earlier Kinora sidecar. Also removes the
// temporaries that dead processes of this host left in that folder. Throws
// kinora::Error naming the path; changes nothing else.
OutputTarget prepare_output(const std::filesystem::path& path, const std::string& format,
                            int64_t frames, bool overwrite);

struct WriteOptions {
  int fps = 16;
  int crf = 18;                 // H.264/H.265/VP9 quality (lower is better)
  std::string metadata_json;    // the generation parameters, embedded and in the sidecar
  std::string parameters_text;  // A1111-style "parameters" text for PNG
};

// frames [F, H, W, 3] uint8 RGB (H and W even for video). Writes the output and
// its sidecar under temporary names and moves both into place only when both
// are complete: they appear together or not at all. Throws kinora::Error naming
// the file (a full disk, the file-size limit, an output that another process
// wrote meanwhile); `cancel` is polled between frames, and a cancelled write
// throws kinora::Cancelled. Either way nothing is left behind.
void write_output(const OutputTarget& target, const torch::Tensor& frames,
                  const WriteOptions& options, const std::atomic<bool>* cancel = nullptr);

// The Kinora parameters embedded in an output (the MP4/WebM/MOV "kinora" or
// "comment" tag, the PNG "kinora" text chunk, a frame sequence folder's
// kinora.json, or a sidecar .json): a JSON object with "preset". Throws
// kinora::Error naming the file when there are none ("holds no Kinora
// parameters"), or when they are malformed.
nlohmann::json read_embedded_parameters(const std::filesystem::path& path);

// Why the output at `path` is cut short ("cut short: its moov box ends at
// byte N, past the file's M bytes"), "" when it ends where its own structure
// says: a PNG's chunks up to IEND, an MP4/MOV's top-level boxes, a WebM's
// Segment. A file cut after its parameters still holds them; one cut before
// is refused by read_embedded_parameters as cut short.
std::string cut_short(const std::filesystem::path& path);

// Whether `path` is an output Kinora wrote: it holds Kinora's parameters (as
// read_embedded_parameters reads them), or its sidecar NAME.EXT.json does.
bool is_kinora_output(const std::filesystem::path& path);

// Whether `path` is a parameters file Kinora wrote beside an output (a JSON
// object like the one is_kinora_parameters accepts), as opposed to a preset or
// anything else.
bool is_kinora_sidecar(const std::filesystem::path& path);

// Decodes a video or image file (any format FFmpeg reads) to RGB frames
// [F, H, W, 3] uint8, the first `max_frames` (0: all). Throws kinora::Error.
torch::Tensor read_frames(const std::filesystem::path& path, int64_t max_frames = 0);

std::string ffmpeg_version();

}  // namespace kinora::media
