#include "gateway/detail/wire_image.h"

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "imaging/decode.h"

namespace kadr::gateway::detail {
namespace {

std::vector<std::uint8_t> Encode(const cv::Mat& img, const std::string& ext,
                                 const std::vector<int>& params = {}) {
  std::vector<std::uint8_t> out;
  EXPECT_TRUE(cv::imencode(ext, img, out, params));
  return out;
}

cv::Mat Picture(int type = CV_8UC3) {
  cv::Mat img(40, 60, type);
  cv::randu(img, cv::Scalar::all(0), cv::Scalar::all(255));
  return img;
}

// Replaces the JFIF APP0 segment (right after SOI in OpenCV's output) with an Adobe APP14
// segment carrying `transform` (0: RGB, 1: YCbCr).
std::vector<std::uint8_t> WithAdobeInsteadOfJfif(const std::vector<std::uint8_t>& jpeg,
                                                 int transform) {
  EXPECT_EQ(jpeg[2], 0xFF);
  EXPECT_EQ(jpeg[3], 0xE0);
  const std::size_t app0 = 2 + 2 + ((jpeg[4] << 8) | jpeg[5]);
  const std::uint8_t adobe[] = {
      0xFF, 0xEE, 0x00, 0x0E, 'A',  'd',  'o',  'b',
      'e',  0x00, 0x64, 0x00, 0x00, 0x00, 0x00, static_cast<std::uint8_t>(transform)};
  // Built in one go: GCC 12 -O3 reports a false -Warray-bounds for inserts into a 2-byte vector.
  std::vector<std::uint8_t> out(2 + sizeof(adobe) + (jpeg.size() - app0));
  std::copy(jpeg.begin(), jpeg.begin() + 2, out.begin());
  std::copy(std::begin(adobe), std::end(adobe), out.begin() + 2);
  std::copy(jpeg.begin() + static_cast<std::ptrdiff_t>(app0), jpeg.end(),
            out.begin() + 2 + static_cast<std::ptrdiff_t>(sizeof(adobe)));
  return out;
}

imaging::ImageInfo Probe(const std::vector<std::uint8_t>& bytes) {
  auto info = imaging::ProbeImage(bytes);
  EXPECT_TRUE(info.has_value()) << info.error().ToString();
  return info.has_value() ? *info : imaging::ImageInfo{};
}

TEST(ScanJpegLayoutTest, ReadsFrameTypeAndColour) {
  const auto baseline = Encode(Picture(), ".jpg");
  JpegLayout l = ScanJpegLayout(baseline);
  EXPECT_EQ(l.sof_marker, 0xC0);
  EXPECT_EQ(l.precision, 8);
  EXPECT_EQ(l.components, 3);
  EXPECT_FALSE(l.rgb);
  EXPECT_TRUE(l.has_eoi);

  l = ScanJpegLayout(Encode(Picture(), ".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1}));
  EXPECT_EQ(l.sof_marker, 0xC2);

  l = ScanJpegLayout(Encode(Picture(CV_8UC1), ".jpg"));
  EXPECT_EQ(l.components, 1);

  EXPECT_TRUE(ScanJpegLayout(WithAdobeInsteadOfJfif(baseline, 0)).rgb);
  EXPECT_FALSE(ScanJpegLayout(WithAdobeInsteadOfJfif(baseline, 1)).rgb);

  const std::vector<std::uint8_t> truncated(baseline.begin(),
                                            baseline.begin() + baseline.size() - 20);
  EXPECT_FALSE(ScanJpegLayout(truncated).has_eoi);
  EXPECT_EQ(ScanJpegLayout(std::vector<std::uint8_t>{0xFF, 0xD8, 0x00}).sof_marker, 0);
}

TEST(ToWireImageTest, PassesBaselineYCbCrJpegThrough) {
  const auto jpeg = Encode(Picture(), ".jpg");
  auto wire = ToWireImage(jpeg, Probe(jpeg), {}, 92);
  ASSERT_TRUE(wire.has_value()) << wire.error().ToString();
  EXPECT_FALSE(wire->converted);
  EXPECT_EQ(wire->jpeg, jpeg);
}

TEST(ToWireImageTest, ConvertsEverythingElseToBaselineJpeg) {
  for (const auto& bytes :
       {Encode(Picture(), ".png"), Encode(Picture(), ".bmp"),
        Encode(Picture(), ".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1}),
        Encode(Picture(CV_8UC1), ".jpg"), WithAdobeInsteadOfJfif(Encode(Picture(), ".jpg"), 0)}) {
    auto wire = ToWireImage(bytes, Probe(bytes), {}, 92);
    ASSERT_TRUE(wire.has_value()) << wire.error().ToString();
    EXPECT_TRUE(wire->converted);
    EXPECT_NE(wire->jpeg, bytes);
    const JpegLayout l = ScanJpegLayout(wire->jpeg);
    EXPECT_EQ(l.sof_marker, 0xC0);
    EXPECT_EQ(l.components, 3);
    EXPECT_FALSE(l.rgb);
    const cv::Mat back = cv::imdecode(wire->jpeg, cv::IMREAD_UNCHANGED);
    EXPECT_EQ(back.cols, 60);
    EXPECT_EQ(back.rows, 40);
    EXPECT_EQ(back.channels(), 3);
    // And the result would itself pass through.
    EXPECT_TRUE(IsWireJpeg(wire->jpeg, Probe(wire->jpeg)));
  }
}

TEST(ToWireImageTest, ImagesOverMaxSideAreScaledDownKeepingTheAspect) {
  cv::Mat big(1500, 2000, CV_8UC3);
  cv::randu(big, cv::Scalar::all(0), cv::Scalar::all(255));
  for (const auto& bytes : {Encode(big, ".jpg"), Encode(big, ".png")}) {
    auto wire = ToWireImage(bytes, Probe(bytes), {}, 90, /*max_side=*/640);
    ASSERT_TRUE(wire.has_value()) << wire.error().ToString();
    EXPECT_TRUE(wire->converted);
    EXPECT_TRUE(wire->scaled);
    EXPECT_EQ(wire->width, 2000) << "results are reported in the upload's pixels";
    EXPECT_EQ(wire->height, 1500);
    const cv::Mat back = cv::imdecode(wire->jpeg, cv::IMREAD_UNCHANGED);
    EXPECT_EQ(back.cols, 640);
    EXPECT_EQ(back.rows, 480);
    EXPECT_TRUE(IsWireJpeg(wire->jpeg, Probe(wire->jpeg)));
  }
  // At or under the limit: as before (passed through).
  const auto small = Encode(Picture(), ".jpg");
  auto wire = ToWireImage(small, Probe(small), {}, 90, /*max_side=*/60);
  ASSERT_TRUE(wire.has_value());
  EXPECT_FALSE(wire->scaled);
  EXPECT_FALSE(wire->converted);
  EXPECT_EQ(wire->width, 60);
  EXPECT_EQ(wire->height, 40);
}

TEST(ToWireImageTest, TruncatedJpegIsInvalidArgument) {
  const auto jpeg = Encode(Picture(), ".jpg");
  const std::vector<std::uint8_t> truncated(jpeg.begin(), jpeg.begin() + jpeg.size() / 2);
  auto wire = ToWireImage(truncated, Probe(truncated), {}, 92);
  ASSERT_FALSE(wire.has_value());
  EXPECT_EQ(wire.error().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kadr::gateway::detail
