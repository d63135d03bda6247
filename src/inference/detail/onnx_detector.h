// OnnxDetector: ONNX detection and instance-segmentation models of the families in model_spec.h,
// on either engine (engine.h): ONNX Runtime (the default) or OpenCV DNN.
//
// The engine only runs tensors; everything else is this one path for both: the letterbox,
// colour order and scaling written straight into the engine's input buffer
// (LetterboxToTensor), the output layout checked against the family once at load, the family
// decoders, NMS and masks (postprocess.h), labels and thresholds.
//
// Loading (CreateOnnxDetector) reads the file, creates the engine, runs one warm-up forward pass
// whose real output shapes decide the family (or check the one the spec names), and a second
// with the final preprocessing. Models it cannot run fail here with the model's name, the cause
// and what is supported. The returned detector is ready to serve.
//
// Batches: a model with a fixed batch of B runs B images per forward pass (the last pass padded);
// one with a dynamic batch dimension runs up to OnnxDetectorOptions::max_batch at once.
//
// Thread-safe: Detect() calls are serialised on the one engine. For parallelism create several
// detectors.
#pragma once

#include <memory>

#include "inference/detail/engine.h"
#include "inference/detector.h"

namespace kadr::inference {

struct OnnxDetectorOptions {
  EngineKind engine = EngineKind::kOnnxRuntime;  // spec.engine, when set, wins
  bool cuda = false;    // on the GPU; the caller checked the engine can (device.h)
  int threads = 0;      // ONNX Runtime intra-op threads; 0: one per core
  bool warm_up = true;  // the second warm-up pass (the first one always runs: it checks layout)
  int max_batch = 4;    // images per forward pass when the model's batch dimension is dynamic
};

// Errors: kNotFound (no such file), kUnsupported (the engine cannot run it, quantised model on
// OpenCV, unrecognised output layout, family mismatch), kInvalidArgument (spec inconsistent with
// the file, e.g. a dynamic input size without input_width/height), kUnavailable (CUDA could not
// be set up). Messages start with the model's name and file.
Result<std::unique_ptr<Detector>> CreateOnnxDetector(const ModelSpec& spec,
                                                     const OnnxDetectorOptions& options = {});

}  // namespace kadr::inference
