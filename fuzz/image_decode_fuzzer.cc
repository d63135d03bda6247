// Image probing and decoding (imaging/decode.h): every upload, stream frame and bus frame goes
// through these with bytes an attacker chose.
//
// Probes with the production limits, then decodes with smaller ones (2 MP, 2048 a side) so
// that one input costs milliseconds; the limits are the same code path whatever their values.
// Properties: a decoded image is 8-bit BGR, within the limits it was decoded with and the
// size its header announced (sides swapped for EXIF orientations 5..8) — so that the header
// check before allocation really bounds what is allocated; a reduced decode is no larger.
#include <cstddef>
#include <cstdint>
#include <span>

#include <opencv2/core.hpp>

#include "check.h"
#include "imaging/decode.h"

namespace {

using kadr::imaging::DecodeLimits;
using kadr::imaging::ImageInfo;

constexpr DecodeLimits kFuzzLimits{
    .max_bytes = 1u << 20, .max_pixels = 2'000'000, .max_side = 2048};

void CheckDecoded(const cv::Mat& image, const ImageInfo& info, const DecodeLimits& limits) {
  KADR_FUZZ_CHECK(!image.empty(), "decoded image is empty");
  KADR_FUZZ_CHECK(image.type() == CV_8UC3, "decoded image is not 8-bit BGR");
  KADR_FUZZ_CHECK(image.cols <= limits.max_side && image.rows <= limits.max_side,
                  "decoded image over max_side");
  KADR_FUZZ_CHECK(static_cast<std::int64_t>(image.cols) * image.rows <= limits.max_pixels,
                  "decoded image over max_pixels");
  const bool swapped = info.orientation >= 5 && info.orientation <= 8;
  const int w = swapped ? info.height : info.width;
  const int h = swapped ? info.width : info.height;
  KADR_FUZZ_CHECK(image.cols <= w && image.rows <= h, "decoded image larger than its header");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  (void)kadr::imaging::SniffFormat(bytes);
  (void)kadr::imaging::ProbeImage(bytes);  // production limits: 50 MP, 16384 a side

  const auto info = kadr::imaging::ProbeImage(bytes, kFuzzLimits);
  auto full = kadr::imaging::DecodeImage(bytes, kFuzzLimits);
  if (full) {
    KADR_FUZZ_CHECK(info.has_value(), "decoded an image whose header did not probe");
    CheckDecoded(*full, *info, kFuzzLimits);
    const auto& image = *full;
    // What frames, wire images and thumbnails are sized with.
    const cv::Mat fit = kadr::imaging::FitLongSide(image, 1 + static_cast<int>(size % 97));
    KADR_FUZZ_CHECK(
        fit.cols <= 1 + static_cast<int>(size % 97) && fit.rows <= 1 + static_cast<int>(size % 97),
        "FitLongSide result too large");
    (void)kadr::imaging::FitWithin(image, 1 + static_cast<int>(size % 31),
                                   1 + static_cast<int>(size % 53));
  }
  auto reduced = kadr::imaging::DecodeImageReduced(bytes, 8, kFuzzLimits);
  if (reduced) {
    KADR_FUZZ_CHECK(info.has_value(), "decoded (reduced) an image whose header did not probe");
    CheckDecoded(*reduced, *info, kFuzzLimits);
  }
  return 0;
}
