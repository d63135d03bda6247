#include "video/video.h"

#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <utility>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>
#include <spdlog/spdlog.h>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/error.h>
#include <libavutil/frame.h>
#include <libavutil/log.h>
#include <libavutil/mathematics.h>
#include <libavutil/rational.h>
#include <libswscale/swscale.h>
}

namespace kadr::video {
namespace {

constexpr double kDefaultFps = 25.0;
constexpr int kMaxSide = 16384;

bool Is(std::span<const std::uint8_t> b, std::size_t at, const char* text) {
  const std::size_t n = std::strlen(text);
  return b.size() >= at + n && std::memcmp(b.data() + at, text, n) == 0;
}

std::string Reason(const cv::Exception& e) { return e.what(); }

}  // namespace

std::optional<std::string_view> SniffVideo(std::span<const std::uint8_t> head) {
  if (head.size() >= 4 && head[0] == 0x1A && head[1] == 0x45 && head[2] == 0xDF &&
      head[3] == 0xA3) {
    return "mkv";
  }
  if (Is(head, 0, "RIFF") && Is(head, 8, "AVI ")) return "avi";
  if (Is(head, 4, "ftyp")) {
    // The major brand says QuickTime or ISO; "heic"/"avif"-style image brands are images.
    if (Is(head, 8, "qt  ")) return "mov";
    if (Is(head, 8, "heic") || Is(head, 8, "heix") || Is(head, 8, "mif1") || Is(head, 8, "msf1") ||
        Is(head, 8, "avif") || Is(head, 8, "avis")) {
      return std::nullopt;
    }
    return "mp4";
  }
  // Old QuickTime files start with an atom other than ftyp.
  if (Is(head, 4, "moov") || Is(head, 4, "mdat") || Is(head, 4, "wide")) return "mov";
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// ProbeVideo

namespace {

// SniffVideo of the file's first bytes. kNotFound when it is not a regular file.
Result<std::optional<std::string_view>> SniffVideoFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return NotFoundError("no such file " + path);
  std::uint8_t head[16] = {};
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(head), sizeof(head));
  const auto head_size = static_cast<std::size_t>(std::max<std::streamsize>(0, in.gcount()));
  return SniffVideo(std::span<const std::uint8_t>(head, head_size));
}

}  // namespace

Result<VideoProbe> ProbeVideo(const std::string& path) {
  ASSIGN_OR_RETURN(const auto sniffed, SniffVideoFile(path));
  if (!sniffed) {
    return UnsupportedError("not a video: MP4, MOV, MKV, WebM and AVI are accepted");
  }
  VideoProbe probe;
  probe.container = *sniffed;
  AVDictionary* options = nullptr;
  av_dict_set(&options, "format_whitelist", "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi", 0);
  av_dict_set(&options, "protocol_whitelist", "file", 0);
  AVFormatContext* ctx = nullptr;
  const int opened = avformat_open_input(&ctx, ("file:" + path).c_str(), nullptr, &options);
  av_dict_free(&options);
  if (opened < 0) {
    return InvalidArgumentError("the " + std::string(*sniffed) +
                                " file cannot be opened: truncated or damaged (its index or "
                                "headers are missing)");
  }
  const AVStream* stream = nullptr;
  for (unsigned i = 0; i < ctx->nb_streams; ++i) {
    if (ctx->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_VIDEO) {
      stream = ctx->streams[i];
      break;
    }
  }
  if (stream != nullptr) {
    probe.width = stream->codecpar->width;
    probe.height = stream->codecpar->height;
    const AVRational rate =
        stream->avg_frame_rate.num > 0 ? stream->avg_frame_rate : stream->r_frame_rate;
    if (rate.num > 0 && rate.den > 0) probe.fps = av_q2d(rate);
    if (stream->duration > 0 && stream->time_base.den > 0) {
      probe.duration_s = static_cast<double>(stream->duration) * av_q2d(stream->time_base);
    } else if (ctx->duration > 0) {
      probe.duration_s = static_cast<double>(ctx->duration) / AV_TIME_BASE;
    }
    probe.frames = stream->nb_frames;
    if (probe.frames <= 0 && probe.duration_s > 0 && probe.fps > 0) {
      probe.frames = std::llround(probe.duration_s * probe.fps);
    }
    if (probe.duration_s <= 0 && probe.frames > 0 && probe.fps > 0) {
      probe.duration_s = static_cast<double>(probe.frames) / probe.fps;
    }
  }
  avformat_close_input(&ctx);
  if (stream == nullptr) {
    return InvalidArgumentError("the " + std::string(*sniffed) +
                                " file has no video stream: truncated or damaged, or sound only");
  }
  if (probe.width <= 0 || probe.height <= 0) {
    return InvalidArgumentError("the " + std::string(*sniffed) +
                                " file's headers do not state its frame size");
  }
  return probe;
}

