// The two engines behind one pre/post-processing path (ADR 0006), on the real models and photos
// of $KADR_TEST_DATA: ONNX Runtime and OpenCV DNN give the same detections, and a model with a
// dynamic batch dimension (made from a shared fixed-batch model by tools/make_dynamic_batch)
// gives for a batch of N images what N single calls give.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "imaging/decode.h"
#include "inference/model_registry.h"
#include "support/shell.h"
#include "support/test_data.h"

namespace kadr::inference {
namespace {

using protocol::Detection;

const std::vector<std::string> kModels = {"yolox_nano", "nanodet_m_416", "yolov8n_640_deq",
                                          "yolov8n-seg_320_deq"};

std::vector<std::string> Photos() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(testing::TestDataDir() / "media")) {
    if (e.path().extension() == ".jpg") names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

cv::Mat Photo(const std::string& name) {
  auto img = imaging::DecodeImage(testing::ReadFileBytes(testing::MediaPath(name)));
  EXPECT_TRUE(img.has_value()) << name;
  return img.has_value() ? *img : cv::Mat();
}

double IoU(const protocol::Box& a, const protocol::Box& b) {
  const double x1 = std::max(a.x, b.x);
  const double y1 = std::max(a.y, b.y);
  const double x2 = std::min(a.x + a.width, b.x + b.width);
  const double y2 = std::min(a.y + a.height, b.y + b.height);
  const double inter = std::max(0.0, x2 - x1) * std::max(0.0, y2 - y1);
  const double uni = static_cast<double>(a.area()) + b.area() - inter;
  return uni > 0 ? inter / uni : 0;
}

// Every detection of `a` clear of the threshold has a partner in `b`: same class, box IoU >=
// 0.99, score within 1e-3. Detections within 1e-3 of the threshold may exist in one engine only
// (a score of 0.2504 against 0.2496 is the same answer).
void ExpectMatched(const std::vector<Detection>& a, const std::vector<Detection>& b,
                   float threshold, const std::string& what) {
  for (const Detection& d : a) {
    if (d.score < threshold + 1e-3f) continue;
    const auto match = std::find_if(b.begin(), b.end(), [&](const Detection& e) {
      return e.class_id == d.class_id && IoU(d.box, e.box) >= 0.99;
    });
    ASSERT_NE(match, b.end()) << what << ": " << d.label << " " << d.score << " at (" << d.box.x
                              << ", " << d.box.y << ") has no partner";
    EXPECT_NEAR(match->score, d.score, 1e-3) << what << ": " << d.label;
    if (d.mask) {
      ASSERT_TRUE(match->mask.has_value()) << what;
      const double area = static_cast<double>(d.mask->Area());
      EXPECT_NEAR(static_cast<double>(match->mask->Area()), area, 0.02 * area + 4) << what;
    }
  }
}

class EnginesTest : public ::testing::Test {
 protected:
  void SetUp() override { KADR_REQUIRE_TEST_DATA(); }
};

TEST_F(EnginesTest, OnnxRuntimeAndOpenCvGiveTheSameDetectionsForEveryModelAndPhoto) {
  const auto models = testing::TestDataDir() / "models";
  auto ort = ModelRegistry::Create({.models_dirs = {models}, .builtins = false});
  auto cv = ModelRegistry::Create(
      {.models_dirs = {models}, .builtins = false, .engine = EngineKind::kOpenCvDnn});
  ASSERT_TRUE(ort.has_value() && cv.has_value());
  const auto photos = Photos();
  ASSERT_GE(photos.size(), 5u);
  int compared = 0;
  for (const auto& model : kModels) {
    auto a = (*ort)->Get(model);
    auto b = (*cv)->Get(model);
    ASSERT_TRUE(a.has_value()) << a.error().ToString();
    ASSERT_TRUE(b.has_value()) << b.error().ToString();
    ASSERT_EQ((*a)->info().backend, "onnxruntime/cpu");
    ASSERT_EQ((*b)->info().backend, "opencv-dnn/cpu");
    const float threshold = (*a)->info().default_confidence;
    for (const auto& photo : photos) {
      const cv::Mat img = Photo(photo);
      auto ra = (*a)->Detect(std::span<const cv::Mat>(&img, 1), {});
      auto rb = (*b)->Detect(std::span<const cv::Mat>(&img, 1), {});
      ASSERT_TRUE(ra.has_value() && rb.has_value());
      const std::string what = model + " on " + photo;
      ExpectMatched((*ra)[0], (*rb)[0], threshold, what + " (onnxruntime vs opencv)");
      ExpectMatched((*rb)[0], (*ra)[0], threshold, what + " (opencv vs onnxruntime)");
      compared += static_cast<int>((*ra)[0].size());
    }
  }
  EXPECT_GT(compared, 100) << "too few detections to compare anything";
}

// A dynamic-batch variant of a shared model, made by the repo's own tool.
std::filesystem::path MakeDynamic(const std::string& model, const std::filesystem::path& dir) {
  const auto out = dir / (model + "_dyn.onnx");
  const auto r = testing::Shell(std::string(KADR_MAKE_DYNAMIC_BATCH) + " '" +
                                (testing::TestDataDir() / "models" / (model + ".onnx")).string() +
                                "' '" + out.string() + "' 2>&1");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  return out;
}

TEST_F(EnginesTest, DynamicBatchGivesForNImagesWhatNSingleCallsGive) {
  const auto dir = testing::MakeTempDir();
  for (const std::string model : {"yolox_nano", "yolov8n-seg_320_deq"}) MakeDynamic(model, dir);
  std::filesystem::copy_file(testing::TestDataDir() / "models" / "coco80.names",
                             dir / "coco80.names");
  auto registry = ModelRegistry::Create({.models_dirs = {dir}, .builtins = false, .max_batch = 4});
  ASSERT_TRUE(registry.has_value()) << registry.error().ToString();
  std::vector<cv::Mat> images;
  for (const auto& photo : Photos()) images.push_back(Photo(photo));
  ASSERT_GE(images.size(), 5u);  // more than max_batch: two forward passes, the second short
  for (const std::string model : {"yolox_nano_dyn", "yolov8n-seg_320_deq_dyn"}) {
    auto detector = (*registry)->Get(model);
    ASSERT_TRUE(detector.has_value()) << detector.error().ToString();
    EXPECT_EQ((*detector)->info().max_batch, 4) << model << ": the batch is dynamic";
    DetectTimings timings;
    auto batch = (*detector)->Detect(images, {}, &timings);
    ASSERT_TRUE(batch.has_value()) << batch.error().ToString();
    ASSERT_EQ(batch->size(), images.size());
    int found = 0;
    for (size_t i = 0; i < images.size(); ++i) {
      auto single = (*detector)->Detect(std::span<const cv::Mat>(&images[i], 1), {});
      ASSERT_TRUE(single.has_value());
      const auto& s = (*single)[0];
      const auto& b = (*batch)[i];
      ASSERT_EQ(s.size(), b.size()) << model << " image " << i;
      for (size_t k = 0; k < s.size(); ++k) {
        EXPECT_EQ(s[k].class_id, b[k].class_id);
        EXPECT_NEAR(s[k].score, b[k].score, 1e-4) << model << " image " << i;
        EXPECT_GE(IoU(s[k].box, b[k].box), 0.999) << model << " image " << i;
        EXPECT_EQ(s[k].mask.has_value(), b[k].mask.has_value());
      }
      found += static_cast<int>(s.size());
    }
    EXPECT_GT(found, 10) << model;
  }
}

TEST_F(EnginesTest, ASidecarPicksTheEngineOfOneModel) {
  const auto dir = testing::MakeTempDir();
  std::filesystem::copy_file(testing::TestDataDir() / "models" / "yolox_nano.onnx",
                             dir / "yolox_nano.onnx");
  std::filesystem::copy_file(testing::TestDataDir() / "models" / "yolox_nano.onnx",
                             dir / "yolox_cv.onnx");
  std::ofstream(dir / "yolox_cv.json") << R"({"engine": "opencv"})";
  auto registry = ModelRegistry::Create({.models_dirs = {dir}, .builtins = false});
  ASSERT_TRUE(registry.has_value()) << registry.error().ToString();
  auto ort = (*registry)->Get("yolox_nano");
  auto cv = (*registry)->Get("yolox_cv");
  ASSERT_TRUE(ort.has_value() && cv.has_value());
  EXPECT_EQ((*ort)->info().backend, "onnxruntime/cpu");
  EXPECT_EQ((*cv)->info().backend, "opencv-dnn/cpu");

  std::ofstream(dir / "yolox_cv.json") << R"({"engine": "tensorrt"})";
  auto bad = ModelRegistry::Create({.models_dirs = {dir}, .builtins = false});
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find("choose onnxruntime or opencv"), std::string::npos)
      << bad.error().message();
}

}  // namespace
}  // namespace kadr::inference
