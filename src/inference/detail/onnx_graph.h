// Reading and normalising ONNX graphs with Debian's ONNX library (libonnx), before an engine
// sees them. The only place that includes onnx headers.
//
// Why: OpenCV 4.6's ONNX importer cannot broadcast a constant of lower rank in an
// elementwise op (Ultralytics YOLOv8 exports multiply the 1x4xN boxes by a [1,N] strides
// constant and forward() dies in shape_utils.hpp). Users bring exactly these files, so at
// load time we run ONNX shape inference and expand such constants to the full broadcast
// shape - an exact, value-preserving rewrite - and hand OpenCV the rewritten bytes.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace kadr::inference::detail {

struct TensorInfo {
  std::string name;
  std::vector<std::int64_t> dims;  // -1 for dynamic / unknown dimensions
};

struct OnnxGraphInfo {
  std::vector<TensorInfo> inputs;               // graph inputs that are not initializers
  std::vector<TensorInfo> outputs;              // with shapes from ONNX shape inference
  std::map<std::string, std::string> metadata;  // metadata_props (Ultralytics: names, task, imgsz)
  std::int64_t opset = 0;
  std::string producer;
  std::vector<std::string> quantized_ops;  // e.g. DynamicQuantizeLinear, ConvInteger (distinct)
};

struct NormalizedOnnx {
  OnnxGraphInfo info;
  std::string bytes;                  // the model to give OpenCV (rewritten or original)
  std::vector<std::string> rewrites;  // one line per rewrite, for the load log
};

// Parses `bytes` (a serialized ModelProto), infers shapes, expands low-rank constants of
// Add/Sub/Mul/Div to their broadcast shape. kInvalidArgument if the bytes are not ONNX.
Result<NormalizedOnnx> NormalizeOnnx(const std::string& bytes);

// For ONNX Runtime: removes graph inputs that are also initializers (exports from before ONNX IR
// 4 list every weight as an input, NanoDet-m's among them), so that ONNX Runtime treats them as
// constants and folds them instead of warning once per weight and running slower. Returns how
// many were removed; `bytes` is rewritten only when that is > 0. kInvalidArgument if the bytes
// are not ONNX.
Result<int> DropInitializerInputs(std::string& bytes);

// Parses Ultralytics' "names" metadata: a Python dict literal {0: 'person', 1: 'bicycle'}.
std::vector<std::string> ParseUltralyticsNames(const std::string& text);

}  // namespace kadr::inference::detail
