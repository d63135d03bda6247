#include "inference/detector.h"

namespace kadr::inference {

Status ValidateOptions(const protocol::DetectOptions& options, const ModelInfo& info) {
  auto in_unit = [](const std::optional<float>& v) { return !v || (*v >= 0.f && *v <= 1.f); };
  if (!in_unit(options.confidence)) return InvalidArgumentError("confidence must be in [0, 1]");
  if (!in_unit(options.iou)) return InvalidArgumentError("iou must be in [0, 1]");
  for (int c : options.classes) {
    if (c < 0 || (!info.labels.empty() && c >= static_cast<int>(info.labels.size()))) {
      return InvalidArgumentError("class id " + std::to_string(c) + " is not a class of model '" +
                                  info.name + "' (it has " + std::to_string(info.labels.size()) +
                                  " classes)");
    }
  }
  return Status::Ok();
}

Status ValidateImages(std::span<const cv::Mat> images) {
  for (const cv::Mat& img : images) {
    if (img.empty() || img.type() != CV_8UC3) {
      return InvalidArgumentError("detector input must be a non-empty 8-bit BGR image");
    }
  }
  return Status::Ok();
}

std::string LabelFor(const ModelInfo& info, int class_id) {
  if (class_id >= 0 && class_id < static_cast<int>(info.labels.size()) &&
      !info.labels[static_cast<size_t>(class_id)].empty()) {
    return info.labels[static_cast<size_t>(class_id)];
  }
  return "class_" + std::to_string(class_id);
}

}  // namespace kadr::inference
