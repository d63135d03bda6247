// Device: where OpenCV's DNN module runs the models, chosen at run time (`--device`,
// KADR_DEVICE) and resolved once per process against what the process can actually use.
//
// `cuda` needs an OpenCV built with its CUDA DNN backend (the GPU image builds one; Debian's
// OpenCV has none) and a CUDA device visible to the process. When either is missing, `auto`
// and `cuda` both run on the CPU; ResolveDevice says why, so the caller logs one clear line
// instead of failing: a GPU image started on a machine without a GPU still serves.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace kadr::inference {

enum class Device { kAuto, kCpu, kCuda };

// "auto", "cpu", "cuda" (case-sensitive). kInvalidArgument otherwise, naming the choices.
Result<Device> ParseDevice(std::string_view text);
std::string_view DeviceName(Device device);

struct DeviceChoice {
  Device requested = Device::kAuto;
  bool cuda = false;      // run on the CUDA backend
  bool fallback = false;  // CUDA was asked for explicitly and is not available
  std::string reason;     // why CPU was chosen when CUDA was asked for or possible; else empty
};

// The device this process uses for `requested`: kCpu always gives the CPU; kAuto and kCuda
// give CUDA when OpenCV's DNN module offers the CUDA backend and at least one CUDA device is
// visible, else the CPU with `reason` set. Cheap enough to call once at start-up.
DeviceChoice ResolveDevice(Device requested);

// One line for the log: "inference device: cuda (OpenCV DNN CUDA backend, 1 device)" or
// "inference device: cpu (KADR_DEVICE=cuda, but OpenCV was built without ...)".
std::string DescribeDevice(const DeviceChoice& choice);

}  // namespace kadr::inference
