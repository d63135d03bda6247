// engine_bench: the model's forward pass on each engine, side by side in one run, and what a
// real batch buys on a model with a dynamic batch dimension.
//
//   1. Per model (yolox_nano, nanodet_m_416, yolov8n_640_deq, yolov8n-seg_320_deq): forward
//      p50/p90 (DetectTimings::inference_ms) on ONNX Runtime and on OpenCV DNN, the two
//      detectors called in alternation on the same decoded photo (so drift hits both), and
//      the ratio OpenCV / ONNX Runtime.
//   2. Batching: yolox_nano and yolov8n converted to a dynamic batch by tools/make_dynamic_batch
//      (into a temp folder), on ONNX Runtime: images/s of the whole Detect() at batch 1, 2, 4
//      and 8 (preprocess + forward + postprocess), and the speed-up over batch 1.
//
// Prints the CPU model and flags first; quote ratios from one run (docs/performance.md).
//
//   kadr_engine_bench [--iterations N] [--threads T] [--make-dynamic-batch PATH]
// Needs $KADR_TEST_DATA (models/, media/); exits 0 with a message without it.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <opencv2/core/utility.hpp>
#include <spdlog/spdlog.h>

#include "bench_stats.h"
#include "common/clock.h"
#include "imaging/decode.h"
#include "inference/model_registry.h"

namespace kadr::bench {
namespace {

namespace fs = std::filesystem;
using inference::EngineKind;

std::string CpuLine() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model, flags;
  while (std::getline(in, line)) {
    if (model.empty() && line.rfind("model name", 0) == 0) model = line.substr(line.find(':') + 2);
    if (flags.empty() && line.rfind("flags", 0) == 0) flags = line.substr(line.find(':') + 2);
  }
  std::string simd;
  for (const char* f : {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"}) {
    if ((" " + flags + " ").find(std::string(" ") + f + " ") != std::string::npos) {
      simd += (simd.empty() ? "" : " ") + std::string(f);
    }
  }
  return model + ", " + std::to_string(std::thread::hardware_concurrency()) + " cores, " + simd;
}

std::vector<std::uint8_t> ReadBytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

int Main(int argc, char** argv) {
  CLI::App app{"kadr engine benchmark: ONNX Runtime vs OpenCV DNN forward, and batching"};
  int iterations = 30;
  int threads = 0;
  std::string make_dynamic = KADR_MAKE_DYNAMIC_BATCH;
  app.add_option("--iterations", iterations, "timed calls per model and engine")
      ->check(CLI::Range(3, 100000));
  app.add_option("--threads", threads, "inference threads (0: all cores)");
  app.add_option("--make-dynamic-batch", make_dynamic, "path of tools/make_dynamic_batch");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  const char* data = std::getenv("KADR_TEST_DATA");
  if (data == nullptr || !fs::is_directory(fs::path(data) / "models")) {
    std::printf("kadr_engine_bench: set KADR_TEST_DATA to a folder with models/ and media/\n");
    return 0;
  }
  const fs::path models = fs::path(data) / "models";
  const int n_threads =
      threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency());
  cv::setNumThreads(n_threads);
  std::printf("cpu: %s\nthreads: %d (ONNX Runtime intra-op and OpenCV's pool)\n", CpuLine().c_str(),
              n_threads);
  auto photo = imaging::DecodeImage(ReadBytes(fs::path(data) / "media" / "bus.jpg"));
  if (!photo) {
    std::fprintf(stderr, "cannot decode bus.jpg: %s\n", photo.error().ToString().c_str());
    return 1;
  }

  auto ort = inference::ModelRegistry::Create(
      {.models_dirs = {models}, .builtins = false, .threads = threads});
  auto ocv = inference::ModelRegistry::Create({.models_dirs = {models},
                                               .builtins = false,
                                               .engine = EngineKind::kOpenCvDnn,
                                               .threads = threads});
  if (!ort || !ocv) return 1;

