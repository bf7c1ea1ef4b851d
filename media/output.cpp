#include "media/output.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/dict.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}
#include <png.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <csetjmp>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include "base/error.h"
#include "base/files.h"
#include "base/json.h"

namespace kinora::media {
namespace fs = std::filesystem;

// ---------------------------------------------------------------- formats

Format parse_format(const std::string& n) {
  if (n == "mp4" || n == "h264" || n == "mp4-h264") return Format::Mp4H264;
  if (n == "mp4-h265" || n == "h265" || n == "hevc") return Format::Mp4H265;
  if (n == "webm" || n == "vp9") return Format::WebmVp9;
  if (n == "mov" || n == "prores") return Format::MovProres;
  if (n == "png-seq" || n == "png-sequence") return Format::PngSequence;
  if (n == "png") return Format::Png;
  throw Error("unknown output format '" + n + "' (mp4, mp4-h265, webm, mov, png-seq, png)");
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
      return "";
    case Format::Png:
      return ".png";
  }
  return "";
}

std::string format_list() {
  return "mp4 (.mp4, H.264), mp4-h265 (.mp4), webm (.webm, VP9), mov (.mov, ProRes), png (.png, "
         "one frame), png-seq (a folder of PNG frames)";
}

namespace {
std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
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
  if (s.back() == '/' || path.filename() == "." || path.filename() == "..")
    fail_file(path,
              "names a folder; name the output file (clip.mp4), or for a folder of PNG frames "
              "give a new folder's name with --format png-seq");
  const std::string ext = lower(path.extension().string());
  Format f;
  if (!format.empty()) {
    f = parse_format(format);
    if (f == Format::PngSequence) {
      if (is_media_extension(ext))
        fail_file(path, "a PNG sequence is a folder, but the name ends in " + ext +
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
    fail_file(path, (ext.empty() ? std::string("the name has no extension")
                                 : "unknown output extension '" + ext + "'") +
                        "; the formats are " + format_list() +
                        " (a PNG sequence needs --format png-seq)");
  }
  if (f == Format::Png && frames > 1)
    fail_file(path, "a .png holds one image, but this render makes " + std::to_string(frames) +
                        " frames; ask for 1 frame, a video (.mp4, .webm, .mov) or --format "
                        "png-seq");
  return f;
}

fs::path OutputTarget::sidecar() const {
  if (format == Format::PngSequence) return {};
  fs::path p = path;
  p += ".json";
  return p;
}

std::string ffmpeg_version() {
  return std::string("libavformat ") + AV_STRINGIFY(LIBAVFORMAT_VERSION) + ", libavcodec " +
         AV_STRINGIFY(LIBAVCODEC_VERSION) + " (FFmpeg " + av_version_info() + ")";
}

namespace {

std::string av_error(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(code, buf, sizeof buf);
  return buf;
}

void check_frames(const fs::path& path, const torch::Tensor& frames, Format format) {
  if (frames.dim() != 4 || frames.size(3) != 3 || frames.scalar_type() != torch::kUInt8)
    fail_file(path, "frames must be [F, H, W, 3] uint8, got " + c10::str(frames.sizes()) + " " +
                        c10::toString(frames.scalar_type()));
  if (frames.size(0) < 1) fail_file(path, "no frames to write");
  if (format != Format::Png && format != Format::PngSequence &&
      (frames.size(1) % 2 || frames.size(2) % 2))
    fail_file(path, "frame size " + std::to_string(frames.size(2)) + "x" +
                        std::to_string(frames.size(1)) + " must be even for video");
}

// ---------------------------------------------------------------- video (FFmpeg)

struct FormatContextDeleter {
  void operator()(AVFormatContext* c) const {
    if (!c) return;
    if (c->pb && !(c->oformat->flags & AVFMT_NOFILE)) avio_closep(&c->pb);
    avformat_free_context(c);
  }
};
struct CodecContextDeleter {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct FrameDeleter {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct PacketDeleter {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct SwsDeleter {
  void operator()(SwsContext* s) const { sws_freeContext(s); }
};
struct DictDeleter {
  void operator()(AVDictionary* d) const { av_dict_free(&d); }
};

void write_video(const fs::path& path, const fs::path& tmp, const torch::Tensor& frames,
                 Format format, const WriteOptions& o, const std::atomic<bool>* cancel) {
  av_log_set_level(AV_LOG_ERROR);  // the encoders' statistics are not for users
  auto check = [&](int ret, const char* what) {
    if (ret < 0) fail_file(path, std::string("FFmpeg: ") + what + ": " + av_error(ret));
  };
  const char* muxer = format == Format::WebmVp9     ? "webm"
                      : format == Format::MovProres ? "mov"
                                                    : "mp4";
  const char* encoder = format == Format::Mp4H264   ? "libx264"
                        : format == Format::Mp4H265 ? "libx265"
                        : format == Format::WebmVp9 ? "libvpx-vp9"
                                                    : "prores_ks";
  const AVPixelFormat pix =
      format == Format::MovProres ? AV_PIX_FMT_YUV422P10LE : AV_PIX_FMT_YUV420P;
  const int w = static_cast<int>(frames.size(2)), h = static_cast<int>(frames.size(1));

  AVFormatContext* raw_oc = nullptr;
  check(avformat_alloc_output_context2(&raw_oc, nullptr, muxer, tmp.c_str()),
        "cannot set up the container");
  std::unique_ptr<AVFormatContext, FormatContextDeleter> oc(raw_oc);
  const AVCodec* codec = avcodec_find_encoder_by_name(encoder);
  if (!codec) fail_file(path, std::string("this FFmpeg has no ") + encoder + " encoder");
  AVStream* st = avformat_new_stream(oc.get(), nullptr);
  if (!st) fail_file(path, "FFmpeg: cannot add a video stream");
  std::unique_ptr<AVCodecContext, CodecContextDeleter> cc(avcodec_alloc_context3(codec));
  cc->width = w;
  cc->height = h;
  cc->pix_fmt = pix;
  cc->time_base = AVRational{1, o.fps};
  cc->framerate = AVRational{o.fps, 1};
  cc->gop_size = 2 * o.fps;
  // Generated video is full-range RGB converted to BT.709 limited range.
  cc->color_primaries = AVCOL_PRI_BT709;
  cc->color_trc = AVCOL_TRC_BT709;
  cc->colorspace = AVCOL_SPC_BT709;
  cc->color_range = AVCOL_RANGE_MPEG;
  if (oc->oformat->flags & AVFMT_GLOBALHEADER) cc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  st->time_base = cc->time_base;
  st->avg_frame_rate = cc->framerate;

  AVDictionary* raw_opts = nullptr;
  const std::string crf = std::to_string(o.crf);
  switch (format) {
    case Format::Mp4H264:
      av_dict_set(&raw_opts, "crf", crf.c_str(), 0);
      av_dict_set(&raw_opts, "preset", "medium", 0);
      break;
    case Format::Mp4H265:
      av_dict_set(&raw_opts, "crf", crf.c_str(), 0);
      av_dict_set(&raw_opts, "preset", "medium", 0);
      av_dict_set(&raw_opts, "x265-params", "log-level=error", 0);
      break;
    case Format::WebmVp9:
      cc->bit_rate = 0;  // constant quality
      av_dict_set(&raw_opts, "crf", crf.c_str(), 0);
      av_dict_set(&raw_opts, "row-mt", "1", 0);
      av_dict_set(&raw_opts, "deadline", "good", 0);
      av_dict_set(&raw_opts, "cpu-used", "4", 0);
      break;
    case Format::MovProres:
      av_dict_set(&raw_opts, "profile", "3", 0);  // 422 HQ
      break;
    default:
      break;
  }
  std::unique_ptr<AVDictionary, DictDeleter> opts_guard(nullptr);
  check(avcodec_open2(cc.get(), codec, &raw_opts), "cannot open the encoder");
  opts_guard.reset(raw_opts);
  check(avcodec_parameters_from_context(st->codecpar, cc.get()),
        "cannot copy the encoder parameters");
  if (format == Format::Mp4H265) st->codecpar->codec_tag = MKTAG('h', 'v', 'c', '1');

  // The parameters: the standard comment tag, and a keyed "kinora" tag.
  av_dict_set(&oc->metadata, "comment", o.metadata_json.c_str(), 0);
  av_dict_set(&oc->metadata, "kinora", o.metadata_json.c_str(), 0);

  check(avio_open(&oc->pb, tmp.c_str(), AVIO_FLAG_WRITE), "cannot create the file");
  AVDictionary* mux_opts = nullptr;
  if (format != Format::WebmVp9) av_dict_set(&mux_opts, "movflags", "use_metadata_tags", 0);
  const int header = avformat_write_header(oc.get(), &mux_opts);
  av_dict_free(&mux_opts);
  check(header, "cannot write the header");

  std::unique_ptr<SwsContext, SwsDeleter> sws(sws_getContext(w, h, AV_PIX_FMT_RGB24, w, h, pix,
                                                             SWS_BICUBIC | SWS_ACCURATE_RND,
                                                             nullptr, nullptr, nullptr));
  if (!sws) fail_file(path, "FFmpeg: cannot set up the colour conversion");
  {
    // RGB full range → BT.709 limited range.
    const int* coef = sws_getCoefficients(SWS_CS_ITU709);
    sws_setColorspaceDetails(sws.get(), coef, 1, coef, 0, 0, 1 << 16, 1 << 16);
  }
  std::unique_ptr<AVFrame, FrameDeleter> frame(av_frame_alloc());
  frame->format = pix;
  frame->width = w;
  frame->height = h;
  check(av_frame_get_buffer(frame.get(), 0), "cannot allocate a frame");
  std::unique_ptr<AVPacket, PacketDeleter> pkt(av_packet_alloc());

  auto drain = [&](AVFrame* f) {
    check(avcodec_send_frame(cc.get(), f), "encoding failed");
    while (true) {
      const int ret = avcodec_receive_packet(cc.get(), pkt.get());
      if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return;
      check(ret, "encoding failed");
      av_packet_rescale_ts(pkt.get(), cc->time_base, st->time_base);
      pkt->stream_index = st->index;
      check(av_interleaved_write_frame(oc.get(), pkt.get()), "write failed (disk full?)");
    }
  };
  // swscale's SIMD reads a few bytes past the last pixel it converts, so each
  // frame is copied into a buffer with FFmpeg's input padding after it
  // (valgrind saw the read run past the end of the frames tensor).
  const int64_t frame_bytes = int64_t{3} * w * h;
  auto padded = torch::zeros({frame_bytes + AV_INPUT_BUFFER_PADDING_SIZE}, torch::kUInt8);
  auto padded_frame = padded.narrow(0, 0, frame_bytes).view({h, w, 3});
  for (int64_t i = 0; i < frames.size(0); ++i) {
    throw_if_cancelled(cancel);
    check(av_frame_make_writable(frame.get()), "cannot write a frame");
    padded_frame.copy_(frames[i]);
    const uint8_t* src[1] = {padded.data_ptr<uint8_t>()};
    const int stride[1] = {3 * w};
    sws_scale(sws.get(), src, stride, 0, h, frame->data, frame->linesize);
    frame->pts = i;
    drain(frame.get());
  }
  drain(nullptr);
  check(av_write_trailer(oc.get()), "write failed (disk full?)");
  check(avio_closep(&oc->pb), "write failed (disk full?)");
}

// ---------------------------------------------------------------- PNG (libpng)

// Plain C-style function: libpng reports errors by longjmp, so nothing with a
// destructor may live across setjmp here. Returns "" or the error.
std::string write_png_file(const char* file, const uint8_t* rgb, int w, int h,
                           const std::string& parameters, const std::string& json) {
  std::FILE* f = std::fopen(file, "wb");
  if (!f) return "cannot create the file";
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::fclose(f);
    return "write failed (disk full?)";
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, static_cast<png_uint_32>(w), static_cast<png_uint_32>(h), 8,
               PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_text text[2] = {};
  int n = 0;
  char key_params[] = "parameters", key_kinora[] = "kinora", empty[] = "";
  if (!parameters.empty()) {
    text[n].compression = PNG_ITXT_COMPRESSION_NONE;  // UTF-8 text (prompts are not Latin-1)
    text[n].key = key_params;
    text[n].text = const_cast<char*>(parameters.c_str());
    text[n].lang = empty;
    text[n].lang_key = empty;
    ++n;
  }
  if (!json.empty()) {
    text[n].compression = PNG_ITXT_COMPRESSION_NONE;
    text[n].key = key_kinora;
    text[n].text = const_cast<char*>(json.c_str());
    text[n].lang = empty;
    text[n].lang_key = empty;
    ++n;
  }
  if (n) png_set_text(png, info, text, n);
  png_write_info(png, info);
  for (int y = 0; y < h; ++y)
    png_write_row(png, const_cast<png_bytep>(rgb + static_cast<std::size_t>(y) * 3 * w));
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  const bool ok = std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  return std::fclose(f) == 0 && ok ? "" : "write failed (disk full?)";
}

void write_png(const fs::path& path, const fs::path& tmp, const torch::Tensor& frame,
               const WriteOptions& o) {
  const auto rgb = frame.contiguous();
  const auto err =
      write_png_file(tmp.c_str(), rgb.data_ptr<uint8_t>(), static_cast<int>(rgb.size(1)),
                     static_cast<int>(rgb.size(0)), o.parameters_text, o.metadata_json);
  if (!err.empty()) fail_file(path, err);
}

// Text chunks of a PNG file: keyword → text (tEXt and uncompressed iTXt).
std::map<std::string, std::string> png_text_chunks(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::string data((std::istreambuf_iterator<char>(f)), {});
  if (data.size() < 8 || data.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0)
    fail_file(path, "not a PNG file");
  std::map<std::string, std::string> out;
  std::size_t pos = 8;
  while (pos + 12 <= data.size()) {
    const auto* b = reinterpret_cast<const unsigned char*>(data.data() + pos);
    const std::size_t len =
        (std::size_t{b[0]} << 24) | (std::size_t{b[1]} << 16) | (std::size_t{b[2]} << 8) | b[3];
    const std::string type = data.substr(pos + 4, 4);
    if (pos + 12 + len > data.size()) break;
    const std::string body = data.substr(pos + 8, len);
    const auto nul = body.find('\0');
    if (nul != std::string::npos && type == "tEXt") {
      out[body.substr(0, nul)] = body.substr(nul + 1);
    } else if (nul != std::string::npos && type == "iTXt" && nul + 2 < body.size() &&
               body[nul + 1] == 0) {
      // keyword \0 compression-flag method language \0 translated \0 text
      const auto lang_end = body.find('\0', nul + 3);
      const auto trans_end =
          lang_end == std::string::npos ? lang_end : body.find('\0', lang_end + 1);
      if (trans_end != std::string::npos) out[body.substr(0, nul)] = body.substr(trans_end + 1);
    }
    if (type == "IEND") break;
    pos += 12 + len;
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------- public

namespace {

// Only frame_NNNNN.png and kinora.json: a PNG sequence Kinora wrote.
bool is_kinora_png_sequence(const fs::path& dir) {
  std::error_code ec;
  bool any = false;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const auto name = e.path().filename().string();
    const bool frame = name.size() == 15 && name.rfind("frame_", 0) == 0 &&
                       name.compare(11, 4, ".png") == 0 &&
                       std::all_of(name.begin() + 6, name.begin() + 11, ::isdigit);
    if (!e.is_regular_file(ec) || !(frame || name == "kinora.json")) return false;
    any = true;
  }
  return !ec && any;
}

bool is_empty_folder(const fs::path& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && fs::is_empty(dir, ec) && !ec;
}

}  // namespace

OutputTarget prepare_output(const fs::path& path, const std::string& format, int64_t frames,
                            bool overwrite) {
  OutputTarget t;
  t.path = path;
  t.overwrite = overwrite;
  t.format = output_format(path, format, frames);
  const fs::path folder = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  std::error_code ec;
  if (!fs::is_directory(folder, ec))
    fail_file(path, "the folder " + folder.string() + " does not exist");
  if (::access(folder.c_str(), W_OK) != 0)
    fail_file(path, "the folder " + folder.string() + " is not writable");
  if (t.format == Format::PngSequence) {
    const auto st = fs::symlink_status(path, ec);
    if (fs::exists(st)) {
      if (!fs::is_directory(st))
        fail_file(path, "exists and is not a folder; a PNG sequence needs a new or empty folder");
      if (!is_empty_folder(path)) {
        if (!overwrite)
          fail_file(path,
                    "is a folder that is not empty; a PNG sequence goes into a new or empty "
                    "folder (nothing was changed)");
        if (!is_kinora_png_sequence(path))
          fail_file(path,
                    "holds files other than a Kinora PNG sequence; not replaced, even with "
                    "--overwrite");
      }
    }
  } else {
    check_can_write_file(path, overwrite);
    const auto side = t.sidecar();
    if (fs::exists(fs::symlink_status(side, ec)) && !is_kinora_sidecar(side))
      fail_file(path, "its parameters would go to " + side.string() +
                          ", which exists and is not a Kinora parameters file; move it or name "
                          "another output");
  }
  remove_stale_temporaries(folder);
  return t;
}

void write_output(const OutputTarget& t, const torch::Tensor& frames, const WriteOptions& o,
                  const std::atomic<bool>* cancel) {
  const fs::path& path = t.path;
  check_frames(path, frames, t.format);
  if (o.fps < 1 || o.fps > 240)
    fail_file(path, "fps must be between 1 and 240, got " + std::to_string(o.fps));
  ScopedTemp tmp(path);
  switch (t.format) {
    case Format::Png:
      write_png(path, tmp.path(), frames[0], o);
      break;
    case Format::PngSequence: {
      fs::create_directories(tmp.path());
      for (int64_t i = 0; i < frames.size(0); ++i) {
        throw_if_cancelled(cancel);
        char name[32];
        std::snprintf(name, sizeof name, "frame_%05lld.png", static_cast<long long>(i + 1));
        WriteOptions frame_opts = o;
        if (i)
          frame_opts.parameters_text.clear(), frame_opts.metadata_json.clear();  // once is enough
        write_png(path, tmp.path() / name, frames[i], frame_opts);
      }
      write_file_atomically(tmp.path() / "kinora.json", o.metadata_json + "\n");
      break;
    }
    default:
      write_video(path, tmp.path(), frames, t.format, o, cancel);
  }
  throw_if_cancelled(cancel);
  // The sidecar's temporary is complete too before either moves into place.
  const auto side = t.sidecar();
  std::optional<ScopedTemp> side_tmp;
  if (!side.empty() && !o.metadata_json.empty()) {
    side_tmp.emplace(side);
    write_file_atomically(side_tmp->path(), o.metadata_json + "\n");
  }
  if (t.format == Format::PngSequence) {
    // An empty folder is replaced by rename itself (it fails if the folder
    // filled meanwhile); a Kinora PNG sequence, with overwrite, is moved aside
    // first and removed once the new one is in place.
    std::error_code ec;
    std::optional<ScopedTemp> aside;
    if (t.overwrite && fs::is_directory(path, ec) && !is_empty_folder(path) &&
        is_kinora_png_sequence(path)) {
      aside.emplace(path.parent_path() / (path.filename().string() + ".old"));
      fs::rename(path, aside->path(), ec);
      if (ec) fail_file(path, "cannot move the old PNG sequence aside: " + ec.message());
    }
    try {
      tmp.commit(/*replace=*/is_empty_folder(path));
    } catch (...) {
      if (aside) fs::rename(aside->path(), path, ec);  // the old one back
      throw;
    }
  } else {
    tmp.commit(t.overwrite);
    if (side_tmp) {
      try {
        side_tmp->commit(/*replace=*/true);  // prepare_output: at most an earlier sidecar
      } catch (...) {
        std::error_code ec;
        fs::remove(path, ec);  // together or not at all
        throw;
      }
    }
  }
}

bool is_kinora_parameters(const nlohmann::json& j) {
  return j.is_object() && j.contains("kinora") && j["kinora"].is_object() && j.contains("preset") &&
         j["preset"].is_object();
}

bool is_kinora_sidecar(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec) || fs::file_size(path, ec) > (1u << 20)) return false;
  try {
    return is_kinora_parameters(read_json_file(path));
  } catch (const Error&) {
    return false;
  }
}

nlohmann::json read_embedded_parameters(const fs::path& path) {
  std::error_code ec;
  auto parsed = [&](const std::string& text, const std::string& where) {
    const auto j = parse_json(text, path.string() + " (" + where + ")");
    if (!is_kinora_parameters(j))
      fail_file(path, "holds no Kinora parameters (its " + where + " is other JSON)");
    return j;
  };
  if (fs::is_directory(path, ec)) {
    if (!fs::exists(path / "kinora.json", ec))
      fail_file(path, "holds no Kinora parameters (a folder without kinora.json)");
    auto j = read_json_file(path / "kinora.json");
    if (!is_kinora_parameters(j)) fail_file(path, "holds no Kinora parameters (its kinora.json)");
    return j;
  }
  if (!fs::exists(path, ec)) fail_file(path, "no such file");
  const auto ext = lower(path.extension().string());
  if (ext == ".json") {
    auto j = read_json_file(path);
    if (!is_kinora_parameters(j))
      fail_file(path, "holds no Kinora parameters (a preset is rendered, not restored)");
    return j;
  }
  if (ext == ".png") {
    const auto chunks = png_text_chunks(path);
    const auto it = chunks.find("kinora");
    if (it == chunks.end()) fail_file(path, "holds no Kinora parameters (no \"kinora\" text)");
    return parsed(it->second, "\"kinora\" text");
  }
  AVFormatContext* ic = nullptr;
  const int ret = avformat_open_input(&ic, path.c_str(), nullptr, nullptr);
  if (ret < 0) fail_file(path, "not a video FFmpeg can read: " + av_error(ret));
  std::string kinora, comment;
  if (const AVDictionaryEntry* e = av_dict_get(ic->metadata, "kinora", nullptr, 0))
    kinora = e->value;
  if (const AVDictionaryEntry* e = av_dict_get(ic->metadata, "comment", nullptr, 0))
    comment = e->value;
  avformat_close_input(&ic);
  if (!kinora.empty()) return parsed(kinora, "\"kinora\" tag");
  if (comment.empty()) fail_file(path, "holds no Kinora parameters (no \"kinora\" or comment tag)");
  const bool looks_like_json = comment.find_first_not_of(" \t\r\n") != std::string::npos &&
                               comment[comment.find_first_not_of(" \t\r\n")] == '{';
  if (!looks_like_json) fail_file(path, "holds no Kinora parameters (its comment is other text)");
  return parsed(comment, "comment");
}

}  // namespace kinora::media
