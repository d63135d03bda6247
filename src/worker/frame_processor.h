// FrameProcessor: one image's whole trip through kadr - decode, detect, draw, encode - with
// every stage timed. It is what `kadr detect` runs per file and what a worker runs per frame.
//
// The trip is three stage functions, so that a caller can run them on different threads
// (the worker's pipeline, worker_service.h) or one after another (Process, ProcessBatch):
//
//   Decode (one image) -> Detect (a run of decoded images) -> Finish (draw + encode one)
//
// A DecodedFrame carries an image between the stages; it owns its pixels.
//
// Stateless apart from its options; thread-safe if the Detector is (all of ours are).
// Errors (the frame's own fault is never a crash): the decode errors of imaging/decode.h
// (kInvalidArgument, kUnsupported, kTooLarge), the detector's errors, kInternal on encode.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <opencv2/core/mat.hpp>

#include "common/clock.h"
#include "common/status.h"
#include "imaging/annotate.h"
#include "imaging/decode.h"
#include "imaging/encode.h"
#include "inference/detector.h"
#include "protocol/result.h"

namespace kadr::worker {

struct FrameProcessorOptions {
  imaging::DecodeLimits limits;
  imaging::AnnotateOptions annotate;
  imaging::JpegOptions jpeg;
  bool draw = true;  // false: skip drawing and encoding (results only)
};

struct ProcessedFrame {
  protocol::DetectionResult result;          // timings_ms: decode, preprocess, inference,
                                             // postprocess, draw, encode, total
  std::vector<std::uint8_t> annotated_jpeg;  // empty when options.draw is false
};

// One image between the stages: its result so far and its pixels.
struct DecodedFrame {
  protocol::DetectionResult result;  // model, image size, timings and detections so far
  cv::Mat image;                     // CV_8UC3 BGR; empty for models that need no pixels
  SteadyClock::time_point started;   // timings_ms["total"] counts from here
};

// One image of a batch.
struct FrameInput {
  std::span<const std::uint8_t> bytes;
  protocol::DetectOptions options;
  bool draw = true;  // and FrameProcessorOptions::draw
};

class FrameProcessor {
 public:
  explicit FrameProcessor(FrameProcessorOptions options = {}) : options_(std::move(options)) {}

  // Stage 1: decodes one image into BGR pixels, timed as "decode". For a model that needs no
  // pixels (the null model) only the header is read, for the image's size, and the image
  // stays empty. `started` is where the image's "total" begins (a worker passes the moment
  // it took the frame). Errors: those of imaging::DecodeImage / ProbeImage.
  Result<DecodedFrame> Decode(std::span<const std::uint8_t> bytes,
                              const inference::ModelInfo& model,
                              SteadyClock::time_point started = SteadyClock::now()) const;

  // Stage 2: one detector call for `frames`, which share `options`; at most the model's
  // max_batch of them. Sets each frame's detections and its "preprocess", "inference" and
  // "postprocess" timings: the call's time split evenly. When the model needs no pixels it
  // does nothing. On error (the detector's, or kInvalidArgument for more than max_batch
  // frames) no frame is changed: the error is every frame's.
  Status Detect(std::span<DecodedFrame* const> frames, const protocol::DetectOptions& options,
                inference::Detector& detector) const;

  // Stage 3: draws the detections and encodes the annotated JPEG, timed as "draw" and
  // "encode" - unless `draw` or FrameProcessorOptions::draw is false, or the frame has no
  // pixels - then sets "total". Errors: imaging::EncodeJpeg's (kInternal).
  Result<ProcessedFrame> Finish(DecodedFrame frame, bool draw = true) const;

  // All three stages for one image.
  Result<ProcessedFrame> Process(std::span<const std::uint8_t> image_bytes,
                                 inference::Detector& detector,
                                 const protocol::DetectOptions& detect_options) const;

  // Several images at once: each is decoded on its own (a bad one fails alone), then
  // consecutive images with the same options go through the detector together, up to its
  // max_batch. Per-image timings split the shared detector time evenly. Models that need no
  // pixels (the null model) are only probed, never decoded, drawn or encoded.
  std::vector<Result<ProcessedFrame>> ProcessBatch(std::span<const FrameInput> inputs,
                                                   inference::Detector& detector) const;

 private:
  FrameProcessorOptions options_;
};

// Whether two frames' options are equal, so that they may share a detector call.
bool SameDetectOptions(const protocol::DetectOptions& a, const protocol::DetectOptions& b);

}  // namespace kadr::worker
