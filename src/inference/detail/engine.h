// Engine: the seam between kadr's ONNX detector and a neural-network runtime. Tensors in,
// tensors out; everything around it (letterbox, colour order, scaling, family decoders, NMS,
// masks, labels) is shared by every engine (onnx_detector.h).
//
// Two engines run ONNX models (ADR 0006): ONNX Runtime (the default; CPU, or CUDA in the GPU
// image) and OpenCV DNN (the graph normalised for OpenCV 4.6 first, detail/onnx_graph.h). The
// factories live in detail/; callers pick one with an EngineKind.
//
// An Engine is created loaded (a factory returns an error instead of a half-built object) and is
// not thread-safe: the detector that owns it serialises calls.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kadr::inference {

enum class EngineKind { kOnnxRuntime, kOpenCvDnn };

// "onnxruntime", "opencv" - the values of --engine, KADR_ENGINE and a sidecar's "engine".
std::string_view EngineKindName(EngineKind kind);
// kInvalidArgument naming the choices for anything else.
Result<EngineKind> ParseEngineKind(std::string_view text);

struct EngineOptions {
  bool cuda = false;  // run on the GPU (the caller checked that this engine can, device.h)
  // ONNX Runtime's intra-op threads for this model; 0: one per core. OpenCV DNN's pool is
  // process-wide (cv::setNumThreads, set by the composition root) and ignores this.
  int threads = 0;
};

// A read-only float32 tensor owned by the engine.
struct TensorView {
  const float* data = nullptr;
  std::vector<std::int64_t> shape;
  std::size_t size() const;  // product of the dimensions
};

class Engine {
 public:
  virtual ~Engine() = default;

  // "onnxruntime/cpu", "onnxruntime/cuda", "opencv-dnn/cpu", "opencv-dnn/cuda".
  virtual const std::string& name() const = 0;
  // The image input, N x 3 x H x W; -1 for a dynamic dimension.
  virtual const std::array<std::int64_t, 4>& input_shape() const = 0;
  // The model's metadata_props (Ultralytics writes "names", "imgsz", "task").
  virtual const std::map<std::string, std::string>& metadata() const = 0;
  // Load-time facts worth a log line (graph rewrites, constants folded).
  virtual const std::vector<std::string>& notes() const = 0;

  // The input tensor for `batch` images of height x width, NCHW float32: the caller writes the
  // preprocessed images straight into it, then calls Run(). Valid until the next call of either.
  virtual std::span<float> InputBuffer(int batch, int height, int width) = 0;

  // Runs the model on the input buffer. The outputs, in the model's output order, stay valid
  // until the next InputBuffer() or Run(). Errors: kInternal when the runtime fails,
  // kUnsupported for an output that is not float32.
  virtual Result<std::vector<TensorView>> Run() = 0;
};

}  // namespace kadr::inference
