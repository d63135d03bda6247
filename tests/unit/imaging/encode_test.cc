#include "imaging/encode.h"

#include <atomic>
#include <cmath>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <turbojpeg.h>

#include "imaging/decode.h"

namespace kadr::imaging {
namespace {

// Gradients plus a gentle wave: what photos mostly are, and what JPEG is made for.
cv::Mat SmoothImage(int width, int height) {
  cv::Mat image(height, width, CV_8UC3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      image.at<cv::Vec3b>(y, x) =
          cv::Vec3b(static_cast<uchar>(255 * x / width), static_cast<uchar>(255 * y / height),
                    static_cast<uchar>(128 + 100 * std::sin(x * 0.05) * std::cos(y * 0.07)));
    }
  }
  return image;
}

std::span<const std::uint8_t> Span(const std::vector<std::uint8_t>& b) {
  return {b.data(), b.size()};
}

// The chroma subsampling TurboJPEG reads back from an encoded header.
int Subsampling(const std::vector<std::uint8_t>& jpeg) {
  tjhandle tj = tjInitDecompress();
  int width = 0, height = 0, subsamp = -1, colorspace = -1;
  EXPECT_EQ(tjDecompressHeader3(tj, jpeg.data(), static_cast<unsigned long>(jpeg.size()), &width,
                                &height, &subsamp, &colorspace),
            0);
  tjDestroy(tj);
  return subsamp;
}

TEST(EncodeJpegTest, RoundTripsASmoothImageAbove30Db) {
  const cv::Mat image = SmoothImage(320, 240);
  for (bool subsample_420 : {true, false}) {
    auto jpeg = EncodeJpeg(image, {.quality = 85, .subsample_420 = subsample_420});
    ASSERT_TRUE(jpeg.has_value()) << jpeg.status().ToString();
    EXPECT_EQ(SniffFormat(Span(*jpeg)), ImageFormat::kJpeg);
    auto decoded = DecodeImage(Span(*jpeg));
    ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
    ASSERT_EQ(decoded->size(), image.size());
    EXPECT_GT(cv::PSNR(*decoded, image), 30.0) << "420=" << subsample_420;
  }
}

TEST(EncodeJpegTest, WritesACompleteJpegStream) {
  auto jpeg = EncodeJpeg(SmoothImage(64, 48));
  ASSERT_TRUE(jpeg.has_value()) << jpeg.status().ToString();
  ASSERT_GE(jpeg->size(), 4u);
  EXPECT_EQ((*jpeg)[0], 0xFF);
  EXPECT_EQ((*jpeg)[1], 0xD8);
  EXPECT_EQ((*jpeg)[jpeg->size() - 2], 0xFF);
  EXPECT_EQ((*jpeg)[jpeg->size() - 1], 0xD9);
}

TEST(EncodeJpegTest, UsesTheRequestedChromaSubsampling) {
  const cv::Mat image = SmoothImage(64, 48);
  auto s420 = EncodeJpeg(image, {.subsample_420 = true});
  auto s444 = EncodeJpeg(image, {.subsample_420 = false});
  ASSERT_TRUE(s420.has_value() && s444.has_value());
  EXPECT_EQ(Subsampling(*s420), TJSAMP_420);
  EXPECT_EQ(Subsampling(*s444), TJSAMP_444);
}

TEST(EncodeJpegTest, EncodesGrayscaleAsASingleComponentJpeg) {
  cv::Mat gray;
  cv::cvtColor(SmoothImage(64, 48), gray, cv::COLOR_BGR2GRAY);
  auto jpeg = EncodeJpeg(gray, {.quality = 95});
  ASSERT_TRUE(jpeg.has_value()) << jpeg.status().ToString();
  EXPECT_EQ(Subsampling(*jpeg), TJSAMP_GRAY);
  auto decoded = DecodeImage(Span(*jpeg));
  ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
  cv::Mat back;
  cv::cvtColor(*decoded, back, cv::COLOR_BGR2GRAY);
  EXPECT_GT(cv::PSNR(back, gray), 35.0);
}

TEST(EncodeJpegTest, EncodesANonContiguousRegionOfInterest) {
  const cv::Mat image = SmoothImage(200, 100);
  const cv::Mat roi = image(cv::Rect(37, 11, 90, 60));
  ASSERT_FALSE(roi.isContinuous());
  auto jpeg = EncodeJpeg(roi, {.quality = 95});
  ASSERT_TRUE(jpeg.has_value()) << jpeg.status().ToString();
  auto decoded = DecodeImage(Span(*jpeg));
  ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
  ASSERT_EQ(decoded->size(), roi.size());
  EXPECT_GT(cv::PSNR(*decoded, roi), 30.0);
}

TEST(EncodeJpegTest, HigherQualityGivesLargerOutput) {
  cv::Mat noise(64, 64, CV_8UC3);
  cv::randu(noise, 0, 256);
  auto low = EncodeJpeg(noise, {.quality = 20});
  auto high = EncodeJpeg(noise, {.quality = 95});
  ASSERT_TRUE(low.has_value() && high.has_value());
  EXPECT_LT(low->size(), high->size());
}

TEST(EncodeJpegTest, RejectsEmptyImage) {
  auto jpeg = EncodeJpeg(cv::Mat());
  ASSERT_FALSE(jpeg.has_value());
  EXPECT_EQ(jpeg.error(), InvalidArgumentError("empty image"));
}

TEST(EncodeJpegTest, RejectsUnsupportedPixelTypes) {
  for (int type : {CV_8UC4, CV_8UC2, CV_16UC3, CV_32FC3, CV_16UC1}) {
    auto jpeg = EncodeJpeg(cv::Mat(8, 8, type, cv::Scalar::all(0)));
    ASSERT_FALSE(jpeg.has_value()) << type;
    EXPECT_EQ(jpeg.error().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(jpeg.error().message().find("CV_8UC3"), std::string::npos) << jpeg.error().message();
  }
}

TEST(EncodeJpegTest, RejectsQualityOutside1To100) {
  const cv::Mat image = SmoothImage(16, 16);
  for (int quality : {0, -5, 101}) {
    auto jpeg = EncodeJpeg(image, {.quality = quality});
    ASSERT_FALSE(jpeg.has_value()) << quality;
    EXPECT_EQ(jpeg.error().code(), StatusCode::kInvalidArgument);
  }
  EXPECT_TRUE(EncodeJpeg(image, {.quality = 1}).has_value());
  EXPECT_TRUE(EncodeJpeg(image, {.quality = 100}).has_value());
}

TEST(EncodeJpegTest, EncodesOddSizesIncludingOnePixel) {
  for (const cv::Size size : {cv::Size(1, 1), cv::Size(3, 17), cv::Size(33, 2)}) {
    cv::Mat image(size, CV_8UC3, cv::Scalar(10, 200, 90));
    auto jpeg = EncodeJpeg(image);
    ASSERT_TRUE(jpeg.has_value()) << jpeg.status().ToString();
    auto decoded = DecodeImage(Span(*jpeg));
    ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
    EXPECT_EQ(decoded->size(), size);
  }
}

TEST(EncodeJpegTest, IsSafeToCallFromManyThreads) {
  const cv::Mat image = SmoothImage(96, 64);
  auto reference = EncodeJpeg(image);
  ASSERT_TRUE(reference.has_value());
  std::atomic<int> mismatches = 0;
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        auto jpeg = EncodeJpeg(image);
        if (!jpeg.has_value() || *jpeg != *reference) ++mismatches;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches, 0);
}

}  // namespace
}  // namespace kadr::imaging
