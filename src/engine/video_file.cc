#include "engine/video_file.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <nlohmann/json.hpp>

#include "imaging/annotate.h"
#include "imaging/decode.h"
#include "protocol/result.h"

namespace kadr::engine {
namespace {

// Lines keep the documented key order ("file" first).
using Json = nlohmann::ordered_json;

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

}  // namespace

Result<std::unique_ptr<VideoFileSource>> VideoFileSource::Open(const std::string& path,
                                                               std::int64_t max_frames) {
  ASSIGN_OR_RETURN(auto reader, video::VideoFileReader::Open(path));
  return std::unique_ptr<VideoFileSource>(new VideoFileSource(std::move(reader), max_frames));
}

Result<std::optional<SourceFrame>> VideoFileSource::Read(const std::stop_token&) {
  if (max_frames_ > 0 && frames_read_ >= max_frames_) {
    cv::Mat probe;
    ASSIGN_OR_RETURN(const bool more, reader_.Read(probe));
    if (more) {
      return InvalidArgumentError("the video has more than " + std::to_string(max_frames_) +
                                  " frames, the most a video job reads");
    }
    return std::optional<SourceFrame>();
  }
  SourceFrame frame;
  ASSIGN_OR_RETURN(const bool more, reader_.Read(frame.image));
  if (!more) return std::optional<SourceFrame>();
  ++frames_read_;
  return std::optional<SourceFrame>(std::move(frame));
}

std::string FrameLine(const Released& frame, double fps, std::string_view file) {
  Json line = Json::object();
  if (!file.empty()) line["file"] = file;
  line["index"] = frame.index;
  line["pts_ms"] = fps > 0 ? std::llround(static_cast<double>(frame.index) * 1000.0 / fps) : 0;
  if (frame.result) {
    const protocol::FrameResult& r = *frame.result;
    line["status"] = protocol::FrameStatusName(r.status);
    if (r.status == protocol::FrameStatus::kOk) {
      const Json encoded = Json::parse(protocol::ToJson(r.result), nullptr, false);
      line["detections"] = encoded.is_object() && encoded.contains("detections")
                               ? encoded["detections"]
                               : Json::array();
      return Dump(line);
    }
    line["detections"] = Json::array();
    line["error"] = {{"code", StatusCodeName(r.error.code())}, {"message", r.error.message()}};
    return Dump(line);
  }
  const Status why =
      frame.dropped == DropReason::kError && !frame.error.ok()
          ? frame.error
          : DeadlineExceededError(
                "the frame was dropped unanswered (" +
                std::string(DropReasonName(frame.dropped.value_or(DropReason::kDeadline))) + ")");
  line["status"] = "error";
  line["detections"] = Json::array();
  line["error"] = {{"code", StatusCodeName(why.code())}, {"message", why.message()}};
  return Dump(line);
}

Result<std::unique_ptr<VideoFileSink>> VideoFileSink::Open(VideoFileSinkOptions options) {
  std::optional<video::Mp4Writer> writer;
  if (!options.mp4_path.empty()) {
    ASSIGN_OR_RETURN(auto w, video::Mp4Writer::Open(options.mp4_path, options.fps,
                                                    {options.width, options.height}));
    writer.emplace(std::move(w));
  }
  return std::unique_ptr<VideoFileSink>(new VideoFileSink(std::move(options), std::move(writer)));
}

Status VideoFileSink::Release(Released frame) {
  const bool ok = frame.result && frame.result->status == protocol::FrameStatus::kOk;
  if (ok && frame.frame && !frame.frame->image.empty()) {
    // A frame scaled down for the wire was answered in its own pixels: report and draw in
    // the video's.
    protocol::ScaleToSize(frame.result->result, frame.frame->image.cols, frame.frame->image.rows);
  }
  if (writer_) {
    cv::Mat picture;
    if (ok && !frame.annotated.empty()) {
      picture = frame.annotated;
    } else if (ok && !frame.image.empty()) {
      auto annotated = imaging::DecodeImage(frame.image);
      if (annotated) picture = std::move(annotated).value();
    }
    if (picture.empty() && frame.frame) {
      picture = frame.frame->image;  // the run's no more: drawn on in place
      if (ok && options_.annotate) imaging::Annotate(picture, frame.result->result.detections);
    }
    if (picture.empty()) {
      return InternalError("no picture to write for frame " + std::to_string(frame.index));
    }
    RETURN_IF_ERROR(writer_->Write(picture));
  }
  if (ok) {
    detections_ += frame.result->result.detections.size();
    for (const auto& d : frame.result->result.detections) {
      if (d.track_id) max_track_id_ = std::max(max_track_id_, *d.track_id);
    }
  } else {
    ++failed_;
  }
  if (options_.lines != nullptr) {
    *options_.lines << FrameLine(frame, options_.fps, options_.file) << '\n';
    if (!*options_.lines) return UnavailableError("cannot write the result lines");
  }
  ++written_;
  if (options_.on_frame) options_.on_frame(written_, !ok);
  return Status::Ok();
}

Status VideoFileSink::Close() {
  if (options_.lines != nullptr) {
    options_.lines->flush();
    if (!*options_.lines) return UnavailableError("cannot write the result lines");
  }
  if (writer_) return writer_->Close();
  return Status::Ok();
}

}  // namespace kadr::engine
