// What kadr knows about a model before loading it: where it is, which output decoder it
// needs, its labels, thresholds and preprocessing. Filled from the registry config file, a
// sidecar JSON next to the model, the ONNX file's own metadata and the family's defaults,
// in that order of precedence. Plain value types; thread-compatible.
#pragma once

#include <array>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "inference/detail/engine.h"

namespace kadr::inference {

enum class ModelFamily {
  kAuto,       // decide from the ONNX outputs' shapes (and metadata)
  kYoloV8,     // Ultralytics YOLOv8 / YOLO11 detection: 1 x (4+C) x N
  kYoloV8Seg,  // Ultralytics YOLOv8-seg: 1 x (4+C+32) x N and 1 x 32 x H/4 x W/4
  kYoloV5,     // YOLOv5 / v7: 1 x N x (5+C), decoded
  kYolox,      // YOLOX with raw grids: 1 x N x (5+C)
  kNanoDet,    // NanoDet(-m): 3 score + 3 distribution outputs
  kHogPeople,  // built-in: OpenCV HOG + linear SVM people detector
  kHaarFace,   // built-in: OpenCV Haar cascade frontal faces
  kNull,       // built-in: no model at all (transport tests and benchmarks)
};

// True for the families that need no ONNX file.
bool IsBuiltinFamily(ModelFamily family);

std::string_view FamilyName(ModelFamily family);  // "yolov8", "yolov8-seg", ...
Result<ModelFamily> ParseFamily(std::string_view name);
// "yolov8, yolov8-seg, yolov5, yolox, nanodet" - for error messages.
std::string SupportedOnnxFamilies();

// The 80 COCO class names in the standard order (Ultralytics' `names`, YOLOX's and NanoDet's
// COCO_CLASSES): the labels of an 80-class model that names none of its classes.
const std::vector<std::string>& CocoLabels();

struct ModelSpec {
  std::string name;            // registry name, unique; used by --model and the API
  std::filesystem::path path;  // ONNX file; empty for built-ins
  ModelFamily family = ModelFamily::kAuto;
  std::vector<std::string> labels;  // class id -> name; empty: from metadata / .names file
  std::optional<float> confidence;  // default score threshold (family default otherwise)
  std::optional<float> iou;         // default NMS IoU threshold
  std::optional<int> input_width;   // only needed when the ONNX input size is dynamic
  std::optional<int> input_height;
  // Preprocessing overrides; unset fields take the family's defaults.
  std::optional<bool> swap_rb;               // true: feed RGB to the network
  std::optional<std::array<float, 3>> mean;  // subtracted per channel, network channel order
  std::optional<std::array<float, 3>> std;   // divided per channel, after the mean
  std::optional<bool> pad_top_left;          // letterbox anchor: top-left (YOLOX) vs centred
  std::optional<float> pad_value;            // letterbox fill value (0..255)
  // ONNX models: the engine to run it on ("engine": "onnxruntime" | "opencv"); unset: the
  // registry's default (--engine, KADR_ENGINE). Ignored by the built-ins.
  std::optional<EngineKind> engine;
  std::string source;  // where the spec came from (for `kadr models`)
};

// Reads a label file: one name per line, blank lines and surrounding spaces ignored.
Result<std::vector<std::string>> ReadLabelsFile(const std::filesystem::path& path);

}  // namespace kadr::inference
