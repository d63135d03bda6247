// DecodeImageReduced: previews decoded at a fraction of the size (TurboJPEG DCT scaling).
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "imaging/decode.h"

namespace kadr::imaging {
namespace {

using Bytes = std::vector<std::uint8_t>;

// A smooth gradient, so scaled and full decodes can be compared pixel by pixel.
cv::Mat Gradient(int width, int height) {
  cv::Mat img(height, width, CV_8UC3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      img.at<cv::Vec3b>(y, x) = {static_cast<std::uint8_t>(x * 255 / width),
                                 static_cast<std::uint8_t>(y * 255 / height), 128};
    }
  }
  return img;
}

Bytes Encode(const cv::Mat& img, const std::string& ext) {
  Bytes out;
  EXPECT_TRUE(cv::imencode(ext, img, out));
  return out;
}

TEST(DecodeImageReducedTest, JpegScalesByTheLargestFactorThatKeepsTheLongSide) {
  const Bytes jpeg = Encode(Gradient(800, 600), ".jpg");
  // 800 / 4 = 200 >= 160, 800 / 8 = 100 < 160: a quarter.
  auto quarter = DecodeImageReduced(jpeg, 160);
  ASSERT_TRUE(quarter.has_value()) << quarter.error().ToString();
  EXPECT_EQ(quarter->cols, 200);
  EXPECT_EQ(quarter->rows, 150);
  EXPECT_EQ(quarter->type(), CV_8UC3);
  // The same picture, only smaller: close to a full decode scaled down.
  auto full = DecodeImage(jpeg);
  ASSERT_TRUE(full.has_value());
  cv::Mat expected;
  cv::resize(*full, expected, quarter->size(), 0, 0, cv::INTER_AREA);
  EXPECT_LT(cv::norm(*quarter, expected, cv::NORM_L1) / static_cast<double>(quarter->total()), 6.0);
  // Never below 1/8, never scaled when the image is already small.
  EXPECT_EQ(DecodeImageReduced(jpeg, 1)->cols, 100);
  EXPECT_EQ(DecodeImageReduced(jpeg, 700)->cols, 800);
}

TEST(DecodeImageReducedTest, OtherFormatsDecodeInFullAndErrorsStayPrecise) {
  auto decoded = DecodeImageReduced(Encode(Gradient(64, 48), ".png"), 8);
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->cols, 64);
  Bytes truncated = Encode(Gradient(800, 600), ".jpg");
  truncated.resize(truncated.size() / 2);
  EXPECT_EQ(DecodeImageReduced(truncated, 100).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeImageReduced(Bytes{}, 100).error().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kadr::imaging
