// Image decoding: bytes in any supported format -> 8-bit, 3-channel BGR cv::Mat.
//
// JPEG goes through libjpeg-turbo's TurboJPEG API; PNG, BMP, WebP and TIFF through OpenCV.
// The EXIF orientation of JPEGs is applied, so the result is upright as a person sees it.
// Grayscale, gray+alpha, BGRA, CMYK and 16-bit inputs are all converted to 8-bit BGR
// (OpenCV's channel order; convert with cv::cvtColor where RGB is needed):
//   - alpha is dropped, not composited (as cv::imread(IMREAD_COLOR) and PIL's convert("RGB") do);
//   - 16-bit samples are scaled by 1/256; other sample types (float TIFF) are kUnsupported;
//   - CMYK/YCCK JPEGs use the naive formula without colour management; files with an Adobe
//     APP14 marker are read as inverted CMYK (Photoshop's convention), others as plain CMYK.
// A JPEG that ends early is an error ("truncated JPEG"), not an image padded with grey.
// Classic TIFF only (BigTIFF is kUnsupported); for multi-page TIFF, the first page.
//
// Limits are checked from the header before any pixel buffer is allocated, so a
// 60000x60000 "bomb" costs a few bytes of parsing, not 10 GB.
//
// All functions are pure and thread-safe. Errors (never exceptions):
//   kInvalidArgument  empty input, truncated file, corrupt data, width or height of 0
//   kUnsupported      not one of the supported formats, or an unsupported sample type
//   kTooLarge         over DecodeLimits::max_bytes or max_pixels / max_side (the size is
//                     checked before anything else, so an oversized input is never parsed)
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include <opencv2/core/mat.hpp>

#include "common/status.h"

namespace kadr::imaging {

enum class ImageFormat { kUnknown, kJpeg, kPng, kBmp, kWebp, kTiff };

std::string_view FormatName(ImageFormat format);  // "jpeg", "png", ...; "unknown"

struct DecodeLimits {
  // Largest encoded input accepted, bytes. 32 MiB.
  std::size_t max_bytes = 32u << 20;
  // Largest decoded image, width*height. 50 megapixels (e.g. 8660x5774).
  std::int64_t max_pixels = 50'000'000;
  // Largest width or height, pixels.
  int max_side = 16384;
};

// What the header says, without decoding pixels.
struct ImageInfo {
  ImageFormat format = ImageFormat::kUnknown;
  int width = 0;  // as stored, before EXIF orientation
  int height = 0;
  int orientation = 1;  // EXIF orientation 1..8 (JPEG only; 1 otherwise)
};

// Identifies the format from the magic bytes.
ImageFormat SniffFormat(std::span<const std::uint8_t> bytes);

// Reads the header and checks it against `limits`. Does not decode pixels.
Result<ImageInfo> ProbeImage(std::span<const std::uint8_t> bytes, const DecodeLimits& limits = {});

// Decodes to CV_8UC3 BGR with EXIF orientation applied.
Result<cv::Mat> DecodeImage(std::span<const std::uint8_t> bytes, const DecodeLimits& limits = {});

// Decodes at a reduced size, for previews: a JPEG is scaled while decoding by the largest of
// 1/2, 1/4 and 1/8 that keeps its long side at least `min_long_side` (measured: 810x1080 at
// 1/4 costs a fraction of a full decode); other formats decode in full. Same errors as
// DecodeImage.
Result<cv::Mat> DecodeImageReduced(std::span<const std::uint8_t> bytes, int min_long_side,
                                   const DecodeLimits& limits = {});

// `image` scaled down with area averaging, aspect kept, so that its long side is at most
// `max_side` (each side at least 1); `image` itself when it fits already or max_side <= 0.
// What a frame, a wire image or a thumbnail is sized with. OpenCV's exceptions propagate.
cv::Mat FitLongSide(const cv::Mat& image, int max_side);
// The same into a `max_width` x `max_height` box (a stream's frame size limit); `image` itself
// when it fits already or either bound is <= 0.
cv::Mat FitWithin(const cv::Mat& image, int max_width, int max_height);

inline std::span<const std::uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace kadr::imaging
