// Video through FFmpeg: writing MP4 / WebM / MOV (libavformat, libavcodec,
// libswscale), and reading a container's tags.
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/cpu.h>
#include <libavutil/dict.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}

#include <memory>

#include "base/error.h"
#include "media/codecs.h"

namespace kinora::media {
namespace fs = std::filesystem;

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

}  // namespace

namespace codecs {

bool available() {
  return true;
}

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
  // The Matroska muxer draws its track and segment UIDs at random; bit-exact
  // it numbers them, so the same frames make the same file. (MP4 and MOV are
  // reproducible already, and keep their bytes: the flag would drop the
  // muxer's name and version they record.)
  if (format == Format::WebmVp9) oc->flags |= AVFMT_FLAG_BITEXACT;
  const AVCodec* codec = avcodec_find_encoder_by_name(encoder);
  if (!codec) fail_file(path, std::string("this FFmpeg has no ") + encoder + " encoder");
  AVStream* st = avformat_new_stream(oc.get(), nullptr);
  if (!st) fail_file(path, "FFmpeg: cannot add a video stream");
  std::unique_ptr<AVCodecContext, CodecContextDeleter> cc(avcodec_alloc_context3(codec));
  cc->width = w;
  cc->height = h;
  cc->pix_fmt = pix;
  cc->time_base = AVRational{1, o.fps};
  // One encoder thread: x264 with the frame threads libavcodec picks by itself
  // wrote different streams for the same frames depending on what the process
  // encoded before; one thread makes an output a function of its frames.
  cc->thread_count = 1;
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
      // x264's AVX-512 code reads memory it has not written: the stream then
      // depends on what the process's heap held before (up to 36 levels apart
      // once decoded, for the same frames). Its AVX2 code does not, and gives
      // the same stream as its plain C.
      if (const int cpu = av_get_cpu_flags();
          (cpu & AV_CPU_FLAG_AVX512) && (cpu & AV_CPU_FLAG_FMA3) && (cpu & AV_CPU_FLAG_BMI2))
        av_dict_set(&raw_opts, "x264-params", "asm=AVX2", 0);  // which implies FMA3, BMI2
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

std::pair<std::string, std::string> container_tags(const fs::path& path) {
  av_log_set_level(AV_LOG_QUIET);  // a file that is not a video says so in our message
  AVFormatContext* ic = nullptr;
  const int ret = avformat_open_input(&ic, path.c_str(), nullptr, nullptr);
  if (ret < 0) fail_file(path, "not a video FFmpeg can read: " + av_error(ret));
  std::pair<std::string, std::string> tags;
  if (const AVDictionaryEntry* e = av_dict_get(ic->metadata, "kinora", nullptr, 0))
    tags.first = e->value;
  if (const AVDictionaryEntry* e = av_dict_get(ic->metadata, "comment", nullptr, 0))
    tags.second = e->value;
  avformat_close_input(&ic);
  return tags;
}

}  // namespace codecs
}  // namespace kinora::media
