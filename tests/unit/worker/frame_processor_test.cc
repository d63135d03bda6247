#include "worker/frame_processor.h"

#include <chrono>

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
  inference::ModelInfo& mutable_info() { return info_; }
  Result<std::vector<std::vector<protocol::Detection>>> Detect(
      std::span<const cv::Mat> images, const protocol::DetectOptions&,
      inference::DetectTimings* timings) override {
    if (fail) return InternalError("backend exploded");
    ++calls;
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
  int calls = 0;

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

TEST(FrameProcessorTest, StagesOneAfterAnotherGiveWhatProcessGives) {
  FakeDetector detector;
  detector.mutable_info().max_batch = 2;
  const FrameProcessor processor;
  const auto started = SteadyClock::now() - std::chrono::milliseconds(250);
  auto a = processor.Decode(Png(cv::Mat(60, 80, CV_8UC3, cv::Scalar(10, 20, 30))), detector.info(),
                            started);
  auto b = processor.Decode(Png(cv::Mat(30, 40, CV_8UC3, cv::Scalar(10, 20, 30))), detector.info());
  ASSERT_TRUE(a.has_value()) << a.error().ToString();
  ASSERT_TRUE(b.has_value()) << b.error().ToString();
  EXPECT_EQ(a->result.model, "fake");
  EXPECT_EQ(a->image.cols, 80);
  EXPECT_EQ(a->result.image_width, 80);
  EXPECT_TRUE(a->result.timings_ms.count("decode"));

  DecodedFrame* run[] = {&*a, &*b};
  ASSERT_TRUE(processor.Detect(run, {}, detector).ok());
  EXPECT_EQ(detector.calls, 1) << "one call for the run";
  ASSERT_EQ(b->result.detections.size(), 1u);
  EXPECT_FLOAT_EQ(b->result.detections[0].box.x, 10.f) << "each frame gets its own detections";
  EXPECT_DOUBLE_EQ(a->result.timings_ms["inference"], 1.0) << "the call's 2 ms split in two";

  auto finished = processor.Finish(std::move(*a));
  ASSERT_TRUE(finished.has_value()) << finished.error().ToString();
  for (const char* k :
       {"decode", "preprocess", "inference", "postprocess", "draw", "encode", "total"}) {
    EXPECT_TRUE(finished->result.timings_ms.count(k)) << k;
  }
  EXPECT_GE(finished->result.timings_ms["total"], 250.0) << "total counts from `started`";
  const cv::Mat annotated = cv::imdecode(finished->annotated_jpeg, cv::IMREAD_COLOR);
  EXPECT_EQ(annotated.cols, 80);

  auto undrawn = processor.Finish(std::move(*b), /*draw=*/false);
  ASSERT_TRUE(undrawn.has_value());
  EXPECT_TRUE(undrawn->annotated_jpeg.empty());
  EXPECT_FALSE(undrawn->result.timings_ms.count("draw"));
}

TEST(FrameProcessorTest, DetectFailureOrOversizedRunLeavesTheFramesUnchanged) {
  FakeDetector detector;  // max_batch 1
  const FrameProcessor processor;
  auto a = processor.Decode(Png(cv::Mat(8, 8, CV_8UC3)), detector.info());
  auto b = processor.Decode(Png(cv::Mat(8, 8, CV_8UC3)), detector.info());
  ASSERT_TRUE(a.has_value() && b.has_value());
  DecodedFrame* two[] = {&*a, &*b};
  const Status over = processor.Detect(two, {}, detector);
  EXPECT_EQ(over.code(), StatusCode::kInvalidArgument) << over.ToString();
  EXPECT_EQ(detector.calls, 0);

  detector.fail = true;
  DecodedFrame* one[] = {&*a};
  const Status failed = processor.Detect(one, {}, detector);
  EXPECT_EQ(failed.message(), "backend exploded");
  EXPECT_FALSE(a->result.timings_ms.count("inference"));
  EXPECT_TRUE(a->result.detections.empty());
}

TEST(FrameProcessorTest, ModelThatNeedsNoPixelsIsOnlyProbed) {
  FakeDetector detector;
  detector.mutable_info().needs_pixels = false;
  std::vector<std::uint8_t> png = Png(cv::Mat(48, 64, CV_8UC3, cv::Scalar(1, 2, 3)));
  for (std::size_t i = 33; i < png.size(); ++i) png[i] = 0x5a;  // header intact, pixels not
  const FrameProcessor processor;
  auto f = processor.Decode(png, detector.info());
  ASSERT_TRUE(f.has_value()) << f.error().ToString();
  EXPECT_TRUE(f->image.empty());
  EXPECT_EQ(f->result.image_width, 64);
  DecodedFrame* run[] = {&*f};
  EXPECT_TRUE(processor.Detect(run, {}, detector).ok());
  EXPECT_EQ(detector.calls, 0) << "the model was given pixels";
  auto finished = processor.Finish(std::move(*f));
  ASSERT_TRUE(finished.has_value());
  EXPECT_TRUE(finished->annotated_jpeg.empty());
  EXPECT_TRUE(finished->result.timings_ms.count("total"));
}

}  // namespace
}  // namespace kadr::worker