  std::printf("\n1. forward (ms) on bus.jpg (810x1080), %d calls each, alternating engines\n",
              iterations);
  std::printf("%-22s %-9s %12s %12s %12s %12s %8s\n", "model", "input", "ort p50", "ort p90",
              "opencv p50", "opencv p90", "ratio");
  for (const char* name :
       {"yolox_nano", "nanodet_m_416", "yolov8n_640_deq", "yolov8n-seg_320_deq"}) {
    auto a = (*ort)->Get(name);
    auto b = (*ocv)->Get(name);
    if (!a || !b) {
      std::printf("%-22s skipped: %s\n", name, (!a ? a.error() : b.error()).ToString().c_str());
      continue;
    }
    std::vector<double> fa, fb;
    for (int i = 0; i < iterations + 2; ++i) {
      inference::DetectTimings ta, tb;
      if (!(*a)->Detect(std::span<const cv::Mat>(&*photo, 1), {}, &ta)) return 1;
      if (!(*b)->Detect(std::span<const cv::Mat>(&*photo, 1), {}, &tb)) return 1;
      if (i < 2) continue;  // warm-up
      fa.push_back(ta.inference_ms);
      fb.push_back(tb.inference_ms);
    }
    const auto& info = (*a)->info();
    const std::string input =
        std::to_string(info.input_width) + "x" + std::to_string(info.input_height);
    std::printf("%-22s %-9s %12.2f %12.2f %12.2f %12.2f %7.2fx\n", name, input.c_str(),
                Percentile(fa, 50), Percentile(fa, 90), Percentile(fb, 50), Percentile(fb, 90),
                Percentile(fb, 50) / Percentile(fa, 50));
  }

  // 2. Batching on dynamic-batch variants.
  const fs::path dir =
      fs::temp_directory_path() / ("kadr_engine_bench_" + std::to_string(getpid()));
  fs::create_directories(dir);
  fs::copy_file(models / "coco80.names", dir / "coco80.names",
                fs::copy_options::overwrite_existing);
  for (const char* name : {"yolox_nano", "yolov8n_640_deq"}) {
    const std::string cmd = make_dynamic + " '" +
                            (models / (std::string(name) + ".onnx")).string() + "' '" +
                            (dir / (std::string(name) + "_dyn.onnx")).string() + "' >/dev/null";
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "could not run %s\n", cmd.c_str());
  }
  auto dyn = inference::ModelRegistry::Create(
      {.models_dirs = {dir}, .builtins = false, .threads = threads, .max_batch = 8});
  if (!dyn) return 1;
  std::printf("\n2. batching on ONNX Runtime (dynamic-batch variants): whole Detect(), images/s\n");
  std::printf("%-22s %10s %10s %10s %10s %14s\n", "model", "batch 1", "batch 2", "batch 4",
              "batch 8", "8 vs 1");
  for (const char* name : {"yolox_nano_dyn", "yolov8n_640_deq_dyn"}) {
    auto d = (*dyn)->Get(name);
    if (!d) {
      std::printf("%-22s skipped: %s\n", name, d.error().ToString().c_str());
      continue;
    }
    std::map<int, double> rate;
    for (int batch : {1, 2, 4, 8}) {
      const std::vector<cv::Mat> images(static_cast<size_t>(batch), *photo);
      (void)(*d)->Detect(images, {});  // warm-up at this shape
      const int calls = std::max(3, iterations * 2 / batch);
      Stopwatch sw;
      for (int i = 0; i < calls; ++i) {
        if (!(*d)->Detect(images, {})) return 1;
      }
      rate[batch] = calls * batch / (sw.Lap() / 1000.0);
    }
    std::printf("%-22s %10.1f %10.1f %10.1f %10.1f %13.2fx\n", name, rate[1], rate[2], rate[4],
                rate[8], rate[8] / rate[1]);
  }
  fs::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace kadr::bench

int main(int argc, char** argv) { return kadr::bench::Main(argc, argv); }