// ---------------------------------------------------------------------------------------------
// VideoFileReader

struct VideoFileReader::State {
  cv::VideoCapture capture;
  cv::Mat first;  // decoded by Open, returned by the first Read
  bool first_pending = true;
  double fps = kDefaultFps;
  std::int64_t frame_count = 0;
  std::string_view container = "video";
};

VideoFileReader::VideoFileReader(std::unique_ptr<State> state) : state_(std::move(state)) {}
VideoFileReader::VideoFileReader(VideoFileReader&&) noexcept = default;
VideoFileReader& VideoFileReader::operator=(VideoFileReader&&) noexcept = default;
VideoFileReader::~VideoFileReader() = default;

Result<VideoFileReader> VideoFileReader::Open(const std::string& path) {
  ASSIGN_OR_RETURN(const auto sniffed, SniffVideoFile(path));

  auto state = std::make_unique<State>();
  if (sniffed) state->container = *sniffed;
  try {
    if (!state->capture.open(path, cv::CAP_FFMPEG) || !state->capture.isOpened()) {
      if (sniffed) {
        return InvalidArgumentError("the " + std::string(*sniffed) +
                                    " file cannot be opened: truncated or damaged (its index "
                                    "or headers are missing)");
      }
      return UnsupportedError(
          "not a video: FFmpeg recognises no video stream in it (MP4, MOV, MKV and AVI are "
          "accepted)");
    }
    if (!state->capture.read(state->first) || state->first.empty()) {
      return InvalidArgumentError("the " + std::string(state->container) +
                                  " file has no decodable frame (truncated or damaged)");
    }
    const double fps = state->capture.get(cv::CAP_PROP_FPS);
    if (std::isfinite(fps) && fps > 0 && fps <= 1000) state->fps = fps;
    const double count = state->capture.get(cv::CAP_PROP_FRAME_COUNT);
    if (std::isfinite(count) && count > 0) state->frame_count = std::llround(count);
  } catch (const cv::Exception& e) {
    return InternalError("cannot read the video: " + Reason(e));
  }
  if (state->first.type() != CV_8UC3) {
    cv::Mat bgr;
    if (state->first.channels() == 1) {
      cv::cvtColor(state->first, bgr, cv::COLOR_GRAY2BGR);
    } else if (state->first.channels() == 4) {
      cv::cvtColor(state->first, bgr, cv::COLOR_BGRA2BGR);
    } else {
      return InvalidArgumentError("the video's frames are not 8-bit colour or gray");
    }
    state->first = bgr;
  }
  return VideoFileReader(std::move(state));
}

Result<bool> VideoFileReader::Read(cv::Mat& bgr) {
  if (state_->first_pending) {
    state_->first_pending = false;
    bgr = std::move(state_->first);
    state_->first = cv::Mat();
    return true;
  }
  try {
    cv::Mat frame;
    if (!state_->capture.read(frame) || frame.empty()) return false;
    if (frame.type() == CV_8UC3) {
      bgr = std::move(frame);
    } else if (frame.channels() == 1) {
      cv::cvtColor(frame, bgr, cv::COLOR_GRAY2BGR);
    } else if (frame.channels() == 4) {
      cv::cvtColor(frame, bgr, cv::COLOR_BGRA2BGR);
    } else {
      return InternalError("decoded frame of unexpected type " + std::to_string(frame.type()));
    }
    return true;
  } catch (const cv::Exception& e) {
    return InternalError("cannot decode the next frame: " + Reason(e));
  }
}

