// Built-in models that need no model files, so a fresh machine detects something out of the
// box: people with OpenCV's HOG + linear SVM detector, faces with the Haar cascade from
// Debian's opencv-data package. Both are classic (pre-deep-learning) detectors: fast, no
// downloads, but far less accurate than the ONNX models.
//
// Thread-safe (calls serialised per instance).
#pragma once

#include <filesystem>
#include <memory>

#include "inference/detector.h"

namespace kadr::inference {

inline constexpr char kHogPeopleModel[] = "people-hog";
inline constexpr char kHaarFaceModel[] = "faces-haar";
// Finds nothing and never looks at pixels: measures kadr's transport without a model.
inline constexpr char kNullModel[] = "null";

// Where Debian's opencv-data installs the cascades.
inline const std::filesystem::path kDefaultHaarDir = "/usr/share/opencv4/haarcascades";

// Specs of the built-ins, for the registry listing.
ModelSpec HogPeopleSpec();
ModelSpec HaarFaceSpec(const std::filesystem::path& cascade_dir = kDefaultHaarDir);
ModelSpec NullSpec();

// Scores: HOG uses the SVM margin w, mapped to 1 / (1 + exp(-2w)); Haar uses the cascade's
// level weight mapped the same way. Default confidence 0.5.
// Errors: kNotFound when the Haar cascade file is missing (install opencv-data).
Result<std::unique_ptr<Detector>> CreateBuiltinDetector(const ModelSpec& spec);

}  // namespace kadr::inference
