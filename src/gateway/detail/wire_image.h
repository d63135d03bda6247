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
  // The upload's size as a person sees it (EXIF orientation applied): what results report.
  int width = 0;
  int height = 0;
  bool scaled = false;  // the frame is smaller than that (max_side)
};

// The frame to publish for `bytes`, which imaging::ProbeImage described as `info`: at most
// `max_side` pixels on its long side (0: no limit). A larger image is decoded at a reduced
// scale where the format allows (JPEG: 1/2, 1/4, 1/8 while decoding), scaled down to
// max_side and encoded (docs/adr/0009-admission-by-bytes.md).
// Errors: DecodeImage's (kInvalidArgument corrupt or truncated image, kUnsupported sample
// type, kTooLarge), EncodeJpeg's (kInternal).
Result<WireImage> ToWireImage(std::span<const std::uint8_t> bytes, const imaging::ImageInfo& info,
                              const imaging::DecodeLimits& limits, int jpeg_quality,
                              int max_side = 0);

}  // namespace kadr::gateway::detail
