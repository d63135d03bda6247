// Detector: the interface every model backend implements.
//
// A Detector takes a batch of decoded images (CV_8UC3, BGR, any size) and returns, per
// image, its detections in that image's own pixels. Implementations are created loaded and
// warmed up (a factory returns an error instead of a half-built object), and are safe to
// call from several threads: calls are serialised internally where the backend needs it.
// Create one Detector per worker thread to run models in parallel.
#pragma once

#include <span>
#include <string>
#include <vector>

#include <opencv2/core/mat.hpp>

#include "common/status.h"
#include "inference/detail/model_spec.h"
#include "protocol/result.h"

namespace kadr::inference {

// What a loaded model is, for listings and for callers that need its geometry.
struct ModelInfo {
  std::string name;
  ModelFamily family = ModelFamily::kAuto;
  std::string backend;  // e.g. "opencv-dnn/cpu", "opencv-hog"
  int input_width = 0;  // network input size; 0 for size-agnostic built-ins
  int input_height = 0;
  std::vector<std::string> labels;  // class id -> name
  bool has_masks = false;           // instance segmentation
  int max_batch = 1;                // images per forward pass (>1 when the input batch is dynamic)
  float default_confidence = 0.25f;
  float default_iou = 0.45f;
  std::vector<std::string> notes;  // load-time facts worth showing (graph rewrites, warnings)
  // False for models that never look at pixels (the `null` transport-test model): callers
  // may skip decoding, drawing and encoding.
  bool needs_pixels = true;
};

// Milliseconds spent per stage for one Detect() call (whole batch).
struct DetectTimings {
  double preprocess_ms = 0;
  double inference_ms = 0;  // forward() only
  double postprocess_ms = 0;
};

class Detector {
 public:
  virtual ~Detector() = default;

  virtual const ModelInfo& info() const = 0;

  // Errors: kInvalidArgument for an empty/unsupported image or bad options; kInternal when the
  // backend fails. On error no partial result is returned.
  virtual Result<std::vector<std::vector<protocol::Detection>>> Detect(
      std::span<const cv::Mat> images, const protocol::DetectOptions& options,
      DetectTimings* timings = nullptr) = 0;
};

// Validates per-request options against a model: thresholds in [0, 1], class ids known.
Status ValidateOptions(const protocol::DetectOptions& options, const ModelInfo& info);

// Every image non-empty CV_8UC3 (BGR); kInvalidArgument otherwise.
Status ValidateImages(std::span<const cv::Mat> images);

// Label for a class id, or "class_<id>" when the model has no name for it.
std::string LabelFor(const ModelInfo& info, int class_id);

}  // namespace kadr::inference
