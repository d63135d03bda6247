// pipeline_bench: the cost of each stage of kadr's per-image path (what worker::FrameProcessor
// runs), per model and per image size, and kadr's own overhead next to the network's forward().
//
// Stages, each its own benchmark with manual timing (only the stage itself is timed):
//   decode/<WxH>                imaging::DecodeImage of a JPEG (quality 90) of that size
//   detect/<model>/<WxH>        Detector::Detect; counters preprocess_ms, forward_ms,
//                               postprocess_ms from inference::DetectTimings
//   draw/<model>/<WxH>          imaging::Annotate with that model's real detections
//   encode/<model>/<WxH>        imaging::EncodeJpeg of the annotated image (default options)
// After the benchmarks a summary table gives, per model and size,
//   overhead = decode + preprocess + postprocess + draw + encode, as a percentage of forward.
//
// Models come from $KADR_TEST_DATA/models (yolox_nano, nanodet_m_416, yolov8n_640_deq,
// yolov8n-seg_320_deq) plus the built-in people-hog; the input is $KADR_TEST_DATA/media/
// street.jpg (else bus.jpg) resized to 640x480 and 1280x720. Without KADR_TEST_DATA only
// people-hog runs, on a generated image.
//
// OpenCV's thread pool is set to 2 threads (cv::setNumThreads(2)), the size of the reference
// machine; override with KADR_BENCH_THREADS. See docs/performance.md.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <benchmark/benchmark.h>
#include <opencv2/core.hpp>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "imaging/annotate.h"
#include "imaging/decode.h"
#include "imaging/encode.h"
#include "inference/detector.h"
#include "inference/model_registry.h"

