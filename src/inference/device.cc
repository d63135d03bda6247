#include "inference/device.h"

#include <algorithm>
#include <filesystem>
#include <regex>
#include <utility>
#include <vector>

#include <opencv2/core/cuda.hpp>
#include <opencv2/dnn.hpp>

#include "inference/detail/onnxruntime_engine.h"

namespace kadr::inference {

Result<Device> ParseDevice(std::string_view text) {
  if (text == "auto") return Device::kAuto;
  if (text == "cpu") return Device::kCpu;
  if (text == "cuda") return Device::kCuda;
  return InvalidArgumentError("unknown device '" + std::string(text) +
                              "'; choose auto, cpu or cuda");
}

std::string_view DeviceName(Device device) {
  switch (device) {
    case Device::kAuto:
      return "auto";
    case Device::kCpu:
      return "cpu";
    case Device::kCuda:
      return "cuda";
  }
  return "auto";
}

namespace {

// OpenCV's build summary has "NVIDIA CUDA: YES (...)" when it was built with CUDA.
bool OpenCvBuiltWithCuda() {
  static const std::regex kCuda(R"(NVIDIA CUDA:\s+YES)");
  return std::regex_search(cv::getBuildInformation(), kCuda);
}

// Some OpenCV versions leave CUDA out of the list when no device is present, and older ones
// threw without a driver: asked only once a device is known to be there, and guarded.
bool HasCudaDnnBackend() {
  try {
    const std::vector<std::pair<cv::dnn::Backend, cv::dnn::Target>> available =
        cv::dnn::getAvailableBackends();
    return std::any_of(available.begin(), available.end(), [](const auto& b) {
      return b.first == cv::dnn::DNN_BACKEND_CUDA && b.second == cv::dnn::DNN_TARGET_CUDA;
    });
  } catch (const cv::Exception&) {
    return false;
  }
}

int OpenCvCudaDevices() {
  try {
    return cv::cuda::getCudaEnabledDeviceCount();
  } catch (const cv::Exception&) {
    return -1;
  }
}

// The NVIDIA driver lists each GPU it drives under /proc/driver/nvidia/gpus; a container sees
// them when it was started with --gpus (the NVIDIA container toolkit mounts them).
int VisibleNvidiaGpus() {
  std::error_code ec;
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/driver/nvidia/gpus", ec)) {
    (void)e;
    ++n;
  }
  return n;
}

void ResolveOnnxRuntime(DeviceChoice& choice) {
  const std::string version = detail::OnnxRuntimeVersion();
  if (!detail::OnnxRuntimeHasCudaProvider()) {
    choice.reason = "this ONNX Runtime (" + version +
                    ") was built without the CUDA execution provider (use the GPU image)";
  } else if (VisibleNvidiaGpus() == 0) {
    choice.reason = "no NVIDIA GPU is visible (docker run --gpus, NVIDIA_VISIBLE_DEVICES)";
  } else {
    choice.cuda = true;
  }
}

void ResolveOpenCv(DeviceChoice& choice) {
  const std::string version = CV_VERSION;
  if (!OpenCvBuiltWithCuda()) {
    choice.reason =
        "this OpenCV (" + version + ") was built without CUDA, so without the CUDA DNN backend";
  } else if (const int devices = OpenCvCudaDevices(); devices < 0) {
    // -1: the CUDA driver is missing or too old for this build.
    choice.reason = "the CUDA driver is not installed or too old for this build";
  } else if (devices == 0) {
    choice.reason = "no CUDA device is visible (docker run --gpus, NVIDIA_VISIBLE_DEVICES)";
  } else if (!HasCudaDnnBackend()) {
    choice.reason = "this OpenCV (" + version + ") has CUDA but not the CUDA DNN backend " +
                    "(built without cuDNN or OPENCV_DNN_CUDA)";
  } else {
    choice.cuda = true;
  }
}

}  // namespace

DeviceChoice ResolveDevice(Device requested, EngineKind engine) {
  DeviceChoice choice;
  choice.requested = requested;
  choice.engine = engine;
  if (requested == Device::kCpu) return choice;
  if (engine == EngineKind::kOnnxRuntime) {
    ResolveOnnxRuntime(choice);
  } else {
    ResolveOpenCv(choice);
  }
  choice.fallback = !choice.cuda && requested == Device::kCuda;
  return choice;
}

std::string DescribeDevice(const DeviceChoice& choice) {
  const std::string engine = choice.engine == EngineKind::kOnnxRuntime
                                 ? "ONNX Runtime " + detail::OnnxRuntimeVersion()
                                 : "OpenCV DNN " + std::string(CV_VERSION);
  if (choice.cuda) {
    return "inference device: cuda (" + engine +
           (choice.engine == EngineKind::kOnnxRuntime ? ", CUDA execution provider)"
                                                      : ", CUDA DNN backend)");
  }
  if (choice.requested == Device::kCpu) return "inference device: cpu (requested)";
  if (choice.requested == Device::kAuto)
    return "inference device: cpu (auto: " + choice.reason + ")";
  return "inference device: cpu, falling back from cuda: " + choice.reason;
}

}  // namespace kadr::inference
