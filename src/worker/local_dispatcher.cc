#include "worker/local_dispatcher.h"

#include <utility>

#include "common/clock.h"
#include "imaging/annotate.h"

namespace kadr::worker {

LocalDispatcher::LocalDispatcher(const FrameProcessor& processor, inference::Detector& detector,
                                 protocol::DetectOptions options, bool track, bool draw)
    : processor_(processor), detector_(detector), options_(std::move(options)), draw_(draw) {
  if (track) tracker_.emplace();
}

Status LocalDispatcher::Send(const engine::Outgoing& frame, engine::FrameRun& run) {
  protocol::FrameResult answer;
  answer.frame_id = answer.correlation_id = frame.id;
  answer.sequence = frame.index;
  answer.capture_ms = frame.capture_ms;
  const engine::SourceFrame& source = *frame.frame;
  if (!source.encoded.empty()) {
    // An image file: its whole trip, JPEG out.
    auto processed = processor_.Process(source.encoded, detector_, options_);
    if (!processed) {
      answer.status = protocol::FrameStatus::kError;
      answer.error = processed.error();
    } else {
      answer.result = std::move(processed->result);
      if (!processed->annotated_jpeg.empty()) {
        answer.annotated_topic = kLocalImageTopic;
        run.OnImage(frame.id, std::move(processed->annotated_jpeg));
      }
    }
    run.OnResult(std::move(answer), UnixMillis());
    return Status::Ok();
  }
  // A video frame: detect, track, draw on a copy (the run may keep the source frame).
  DecodedFrame decoded;
  decoded.started = SteadyClock::now();
  decoded.result.model = detector_.info().name;
  decoded.result.image_width = source.image.cols;
  decoded.result.image_height = source.image.rows;
  decoded.image = source.image;
  DecodedFrame* frames[] = {&decoded};
  if (Status s = processor_.Detect(frames, options_, detector_); !s.ok()) {
    answer.status = protocol::FrameStatus::kError;
    answer.error = s;
    run.OnResult(std::move(answer), UnixMillis());
    return Status::Ok();
  }
  if (tracker_) tracker_->Update(decoded.result.detections);
  if (draw_) {
    Stopwatch sw;
    cv::Mat annotated = source.image.clone();
    imaging::Annotate(annotated, decoded.result.detections);
    decoded.result.timings_ms["draw"] = sw.Lap();
    answer.annotated_topic = kLocalImageTopic;
    run.OnImage(frame.id, std::move(annotated));
  }
  decoded.result.timings_ms["total"] = MillisSince(decoded.started);
  answer.result = std::move(decoded.result);
  run.OnResult(std::move(answer), UnixMillis());
  return Status::Ok();
}

}  // namespace kadr::worker
