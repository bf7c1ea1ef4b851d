// Decoding outputs back to frames (the app's player fallback, thumbnails, tests).
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libswscale/swscale.h>
}

#include <memory>

#include "base/error.h"
#include "media/output.h"

namespace kinora::media {
namespace fs = std::filesystem;

namespace {
std::string av_message(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(code, buf, sizeof buf);
  return buf;
}
}  // namespace

torch::Tensor read_frames(const fs::path& path, int64_t max_frames) {
  av_log_set_level(AV_LOG_QUIET);  // errors come back as messages naming the file
  AVFormatContext* raw = nullptr;
  if (int rc = avformat_open_input(&raw, path.c_str(), nullptr, nullptr); rc < 0)
    fail_file(path, "cannot open: " + av_message(rc));
  std::unique_ptr<AVFormatContext, void (*)(AVFormatContext*)> fmt(
      raw, [](AVFormatContext* c) { avformat_close_input(&c); });
  if (int rc = avformat_find_stream_info(fmt.get(), nullptr); rc < 0)
    fail_file(path, "cannot read the streams: " + av_message(rc));
  const AVCodec* codec = nullptr;
  const int stream = av_find_best_stream(fmt.get(), AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
  if (stream < 0 || !codec) fail_file(path, "no video or image stream");
  std::unique_ptr<AVCodecContext, void (*)(AVCodecContext*)> dec(
      avcodec_alloc_context3(codec), [](AVCodecContext* c) { avcodec_free_context(&c); });
  avcodec_parameters_to_context(dec.get(), fmt->streams[stream]->codecpar);
  if (int rc = avcodec_open2(dec.get(), codec, nullptr); rc < 0)
    fail_file(path, "cannot open the decoder: " + av_message(rc));
  std::unique_ptr<AVPacket, void (*)(AVPacket*)> pkt(av_packet_alloc(),
                                                     [](AVPacket* p) { av_packet_free(&p); });
  std::unique_ptr<AVFrame, void (*)(AVFrame*)> frame(av_frame_alloc(),
                                                     [](AVFrame* f) { av_frame_free(&f); });
  std::unique_ptr<SwsContext, void (*)(SwsContext*)> sws(nullptr, sws_freeContext);
  std::vector<torch::Tensor> frames;
  auto drain = [&]() {
    while (avcodec_receive_frame(dec.get(), frame.get()) == 0) {
      const int w = frame->width, h = frame->height;
      sws.reset(sws_getCachedContext(sws.release(), w, h, static_cast<AVPixelFormat>(frame->format),
                                     w, h, AV_PIX_FMT_RGB24, SWS_BICUBIC, nullptr, nullptr,
                                     nullptr));
      if (!sws) fail_file(path, "cannot convert the decoded frames to RGB");
      // The colour matrix the file is tagged with (Kinora writes BT.709).
      const int* coeffs = sws_getCoefficients(
          frame->colorspace == AVCOL_SPC_BT709 ? SWS_CS_ITU709 : SWS_CS_DEFAULT);
      sws_setColorspaceDetails(sws.get(), coeffs, frame->color_range == AVCOL_RANGE_JPEG, coeffs, 1,
                               0, 1 << 16, 1 << 16);
      // swscale's SIMD writes a few bytes past the last pixel (valgrind: an
      // invalid write 0 and 8 bytes after a 24-pixel-wide frame), so it
      // writes into a buffer with room after it; stack() below copies out.
      const int64_t bytes = int64_t{3} * w * h;
      auto buffer = torch::empty({bytes + 64}, torch::kUInt8);
      uint8_t* dst[1] = {buffer.data_ptr<uint8_t>()};
      const int stride[1] = {3 * w};
      sws_scale(sws.get(), frame->data, frame->linesize, 0, h, dst, stride);
      frames.push_back(buffer.narrow(0, 0, bytes).view({h, w, 3}));
      av_frame_unref(frame.get());
      if (max_frames > 0 && static_cast<int64_t>(frames.size()) >= max_frames) return true;
    }
    return false;
  };
  bool done = false;
  while (!done && av_read_frame(fmt.get(), pkt.get()) >= 0) {
    if (pkt->stream_index == stream) {
      avcodec_send_packet(dec.get(), pkt.get());
      done = drain();
    }
    av_packet_unref(pkt.get());
  }
  if (!done) {
    avcodec_send_packet(dec.get(), nullptr);
    drain();
  }
  if (frames.empty()) fail_file(path, "no frame could be decoded");
  return torch::stack(frames);
}

}  // namespace kinora::media
