// Real COCO models on real photos from $KADR_TEST_DATA (../shared in CI). Each test skips
// with a clear message when the folder is absent.
#include <algorithm>
#include <filesystem>
#include <map>

#include <gtest/gtest.h>

#include "imaging/decode.h"
#include "inference/model_registry.h"
#include "support/test_data.h"

namespace kadr::inference {
namespace {

using protocol::Detection;

class RealModelsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (testing::TestDataDir().empty()) return;
    auto r = ModelRegistry::Create({.models_dirs = {testing::TestDataDir() / "models"}});
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    registry_ = std::move(*r).release();
    auto o = ModelRegistry::Create(
        {.models_dirs = {testing::TestDataDir() / "models"}, .engine = EngineKind::kOpenCvDnn});
    ASSERT_TRUE(o.has_value()) << o.error().ToString();
    opencv_ = std::move(*o).release();
  }
  static void TearDownTestSuite() {
    delete registry_;
    registry_ = nullptr;
    delete opencv_;
    opencv_ = nullptr;
  }

  void SetUp() override { KADR_REQUIRE_TEST_DATA(); }

  static cv::Mat Photo(const std::string& name) {
    auto bytes = testing::ReadFileBytes(testing::MediaPath(name));
    auto img = imaging::DecodeImage(bytes);
    EXPECT_TRUE(img.has_value()) << name << ": " << img.error().ToString();
    return img.has_value() ? *img : cv::Mat();
  }

  static std::vector<Detection> Run(const std::string& model, const std::string& photo,
                                    const protocol::DetectOptions& options = {},
                                    ModelRegistry* registry = nullptr) {
    auto detector = (registry != nullptr ? registry : registry_)->Get(model);
    EXPECT_TRUE(detector.has_value()) << detector.error().ToString();
    if (!detector) return {};
    const cv::Mat img = Photo(photo);
    auto r = (*detector)->Detect(std::span<const cv::Mat>(&img, 1), options);
    EXPECT_TRUE(r.has_value()) << r.error().ToString();
    return r.has_value() ? (*r)[0] : std::vector<Detection>{};
  }

  static std::map<std::string, int> CountLabels(const std::vector<Detection>& dets,
                                                float min_score) {
    std::map<std::string, int> counts;
    for (const auto& d : dets) {
      if (d.score >= min_score) ++counts[d.label];
    }
    return counts;
  }

  static void ExpectBusAndPeople(const std::vector<Detection>& dets) {
    auto counts = CountLabels(dets, 0.3f);
    EXPECT_EQ(counts["bus"], 1) << "expected one bus";
    EXPECT_GE(counts["person"], 3) << "expected at least three people";
    for (const auto& d : dets) {  // every box inside the 810x1080 photo
      EXPECT_GE(d.box.x, 0);
      EXPECT_GE(d.box.y, 0);
      EXPECT_LE(d.box.x + d.box.width, 810.01f);
      EXPECT_LE(d.box.y + d.box.height, 1080.01f);
    }
  }

  static ModelRegistry* registry_;  // the default engine, ONNX Runtime
  static ModelRegistry* opencv_;    // --engine opencv
};

ModelRegistry* RealModelsTest::registry_ = nullptr;
ModelRegistry* RealModelsTest::opencv_ = nullptr;

TEST_F(RealModelsTest, YoloxNanoFindsBusAndPeopleOnBusJpg) {
  ExpectBusAndPeople(Run("yolox_nano", "bus.jpg", {.confidence = 0.3f}));
}

TEST_F(RealModelsTest, UnmodifiedUltralyticsYoloV8RunsAndFindsBusAndPeople) {
  // ONNX Runtime, the default, runs the export as it is.
  auto detector = registry_->Get("yolov8n_640_deq");
  ASSERT_TRUE(detector.has_value()) << detector.error().ToString();
  EXPECT_EQ((*detector)->info().backend, "onnxruntime/cpu");
  EXPECT_TRUE((*detector)->info().notes.empty()) << (*detector)->info().notes[0];
  ExpectBusAndPeople(Run("yolov8n_640_deq", "bus.jpg"));

  // OpenCV 4.6 needs the strides rewrite.
  auto on_opencv = opencv_->Get("yolov8n_640_deq");
  ASSERT_TRUE(on_opencv.has_value()) << on_opencv.error().ToString();
  EXPECT_EQ((*on_opencv)->info().backend, "opencv-dnn/cpu");
  const auto& notes = (*on_opencv)->info().notes;
  ASSERT_FALSE(notes.empty()) << "the unmodified export needs the strides rewrite";
  EXPECT_NE(notes[0].find("/model.22/Mul_2"), std::string::npos) << notes[0];
  ExpectBusAndPeople(Run("yolov8n_640_deq", "bus.jpg", {}, opencv_));
}

