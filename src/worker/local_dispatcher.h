// LocalDispatcher: the frame engine's dispatcher for a model in this process (`kadr detect`):
// Send runs the frame's whole trip through a FrameProcessor — decode (or take the pixels),
// detect, track (video frames), draw — on the caller's thread and answers the run before it
// returns: the annotated image (JPEG for an encoded image, pixels for a video frame), then the
// result. A frame that fails (a corrupt image, a detector error) is answered with an error
// result, as a worker would answer it.
//
// Thread-safety: one dispatcher serves one run (its tracker follows one video); not
// thread-safe. Ownership: the processor and detector are borrowed and must outlive it.
#pragma once

#include <optional>

#include "engine/frame_run.h"
#include "protocol/result.h"
#include "tracking/tracker.h"
#include "worker/frame_processor.h"

namespace kadr::worker {

// What a local run's results name as their annotated topic (RunOptions::image_topic).
inline constexpr char kLocalImageTopic[] = "local";

class LocalDispatcher final : public engine::Dispatcher {
 public:
  // `track`: give pixel frames track ids (tracking::Tracker, one video). `draw`: annotate.
  LocalDispatcher(const FrameProcessor& processor, inference::Detector& detector,
                  protocol::DetectOptions options, bool track, bool draw);

  // Never fails: a frame that cannot be processed is answered with an error result.
  Status Send(const engine::Outgoing& frame, engine::FrameRun& run) override;

 private:
  const FrameProcessor& processor_;
  inference::Detector& detector_;
  const protocol::DetectOptions options_;
  const bool draw_;
  std::optional<tracking::Tracker> tracker_;
};

}  // namespace kadr::worker
