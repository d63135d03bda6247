// postprocess_bench: micro-benchmarks of the pure pre/post-processing functions in
// inference/letterbox.h and inference/postprocess.h, on synthetic tensors shaped like the real
// models' outputs, so that a regression in one of them shows without loading a model.
//
// Scores are drawn to look like a real frame: almost every anchor scores near zero (an
// exponential with mean 0.005), and a few dozen anchors score above the 0.25 threshold.

#include "inference/detail/postprocess.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>
#include <opencv2/core.hpp>

#include "inference/detail/letterbox.h"

namespace kadr::inference {
namespace {

constexpr int kClasses = 80;
constexpr float kConfidence = 0.25f;

// A channels-first 1 x (4 + classes + extra) x anchors tensor like YOLOv8's output0.
std::vector<float> YoloV8Tensor(int anchors, int extra, int hot_anchors, int input_size) {
  const int channels = 4 + kClasses + extra;
  std::vector<float> t(static_cast<size_t>(channels) * anchors);
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> pos(0, static_cast<float>(input_size));
  std::uniform_real_distribution<float> side(8, static_cast<float>(input_size) / 3);
  std::exponential_distribution<float> low(200);  // mean 0.005
  std::uniform_real_distribution<float> high(0.3f, 0.95f);
  std::uniform_int_distribution<int> anchor(0, anchors - 1);
  std::uniform_int_distribution<int> cls(0, kClasses - 1);
  auto at = [&](int c, int a) -> float& {
    return t[static_cast<size_t>(c) * static_cast<size_t>(anchors) + static_cast<size_t>(a)];
  };
  for (int a = 0; a < anchors; ++a) {
    at(0, a) = pos(rng);
    at(1, a) = pos(rng);
    at(2, a) = side(rng);
    at(3, a) = side(rng);
    for (int c = 0; c < kClasses; ++c) at(4 + c, a) = std::min(low(rng), 0.2f);
  }
  for (int i = 0; i < hot_anchors; ++i) at(4 + cls(rng), anchor(rng)) = high(rng);
  return t;
}

void BM_DecodeYoloV8(benchmark::State& state) {
  const int anchors = static_cast<int>(state.range(0));
  const int input = anchors == 8400 ? 640 : 320;
  const auto tensor = YoloV8Tensor(anchors, /*extra=*/0, /*hot_anchors=*/60, input);
  DecodeParams params;
  params.confidence = kConfidence;
  size_t kept = 0;
  for (auto _ : state) {
    auto cands = DecodeYoloV8(tensor.data(), 4 + kClasses, anchors, kClasses, params);
    kept = cands.size();
    benchmark::DoNotOptimize(cands.data());
  }
  state.counters["candidates"] = static_cast<double>(kept);
}
BENCHMARK(BM_DecodeYoloV8)->Arg(8400)->Arg(2100)->Unit(benchmark::kMicrosecond);

void BM_DecodeYolox(benchmark::State& state) {
  // 1 x 3549 x 85 raw grid outputs (416x416 input): [x, y, w, h, obj, cls...].
  constexpr int kRows = 3549;
  constexpr int kCols = 5 + kClasses;
  std::vector<float> t(static_cast<size_t>(kRows) * kCols);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> off(-0.5f, 1.5f);
  std::normal_distribution<float> logsize(0.5f, 1.0f);
  std::exponential_distribution<float> low(100);
  std::uniform_int_distribution<int> row(0, kRows - 1);
  for (int r = 0; r < kRows; ++r) {
    float* p = &t[static_cast<size_t>(r) * kCols];
    p[0] = off(rng);
    p[1] = off(rng);
    p[2] = logsize(rng);
    p[3] = logsize(rng);
    p[4] = std::min(low(rng), 0.2f);
    for (int c = 0; c < kClasses; ++c) p[5 + c] = std::min(low(rng) * 20, 0.9f);
  }
  for (int i = 0; i < 40; ++i) {
    float* p = &t[static_cast<size_t>(row(rng)) * kCols];
    p[4] = 0.9f;
    p[5 + i % kClasses] = 0.8f;
  }
  DecodeParams params;
  params.confidence = kConfidence;
  size_t kept = 0;
  for (auto _ : state) {
    auto cands = DecodeYolox(t.data(), kRows, kClasses, 416, 416, params);
    kept = cands.size();
    benchmark::DoNotOptimize(cands.data());
  }
  state.counters["candidates"] = static_cast<double>(kept);
}
BENCHMARK(BM_DecodeYolox)->Unit(benchmark::kMicrosecond);

// `n` candidates in clusters of 20 jittered boxes around n/20 objects, over 5 classes:
// what a dense scene looks like before NMS at a low threshold.
std::vector<Candidate> NmsCandidates(int n) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> pos(0, 560);
  std::uniform_real_distribution<float> side(20, 200);
  std::normal_distribution<float> jitter(0, 4);
  std::uniform_real_distribution<float> score(0.25f, 0.95f);
  std::vector<Candidate> out;
  out.reserve(static_cast<size_t>(n));
  protocol::Box object;
  int cls = 0;
  for (int i = 0; i < n; ++i) {
    if (i % 20 == 0) {
      object = {pos(rng), pos(rng), side(rng), side(rng)};
      cls = (i / 20) % 5;
    }
    Candidate c;
    c.box = {object.x + jitter(rng), object.y + jitter(rng), object.width + jitter(rng),
             object.height + jitter(rng)};
    c.class_id = cls;
    c.score = score(rng);
    c.index = i;
    out.push_back(c);
  }
  return out;
}

void BM_NonMaxSuppression(benchmark::State& state) {
  const auto cands = NmsCandidates(static_cast<int>(state.range(0)));
  size_t kept = 0;
  for (auto _ : state) {
    auto out = NonMaxSuppression(cands, 0.45f, 300);  // the copy is part of the API's cost
    kept = out.size();
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["kept"] = static_cast<double>(kept);
}
BENCHMARK(BM_NonMaxSuppression)->Arg(1000)->Arg(100)->Unit(benchmark::kMicrosecond);

void BM_DecodeSegMask(benchmark::State& state) {
  // One person-sized detection on a 1280x720 source through a 320x320 YOLOv8-seg.
  constexpr int kProtos = 32;
  constexpr int kGrid = 80;
  std::vector<float> protos(static_cast<size_t>(kProtos) * kGrid * kGrid);
  std::vector<float> coeffs(kProtos);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0, 1);
  for (float& v : protos) v = nd(rng);
  for (float& v : coeffs) v = nd(rng) * 0.3f;
  const Letterbox lb = ComputeLetterbox(1280, 720, 320, 320, PadAnchor::kCenter);
  const protocol::Box box{500, 150, 220, 520};
  for (auto _ : state) {
    auto mask = DecodeSegMask(coeffs, protos.data(), kProtos, kGrid, kGrid, lb, box);
    benchmark::DoNotOptimize(mask.data.data());
  }
}
BENCHMARK(BM_DecodeSegMask)->Unit(benchmark::kMicrosecond);

void BM_ApplyLetterbox(benchmark::State& state) {
  const int w = static_cast<int>(state.range(0));
  const int h = static_cast<int>(state.range(1));
  cv::Mat src(h, w, CV_8UC3);
  cv::randu(src, cv::Scalar::all(0), cv::Scalar::all(255));
  const Letterbox lb = ComputeLetterbox(w, h, 640, 640, PadAnchor::kCenter);
  cv::Mat out;
  for (auto _ : state) {
    ApplyLetterbox(src, lb, cv::Scalar::all(114), out);
    benchmark::DoNotOptimize(out.data);
  }
}
BENCHMARK(BM_ApplyLetterbox)->Args({640, 480})->Args({1280, 720})->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace kadr::inference

BENCHMARK_MAIN();
