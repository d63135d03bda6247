// Device: where an engine runs the ONNX models, chosen at run time (`--device`, KADR_DEVICE)
// and resolved once per process and engine against what the process can actually use.
//
// ONNX Runtime (the default engine) runs on CUDA when its build has the CUDA execution provider
// (the GPU image's does; the CPU build's has only the CPU) and an NVIDIA GPU is visible. OpenCV
// DNN runs on CUDA when OpenCV was built with its CUDA DNN backend (Debian's has none) and a CUDA
// device is visible. When either is missing, `auto` and `cuda` both run on the CPU;
// ResolveDevice says why, so the caller logs one clear line instead of failing: a GPU image
// started on a machine without a GPU still serves. A model whose CUDA set-up still fails at load
// is loaded on the CPU with a warning (model_registry.h).
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "inference/detail/engine.h"

namespace kadr::inference {

enum class Device { kAuto, kCpu, kCuda };

// "auto", "cpu", "cuda" (case-sensitive). kInvalidArgument otherwise, naming the choices.
Result<Device> ParseDevice(std::string_view text);
std::string_view DeviceName(Device device);

struct DeviceChoice {
  Device requested = Device::kAuto;
  EngineKind engine = EngineKind::kOnnxRuntime;
  bool cuda = false;      // run on CUDA
  bool fallback = false;  // CUDA was asked for explicitly and is not available
  std::string reason;     // why the CPU was chosen when CUDA was asked for or possible; else empty
};

// The device `engine` uses in this process for `requested`: kCpu always gives the CPU; kAuto and
// kCuda give CUDA when the engine's build can and a device is visible, else the CPU with `reason`
// set. Cheap enough to call once at start-up.
DeviceChoice ResolveDevice(Device requested, EngineKind engine);

// One line for the log: "inference device: cuda (ONNX Runtime 1.21.0, CUDA execution provider)"
// or "inference device: cpu, falling back from cuda: this ONNX Runtime (1.21.0) was built
// without the CUDA execution provider (use the GPU image)".
std::string DescribeDevice(const DeviceChoice& choice);

}  // namespace kadr::inference
