#include "inference/device.h"

#include <algorithm>
#include <utility>
#include <vector>

#include <opencv2/core/cuda.hpp>
#include <opencv2/dnn.hpp>

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

bool HasCudaDnnBackend() {
  const std::vector<std::pair<cv::dnn::Backend, cv::dnn::Target>> available =
      cv::dnn::getAvailableBackends();
  return std::any_of(available.begin(), available.end(), [](const auto& b) {
    return b.first == cv::dnn::DNN_BACKEND_CUDA && b.second == cv::dnn::DNN_TARGET_CUDA;
  });
}

}  // namespace

DeviceChoice ResolveDevice(Device requested) {
  DeviceChoice choice;
  choice.requested = requested;
  if (requested == Device::kCpu) return choice;
  if (!HasCudaDnnBackend()) {
    choice.reason = "this OpenCV (" + std::string(CV_VERSION) +
                    ") was built without the CUDA DNN backend (use the GPU image)";
  } else {
    // -1: the CUDA driver is missing or too old; 0: no device visible to this process.
    const int devices = cv::cuda::getCudaEnabledDeviceCount();
    if (devices < 0) {
      choice.reason = "the CUDA driver is not installed or too old for this build";
    } else if (devices == 0) {
      choice.reason = "no CUDA device is visible (docker run --gpus, NVIDIA_VISIBLE_DEVICES)";
    } else {
      choice.cuda = true;
    }
  }
  choice.fallback = !choice.cuda && requested == Device::kCuda;
  return choice;
}

std::string DescribeDevice(const DeviceChoice& choice) {
  if (choice.cuda) {
    return "inference device: cuda (OpenCV DNN CUDA backend, " +
           std::to_string(cv::cuda::getCudaEnabledDeviceCount()) + " device(s))";
  }
  if (choice.requested == Device::kCpu) return "inference device: cpu (requested)";
  if (choice.requested == Device::kAuto)
    return "inference device: cpu (auto: " + choice.reason + ")";
  return "inference device: cpu, falling back from cuda: " + choice.reason;
}

}  // namespace kadr::inference