TEST_F(RealModelsTest, UnmodifiedExportGivesTheSameDetectionsAsTheHandPatchedOne) {
  const auto a = Run("yolov8n_640_deq", "dog.jpg");
  const auto b = Run("yolov8n_640_deq_cv46", "dog.jpg");
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].class_id, b[i].class_id);
    EXPECT_NEAR(a[i].score, b[i].score, 1e-4);
    EXPECT_NEAR(a[i].box.x, b[i].box.x, 0.05);
    EXPECT_NEAR(a[i].box.width, b[i].box.width, 0.05);
  }
  auto counts = CountLabels(a, 0.5f);
  EXPECT_EQ(counts["dog"], 1);
  EXPECT_EQ(counts["bicycle"], 1);
}

TEST_F(RealModelsTest, YoloV8SegMasksCoverTheObjectsNotTheirBoxes) {
  const auto dets = Run("yolov8n-seg_320_deq", "bus.jpg");
  ExpectBusAndPeople(dets);
  int people_checked = 0;
  for (const auto& d : dets) {
    ASSERT_TRUE(d.mask.has_value()) << d.label << " has no mask";
    const auto& m = *d.mask;
    ASSERT_EQ(m.data.size(), static_cast<size_t>(m.width) * m.height);
    // The mask's rectangle is the box (rounded outwards, clipped).
    EXPECT_NEAR(m.x, d.box.x, 1.5);
    EXPECT_NEAR(m.width, d.box.width, 2.5);
    const double fill = static_cast<double>(m.Area()) / (static_cast<double>(m.width) * m.height);
    EXPECT_GT(fill, 0.2) << d.label << " mask nearly empty";
    // People cut by the image border show only part of their body; check the whole ones.
    const bool whole = d.box.x > 5 && d.box.x + d.box.width < 805;
    if (d.label == "person" && d.score > 0.5f && whole) {
      // A standing person fills well under the whole box, and not its top corners.
      EXPECT_LT(fill, 0.85) << "person mask is a filled box";
      EXPECT_FALSE(m.At(m.x + 2, m.y + 2) && m.At(m.x + m.width - 3, m.y + 2))
          << "both top corners of a person's box are masked";
      // The torso (middle third of the width, 20-50% of the height) is mostly covered.
      int set = 0;
      int total = 0;
      for (int y = m.y + m.height / 5; y < m.y + m.height / 2; ++y) {
        for (int x = m.x + m.width / 3; x < m.x + 2 * m.width / 3; ++x, ++total) set += m.At(x, y);
      }
      EXPECT_GT(set, total / 2) << "torso of a person not masked";
      ++people_checked;
    }
    if (d.label == "bus") {
      EXPECT_TRUE(m.At(m.x + m.width / 2, m.y + m.height / 2)) << "bus centre not masked";
    }
  }
  EXPECT_GE(people_checked, 2);
}

TEST_F(RealModelsTest, NanoDetFindsBusAndPerson) {
  auto counts = CountLabels(Run("nanodet_m_416", "bus.jpg"), 0.4f);
  EXPECT_EQ(counts["bus"], 1);
  EXPECT_GE(counts["person"], 1);
}

TEST_F(RealModelsTest, YoloxOnDogJpgFindsDogBicycleAndCar) {
  auto counts = CountLabels(Run("yolox_nano", "dog.jpg"), 0.5f);
  EXPECT_EQ(counts["dog"], 1);
  EXPECT_EQ(counts["bicycle"], 1);
  EXPECT_GE(counts["car"] + counts["truck"], 1);
}

TEST_F(RealModelsTest, ClassFilterKeepsOnlyRequestedClasses) {
  const auto dets = Run("yolox_nano", "bus.jpg", {.classes = {0}});
  ASSERT_GE(dets.size(), 3u);
  for (const auto& d : dets) EXPECT_EQ(d.label, "person");
}

