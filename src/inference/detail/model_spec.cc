#include "inference/detail/model_spec.h"

#include <fstream>

namespace kadr::inference {
namespace {

constexpr std::array<std::pair<ModelFamily, std::string_view>, 9> kFamilyNames = {{
    {ModelFamily::kAuto, "auto"},
    {ModelFamily::kYoloV8, "yolov8"},
    {ModelFamily::kYoloV8Seg, "yolov8-seg"},
    {ModelFamily::kYoloV5, "yolov5"},
    {ModelFamily::kYolox, "yolox"},
    {ModelFamily::kNanoDet, "nanodet"},
    {ModelFamily::kHogPeople, "hog-people"},
    {ModelFamily::kHaarFace, "haar-face"},
    {ModelFamily::kNull, "null"},
}};

std::string Trim(const std::string& s) {
  const auto begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return {};
  const auto end = s.find_last_not_of(" \t\r\n");
  return s.substr(begin, end - begin + 1);
}

}  // namespace

bool IsBuiltinFamily(ModelFamily family) {
  return family == ModelFamily::kHogPeople || family == ModelFamily::kHaarFace ||
         family == ModelFamily::kNull;
}

std::string_view FamilyName(ModelFamily family) {
  for (const auto& [f, name] : kFamilyNames) {
    if (f == family) return name;
  }
  return "unknown";
}

Result<ModelFamily> ParseFamily(std::string_view name) {
  if (name == "yolo11" || name == "yolov11") return ModelFamily::kYoloV8;  // same head
  if (name == "yolov7") return ModelFamily::kYoloV5;
  for (const auto& [f, n] : kFamilyNames) {
    if (n == name) return f;
  }
  return UnsupportedError("unknown model family '" + std::string(name) + "'; supported: auto, " +
                          SupportedOnnxFamilies());
}

std::string SupportedOnnxFamilies() {
  return "yolov8 (also yolo11), yolov8-seg, yolov5, yolox, nanodet";
}

const std::vector<std::string>& CocoLabels() {
  static const std::vector<std::string> kCoco = {"person",        "bicycle",      "car",
                                                 "motorcycle",    "airplane",     "bus",
                                                 "train",         "truck",        "boat",
                                                 "traffic light", "fire hydrant", "stop sign",
                                                 "parking meter", "bench",        "bird",
                                                 "cat",           "dog",          "horse",
                                                 "sheep",         "cow",          "elephant",
                                                 "bear",          "zebra",        "giraffe",
                                                 "backpack",      "umbrella",     "handbag",
                                                 "tie",           "suitcase",     "frisbee",
                                                 "skis",          "snowboard",    "sports ball",
                                                 "kite",          "baseball bat", "baseball glove",
                                                 "skateboard",    "surfboard",    "tennis racket",
                                                 "bottle",        "wine glass",   "cup",
                                                 "fork",          "knife",        "spoon",
                                                 "bowl",          "banana",       "apple",
                                                 "sandwich",      "orange",       "broccoli",
                                                 "carrot",        "hot dog",      "pizza",
                                                 "donut",         "cake",         "chair",
                                                 "couch",         "potted plant", "bed",
                                                 "dining table",  "toilet",       "tv",
                                                 "laptop",        "mouse",        "remote",
                                                 "keyboard",      "cell phone",   "microwave",
                                                 "oven",          "toaster",      "sink",
                                                 "refrigerator",  "book",         "clock",
                                                 "vase",          "scissors",     "teddy bear",
                                                 "hair drier",    "toothbrush"};
  return kCoco;
}

Result<std::vector<std::string>> ReadLabelsFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return NotFoundError("cannot read labels file " + path.string());
  std::vector<std::string> labels;
  std::string line;
  while (std::getline(in, line)) {
    line = Trim(line);
    if (!line.empty()) labels.push_back(line);
  }
  if (labels.empty()) return InvalidArgumentError("labels file " + path.string() + " is empty");
  return labels;
}

}  // namespace kadr::inference
