#include "inference/detail/onnx_graph.h"

#include <gtest/gtest.h>

#include "inference/model_registry.h"

namespace kadr::inference {
namespace {

TEST(ParseUltralyticsNamesTest, ReadsPythonDictLiteral) {
  EXPECT_EQ(detail::ParseUltralyticsNames("{0: 'person', 1: 'traffic light', 2: \"dog\"}"),
            (std::vector<std::string>{"person", "traffic light", "dog"}));
}

TEST(ParseUltralyticsNamesTest, FillsGapsWithEmptyNamesAndRejectsGarbage) {
  EXPECT_EQ(detail::ParseUltralyticsNames("{0: 'a', 2: 'c'}"),
            (std::vector<std::string>{"a", "", "c"}));
  EXPECT_TRUE(detail::ParseUltralyticsNames("{x: 'a'}").empty());
  EXPECT_TRUE(detail::ParseUltralyticsNames("").empty());
}

TEST(NormalizeOnnxTest, RejectsBytesThatAreNotOnnx) {
  auto r = detail::NormalizeOnnx("definitely not a protobuf");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(detail::NormalizeOnnx("").has_value());
}

TEST(ModelSpecJsonTest, ParsesEveryKeyAndResolvesRelativePaths) {
  ModelSpec spec;
  ASSERT_TRUE(ParseModelSpecJson(R"({"name": "m", "path": "m.onnx", "family": "yolo11",
      "labels": ["a", "b"], "confidence": 0.4, "iou": 0.6, "input_width": 320,
      "input_height": 256, "swap_rb": false, "mean": [1, 2, 3], "std": [4, 5, 6],
      "pad": "top_left", "pad_value": 0})",
                                 "/models", spec)
                  .ok());
  EXPECT_EQ(spec.name, "m");
  EXPECT_EQ(spec.path, "/models/m.onnx");
  EXPECT_EQ(spec.family, ModelFamily::kYoloV8);
  EXPECT_EQ(spec.labels.size(), 2u);
  EXPECT_FLOAT_EQ(*spec.confidence, 0.4f);
  EXPECT_EQ(*spec.input_width, 320);
  EXPECT_FALSE(*spec.swap_rb);
  EXPECT_FLOAT_EQ((*spec.std)[2], 6.f);
  EXPECT_TRUE(*spec.pad_top_left);
}

TEST(ModelSpecJsonTest, RejectsBadValuesWithTheReason) {
  ModelSpec spec;
  EXPECT_NE(ParseModelSpecJson(R"({"confidence": 1.5})", "/", spec).message().find("[0, 1]"),
            std::string::npos);
  EXPECT_NE(ParseModelSpecJson(R"({"family": "rcnn"})", "/", spec).message().find("supported"),
            std::string::npos);
  EXPECT_NE(ParseModelSpecJson(R"({"pad": "left"})", "/", spec).message().find("top_left"),
            std::string::npos);
  EXPECT_EQ(ParseModelSpecJson(R"({"iou": "high"})", "/", spec).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseModelSpecJson("{", "/", spec).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kadr::inference
