#include "worker/frame_processor.h"

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

namespace kadr::worker {
namespace {

// A detector that finds one box in the middle of every image, or fails on demand.
class FakeDetector : public inference::Detector {
 public:
  FakeDetector() {
    info_.name = "fake";
    info_.labels = {"thing"};
  }
  const inference::ModelInfo& info() const override { return info_; }
  Result<std::vector<std::vector<protocol::Detection>>> Detect(
      std::span<const cv::Mat> images, const protocol::DetectOptions&,
      inference::DetectTimings* timings) override {
    if (fail) return InternalError("backend exploded");
    std::vector<std::vector<protocol::Detection>> out;
    for (const auto& img : images) {
      protocol::Detection d;
      d.label = "thing";
      d.score = 0.9f;
      d.box = {img.cols / 4.f, img.rows / 4.f, img.cols / 2.f, img.rows / 2.f};
      out.push_back({d});
    }
    if (timings != nullptr) *timings = {1, 2, 3};
    return out;
  }
  bool fail = false;

 private:
  inference::ModelInfo info_;
};

std::vector<std::uint8_t> Png(const cv::Mat& img) {
  std::vector<std::uint8_t> buf;
  cv::imencode(".png", img, buf);
  return buf;
}

TEST(FrameProcessorTest, ProducesResultAnnotatedJpegAndEveryTiming) {
  FakeDetector detector;
  const cv::Mat img(60, 80, CV_8UC3, cv::Scalar(10, 20, 30));
  auto r = FrameProcessor().Process(Png(img), detector, {});
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->result.model, "fake");
  EXPECT_EQ(r->result.image_width, 80);
  EXPECT_EQ(r->result.image_height, 60);
  ASSERT_EQ(r->result.detections.size(), 1u);
  for (const char* k :
       {"decode", "preprocess", "inference", "postprocess", "draw", "encode", "total"}) {
    EXPECT_TRUE(r->result.timings_ms.count(k)) << k;
  }
  EXPECT_DOUBLE_EQ(r->result.timings_ms["inference"], 2);
  const cv::Mat annotated = cv::imdecode(r->annotated_jpeg, cv::IMREAD_COLOR);
  ASSERT_EQ(annotated.size(), img.size());
  EXPECT_GT(cv::norm(annotated, img, cv::NORM_INF), 50) << "nothing was drawn";
}

TEST(FrameProcessorTest, NoDrawSkipsDrawingAndEncoding) {
  FakeDetector detector;
  auto r = FrameProcessor({.draw = false}).Process(Png(cv::Mat(8, 8, CV_8UC3)), detector, {});
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->annotated_jpeg.empty());
  EXPECT_FALSE(r->result.timings_ms.count("encode"));
}

TEST(FrameProcessorTest, PropagatesDecodeAndDetectorErrors) {
  FakeDetector detector;
  const std::vector<std::uint8_t> junk = {'n', 'o', 'p', 'e'};
  auto bad = FrameProcessor().Process(junk, detector, {});
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kUnsupported);

  imaging::DecodeLimits tiny;
  tiny.max_pixels = 10;
  auto big = FrameProcessor({.limits = tiny}).Process(Png(cv::Mat(8, 8, CV_8UC3)), detector, {});
  ASSERT_FALSE(big.has_value());
  EXPECT_EQ(big.error().code(), StatusCode::kTooLarge);

  detector.fail = true;
  auto failed = FrameProcessor().Process(Png(cv::Mat(8, 8, CV_8UC3)), detector, {});
  ASSERT_FALSE(failed.has_value());
  EXPECT_EQ(failed.error().message(), "backend exploded");
}

}  // namespace
}  // namespace kadr::worker