namespace kadr::bench {
namespace {

namespace fs = std::filesystem;

constexpr const char* kOnnxModels[] = {"yolox_nano", "nanodet_m_416", "yolov8n_640_deq",
                                       "yolov8n-seg_320_deq"};
constexpr const char* kBuiltinModels[] = {"people-hog"};
const cv::Size kSizes[] = {{640, 480}, {1280, 720}};
constexpr int kInputJpegQuality = 90;

std::string SizeName(cv::Size s) {
  return std::to_string(s.width) + "x" + std::to_string(s.height);
}

// Mean milliseconds per call of each stage, one value per repetition, appended by the
// benchmarks' measured runs; the summary takes the median over repetitions.
using Samples = std::map<std::string, std::vector<double>>;       // stage -> ms per repetition
std::map<std::string, std::vector<double>> g_decode_ms;           // size -> ms per repetition
std::map<std::pair<std::string, std::string>, Samples> g_ms;      // (model, size) -> stages
std::map<std::pair<std::string, std::string>, int> g_detections;  // (model, size) -> count

double Median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

struct Input {
  cv::Size size;
  std::vector<std::uint8_t> jpeg;  // the request body: a JPEG of `size`
  cv::Mat decoded;                 // what DecodeImage makes of it
};

struct ModelCase {
  std::string model;
  const Input* input = nullptr;
  std::shared_ptr<inference::Detector> detector;
  std::vector<protocol::Detection> detections;  // the model's real detections on the input
  cv::Mat annotated;                            // input with those detections drawn
};

std::vector<std::uint8_t> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A street-like test card: gradient sky, grey road, a few blocks, mild noise (so JPEG has
// real work to do).
cv::Mat GeneratedImage() {
  cv::Mat img(1080, 1920, CV_8UC3);
  for (int y = 0; y < img.rows; ++y) {
    const auto v = static_cast<unsigned char>(80 + 150 * y / img.rows);
    img.row(y).setTo(cv::Scalar(v, v * 0.9, 200 - v / 2));
  }
  cv::rectangle(img, {0, 700, 1920, 380}, cv::Scalar(90, 90, 90), cv::FILLED);
  cv::rectangle(img, {300, 450, 420, 300}, cv::Scalar(30, 160, 230), cv::FILLED);
  cv::rectangle(img, {1100, 380, 140, 420}, cv::Scalar(60, 40, 150), cv::FILLED);
  cv::circle(img, {1170, 340}, 55, cv::Scalar(120, 150, 200), cv::FILLED);
  cv::Mat noise(img.size(), CV_8UC3);
  cv::randn(noise, cv::Scalar::all(0), cv::Scalar::all(8));
  cv::add(img, noise, img);
  return img;
}

bool MakeInputs(const char* test_data, std::vector<Input>& inputs) {
  cv::Mat source;
  if (test_data != nullptr) {
    for (const char* name : {"street.jpg", "bus.jpg"}) {
      const fs::path path = fs::path(test_data) / "media" / name;
      if (!fs::exists(path)) continue;
      auto decoded = imaging::DecodeImage(ReadFile(path));
      if (!decoded) {
        std::fprintf(stderr, "cannot decode %s: %s\n", path.c_str(),
                     decoded.error().message().c_str());
        return false;
      }
      source = std::move(decoded).value();
      std::printf("input image: %s (%dx%d)\n", path.c_str(), source.cols, source.rows);
      break;
    }
  }
  if (source.empty()) {
    source = GeneratedImage();
    std::printf("input image: generated %dx%d test card\n", source.cols, source.rows);
  }
  for (cv::Size size : kSizes) {
    Input in;
    in.size = size;
    cv::Mat resized;
    cv::resize(source, resized, size, 0, 0, cv::INTER_AREA);
    auto jpeg = imaging::EncodeJpeg(resized, {.quality = kInputJpegQuality});
    if (!jpeg) {
      std::fprintf(stderr, "cannot encode input: %s\n", jpeg.error().message().c_str());
      return false;
    }
    in.jpeg = std::move(jpeg).value();
    auto decoded = imaging::DecodeImage(in.jpeg);
    if (!decoded) {
      std::fprintf(stderr, "cannot decode input: %s\n", decoded.error().message().c_str());
      return false;
    }
    in.decoded = std::move(decoded).value();
    inputs.push_back(std::move(in));
  }
  return true;
}

void BM_Decode(benchmark::State& state, const Input* in) {
  double total_ms = 0;
  for (auto _ : state) {
    Stopwatch sw;
    auto image = imaging::DecodeImage(in->jpeg);
    const double ms = sw.Lap();
    if (!image) {
      state.SkipWithError(image.error().message().c_str());
      return;
    }
    benchmark::DoNotOptimize(image.value().data);
    state.SetIterationTime(ms / 1e3);
    total_ms += ms;
  }
  state.counters["bytes"] = static_cast<double>(in->jpeg.size());
  g_decode_ms[SizeName(in->size)].push_back(total_ms / static_cast<double>(state.iterations()));
}

void BM_Detect(benchmark::State& state, ModelCase* mc) {
  const protocol::DetectOptions options;
  inference::DetectTimings sum;
  int detections = 0;
  for (auto _ : state) {
    inference::DetectTimings t;
    Stopwatch sw;
    auto result =
        mc->detector->Detect(std::span<const cv::Mat>(&mc->input->decoded, 1), options, &t);
    const double ms = sw.Lap();
    if (!result) {
      state.SkipWithError(result.error().message().c_str());
      return;
    }
    detections = static_cast<int>(result.value().front().size());
    state.SetIterationTime(ms / 1e3);
    sum.preprocess_ms += t.preprocess_ms;
    sum.inference_ms += t.inference_ms;
    sum.postprocess_ms += t.postprocess_ms;
  }
  const auto n = static_cast<double>(state.iterations());
  using benchmark::Counter;
  state.counters["preprocess_ms"] = Counter(sum.preprocess_ms, Counter::kAvgIterations);
  state.counters["forward_ms"] = Counter(sum.inference_ms, Counter::kAvgIterations);
  state.counters["postprocess_ms"] = Counter(sum.postprocess_ms, Counter::kAvgIterations);
  state.counters["detections"] = detections;
  auto& ms = g_ms[{mc->model, SizeName(mc->input->size)}];
  ms["preprocess"].push_back(sum.preprocess_ms / n);
  ms["forward"].push_back(sum.inference_ms / n);
  ms["postprocess"].push_back(sum.postprocess_ms / n);
  g_detections[{mc->model, SizeName(mc->input->size)}] = detections;
}

void BM_Draw(benchmark::State& state, ModelCase* mc) {
  double total_ms = 0;
  cv::Mat canvas;
  for (auto _ : state) {
    mc->input->decoded.copyTo(canvas);  // Annotate draws in place; not timed
    Stopwatch sw;
    imaging::Annotate(canvas, mc->detections);
    const double ms = sw.Lap();
    benchmark::DoNotOptimize(canvas.data);
    state.SetIterationTime(ms / 1e3);
    total_ms += ms;
  }
  state.counters["detections"] = static_cast<double>(mc->detections.size());
  g_ms[{mc->model, SizeName(mc->input->size)}]["draw"].push_back(
      total_ms / static_cast<double>(state.iterations()));
}

void BM_Encode(benchmark::State& state, ModelCase* mc) {
  double total_ms = 0;
  std::size_t bytes = 0;
  for (auto _ : state) {
    Stopwatch sw;
    auto jpeg = imaging::EncodeJpeg(mc->annotated);  // the service's default JpegOptions
    const double ms = sw.Lap();
    if (!jpeg) {
      state.SkipWithError(jpeg.error().message().c_str());
      return;
    }
    bytes = jpeg.value().size();
    state.SetIterationTime(ms / 1e3);
    total_ms += ms;
  }
  state.counters["bytes"] = static_cast<double>(bytes);
  g_ms[{mc->model, SizeName(mc->input->size)}]["encode"].push_back(
      total_ms / static_cast<double>(state.iterations()));
}

void PrintSummary(const std::vector<std::unique_ptr<ModelCase>>& cases) {
  std::printf(
      "\nPer-image stage cost, ms (mean per call, median over repetitions);\n"
      "overhead = decode + preprocess + postprocess + draw + encode\n");
  std::printf("%-20s %-9s %5s %7s %7s %8s %7s %6s %7s %9s %9s\n", "model", "size", "dets", "decode",
              "preproc", "forward", "postpr", "draw", "encode", "overhead", "overhead%");
  for (const auto& mc : cases) {
    const std::string size = SizeName(mc->input->size);
    const auto key = std::make_pair(mc->model, size);
    const auto it = g_ms.find(key);
    const auto dec = g_decode_ms.find(size);
    if (it == g_ms.end() || dec == g_decode_ms.end()) continue;  // filtered out or failed
    Samples s = it->second;
    const double decode = Median(dec->second);
    const double pre = Median(s["preprocess"]);
    const double fwd = Median(s["forward"]);
    const double post = Median(s["postprocess"]);
    const double draw = Median(s["draw"]);
    const double encode = Median(s["encode"]);
    if (fwd <= 0 || draw < 0 || encode < 0) continue;
    const double overhead = decode + pre + post + draw + encode;
    std::printf("%-20s %-9s %5d %7.2f %7.2f %8.2f %7.2f %6.2f %7.2f %9.2f %8.1f%%\n",
                mc->model.c_str(), size.c_str(), g_detections[key], decode, pre, fwd, post, draw,
                encode, overhead, 100.0 * overhead / fwd);
  }
  std::printf("target: overhead < 10%% of forward\n");
}

int Main(int argc, char** argv) {
  int threads = 2;
  if (const char* t = std::getenv("KADR_BENCH_THREADS")) threads = std::max(1, std::atoi(t));
  cv::setNumThreads(threads);
  spdlog::set_level(spdlog::level::warn);  // the registry logs each model load at info

  // Defaults (each applies only when the flag is not given) keep the whole run at about two
  // to three minutes on 2 cores; the median of 3 repetitions damps other processes' noise.
  std::vector<char*> args(argv, argv + argc);
  std::string defaults[] = {"--benchmark_min_time=0.8", "--benchmark_repetitions=3",
                            "--benchmark_display_aggregates_only=true"};
  for (std::string& flag : defaults) {
    const std::string name = flag.substr(0, flag.find('='));
    if (std::none_of(args.begin() + 1, args.end(),
                     [&](const char* a) { return std::string_view(a).starts_with(name); })) {
      args.insert(args.begin() + 1, flag.data());
    }
  }
  int args_count = static_cast<int>(args.size());
  benchmark::Initialize(&args_count, args.data());
  if (benchmark::ReportUnrecognizedArguments(args_count, args.data())) return 1;

  std::printf("OpenCV %s, cv::getNumThreads()=%d\n", CV_VERSION, cv::getNumThreads());
  const char* test_data = std::getenv("KADR_TEST_DATA");
  if (test_data == nullptr) {
    std::printf(
        "KADR_TEST_DATA is not set: skipping the ONNX models (%s, %s, %s, %s); running "
        "people-hog on a generated image. Set KADR_TEST_DATA=/work/shared for the full run.\n",
        kOnnxModels[0], kOnnxModels[1], kOnnxModels[2], kOnnxModels[3]);
  }

  std::vector<Input> inputs;
  if (!MakeInputs(test_data, inputs)) return 1;

  inference::RegistryOptions reg_options;
  if (test_data != nullptr) reg_options.models_dirs = {fs::path(test_data) / "models"};
  auto registry = inference::ModelRegistry::Create(reg_options);
  if (!registry) {
    std::fprintf(stderr, "model registry: %s\n", registry.error().message().c_str());
    return 1;
  }
  std::vector<std::string> models;
  if (test_data != nullptr) models.assign(std::begin(kOnnxModels), std::end(kOnnxModels));
  models.insert(models.end(), std::begin(kBuiltinModels), std::end(kBuiltinModels));

  std::vector<std::unique_ptr<ModelCase>> cases;
  for (const Input& in : inputs) {
    for (const std::string& model : models) {
      Stopwatch load;
      auto detector = registry.value()->Get(model);
      if (!detector) {
        std::printf("skipping model %s: %s\n", model.c_str(), detector.error().message().c_str());
        continue;
      }
      auto mc = std::make_unique<ModelCase>();
      mc->model = model;
      mc->input = &in;
      mc->detector = std::move(detector).value();
      auto dets = mc->detector->Detect(std::span<const cv::Mat>(&in.decoded, 1), {});
      if (!dets) {
        std::printf("skipping model %s: %s\n", model.c_str(), dets.error().message().c_str());
        continue;
      }
      mc->detections = std::move(dets).value().front();
      in.decoded.copyTo(mc->annotated);
      imaging::Annotate(mc->annotated, mc->detections);
      std::printf("%-20s %-9s ready (%zu detections, load+first call %.0f ms)\n", model.c_str(),
                  SizeName(in.size).c_str(), mc->detections.size(), load.Lap());
      cases.push_back(std::move(mc));
    }
  }
  std::fflush(stdout);

  for (const Input& in : inputs) {
    const std::string size = SizeName(in.size);
    benchmark::RegisterBenchmark(("decode/" + size).c_str(), BM_Decode, &in)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    for (const auto& mc : cases) {
      if (mc->input != &in) continue;
      const std::string suffix = "/" + mc->model + "/" + size;
      benchmark::RegisterBenchmark(("detect" + suffix).c_str(), BM_Detect, mc.get())
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("draw" + suffix).c_str(), BM_Draw, mc.get())
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("encode" + suffix).c_str(), BM_Encode, mc.get())
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  PrintSummary(cases);
  return 0;
}

}  // namespace
}  // namespace kadr::bench

int main(int argc, char** argv) { return kadr::bench::Main(argc, argv); }