double VideoFileReader::fps() const { return state_->fps; }
std::int64_t VideoFileReader::frame_count() const { return state_->frame_count; }
int VideoFileReader::width() const {
  return state_->first_pending ? state_->first.cols
                               : static_cast<int>(state_->capture.get(cv::CAP_PROP_FRAME_WIDTH));
}
int VideoFileReader::height() const {
  return state_->first_pending ? state_->first.rows
                               : static_cast<int>(state_->capture.get(cv::CAP_PROP_FRAME_HEIGHT));
}
std::string_view VideoFileReader::container() const { return state_->container; }

// ---------------------------------------------------------------------------------------------
// Mp4Writer: libx264 through libavcodec, muxed by libavformat's mp4 muxer (see README.md for why
// not cv::VideoWriter: OpenCV 4.6 passes no encoder options, so x264 ran its slow default preset).

namespace {

// x264's speed/size trade-off; see README.md for the CPU per frame of each candidate.
constexpr const char* kX264Preset = "veryfast";
constexpr const char* kX264Crf = "23";

std::string AvError(int err) {
  char text[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(err, text, sizeof(text));
  return text;
}

// libx264 prints its statistics at AV_LOG_INFO on every close; keep FFmpeg to errors unless the
// process asked for less (OpenCV's backend does the same when it starts).
void QuietFfmpegLog() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (av_log_get_level() > AV_LOG_ERROR) av_log_set_level(AV_LOG_ERROR);
  });
}

}  // namespace

struct Mp4Writer::State {
  std::string path;
  cv::Size size;
  std::int64_t written = 0;
  bool closed = false;

  AVFormatContext* format = nullptr;  // owns the AVStream and, once opened, `format->pb`
  AVStream* stream = nullptr;
  AVCodecContext* encoder = nullptr;
  AVFrame* frame = nullptr;  // the YUV 4:2:0 picture handed to the encoder, reused
  AVPacket* packet = nullptr;
  SwsContext* sws = nullptr;  // BGR24 -> YUV420P at size, reused

  State() = default;
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() { Free(); }

  // Releases every FFmpeg object (closing the file if still open); safe to call twice.
  void Free() {
    sws_freeContext(sws);
    sws = nullptr;
    av_packet_free(&packet);
    av_frame_free(&frame);
    avcodec_free_context(&encoder);
    if (format != nullptr) {
      if (format->pb != nullptr) avio_closep(&format->pb);
      avformat_free_context(format);
      format = nullptr;
      stream = nullptr;
    }
  }

  // Moves every packet the encoder has ready into the file; at the end of the stream (after a
  // null frame was sent) drains it completely.
  Status Drain() {
    while (true) {
      const int err = avcodec_receive_packet(encoder, packet);
      if (err == AVERROR(EAGAIN) || err == AVERROR_EOF) return Status::Ok();
      if (err < 0) return InternalError("H.264 encoder failed: " + AvError(err));
      // One frame per packet: every frame lasts one tick of 1/fps, so the container's
      // duration, and with it ffprobe's avg_frame_rate, is exactly frames / fps.
      if (packet->duration <= 0) packet->duration = 1;
      av_packet_rescale_ts(packet, encoder->time_base, stream->time_base);
      packet->stream_index = stream->index;
      const int wrote = av_interleaved_write_frame(format, packet);  // takes the packet's data
      if (wrote < 0) {
        return InternalError("cannot write to the MP4 " + path + ": " + AvError(wrote));
      }
    }
  }

  // Flushes the encoder, writes the index in front of the data (faststart) and closes the file.
  Status Finish() {
    int err = avcodec_send_frame(encoder, nullptr);  // end of stream
    if (err < 0) return InternalError("cannot flush the H.264 encoder: " + AvError(err));
    RETURN_IF_ERROR(Drain());
    err = av_write_trailer(format);
    if (err < 0) return InternalError("cannot finish the MP4 " + path + ": " + AvError(err));
    err = avio_closep(&format->pb);
    if (err < 0) return UnavailableError("cannot close the MP4 " + path + ": " + AvError(err));
    return Status::Ok();
  }
};

