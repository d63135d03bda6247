// DetectionResult and its JSON codec: the schema every consumer of kadr's results reads.
//
// The JSON layout is versioned (kResultSchemaVersion) and documented in docs/protocol.md.
// Encoding never fails; decoding returns kInvalidArgument with the offending field named.
// Functions here are pure and thread-safe.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "protocol/detection.h"

namespace kadr::protocol {

inline constexpr int kResultSchemaVersion = 1;

struct DetectionResult {
  std::string model;    // registry name of the model that produced it
  int image_width = 0;  // original image size, pixels
  int image_height = 0;
  std::vector<Detection> detections;
  std::map<std::string, double> timings_ms;  // stage name -> milliseconds, e.g. "inference"
};

// Run-length encoding of a mask's row-major bytes: alternating run lengths of 0s and 1s,
// starting with 0s (so the first run may be 0).
std::vector<std::int64_t> EncodeMaskRle(const Mask& mask);
Result<std::vector<std::uint8_t>> DecodeMaskRle(const std::vector<std::int64_t>& counts,
                                                std::size_t total);

// Compact JSON (indent < 0) or pretty-printed with `indent` spaces.
std::string ToJson(const DetectionResult& result, int indent = -1);
Result<DetectionResult> ResultFromJson(std::string_view json);

}  // namespace kadr::protocol
