#include "inference/detail/engine.h"

namespace kadr::inference {

std::string_view EngineKindName(EngineKind kind) {
  return kind == EngineKind::kOpenCvDnn ? "opencv" : "onnxruntime";
}

Result<EngineKind> ParseEngineKind(std::string_view text) {
  if (text == "onnxruntime") return EngineKind::kOnnxRuntime;
  if (text == "opencv") return EngineKind::kOpenCvDnn;
  return InvalidArgumentError("unknown engine '" + std::string(text) +
                              "'; choose onnxruntime or opencv");
}

std::size_t TensorView::size() const {
  std::size_t n = 1;
  for (const auto d : shape) n *= d > 0 ? static_cast<std::size_t>(d) : 0;
  return n;
}

}  // namespace kadr::inference
