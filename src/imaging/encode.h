// JPEG encoding through libjpeg-turbo's TurboJPEG API.
//
// Thread-safe: each call uses its own (thread-local, reused) TurboJPEG handle.
// Errors: kInvalidArgument for an empty image or one that is not CV_8UC3/CV_8UC1;
// kInternal if libjpeg-turbo fails.
#pragma once

#include <cstdint>
#include <vector>

#include <opencv2/core/mat.hpp>

#include "common/status.h"

namespace kadr::imaging {

struct JpegOptions {
  int quality = 85;           // 1..100
  bool subsample_420 = true;  // 4:2:0 chroma (smaller, standard); false gives 4:4:4
};

// Encodes a BGR (CV_8UC3) or grayscale (CV_8UC1) image.
Result<std::vector<std::uint8_t>> EncodeJpeg(const cv::Mat& image, const JpegOptions& options = {});

}  // namespace kadr::imaging
