// OpenCvDnnDetector: runs ONNX detection and instance-segmentation models with OpenCV's DNN
// module (CPU), for the families in model_spec.h.
//
// Loading (Create) reads the file, normalises the graph so OpenCV 4.6 can run unmodified
// Ultralytics exports (detail/onnx_graph.h), refuses models OpenCV cannot run (quantised
// int8, unknown output layouts) with a message naming the model, the cause and what is
// supported, then runs one warm-up forward pass and checks the output layout against the
// family. The returned detector is ready to serve.
//
// Thread-safe: Detect() calls are serialised on one cv::dnn::Net (which is not re-entrant).
// For parallelism create several detectors. OpenCV's own thread pool size is process-wide
// (cv::setNumThreads) and set by the composition root.
#pragma once

#include <memory>

#include "inference/detector.h"

namespace kadr::inference {

struct OpenCvDnnOptions {
  bool warm_up = true;  // run one forward pass at load (also validates the output layout)
  bool cuda = false;    // OpenCV's CUDA backend (FP32); the caller checked it is available
};

class OpenCvDnnDetector;

// Errors: kNotFound (no such file), kUnsupported (OpenCV cannot run it, quantised model,
// unrecognised output layout, family mismatch), kInvalidArgument (spec inconsistent with
// the file, e.g. dynamic input size without input_width/height).
Result<std::unique_ptr<Detector>> CreateOpenCvDnnDetector(const ModelSpec& spec,
                                                          const OpenCvDnnOptions& options = {});

}  // namespace kadr::inference
