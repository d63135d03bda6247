// The gateway's image check and conversion to the frame topic's wire format: a baseline,
// 8-bit, 3-component YCbCr JPEG that needs no EXIF rotation. Such an upload is passed on
// byte-for-byte (only its header is read); anything else is decoded (EXIF orientation
// applied) and re-encoded. Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "imaging/decode.h"

namespace kadr::gateway::detail {

// What the JPEG's segments before the first scan say, read without a decoder.
struct JpegLayout {
  int sof_marker = 0;    // 0xC0 baseline, 0xC2 progressive, ...; 0 when no SOF was found
  int precision = 0;     // bits per sample
  int components = 0;    // 1 gray, 3 colour, 4 CMYK/YCCK
  bool rgb = false;      // 3 components stored as RGB rather than YCbCr (libjpeg's rules)
  bool has_eoi = false;  // an end-of-image marker follows the first scan
};

JpegLayout ScanJpegLayout(std::span<const std::uint8_t> jpeg);

// True when `jpeg` (already probed as `info`) can go on the frame topic as it is.
bool IsWireJpeg(std::span<const std::uint8_t> jpeg, const imaging::ImageInfo& info);

struct WireImage {
  std::vector<std::uint8_t> jpeg;
  bool converted = false;   // false: the upload's own bytes
  imaging::ImageInfo info;  // of the upload, as probed
};

// The frame to publish for `bytes`, which imaging::ProbeImage described as `info`.
// Errors: DecodeImage's (kInvalidArgument corrupt or truncated image, kUnsupported sample
// type, kTooLarge), EncodeJpeg's (kInternal).
Result<WireImage> ToWireImage(std::span<const std::uint8_t> bytes, const imaging::ImageInfo& info,
                              const imaging::DecodeLimits& limits, int jpeg_quality);

}  // namespace kadr::gateway::detail
