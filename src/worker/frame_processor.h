// FrameProcessor: one image's whole trip through kadr - decode, detect, draw, encode - with
// every stage timed. It is what `kadr detect` runs per file and what a worker runs per frame.
//
// Stateless apart from its options; thread-safe if the Detector is (all of ours are).
// Errors (the frame's own fault is never a crash): the decode errors of imaging/decode.h
// (kInvalidArgument, kUnsupported, kTooLarge), the detector's errors, kInternal on encode.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

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

// One image of a batch.
struct FrameInput {
  std::span<const std::uint8_t> bytes;
  protocol::DetectOptions options;
  bool draw = true;  // and FrameProcessorOptions::draw
};

class FrameProcessor {
 public:
  explicit FrameProcessor(FrameProcessorOptions options = {}) : options_(std::move(options)) {}

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

}  // namespace kadr::worker