Mp4Writer::Mp4Writer(std::unique_ptr<State> state) : state_(std::move(state)) {}
Mp4Writer::Mp4Writer(Mp4Writer&&) noexcept = default;
Mp4Writer& Mp4Writer::operator=(Mp4Writer&& other) noexcept {
  if (this != &other) {
    if (state_ && !state_->closed) (void)Close();
    state_ = std::move(other.state_);
  }
  return *this;
}

Mp4Writer::~Mp4Writer() {
  if (state_ && !state_->closed) {
    if (Status s = Close(); !s.ok()) {
      spdlog::warn("mp4 writer close failed path={} error=\"{}\"", state_->path, s.ToString());
    }
  }
}

Result<Mp4Writer> Mp4Writer::Open(const std::string& path, double fps, cv::Size size) {
  if (!std::isfinite(fps) || fps <= 0 || fps > 1000) {
    return InvalidArgumentError("mp4 frame rate must be in (0, 1000], got " + std::to_string(fps));
  }
  if (size.width < 2 || size.height < 2 || size.width > kMaxSide || size.height > kMaxSide) {
    return InvalidArgumentError("mp4 frame size " + std::to_string(size.width) + "x" +
                                std::to_string(size.height) + " is out of 2..16384");
  }
  size.width &= ~1;
  size.height &= ~1;
  QuietFfmpegLog();
  auto state = std::make_unique<State>();
  state->path = path;
  state->size = size;

  const AVCodec* codec = avcodec_find_encoder_by_name("libx264");
  const bool x264 = codec != nullptr;
  if (codec == nullptr) codec = avcodec_find_encoder(AV_CODEC_ID_H264);
  if (codec == nullptr) {
    return UnavailableError("cannot create the MP4 " + path +
                            ": this FFmpeg has no H.264 encoder (install libx264)");
  }
  if (codec->pix_fmts != nullptr) {
    bool yuv420p = false;
    for (const AVPixelFormat* f = codec->pix_fmts; *f != AV_PIX_FMT_NONE; ++f) {
      yuv420p = yuv420p || *f == AV_PIX_FMT_YUV420P;
    }
    if (!yuv420p) {
      return UnavailableError("cannot create the MP4 " + path + ": the H.264 encoder " +
                              codec->name + " does not take yuv420p frames (install libx264)");
    }
  }

  int err = avformat_alloc_output_context2(&state->format, nullptr, "mp4", path.c_str());
  if (err < 0 || state->format == nullptr) {
    return InternalError("cannot create the MP4 muxer: " + AvError(err));
  }
  state->stream = avformat_new_stream(state->format, nullptr);
  state->encoder = avcodec_alloc_context3(codec);
  state->frame = av_frame_alloc();
  state->packet = av_packet_alloc();
  if (state->stream == nullptr || state->encoder == nullptr || state->frame == nullptr ||
      state->packet == nullptr) {
    return InternalError("cannot create the MP4 " + path + ": out of memory");
  }

  // A rational frame rate: 29.97 (or 29.97002997 read back from a file) becomes 30000/1001.
  const AVRational rate = av_d2q(fps, 1001000);
  AVCodecContext* enc = state->encoder;
  enc->width = size.width;
  enc->height = size.height;
  enc->pix_fmt = AV_PIX_FMT_YUV420P;
  enc->time_base = av_inv_q(rate);
  enc->framerate = rate;
  // sws_scale's default BGR -> YUV matrix is BT.601, limited range: say so, so that players
  // do not assume BT.709 for HD sizes and shift the colours.
  enc->color_range = AVCOL_RANGE_MPEG;
  enc->colorspace = AVCOL_SPC_SMPTE170M;
  if ((state->format->oformat->flags & AVFMT_GLOBALHEADER) != 0) {
    enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  }
  AVDictionary* codec_options = nullptr;
  if (x264) {
    av_dict_set(&codec_options, "preset", kX264Preset, 0);
    av_dict_set(&codec_options, "crf", kX264Crf, 0);
  }
  err = avcodec_open2(enc, codec, &codec_options);
  av_dict_free(&codec_options);
  if (err < 0) {
    return UnavailableError("cannot open the H.264 encoder " + std::string(codec->name) + ": " +
                            AvError(err));
  }
  err = avcodec_parameters_from_context(state->stream->codecpar, enc);
  if (err < 0) return InternalError("cannot configure the MP4 stream: " + AvError(err));
  state->stream->time_base = enc->time_base;  // a hint: the muxer picks its own timescale
  state->stream->avg_frame_rate = rate;

  err = avio_open(&state->format->pb, path.c_str(), AVIO_FLAG_WRITE);
  if (err < 0) {
    return UnavailableError("cannot create the MP4 " + path + ": " + AvError(err));
  }
  // faststart: the trailer moves the index (moov) in front of the data, so a browser can start
  // playing from the first bytes without a range request for the end of the file.
  AVDictionary* muxer_options = nullptr;
  av_dict_set(&muxer_options, "movflags", "+faststart", 0);
  err = avformat_write_header(state->format, &muxer_options);
  av_dict_free(&muxer_options);
  if (err < 0) {
    return UnavailableError("cannot write the MP4 header to " + path + ": " + AvError(err));
  }

  state->frame->format = AV_PIX_FMT_YUV420P;
  state->frame->width = size.width;
  state->frame->height = size.height;
  err = av_frame_get_buffer(state->frame, 0);
  if (err < 0) return InternalError("cannot allocate the YUV frame: " + AvError(err));
  state->sws = sws_getContext(size.width, size.height, AV_PIX_FMT_BGR24, size.width, size.height,
                              AV_PIX_FMT_YUV420P, SWS_BILINEAR, nullptr, nullptr, nullptr);
  if (state->sws == nullptr) return InternalError("cannot create the BGR -> YUV converter");
  return Mp4Writer(std::move(state));
}

