// Video files: recognising a container from its first bytes, decoding frames (OpenCV's FFmpeg
// backend) and writing an H.264 MP4 (FFmpeg's libavformat/libavcodec/libswscale directly, so
// that the x264 preset and the MP4 layout are ours). Only video.cc sees OpenCV's videoio and
// FFmpeg's headers.
//
// Ownership: a VideoFileReader / Mp4Writer owns its FFmpeg contexts and file handle; both are
// movable, not copyable, and release everything when destroyed.
// Thread-safety: SniffVideo is a pure function. One reader or writer must be used by one
// thread at a time; different objects are independent.
// Exceptions: none escape; OpenCV's are turned into kInternal, FFmpeg's error codes into
// kInternal / kUnavailable with FFmpeg's text.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <opencv2/core/mat.hpp>

#include "common/status.h"

namespace kadr::video {

// The container named by the first bytes of a file: "mp4" (ISO BMFF `ftyp` box, brand other
// than a QuickTime one), "mov" (`ftyp` with brand "qt  ", or a bare QuickTime `moov`/`mdat`/
// `wide` atom first), "mkv" (EBML 1A 45 DF A3: Matroska and WebM) or "avi" (RIFF....AVI ).
// nullopt for anything else. 12 bytes are enough; fewer can only answer nullopt.
std::optional<std::string_view> SniffVideo(std::span<const std::uint8_t> head);

// What a video file's container headers state, read without decoding a frame.
struct VideoProbe {
  std::string_view container;  // as SniffVideo names it, or "video"
  int width = 0;               // of the first video stream, pixels (never 0)
  int height = 0;
  double fps = 0;           // 0 when the headers state none
  std::int64_t frames = 0;  // stated, else duration x fps; 0 when unknown
  double duration_s = 0;    // 0 when unknown
};

// Reads the headers of the video file at `path` with FFmpeg's demuxers for MP4/MOV,
// Matroska/WebM and AVI only (no other demuxer or protocol is tried), and decodes nothing,
// so that an upload's size, length and frame count can be checked before any frame costs
// CPU or memory. Errors: kNotFound (no such file), kUnsupported "not a video" (none of those
// containers), kInvalidArgument (a known container whose headers are missing or damaged, no
// video stream, or a stream whose frame size the headers do not state).
Result<VideoProbe> ProbeVideo(const std::string& path);

// Reads the frames of a video file in order, as 8-bit BGR images.
class VideoFileReader {
 public:
  // Opens `path` and decodes its first frame (kept and returned by the first Read), so a
  // reader that opens has at least one frame.
  // Errors: kNotFound (no such file), kUnsupported "not a video" (FFmpeg cannot open it and
  // its first bytes are no known container), kInvalidArgument (a known container that FFmpeg
  // cannot open, e.g. an MP4 truncated before its index, or one that opens but whose first
  // frame does not decode), kInternal (OpenCV threw).
  static Result<VideoFileReader> Open(const std::string& path);

  VideoFileReader(VideoFileReader&&) noexcept;
  VideoFileReader& operator=(VideoFileReader&&) noexcept;
  ~VideoFileReader();

  // The next frame into `bgr` (CV_8UC3): true, or false at the end of the stream (also when
  // the file is truncated mid-stream: the frames before the cut are returned, then false).
  // Errors: kInternal (OpenCV threw).
  Result<bool> Read(cv::Mat& bgr);

  // Frames per second from the container; 25 when the container states none.
  double fps() const;
  // Frames in the file as the container states it. Exact for MP4/MOV (from the index); an
  // estimate from duration x fps for AVI/MKV without an index; 0 when unknown. A truncated
  // file may yield fewer: count Read() calls for the truth.
  std::int64_t frame_count() const;
  // Size of the decoded frames (of the first frame), pixels.
  int width() const;
  int height() const;
  // "mp4", "mov", "mkv", "avi", or "video" when the container was not sniffed.
  std::string_view container() const;

 private:
  struct State;
  explicit VideoFileReader(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// Writes 8-bit BGR frames into an H.264 MP4 (sample entry avc1, yuv420p, BT.601 limited range)
// at a fixed frame rate: libx264 with preset veryfast and crf 23 (another H.264 encoder of the
// FFmpeg build, with its defaults, when libx264 is missing). The index (moov) is moved in front
// of the data on Close ("faststart"), so a browser plays it without fetching the file's end.
// The container states exactly the frames written, each lasting 1/fps.
class Mp4Writer {
 public:
  // Creates (truncating) `path`. `fps` is kept as a rational (29.97 -> 2997/100, 29.97002997
  // -> 30000/1001), which is what ffprobe's r_frame_rate and avg_frame_rate then report.
  // `size` is the frame size of the file; odd sides are rounded down to even (H.264 4:2:0 needs
  // even sides).
  // Errors: kInvalidArgument (fps not in (0, 1000], a side under 2 or over 16384),
  // kUnavailable (the file cannot be created, FFmpeg has no H.264 encoder taking yuv420p, or it
  // does not open), kInternal (FFmpeg out of memory or refusing the stream).
  static Result<Mp4Writer> Open(const std::string& path, double fps, cv::Size size);

  Mp4Writer(Mp4Writer&&) noexcept;
  Mp4Writer& operator=(Mp4Writer&&) noexcept;
  // Closes the file if Close() was not called (errors are then only logged).
  ~Mp4Writer();

  // Appends one frame (CV_8UC3 BGR, or CV_8UC1 gray), resized to size() when it differs. The
  // encoder keeps a few frames of look-ahead, so the file grows in steps, not per call.
  // Errors: kInvalidArgument (empty or unsupported image type), kFailedPrecondition (closed),
  // kInternal (the encoder or the file write failed, e.g. disk full).
  Status Write(const cv::Mat& frame);

  // Finishes the file: drains the encoder, writes the index in front of the data and closes
  // it; the FFmpeg objects are freed whatever the outcome. Errors: kInternal (draining or
  // writing the index failed), kUnavailable (closing failed, or the file is missing or empty
  // afterwards), kFailedPrecondition (already closed).
  Status Close();

  cv::Size size() const;
  std::int64_t frames_written() const;

 private:
  struct State;
  explicit Mp4Writer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace kadr::video
