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

#include <csetjmp>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "base/error.h"
#include "base/files.h"

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

Format format_for_path(const fs::path& p) {
  const auto ext = p.extension().string();
  if (ext == ".mp4") return Format::Mp4H264;
  if (ext == ".webm") return Format::WebmVp9;
  if (ext == ".mov") return Format::MovProres;
  if (ext == ".png") return Format::Png;
  if (ext.empty()) return Format::PngSequence;
  throw Error(p.string() + ": unknown output extension '" + ext +
              "' (.mp4, .webm, .mov, .png, or a folder)");
}

std::string sidecar_path(const fs::path& output) {
  fs::path p = output;
  if (p.filename().empty()) p = p.parent_path();  // "out/" → "out"
  return p.replace_extension(".json").string();
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

struct Cancelled {};

void check_frames(const fs::path& path, const torch::Tensor& frames) {
  if (frames.dim() != 4 || frames.size(3) != 3 || frames.scalar_type() != torch::kUInt8)
    fail_file(path, "frames must be [F, H, W, 3] uint8, got " + c10::str(frames.sizes()) + " " +
                        c10::toString(frames.scalar_type()));
  if (frames.size(0) < 1) fail_file(path, "no frames to write");
  if (frames.size(1) % 2 || frames.size(2) % 2)
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
                 const WriteOptions& o, const std::atomic<bool>* cancel) {
  av_log_set_level(AV_LOG_ERROR);  // the encoders' statistics are not for users
  auto check = [&](int ret, const char* what) {
    if (ret < 0) fail_file(path, std::string("FFmpeg: ") + what + ": " + av_error(ret));
  };
  const char* muxer = o.format == Format::WebmVp9     ? "webm"
                      : o.format == Format::MovProres ? "mov"
                                                      : "mp4";
  const char* encoder = o.format == Format::Mp4H264   ? "libx264"
                        : o.format == Format::Mp4H265 ? "libx265"
                        : o.format == Format::WebmVp9 ? "libvpx-vp9"
                                                      : "prores_ks";
  const AVPixelFormat pix =
      o.format == Format::MovProres ? AV_PIX_FMT_YUV422P10LE : AV_PIX_FMT_YUV420P;
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
  switch (o.format) {
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
  if (o.format == Format::Mp4H265) st->codecpar->codec_tag = MKTAG('h', 'v', 'c', '1');

  // The parameters: the standard comment tag, and a keyed "kinora" tag.
  av_dict_set(&oc->metadata, "comment", o.metadata_json.c_str(), 0);
  av_dict_set(&oc->metadata, "kinora", o.metadata_json.c_str(), 0);

  check(avio_open(&oc->pb, tmp.c_str(), AVIO_FLAG_WRITE), "cannot create the file");
  AVDictionary* mux_opts = nullptr;
  if (o.format != Format::WebmVp9) av_dict_set(&mux_opts, "movflags", "use_metadata_tags", 0);
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
    if (cancel && cancel->load()) throw Cancelled{};
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

void write_output(const fs::path& path, const torch::Tensor& frames, const WriteOptions& o,
                  const std::atomic<bool>* cancel) {
  check_frames(path, frames);
  if (o.fps < 1 || o.fps > 240)
    fail_file(path, "fps must be between 1 and 240, got " + std::to_string(o.fps));
  const fs::path tmp = temp_beside(path);
  auto cleanup = [&] {
    std::error_code ec;
    fs::remove_all(tmp, ec);
  };
  try {
    switch (o.format) {
      case Format::Png:
        write_png(path, tmp, frames[0], o);
        break;
      case Format::PngSequence: {
        fs::create_directories(tmp);
        for (int64_t i = 0; i < frames.size(0); ++i) {
          if (cancel && cancel->load()) throw Cancelled{};
          char name[32];
          std::snprintf(name, sizeof name, "frame_%05lld.png", static_cast<long long>(i + 1));
          WriteOptions frame_opts = o;
          if (i)
            frame_opts.parameters_text.clear(), frame_opts.metadata_json.clear();  // once is enough
          write_png(path, tmp / name, frames[i], frame_opts);
        }
        write_file_atomically(tmp / "kinora.json", o.metadata_json);
        break;
      }
      default:
        write_video(path, tmp, frames, o, cancel);
    }
  } catch (const Cancelled&) {
    cleanup();
    throw Error(path.string() + ": cancelled; nothing was written");
  } catch (...) {
    cleanup();
    throw;
  }
  std::error_code ec;
  if (o.format == Format::PngSequence && fs::exists(path)) fs::remove_all(path, ec);
  fs::rename(tmp, path, ec);
  if (ec) {
    cleanup();
    fail_file(path, "cannot move the finished output into place: " + ec.message());
  }
  if (!o.metadata_json.empty()) write_file_atomically(sidecar_path(path), o.metadata_json + "\n");
}

std::string read_embedded_json(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    std::ifstream f(path / "kinora.json");
    if (!f) fail_file(path, "not a Kinora PNG sequence (no kinora.json)");
    return std::string((std::istreambuf_iterator<char>(f)), {});
  }
  if (!fs::exists(path, ec)) fail_file(path, "no such file");
  if (path.extension() == ".png") {
    const auto chunks = png_text_chunks(path);
    const auto it = chunks.find("kinora");
    if (it == chunks.end()) fail_file(path, "this PNG holds no Kinora parameters");
    return it->second;
  }
  AVFormatContext* ic = nullptr;
  const int ret = avformat_open_input(&ic, path.c_str(), nullptr, nullptr);
  if (ret < 0) fail_file(path, "not a video FFmpeg can read: " + av_error(ret));
  std::string json;
  for (const char* key : {"kinora", "comment"}) {
    if (const AVDictionaryEntry* e = av_dict_get(ic->metadata, key, nullptr, 0); e && json.empty())
      json = e->value;
  }
  avformat_close_input(&ic);
  if (json.empty()) fail_file(path, "this video holds no Kinora parameters");
  return json;
}

}  // namespace kinora::media