Status Mp4Writer::Write(const cv::Mat& frame) {
  if (state_->closed) return FailedPreconditionError("the MP4 writer is closed");
  if (frame.empty()) return InvalidArgumentError("empty frame");
  cv::Mat bgr;
  try {
    if (frame.type() == CV_8UC3) {
      bgr = frame;
    } else if (frame.type() == CV_8UC1) {
      cv::cvtColor(frame, bgr, cv::COLOR_GRAY2BGR);
    } else {
      return InvalidArgumentError("frame type " + std::to_string(frame.type()) +
                                  " is not 8-bit BGR or gray");
    }
    if (bgr.size() != state_->size) {
      cv::Mat resized;
      cv::resize(bgr, resized, state_->size, 0, 0, cv::INTER_AREA);
      bgr = resized;
    }
  } catch (const cv::Exception& e) {
    return InternalError("cannot convert the frame: " + Reason(e));
  }
  // The encoder may still hold a reference to the previous picture (frame threads).
  int err = av_frame_make_writable(state_->frame);
  if (err < 0) return InternalError("cannot reuse the YUV frame: " + AvError(err));
  const std::uint8_t* src[1] = {bgr.data};
  const int src_stride[1] = {static_cast<int>(bgr.step[0])};
  sws_scale(state_->sws, src, src_stride, 0, bgr.rows, state_->frame->data,
            state_->frame->linesize);
  state_->frame->pts = state_->written;
  err = avcodec_send_frame(state_->encoder, state_->frame);
  if (err < 0) return InternalError("cannot encode the frame: " + AvError(err));
  ++state_->written;
  return state_->Drain();
}

Status Mp4Writer::Close() {
  if (state_->closed) return FailedPreconditionError("the MP4 writer is already closed");
  state_->closed = true;
  Status finished = state_->Finish();
  state_->Free();  // the encoder's and muxer's memory goes now, not with the Mp4Writer
  RETURN_IF_ERROR(finished);
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(state_->path, ec);
  if (ec || bytes == 0) {
    return UnavailableError("the MP4 " + state_->path + " is missing or empty after writing");
  }
  return Status::Ok();
}

cv::Size Mp4Writer::size() const { return state_->size; }
std::int64_t Mp4Writer::frames_written() const { return state_->written; }

}  // namespace kadr::video