TEST_F(RealModelsTest, BatchGivesTheSameResultsAsSingleImages) {
  auto detector = registry_->Get("yolox_nano");
  ASSERT_TRUE(detector.has_value());
  const std::vector<cv::Mat> images = {Photo("bus.jpg"), Photo("zidane.jpg")};
  auto batch = (*detector)->Detect(images, {});
  ASSERT_TRUE(batch.has_value());
  ASSERT_EQ(batch->size(), 2u);
  for (size_t i = 0; i < images.size(); ++i) {
    auto single = (*detector)->Detect(std::span<const cv::Mat>(&images[i], 1), {});
    ASSERT_TRUE(single.has_value());
    ASSERT_EQ((*single)[0].size(), (*batch)[i].size());
    for (size_t k = 0; k < (*single)[0].size(); ++k) {
      EXPECT_FLOAT_EQ((*single)[0][k].score, (*batch)[i][k].score);
    }
  }
}

TEST_F(RealModelsTest, DynamicInt8ModelIsRefusedAtLoadWithModelCauseAndAlternatives) {
  // Neither engine runs this dynamically quantised export: ONNX Runtime's CPU provider has no
  // ConvInteger for its int8 weights, OpenCV DNN no quantised ops. The message says both.
  auto detector = registry_->Get("yolov8n_640_dynint8");
  ASSERT_FALSE(detector.has_value());
  const auto& msg = detector.error().message();
  EXPECT_EQ(detector.error().code(), StatusCode::kUnsupported);
  EXPECT_NE(msg.find("yolov8n_640_dynint8"), std::string::npos) << msg;  // the model
  EXPECT_NE(msg.find("ONNX Runtime cannot load it"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ConvInteger"), std::string::npos) << msg;  // the cause
  EXPECT_NE(msg.find("engine 'opencv' cannot run it either"), std::string::npos) << msg;
  EXPECT_NE(msg.find("DynamicQuantizeLinear"), std::string::npos) << msg;  // OpenCV's cause
  EXPECT_NE(msg.find("fp32"), std::string::npos) << msg;                   // what works
}

TEST_F(RealModelsTest, HogFindsPeopleAndHaarFindsFaces) {
  EXPECT_GE(CountLabels(Run("people-hog", "bus.jpg"), 0.5f)["person"], 2);
  EXPECT_GE(CountLabels(Run("faces-haar", "zidane.jpg"), 0.5f)["face"], 1);
}

TEST_F(RealModelsTest, AnEightyClassModelWithoutNamesGetsTheCocoNames) {
  // yolox_nano.onnx alone in a folder, as its project publishes it: no metadata, no .names.
  const auto dir = testing::MakeTempDir();
  std::filesystem::copy_file(testing::TestDataDir() / "models" / "yolox_nano.onnx",
                             dir / "yolox_nano.onnx");
  auto registry = ModelRegistry::Create({.models_dirs = {dir}, .builtins = false});
  ASSERT_TRUE(registry.has_value()) << registry.error().ToString();
  auto detector = (*registry)->Get("yolox_nano");
  ASSERT_TRUE(detector.has_value()) << detector.error().ToString();
  const auto& notes = (*detector)->info().notes;
  EXPECT_TRUE(std::any_of(notes.begin(), notes.end(), [](const std::string& n) {
    return n.find("COCO-80") != std::string::npos;
  })) << "no log line says where the names came from";
  const cv::Mat img = Photo("dog.jpg");
  auto r = (*detector)->Detect(std::span<const cv::Mat>(&img, 1), {});
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  auto counts = CountLabels((*r)[0], 0.5f);
  EXPECT_EQ(counts["bicycle"], 1) << "a bicycle must not be class_1";
  EXPECT_EQ(counts["dog"], 1);
}

TEST_F(RealModelsTest, LabelsComeFromTheFoldersNamesFile) {
  auto detector = registry_->Get("yolox_nano");  // no metadata, no sidecar: coco80.names
  ASSERT_TRUE(detector.has_value());
  ASSERT_EQ((*detector)->info().labels.size(), 80u);
  EXPECT_EQ((*detector)->info().labels[5], "bus");
}

}  // namespace
}  // namespace kadr::inference
