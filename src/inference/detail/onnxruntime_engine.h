// ONNX Runtime behind the Engine seam (the only place that includes onnxruntime headers).
//
// One Ort::Env per process (its logging goes to spdlog); one Ort::Session per engine with its
// own intra-op thread pool (EngineOptions::threads), sequential execution, every graph
// optimisation, and the CPU or the CUDA execution provider. The input tensor wraps the engine's
// own buffer (no copy into ONNX Runtime); outputs are ONNX Runtime's, viewed in place.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "inference/detail/engine.h"

namespace kadr::inference::detail {

// `bytes` is a serialized ONNX model. Errors: kUnsupported when ONNX Runtime refuses the model
// (the message is its first line) or the model has not exactly one float image input of rank 4;
// kUnavailable when the CUDA execution provider cannot be set up.
Result<std::unique_ptr<Engine>> CreateOnnxRuntimeEngine(std::string bytes,
                                                        const EngineOptions& options);

// ONNX Runtime's version ("1.21.0") and its execution providers ("CPUExecutionProvider", ...).
std::string OnnxRuntimeVersion();
std::vector<std::string> OnnxRuntimeProviders();
// True when ONNX Runtime can load its CUDA execution provider: the build lists it and its
// library (libonnxruntime_providers_cuda.so, which ONNX Runtime loads from its own folder) is
// there. Microsoft's CPU package for Linux lists the provider without shipping its library.
bool OnnxRuntimeHasCudaProvider();

}  // namespace kadr::inference::detail
