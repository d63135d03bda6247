// The ONNX loading path on a model the repo generates itself (tools/make_tiny_onnx.cc), so it
// runs on every machine, with or without the shared models.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "inference/detail/onnx_detector.h"
#include "inference/model_registry.h"
#include "support/test_data.h"

namespace kadr::inference {
namespace {

ModelSpec TinySpec() {
  ModelSpec spec;
  spec.name = "tiny";
  spec.path = KADR_TINY_ONNX;
  return spec;
}

cv::Mat Solid(int size, int value) { return cv::Mat(size, size, CV_8UC3, cv::Scalar::all(value)); }

// Every ONNX test runs on both engines: one pre/post-processing path, two runtimes.
class TinyModelTest : public ::testing::TestWithParam<EngineKind> {
 protected:
  Result<std::unique_ptr<Detector>> Load(const ModelSpec& spec) {
    return CreateOnnxDetector(spec, {.engine = GetParam()});
  }
};

TEST_P(TinyModelTest, LoadsAsYoloV8WithLabelsFromMetadata) {
  auto detector = Load(TinySpec());
  ASSERT_TRUE(detector.has_value()) << detector.error().ToString();
  const ModelInfo& info = (*detector)->info();
  EXPECT_EQ(info.family, ModelFamily::kYoloV8);
  EXPECT_EQ(info.input_width, 32);
  EXPECT_EQ(info.input_height, 32);
  EXPECT_EQ(info.labels, (std::vector<std::string>{"bright", "dark"}));
  if (GetParam() == EngineKind::kOpenCvDnn) {
    // The [1,16] broadcast constant is the pattern OpenCV 4.6 cannot run as is.
    EXPECT_EQ(info.backend, "opencv-dnn/cpu");
    ASSERT_EQ(info.notes.size(), 1u);
    EXPECT_NE(info.notes[0].find("expanded to [1,6,16]"), std::string::npos) << info.notes[0];
  } else {
    EXPECT_EQ(info.backend, "onnxruntime/cpu");  // ONNX Runtime runs the graph as it is
    EXPECT_TRUE(info.notes.empty()) << info.notes[0];
  }
}

TEST_P(TinyModelTest, DetectionDependsOnInputAndMapsBackToImagePixels) {
  auto detector = Load(TinySpec());
  ASSERT_TRUE(detector.has_value()) << detector.error().ToString();
  const std::vector<cv::Mat> images = {Solid(64, 255), Solid(64, 0)};
  auto result = (*detector)->Detect(images, {});
  ASSERT_TRUE(result.has_value()) << result.error().ToString();
  ASSERT_EQ(result->size(), 2u);
  ASSERT_EQ((*result)[0].size(), 1u);  // 16 identical anchors, NMS keeps one
  EXPECT_EQ((*result)[0][0].label, "bright");
  EXPECT_NEAR((*result)[0][0].score, 1.0, 1e-3);
  // Box centred at (16,16) size 16 in the 32px input = (16,16,32,32) in the 64px image.
  const auto& box = (*result)[0][0].box;
  EXPECT_NEAR(box.x, 16, 0.01);
  EXPECT_NEAR(box.y, 16, 0.01);
  EXPECT_NEAR(box.width, 32, 0.01);
  EXPECT_NEAR(box.height, 32, 0.01);
  ASSERT_EQ((*result)[1].size(), 1u);
  EXPECT_EQ((*result)[1][0].label, "dark");
}

TEST_P(TinyModelTest, ClassFilterAndConfidenceApply) {
  auto detector = Load(TinySpec());
  ASSERT_TRUE(detector.has_value());
  const cv::Mat grey = Solid(32, 100);  // bright 0.39, dark 0.61
  protocol::DetectOptions only_dark;
  only_dark.classes = {1};
  auto r = (*detector)->Detect(std::span<const cv::Mat>(&grey, 1), only_dark);
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ((*r)[0].size(), 1u);
  EXPECT_EQ((*r)[0][0].class_id, 1);

  // As in Ultralytics, each anchor keeps its best class and the filter applies after.
  protocol::DetectOptions only_bright;
  only_bright.classes = {0};
  r = (*detector)->Detect(std::span<const cv::Mat>(&grey, 1), only_bright);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE((*r)[0].empty());

  protocol::DetectOptions strict;
  strict.confidence = 0.9f;
  r = (*detector)->Detect(std::span<const cv::Mat>(&grey, 1), strict);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE((*r)[0].empty());

  protocol::DetectOptions bad_class;
  bad_class.classes = {7};
  r = (*detector)->Detect(std::span<const cv::Mat>(&grey, 1), bad_class);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
}

TEST_P(TinyModelTest, FamilyThatDoesNotMatchTheOutputsFailsAtLoad) {
  ModelSpec spec = TinySpec();
  spec.family = ModelFamily::kYolox;
  auto detector = Load(spec);
  ASSERT_FALSE(detector.has_value());
  EXPECT_EQ(detector.error().code(), StatusCode::kUnsupported);
  EXPECT_NE(detector.error().message().find("model 'tiny'"), std::string::npos);
  EXPECT_NE(detector.error().message().find("do not match family 'yolox'"), std::string::npos)
      << detector.error().message();
}

TEST_P(TinyModelTest, GarbageFileIsRefusedWithModelNameAndCause) {
  const auto dir = testing::MakeTempDir();
  const auto path = dir / "garbage.onnx";
  std::ofstream(path) << "this is not a protobuf";
  ModelSpec spec;
  spec.name = "garbage";
  spec.path = path;
  auto detector = Load(spec);
  ASSERT_FALSE(detector.has_value());
  EXPECT_EQ(detector.error().code(), StatusCode::kUnsupported);
  EXPECT_NE(detector.error().message().find("model 'garbage'"), std::string::npos);
  EXPECT_NE(detector.error().message().find("not a valid ONNX model"), std::string::npos)
      << detector.error().message();
  EXPECT_NE(detector.error().message().find("yolov8"), std::string::npos);  // says what works
}

TEST_P(TinyModelTest, MissingFileIsNotFound) {
  ModelSpec spec;
  spec.name = "ghost";
  spec.path = "/nonexistent/ghost.onnx";
  auto detector = Load(spec);
  ASSERT_FALSE(detector.has_value());
  EXPECT_EQ(detector.error().code(), StatusCode::kNotFound);
  EXPECT_NE(detector.error().message().find("/nonexistent/ghost.onnx"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Engines, TinyModelTest,
                         ::testing::Values(EngineKind::kOnnxRuntime, EngineKind::kOpenCvDnn),
                         [](const auto& p) { return std::string(EngineKindName(p.param)); });

TEST(RegistryTest, DiscoversModelsReadsSidecarAndListsNamesForUnknownModel) {
  const auto dir = testing::MakeTempDir();
  std::filesystem::copy_file(KADR_TINY_ONNX, dir / "tiny.onnx");
  std::ofstream(dir / "tiny.json") << R"({"confidence": 0.6, "labels": ["light", "shadow"]})";
  auto registry = ModelRegistry::Create({.models_dirs = {dir}});
  ASSERT_TRUE(registry.has_value()) << registry.error().ToString();
  EXPECT_EQ((*registry)->Names(),
            (std::vector<std::string>{"faces-haar", "null", "people-hog", "tiny"}));

  auto tiny = (*registry)->Get("tiny");
  ASSERT_TRUE(tiny.has_value()) << tiny.error().ToString();
  EXPECT_FLOAT_EQ((*tiny)->info().default_confidence, 0.6f);
  EXPECT_EQ((*tiny)->info().labels[0], "light");  // sidecar wins over ONNX metadata

  auto unknown = (*registry)->Get("yolo9000");
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code(), StatusCode::kNotFound);
  EXPECT_NE(unknown.error().message().find("available: faces-haar, null, people-hog, tiny"),
            std::string::npos)
      << unknown.error().message();
}

TEST(RegistryTest, ConfigFileOverridesDiscoveredModelAndRejectsUnknownKeys) {
  const auto dir = testing::MakeTempDir();
  std::filesystem::copy_file(KADR_TINY_ONNX, dir / "tiny.onnx");
  const auto config = dir / "models.json";
  std::ofstream(config) << R"({"models": [{"name": "tiny", "path": "tiny.onnx", "iou": 0.3}]})";
  auto registry = ModelRegistry::Create({.config_file = config, .models_dirs = {dir}});
  ASSERT_TRUE(registry.has_value()) << registry.error().ToString();
  auto tiny = (*registry)->Get("tiny");
  ASSERT_TRUE(tiny.has_value()) << tiny.error().ToString();
  EXPECT_FLOAT_EQ((*tiny)->info().default_iou, 0.3f);

  std::ofstream(config) << R"({"models": [{"name": "tiny", "path": "tiny.onnx", "iuo": 0.3}]})";
  auto bad = ModelRegistry::Create({.config_file = config});
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.error().message().find("unknown key 'iuo'"), std::string::npos)
      << bad.error().message();
}

TEST(RegistryTest, FailedLoadIsRememberedAndListed) {
  const auto dir = testing::MakeTempDir();
  std::ofstream(dir / "broken.onnx") << "not onnx";
  auto registry = ModelRegistry::Create({.models_dirs = {dir}, .builtins = false});
  ASSERT_TRUE(registry.has_value());
  (*registry)->LoadAll();
  const auto list = (*registry)->List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].state, LoadState::kFailed);
  EXPECT_EQ(list[0].error.code(), StatusCode::kUnsupported);
  EXPECT_FALSE((*registry)->Get("broken").has_value());
}

TEST(BuiltinModelTest, BuiltinsLoadWithoutAnyFiles) {
  auto registry = ModelRegistry::Create({});
  ASSERT_TRUE(registry.has_value());
  for (const char* name : {"people-hog", "faces-haar"}) {
    auto d = (*registry)->Get(name);
    ASSERT_TRUE(d.has_value()) << name << ": " << d.error().ToString();
    const cv::Mat blank = Solid(200, 90);
    auto r = (*d)->Detect(std::span<const cv::Mat>(&blank, 1), {});
    ASSERT_TRUE(r.has_value());
    EXPECT_TRUE((*r)[0].empty()) << name << " found something in a flat grey image";
  }
}

TEST(BuiltinModelTest, MissingHaarCascadeSaysWhatToInstall) {
  auto registry = ModelRegistry::Create({.haar_dir = "/nonexistent"});
  ASSERT_TRUE(registry.has_value());
  auto d = (*registry)->Get("faces-haar");
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code(), StatusCode::kNotFound);
  EXPECT_NE(d.error().message().find("opencv-data"), std::string::npos);
}

}  // namespace
}  // namespace kadr::inference
