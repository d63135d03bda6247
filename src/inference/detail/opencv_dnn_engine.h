// OpenCV DNN behind the Engine seam (the only place that includes opencv2/dnn.hpp for ONNX).
//
// Loading normalises the graph so OpenCV 4.6 can run unmodified Ultralytics exports
// (onnx_graph.h) and refuses what OpenCV cannot run (quantised int8) with the cause. The input
// buffer is a cv::Mat blob handed to setInput(); outputs are OpenCV's Mats, viewed in place.
// OpenCV's thread pool is process-wide (cv::setNumThreads).
#pragma once

#include <memory>
#include <string>

#include "inference/detail/engine.h"

namespace kadr::inference::detail {

// `bytes` is a serialized ONNX model. Errors: kUnsupported when the bytes are not ONNX, OpenCV
// cannot run it (quantised ops, an importer failure) or the model has
// not exactly one image input of rank 4.
Result<std::unique_ptr<Engine>> CreateOpenCvDnnEngine(const std::string& bytes,
                                                      const EngineOptions& options);

}  // namespace kadr::inference::detail
