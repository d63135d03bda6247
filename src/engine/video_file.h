// Video files on the frame engine: the one reader of video files (VideoFileSource, for video
// jobs, `kadr detect` and file streams alike) and the one writer of their results
// (VideoFileSink: the annotated H.264 MP4 and one JSON line per frame, docs/api.md "Video
// jobs").
//
// One JSON line per frame, in index order:
//   {"index": 0, "pts_ms": 0, "status": "ok", "detections": [...]}
//   {"index": 1, "pts_ms": 33, "status": "error", "detections": [],
//    "error": {"code": "invalid_argument", "message": "..."}}
// status is the worker's ("ok", "error", "skipped"); a frame the run dropped unanswered is
// "error" with code deadline_exceeded. A sink given a file name starts every line with
// "file" (what `kadr detect --json` prints).
//
// Thread-safety: one object is used by one thread at a time (a FrameRun calls its sink on
// its own thread). Ownership: each owns its file handles.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

#include "common/status.h"
#include "engine/frame_run.h"
#include "video/video.h"

namespace kadr::engine {

// A video file as a Source: every frame in order, as BGR pixels.
class VideoFileSource final : public Source {
 public:
  // Errors: those of video::VideoFileReader::Open (kNotFound, kUnsupported "not a video",
  // kInvalidArgument for a damaged or truncated file, kInternal). A file with more than
  // `max_frames` frames (0: no limit) fails the Read after the last one allowed with
  // kInvalidArgument: whatever its container states, a video job reads no more than that.
  static Result<std::unique_ptr<VideoFileSource>> Open(const std::string& path,
                                                       std::int64_t max_frames = 0);

  Result<std::optional<SourceFrame>> Read(const std::stop_token& stop) override;
  bool Waits() const override { return false; }  // decoding only

  double fps() const { return reader_.fps(); }
  std::int64_t stated_frames() const { return reader_.frame_count(); }  // the container's
  int width() const { return reader_.width(); }
  int height() const { return reader_.height(); }
  std::string_view container() const { return reader_.container(); }
  std::int64_t frames_read() const { return frames_read_; }

 private:
  VideoFileSource(video::VideoFileReader reader, std::int64_t max_frames)
      : reader_(std::move(reader)), max_frames_(max_frames) {}
  video::VideoFileReader reader_;
  std::int64_t max_frames_;
  std::int64_t frames_read_ = 0;
};

struct VideoFileSinkOptions {
  // The annotated MP4 (empty: none is written) at `fps` and `width` x `height`.
  std::string mp4_path;
  double fps = 25;
  int width = 0;
  int height = 0;
  // Where the JSON lines go (nullptr: nowhere); `file`, when set, starts each line.
  std::ostream* lines = nullptr;
  std::string file;
  // Draw an answered frame's detections on its source frame (keep_frames) when no annotated
  // picture came with it: a run that asks workers for none (they then neither draw nor encode
  // it, and the sink decodes none), with the same drawing (imaging::Annotate).
  bool annotate = false;
  // Called after each frame is written, with the frames written so far and whether this one
  // failed (its result not ok, or dropped).
  std::function<void(std::int64_t written, bool failed)> on_frame;
};

// The one JSON line of a frame (without the newline); `file` as above.
std::string FrameLine(const Released& frame, double fps, std::string_view file = {});

// Writes each released frame, in the order released (give it an ordered run), its detections
// in the source frame's pixels (protocol::ScaleToSize, for frames that went scaled down): the
// annotated
// picture (pixels, else the annotated JPEG decoded, else the source frame — keep_frames —
// annotated here when `annotate`; so a frame whose result is an error is written
// un-annotated) into the MP4, and its line.
class VideoFileSink final : public Sink {
 public:
  // Errors: video::Mp4Writer::Open's (kInvalidArgument, kUnavailable, kInternal).
  static Result<std::unique_ptr<VideoFileSink>> Open(VideoFileSinkOptions options);

  // Errors: kInternal (no picture to write: none annotated and the source frame not kept,
  // or the writer failed), kUnavailable (the lines' stream failed).
  Status Release(Released frame) override;
  // Finishes the MP4 (Mp4Writer::Close's errors) and flushes the lines.
  Status Close();

  std::int64_t written() const { return written_; }
  std::int64_t failed() const { return failed_; }
  std::uint64_t detections() const { return detections_; }
  std::int64_t max_track_id() const { return max_track_id_; }

 private:
  VideoFileSink(VideoFileSinkOptions options, std::optional<video::Mp4Writer> writer)
      : options_(std::move(options)), writer_(std::move(writer)) {}

  const VideoFileSinkOptions options_;
  std::optional<video::Mp4Writer> writer_;
  std::int64_t written_ = 0;
  std::int64_t failed_ = 0;
  std::uint64_t detections_ = 0;
  std::int64_t max_track_id_ = 0;
};

}  // namespace kadr::engine
