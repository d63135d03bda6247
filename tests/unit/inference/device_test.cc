#include "inference/device.h"

#include <gtest/gtest.h>
#include <opencv2/dnn.hpp>

namespace kadr::inference {
namespace {

bool OpenCvHasCudaBackend() {
  for (const auto& [backend, target] : cv::dnn::getAvailableBackends()) {
    if (backend == cv::dnn::DNN_BACKEND_CUDA) return true;
  }
  return false;
}

TEST(DeviceTest, ParsesTheThreeChoicesAndNamesThemOnError) {
  EXPECT_EQ(*ParseDevice("auto"), Device::kAuto);
  EXPECT_EQ(*ParseDevice("cpu"), Device::kCpu);
  EXPECT_EQ(*ParseDevice("cuda"), Device::kCuda);
  const auto bad = ParseDevice("gpu");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.error().message().find("auto, cpu or cuda"), std::string::npos);
  for (Device d : {Device::kAuto, Device::kCpu, Device::kCuda}) {
    EXPECT_EQ(*ParseDevice(DeviceName(d)), d);
  }
}

TEST(DeviceTest, CpuIsAlwaysTheCpuAndSaysItWasAskedFor) {
  for (EngineKind engine : {EngineKind::kOnnxRuntime, EngineKind::kOpenCvDnn}) {
    const DeviceChoice c = ResolveDevice(Device::kCpu, engine);
    EXPECT_FALSE(c.cuda);
    EXPECT_FALSE(c.fallback);
    EXPECT_EQ(DescribeDevice(c), "inference device: cpu (requested)");
  }
}

TEST(DeviceTest, WithoutTheCudaBackendCudaFallsBackToTheCpuWithTheReason) {
  if (OpenCvHasCudaBackend()) GTEST_SKIP() << "this OpenCV has the CUDA DNN backend";
  const DeviceChoice cuda = ResolveDevice(Device::kCuda, EngineKind::kOpenCvDnn);
  EXPECT_FALSE(cuda.cuda);
  EXPECT_TRUE(cuda.fallback);
  EXPECT_NE(cuda.reason.find("without the CUDA DNN backend"), std::string::npos) << cuda.reason;
  EXPECT_NE(DescribeDevice(cuda).find("falling back from cuda"), std::string::npos);

  const DeviceChoice automatic = ResolveDevice(Device::kAuto, EngineKind::kOpenCvDnn);
  EXPECT_FALSE(automatic.cuda);
  EXPECT_FALSE(automatic.fallback) << "auto on a CPU machine is not a fallback";
  EXPECT_NE(DescribeDevice(automatic).find("cpu (auto: "), std::string::npos);
}

// The CPU build's ONNX Runtime (Microsoft's CPU package) has no CUDA execution provider: the
// default engine falls back with a line naming the cause and the way out.
TEST(DeviceTest, CpuOnnxRuntimeFallsBackFromCudaNamingTheProviderAndTheGpuImage) {
  const DeviceChoice cuda = ResolveDevice(Device::kCuda, EngineKind::kOnnxRuntime);
  if (cuda.cuda) GTEST_SKIP() << "this ONNX Runtime has CUDA and a GPU is visible";
  EXPECT_TRUE(cuda.fallback);
  EXPECT_EQ(cuda.engine, EngineKind::kOnnxRuntime);
  const std::string line = DescribeDevice(cuda);
  EXPECT_EQ(line.rfind("inference device: cpu, falling back from cuda: ", 0), 0u) << line;
  EXPECT_TRUE(line.find("CUDA execution provider") != std::string::npos ||
              line.find("no NVIDIA GPU is visible") != std::string::npos)
      << line;
  const DeviceChoice automatic = ResolveDevice(Device::kAuto, EngineKind::kOnnxRuntime);
  EXPECT_FALSE(automatic.fallback);
  EXPECT_NE(DescribeDevice(automatic).find("cpu (auto: "), std::string::npos);
}

}  // namespace
}  // namespace kadr::inference
