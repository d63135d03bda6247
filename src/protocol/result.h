// Detection types, then DetectionResult and its JSON codec: the language-neutral result of
// running a model on one image and the schema every consumer of kadr's results reads.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace kadr::protocol {

// ---------------------------------------------------------------------------------------------
// Detection types: the language-neutral result of running a model on one image.
//
// Plain value types with no OpenCV, HTTP or Kafka in sight; their JSON form (ToJson below)
// is part of the public contract documented in docs/protocol.md. Coordinates are in pixels of
// the original image (after EXIF orientation), origin top-left, x to the right, y down.

// Axis-aligned box: top-left corner plus size, in original image pixels.
struct Box {
  float x = 0;
  float y = 0;
  float width = 0;
  float height = 0;

  float area() const { return width > 0 && height > 0 ? width * height : 0.f; }
  friend bool operator==(const Box&, const Box&) = default;
};

// Intersection over union of two boxes, in [0, 1].
float Iou(const Box& a, const Box& b);

// A binary instance mask over an integer rectangle of the image (usually the detection's box,
// rounded outwards and clipped to the image). `data` is row-major, width*height bytes, 0 or 1.
struct Mask {
  int x = 0;
  int y = 0;
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> data;

  // Number of set pixels.
  std::int64_t Area() const;
  bool At(int image_x, int image_y) const;  // false outside the rectangle
  friend bool operator==(const Mask&, const Mask&) = default;
};

struct Detection {
  int class_id = 0;
  std::string label;
  float score = 0;
  Box box;
  std::optional<Mask> mask;  // set by instance-segmentation models only
  // Identity of the object across the frames of one stream (>= 1), set by the worker's tracker
  // (tracking/tracker.h) for video and live frames; absent when not tracked.
  std::optional<std::int64_t> track_id;
};

// Per-request thresholds; unset fields fall back to the model's own defaults.
struct DetectOptions {
  std::optional<float> confidence;  // keep detections scoring at least this, in [0, 1]
  std::optional<float> iou;         // NMS IoU threshold, in [0, 1]
  std::vector<int> classes;         // keep only these class ids; empty keeps all
};

// ---------------------------------------------------------------------------------------------
// DetectionResult and its JSON codec: the schema every consumer of kadr's results reads.
//
// The JSON layout is versioned (kResultSchemaVersion) and documented in docs/protocol.md.
// Encoding never fails; decoding returns kInvalidArgument with the offending field named.
// Functions here are pure and thread-safe.

inline constexpr int kResultSchemaVersion = 1;

struct DetectionResult {
  std::string model;    // registry name of the model that produced it
  int image_width = 0;  // original image size, pixels
  int image_height = 0;
  std::vector<Detection> detections;
  std::map<std::string, double> timings_ms;  // stage name -> milliseconds, e.g. "inference"
};

// The result of an image seen at another size (a frame scaled down for the wire) in the
// pixels of a `width` x `height` image: boxes scaled, masks resampled (nearest neighbour) onto
// the scaled rectangle, image_width / image_height set. Nothing changes when the sizes are the
// same or the result has none.
void ScaleToSize(DetectionResult& result, int width, int height);

// Run-length encoding of a mask's row-major bytes: alternating run lengths of 0s and 1s,
// starting with 0s (so the first run may be 0).
std::vector<std::int64_t> EncodeMaskRle(const Mask& mask);
Result<std::vector<std::uint8_t>> DecodeMaskRle(const std::vector<std::int64_t>& counts,
                                                std::size_t total);

// Compact JSON (indent < 0) or pretty-printed with `indent` spaces.
std::string ToJson(const DetectionResult& result, int indent = -1);
Result<DetectionResult> ResultFromJson(std::string_view json);

}  // namespace kadr::protocol
