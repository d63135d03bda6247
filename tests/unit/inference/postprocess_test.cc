#include "inference/detail/postprocess.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

namespace kadr::inference {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

void ExpectBoxNear(const protocol::Box& actual, const protocol::Box& expected, float tol = 1e-4f) {
  EXPECT_NEAR(actual.x, expected.x, tol);
  EXPECT_NEAR(actual.y, expected.y, tol);
  EXPECT_NEAR(actual.width, expected.width, tol);
  EXPECT_NEAR(actual.height, expected.height, tol);
}

// (Not `{.confidence = c}`: GCC 12 warns about the omitted member of a designated initializer.)
DecodeParams Conf(float confidence) {
  DecodeParams params;
  params.confidence = confidence;
  return params;
}

std::vector<int> ClassIds(const std::vector<Candidate>& cs) {
  std::vector<int> ids;
  for (const Candidate& c : cs) ids.push_back(c.class_id);
  return ids;
}

std::vector<int> Indices(const std::vector<Candidate>& cs) {
  std::vector<int> ids;
  for (const Candidate& c : cs) ids.push_back(c.index);
  return ids;
}

// ---------------------------------------------------------------------------------------------
// DecodeParams

TEST(DecodeParamsTest, EmptyClassListKeepsEverything) {
  const DecodeParams params;
  EXPECT_TRUE(params.Keeps(0));
  EXPECT_TRUE(params.Keeps(79));
}

TEST(DecodeParamsTest, ClassListKeepsOnlyItsMembers) {
  const std::vector<int> classes = {0, 16};
  const DecodeParams params{.confidence = 0.5f, .classes = classes};
  EXPECT_TRUE(params.Keeps(0));
  EXPECT_TRUE(params.Keeps(16));
  EXPECT_FALSE(params.Keeps(1));
  EXPECT_FALSE(params.Keeps(-1));
}

// ---------------------------------------------------------------------------------------------
// YOLOv8: channels-first [cx, cy, w, h, classes..., extra...] x anchors.

class YoloV8Tensor {
 public:
  YoloV8Tensor(int num_classes, int extra, int anchors)
      : channels_(4 + num_classes + extra), anchors_(anchors), data_(channels_ * anchors, 0.f) {}

  void SetBox(int anchor, float cx, float cy, float w, float h) {
    At(0, anchor) = cx;
    At(1, anchor) = cy;
    At(2, anchor) = w;
    At(3, anchor) = h;
  }
  float& Class(int anchor, int class_id) { return At(4 + class_id, anchor); }
  float& At(int channel, int anchor) { return data_[channel * anchors_ + anchor]; }
  const float* data() const { return data_.data(); }
  int channels() const { return channels_; }
  int anchors() const { return anchors_; }

 private:
  int channels_;
  int anchors_;
  std::vector<float> data_;
};

TEST(DecodeYoloV8Test, DecodesBoxesClassesAndIndices) {
  YoloV8Tensor t(3, 2, 6);
  t.SetBox(2, 100, 50, 40, 20);
  t.Class(2, 1) = 0.9f;
  t.Class(2, 0) = 0.2f;
  t.SetBox(5, 10, 10, 4, 6);
  t.Class(5, 2) = 0.6f;
  t.At(t.channels() - 1, 3) = 0.99f;  // a mask coefficient, not a class score
  const auto out = DecodeYoloV8(t.data(), t.channels(), t.anchors(), 3, Conf(0.25f));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].index, 2);
  EXPECT_EQ(out[0].class_id, 1);
  EXPECT_FLOAT_EQ(out[0].score, 0.9f);
  ExpectBoxNear(out[0].box, {80, 40, 40, 20});
  EXPECT_EQ(out[1].index, 5);
  EXPECT_EQ(out[1].class_id, 2);
  ExpectBoxNear(out[1].box, {8, 7, 4, 6});
}

TEST(DecodeYoloV8Test, ConfidenceThresholdIsInclusive) {
  YoloV8Tensor t(2, 0, 3);
  t.Class(0, 0) = 0.5f;
  t.Class(1, 1) = 0.49f;
  t.Class(2, 1) = 0.51f;
  const auto out = DecodeYoloV8(t.data(), t.channels(), t.anchors(), 2, Conf(0.5f));
  EXPECT_THAT(Indices(out), ElementsAre(0, 2));
}

TEST(DecodeYoloV8Test, ClassFilterAppliesToTheBestClass) {
  YoloV8Tensor t(3, 0, 3);
  t.Class(0, 0) = 0.8f;
  t.Class(1, 2) = 0.7f;
  // Best class is 1; class 0 passes the threshold too but is not the anchor's class.
  t.Class(2, 1) = 0.9f;
  t.Class(2, 0) = 0.6f;
  const std::vector<int> classes = {0, 2};
  const auto out = DecodeYoloV8(t.data(), t.channels(), t.anchors(), 3,
                                {.confidence = 0.5f, .classes = classes});
  EXPECT_THAT(Indices(out), ElementsAre(0, 1));
  EXPECT_THAT(ClassIds(out), ElementsAre(0, 2));
}

TEST(DecodeYoloV8Test, TiesGoToTheLowestClass) {
  YoloV8Tensor t(4, 0, 1);
  t.Class(0, 1) = 0.7f;
  t.Class(0, 3) = 0.7f;
  const auto out = DecodeYoloV8(t.data(), t.channels(), t.anchors(), 4, {});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].class_id, 1);
}

TEST(DecodeYoloV8Test, RejectsTooFewChannels) {
  YoloV8Tensor t(3, 0, 2);
  t.Class(0, 0) = 1;
  EXPECT_THAT(DecodeYoloV8(t.data(), t.channels(), t.anchors(), 4, {}), IsEmpty());
  EXPECT_THAT(DecodeYoloV8(nullptr, 7, 2, 3, {}), IsEmpty());
  EXPECT_THAT(DecodeYoloV8(t.data(), t.channels(), 0, 3, {}), IsEmpty());
}

// Straightforward per-anchor decoder to check the class-row-major one against.
std::vector<Candidate> ReferenceYoloV8(const std::vector<float>& data, int anchors, int num_classes,
                                       float confidence) {
  std::vector<Candidate> out;
  for (int a = 0; a < anchors; ++a) {
    int best = 0;
    for (int c = 1; c < num_classes; ++c) {
      if (data[(4 + c) * anchors + a] > data[(4 + best) * anchors + a]) best = c;
    }
    const float score = data[(4 + best) * anchors + a];
    if (score < confidence) continue;
    const float cx = data[a], cy = data[anchors + a];
    const float w = data[2 * anchors + a], h = data[3 * anchors + a];
    out.push_back({{cx - w / 2, cy - h / 2, w, h}, best, score, a});
  }
  return out;
}

std::vector<float> RandomYoloV8Output(int anchors, int num_classes, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> coord(0, 640);
  // Mostly low scores with a few confident ones, like a real frame.
  std::exponential_distribution<float> score(30);
  std::vector<float> data(static_cast<size_t>(4 + num_classes) * anchors);
  for (int i = 0; i < 4 * anchors; ++i) data[i] = coord(rng);
  for (size_t i = 4 * anchors; i < data.size(); ++i) data[i] = std::min(score(rng), 1.f);
  return data;
}

TEST(DecodeYoloV8Test, MatchesPerAnchorReferenceOnRealisticSizes) {
  constexpr int kAnchors = 8400;
  constexpr int kClasses = 80;
  const std::vector<float> data = RandomYoloV8Output(kAnchors, kClasses, 7);
  const auto out = DecodeYoloV8(data.data(), 4 + kClasses, kAnchors, kClasses, Conf(0.25f));
  const auto ref = ReferenceYoloV8(data, kAnchors, kClasses, 0.25f);
  ASSERT_GT(ref.size(), 100u);
  ASSERT_EQ(out.size(), ref.size());
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i].index, ref[i].index);
    EXPECT_EQ(out[i].class_id, ref[i].class_id);
    EXPECT_EQ(out[i].score, ref[i].score);
    EXPECT_EQ(out[i].box, ref[i].box);
  }
}

// ---------------------------------------------------------------------------------------------
// YOLOv5: rows of [cx, cy, w, h, obj, classes...].

TEST(DecodeYoloV5Test, ScoresAreObjectnessTimesClass) {
  constexpr int kClasses = 3;
  std::vector<float> data(4 * (5 + kClasses), 0.f);
  const auto row = [&](int r) { return data.data() + r * (5 + kClasses); };
  // Row 1: obj 0.8, best class 2 at 0.5 -> 0.4.
  std::copy_n(std::vector<float>{60, 40, 20, 10, 0.8f, 0.1f, 0.3f, 0.5f}.begin(), 8, row(1));
  // Row 2: obj 0.9 but classes weak: 0.9 * 0.2 = 0.18, below 0.25.
  std::copy_n(std::vector<float>{1, 1, 1, 1, 0.9f, 0.2f, 0.f, 0.f}.begin(), 8, row(2));
  // Row 3: strong classes but objectness below the threshold: skipped early.
  std::copy_n(std::vector<float>{1, 1, 1, 1, 0.2f, 1.f, 1.f, 1.f}.begin(), 8, row(3));
  const auto out = DecodeYoloV5(data.data(), 4, kClasses, Conf(0.25f));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].index, 1);
  EXPECT_EQ(out[0].class_id, 2);
  EXPECT_FLOAT_EQ(out[0].score, 0.4f);
  ExpectBoxNear(out[0].box, {50, 35, 20, 10});

  const std::vector<int> only_class_0 = {0};
  EXPECT_THAT(
      DecodeYoloV5(data.data(), 4, kClasses, {.confidence = 0.25f, .classes = only_class_0}),
      IsEmpty());
  EXPECT_THAT(DecodeYoloV5(nullptr, 4, kClasses, {}), IsEmpty());
}

// ---------------------------------------------------------------------------------------------
// YOLOX: raw grid outputs for strides 8, 16, 32.

TEST(DecodeYoloxTest, AppliesGridAndStridePerLevel) {
  // 64x32 input: grids 8x4 (32 rows), 4x2 (8 rows), 2x1 (2 rows) = 42 rows.
  constexpr int kClasses = 2;
  constexpr int kCols = 5 + kClasses;
  constexpr int kRows = 42;
  std::vector<float> data(kRows * kCols, 0.f);
  const auto set = [&](int r, std::vector<float> v) {
    std::copy(v.begin(), v.end(), &data[r * kCols]);
  };
  // Stride 8, cell (gx 3, gy 2) = row 2*8+3 = 19: cx (0.5+3)*8 = 28, cy (0+2)*8 = 16,
  // w = e^0 * 8 = 8, h = e^ln2 * 8 = 16.
  set(19, {0.5f, 0.f, 0.f, std::log(2.f), 0.9f, 0.1f, 0.8f});
  // Stride 16, cell (gx 1, gy 1) = row 32 + 1*4 + 1 = 37: cx (0.5+1)*16 = 24,
  // cy (0.25+1)*16 = 20, w = 2*16 = 32, h = 16.
  set(37, {0.5f, 0.25f, std::log(2.f), 0.f, 0.8f, 0.5f, 0.1f});
  // Stride 32, cell (gx 1, gy 0) = row 41: cx (0+1)*32 = 32, cy (0.5+0)*32 = 16, w = h = 32.
  set(41, {0.f, 0.5f, 0.f, 0.f, 1.f, 0.3f, 0.f});
  const auto out = DecodeYolox(data.data(), kRows, kClasses, 64, 32, Conf(0.25f));
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].index, 19);
  EXPECT_EQ(out[0].class_id, 1);
  EXPECT_FLOAT_EQ(out[0].score, 0.9f * 0.8f);
  ExpectBoxNear(out[0].box, {24, 8, 8, 16});
  EXPECT_EQ(out[1].index, 37);
  EXPECT_EQ(out[1].class_id, 0);
  EXPECT_FLOAT_EQ(out[1].score, 0.4f);
  ExpectBoxNear(out[1].box, {8, 12, 32, 16});
  EXPECT_EQ(out[2].index, 41);
  ExpectBoxNear(out[2].box, {16, 0, 32, 32});

  const std::vector<int> only_class_1 = {1};
  EXPECT_THAT(Indices(DecodeYolox(data.data(), kRows, kClasses, 64, 32,
                                  {.confidence = 0.25f, .classes = only_class_1})),
              ElementsAre(19));
  EXPECT_THAT(Indices(DecodeYolox(data.data(), kRows, kClasses, 64, 32, Conf(0.5f))),
              ElementsAre(19));
}

TEST(DecodeYoloxTest, RowCountOf416InputIs3549) {
  constexpr int kClasses = 80;
  std::vector<float> data(3549 * (5 + kClasses), 0.f);
  // Last row: stride 32, cell (12, 12): cx = cy = (0 + 12) * 32 = 384.
  float* last = &data[3548 * (5 + kClasses)];
  last[4] = 1;
  last[5 + 79] = 0.7f;
  const auto out = DecodeYolox(data.data(), 3549, kClasses, 416, 416, {});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].class_id, 79);
  ExpectBoxNear(out[0].box, {384 - 16, 384 - 16, 32, 32});
}

TEST(DecodeYoloxTest, RejectsMismatchedRowCount) {
  std::vector<float> data(43 * 7, 1.f);
  EXPECT_THAT(DecodeYolox(data.data(), 43, 2, 64, 32, {}), IsEmpty());
  EXPECT_THAT(DecodeYolox(data.data(), 41, 2, 64, 32, {}), IsEmpty());
  EXPECT_THAT(DecodeYolox(data.data(), 42, 2, 64, 32, {}), ::testing::SizeIs(42));
}

// ---------------------------------------------------------------------------------------------
// NanoDet: per level, scores [cells, C] and distributions [cells, 4 * (reg_max + 1)].

TEST(DecodeNanoDetTest, DecodesDistributionsAndCellCentres) {
  // 20x12 input: stride 8 grid ceil(20/8) x ceil(12/8) = 3x2, stride 16 grid 2x1.
  constexpr int kClasses = 2;
  constexpr int kRegMax = 7;
  constexpr int kBins = kRegMax + 1;
  std::vector<float> scores8(6 * kClasses, 0.f), boxes8(6 * 4 * kBins, 0.f);
  std::vector<float> scores16(2 * kClasses, 0.f), boxes16(2 * 4 * kBins, 0.f);

  // Level 0, row 1, col 2 (cell 5): class 1 at 0.7. Centre (2.5*8-0.5, 1.5*8-0.5) = (19.5, 11.5).
  scores8[5 * kClasses + 1] = 0.7f;
  float* d = &boxes8[5 * 4 * kBins];
  d[0 * kBins + 2] = 50;  // left: all the mass on bin 2 -> 2 * 8 = 16
  // top: uniform logits -> expectation 3.5 -> 28
  d[2 * kBins + 1] = 50;  // right: half on bin 1, half on bin 3 -> 2 -> 16
  d[2 * kBins + 3] = 50;
  d[3 * kBins + 0] = 50;  // bottom: 0

  // Level 1, row 0, col 1 (cell 1, overall index 7): class 0 at 0.6. Centre (23.5, 7.5).
  scores16[1 * kClasses + 0] = 0.6f;
  float* e = &boxes16[1 * 4 * kBins];
  for (int side = 0; side < 4; ++side) e[side * kBins + 1] = 40;  // every side 1 * 16 = 16

  // Level 0, cell 0: below the threshold, its (garbage) distribution never matters.
  scores8[0] = 0.2f;

  const std::vector<NanoDetLevel> levels = {{scores8.data(), boxes8.data(), 8},
                                            {scores16.data(), boxes16.data(), 16}};
  const auto out = DecodeNanoDet(levels, kClasses, kRegMax, 20, 12, Conf(0.3f));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].index, 5);
  EXPECT_EQ(out[0].class_id, 1);
  EXPECT_FLOAT_EQ(out[0].score, 0.7f);
  ExpectBoxNear(out[0].box, {19.5f - 16, 11.5f - 28, 16 + 16, 28 + 0}, 1e-3f);
  EXPECT_EQ(out[1].index, 7);
  EXPECT_EQ(out[1].class_id, 0);
  ExpectBoxNear(out[1].box, {23.5f - 16, 7.5f - 16, 32, 32}, 1e-3f);

  const std::vector<int> only_class_0 = {0};
  EXPECT_THAT(Indices(DecodeNanoDet(levels, kClasses, kRegMax, 20, 12,
                                    {.confidence = 0.3f, .classes = only_class_0})),
              ElementsAre(7));
  EXPECT_THAT(Indices(DecodeNanoDet(levels, kClasses, kRegMax, 20, 12, Conf(0.65f))),
              ElementsAre(5));
}

TEST(DecodeNanoDetTest, LargeLogitsDoNotOverflow) {
  constexpr int kBins = 8;
  std::vector<float> scores(1, 0.9f);
  std::vector<float> boxes(4 * kBins, 0.f);
  for (int side = 0; side < 4; ++side) boxes[side * kBins + 7] = 1000.f;  // exp(1000) = inf
  const std::vector<NanoDetLevel> levels = {{scores.data(), boxes.data(), 8}};
  const auto out = DecodeNanoDet(levels, 1, 7, 8, 8, {});
  ASSERT_EQ(out.size(), 1u);
  ExpectBoxNear(out[0].box, {3.5f - 56, 3.5f - 56, 112, 112}, 1e-3f);
}

// ---------------------------------------------------------------------------------------------
// NMS

Candidate Cand(float x, float y, float w, float h, int class_id, float score, int index) {
  return {{x, y, w, h}, class_id, score, index};
}

TEST(NonMaxSuppressionTest, SuppressesOverlappingBoxesOfTheSameClass) {
  const std::vector<Candidate> in = {
      Cand(0, 0, 10, 10, 0, 0.8f, 0),
      Cand(1, 1, 10, 10, 0, 0.9f, 1),    // IoU with #0 = 81/119 = 0.68
      Cand(50, 50, 10, 10, 0, 0.5f, 2),  // far away
  };
  const auto out = NonMaxSuppression(in, 0.45f);
  EXPECT_THAT(Indices(out), ElementsAre(1, 2));
}

TEST(NonMaxSuppressionTest, KeepsOverlappingBoxesOfDifferentClasses) {
  const std::vector<Candidate> in = {
      Cand(0, 0, 10, 10, 0, 0.8f, 0),
      Cand(0, 0, 10, 10, 1, 0.7f, 1),
      Cand(0, 0, 10, 10, 1, 0.6f, 2),
  };
  const auto out = NonMaxSuppression(in, 0.45f);
  EXPECT_THAT(Indices(out), ElementsAre(0, 1));
  EXPECT_THAT(ClassIds(out), ElementsAre(0, 1));
}

TEST(NonMaxSuppressionTest, SuppressedBoxesDoNotSuppressOthers) {
  // Greedy: B is suppressed by A, so C (which overlaps only B) survives.
  const std::vector<Candidate> in = {
      Cand(0, 0, 10, 10, 0, 0.9f, 0),   // A
      Cand(5, 0, 10, 10, 0, 0.8f, 1),   // B: IoU(A,B) = 50/150 = 0.33
      Cand(10, 0, 10, 10, 0, 0.7f, 2),  // C: IoU(A,C) = 0, IoU(B,C) = 0.33
  };
  EXPECT_THAT(Indices(NonMaxSuppression(in, 0.3f)), ElementsAre(0, 2));
  EXPECT_THAT(Indices(NonMaxSuppression(in, 0.4f)), ElementsAre(0, 1, 2));
}

TEST(NonMaxSuppressionTest, IouEqualToThresholdIsKept) {
  // The threshold is the pair's own IoU, so "suppress when IoU > threshold" must keep both.
  const Candidate a = Cand(0, 0, 10, 10, 0, 0.9f, 0);
  const Candidate b = Cand(5, 0, 10, 10, 0, 0.8f, 1);
  const float iou = protocol::Iou(a.box, b.box);
  EXPECT_THAT(Indices(NonMaxSuppression({a, b}, iou)), ElementsAre(0, 1));
}

TEST(NonMaxSuppressionTest, OrdersByScoreAndHonoursMaxDetections) {
  std::vector<Candidate> in;
  for (int i = 0; i < 10; ++i) {
    in.push_back(Cand(20.f * i, 0, 10, 10, i % 3, 0.1f * static_cast<float>((i * 7) % 10), i));
  }
  const auto all = NonMaxSuppression(in, 0.5f);
  ASSERT_EQ(all.size(), 10u);
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end(),
                             [](const auto& a, const auto& b) { return a.score > b.score; }));
  const auto top3 = NonMaxSuppression(in, 0.5f, 3);
  ASSERT_EQ(top3.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(top3[i].index, all[i].index);
  EXPECT_THAT(NonMaxSuppression(in, 0.5f, 0), IsEmpty());
  EXPECT_THAT(NonMaxSuppression({}, 0.5f), IsEmpty());
}

TEST(NonMaxSuppressionTest, HugeCandidateListsKeepTheBest) {
  // 100000 identical boxes of one class with distinct scores, plus a few well-separated ones.
  std::vector<Candidate> in;
  for (int i = 0; i < 100000; ++i) {
    in.push_back(Cand(0, 0, 100, 100, 0, 0.5f * static_cast<float>(i) / 100000, i));
  }
  in.push_back(Cand(500, 500, 10, 10, 0, 0.95f, 100000));
  in.push_back(Cand(0, 0, 100, 100, 1, 0.9f, 100001));
  const auto out = NonMaxSuppression(std::move(in), 0.45f);
  EXPECT_THAT(Indices(out), ElementsAre(100000, 100001, 99999));
}

TEST(NonMaxSuppressionTest, DropsNanScores) {
  const std::vector<Candidate> in = {Cand(0, 0, 10, 10, 0, std::nanf(""), 0),
                                     Cand(0, 0, 10, 10, 0, 0.5f, 1)};
  EXPECT_THAT(Indices(NonMaxSuppression(in, 0.45f)), ElementsAre(1));
}

// ---------------------------------------------------------------------------------------------
// Segmentation masks

// num_protos x h x w prototypes; channel 0 is +10 inside `rect` (in prototype cells), -10
// elsewhere.
std::vector<float> RectPrototype(int num_protos, int h, int w, cv::Rect rect) {
  std::vector<float> protos(static_cast<size_t>(num_protos) * h * w, 0.f);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) protos[y * w + x] = rect.contains({x, y}) ? 10.f : -10.f;
  }
  return protos;
}

// Checks that `mask` is set exactly on `expected` (source pixels) within `slack` pixels at
// the edges, and nowhere else.
void ExpectMaskCovers(const protocol::Mask& mask, cv::Rect expected, int slack) {
  const cv::Rect inner(expected.x + slack, expected.y + slack, expected.width - 2 * slack,
                       expected.height - 2 * slack);
  const cv::Rect outer(expected.x - slack, expected.y - slack, expected.width + 2 * slack,
                       expected.height + 2 * slack);
  int wrong = 0;
  for (int y = mask.y; y < mask.y + mask.height; ++y) {
    for (int x = mask.x; x < mask.x + mask.width; ++x) {
      const bool set = mask.At(x, y);
      if ((inner.contains({x, y}) && !set) || (!outer.contains({x, y}) && set)) ++wrong;
    }
  }
  EXPECT_EQ(wrong, 0);
}

TEST(DecodeSegMaskTest, MaskCoversThePrototypeRectangleCroppedToTheBox) {
  // 640x480 source, 320 input: scale 0.5, resized 320x240, pad_y 40. Prototypes 80x80 (4 input
  // px per cell). Cells [20, 40) x [20, 40) are input [80, 160) x [80, 160), i.e. source
  // x [160, 320), y [(80 - 40) / 0.5, (160 - 40) / 0.5) = [80, 240).
  const Letterbox lb = ComputeLetterbox(640, 480, 320, 320, PadAnchor::kCenter);
  ASSERT_EQ(lb.pad_y, 40);
  const auto protos = RectPrototype(1, 80, 80, cv::Rect(20, 20, 20, 20));
  const std::vector<float> coeffs = {1.f};
  const protocol::Box box{100.4f, 50.6f, 300.f, 250.f};  // x [100.4, 400.4), y [50.6, 300.6)
  const protocol::Mask mask = DecodeSegMask(coeffs, protos.data(), 1, 80, 80, lb, box);
  EXPECT_EQ(mask.x, 100);
  EXPECT_EQ(mask.y, 50);
  EXPECT_EQ(mask.width, 301);
  EXPECT_EQ(mask.height, 251);
  ASSERT_EQ(mask.data.size(), 301u * 251u);
  ExpectMaskCovers(mask, cv::Rect(160, 80, 160, 160), 2);
  EXPECT_NEAR(static_cast<double>(mask.Area()), 160.0 * 160.0, 4 * 160.0);
}

TEST(DecodeSegMaskTest, BoxCutsThroughTheShape) {
  const Letterbox lb = ComputeLetterbox(640, 480, 320, 320, PadAnchor::kCenter);
  const auto protos = RectPrototype(1, 80, 80, cv::Rect(20, 20, 20, 20));
  const std::vector<float> coeffs = {1.f};
  // Only the left half of the shape is inside the box.
  const protocol::Mask mask = DecodeSegMask(coeffs, protos.data(), 1, 80, 80, lb, {0, 0, 240, 480});
  EXPECT_EQ(mask.width, 240);
  EXPECT_EQ(mask.height, 480);
  ExpectMaskCovers(mask, cv::Rect(160, 80, 80, 160), 2);
  EXPECT_TRUE(mask.At(239, 160));
  EXPECT_FALSE(mask.At(240, 160));  // outside the mask rectangle
}

TEST(DecodeSegMaskTest, CoefficientsCombinePrototypes) {
  // Two prototypes: channel 0 the rectangle, channel 1 a constant +20. With coeffs (1, -1)
  // everything is negative; with (1, 0) only the rectangle; with (0, 1) everything.
  const Letterbox lb = ComputeLetterbox(320, 320, 320, 320, PadAnchor::kCenter);
  auto protos = RectPrototype(2, 80, 80, cv::Rect(10, 10, 10, 10));
  std::fill(protos.begin() + 6400, protos.end(), 20.f);
  const protocol::Box box{0, 0, 320, 320};
  const std::vector<float> none = {1.f, -1.f}, rect = {1.f, 0.f}, all = {0.f, 1.f};
  EXPECT_EQ(DecodeSegMask(none, protos.data(), 2, 80, 80, lb, box).Area(), 0);
  EXPECT_EQ(DecodeSegMask(all, protos.data(), 2, 80, 80, lb, box).Area(), 320 * 320);
  const protocol::Mask m = DecodeSegMask(rect, protos.data(), 2, 80, 80, lb, box);
  ExpectMaskCovers(m, cv::Rect(40, 40, 40, 40), 2);
}

TEST(DecodeSegMaskTest, BoxIsClippedToTheImage) {
  const Letterbox lb = ComputeLetterbox(640, 480, 320, 320, PadAnchor::kCenter);
  const auto protos = RectPrototype(1, 80, 80, cv::Rect(0, 0, 80, 80));
  const std::vector<float> coeffs = {1.f};
  const protocol::Mask mask =
      DecodeSegMask(coeffs, protos.data(), 1, 80, 80, lb, {-20.5f, 400, 700, 200});
  EXPECT_EQ(mask.x, 0);
  EXPECT_EQ(mask.y, 400);
  EXPECT_EQ(mask.width, 640);
  EXPECT_EQ(mask.height, 80);
  EXPECT_EQ(mask.Area(), 640 * 80);
}

TEST(DecodeSegMaskTest, EmptyOrInvalidInputsGiveAnEmptyMask) {
  const Letterbox lb = ComputeLetterbox(640, 480, 320, 320, PadAnchor::kCenter);
  const auto protos = RectPrototype(1, 80, 80, cv::Rect(0, 0, 80, 80));
  const std::vector<float> coeffs = {1.f};
  const protocol::Mask outside =
      DecodeSegMask(coeffs, protos.data(), 1, 80, 80, lb, {700, 10, 50, 50});
  EXPECT_EQ(outside.width, 0);
  EXPECT_TRUE(outside.data.empty());
  const std::vector<float> wrong_count = {1.f, 2.f};
  EXPECT_TRUE(
      DecodeSegMask(wrong_count, protos.data(), 1, 80, 80, lb, {0, 0, 10, 10}).data.empty());
  EXPECT_TRUE(DecodeSegMask(coeffs, nullptr, 1, 80, 80, lb, {0, 0, 10, 10}).data.empty());
}

TEST(DecodeSegMaskTest, PaddingDoesNotBleedIntoTheImageEdge) {
  // The padding rows of the prototype are strongly positive, the image rows negative: a mask
  // sampled across the padding boundary would light up the first source rows.
  const Letterbox lb = ComputeLetterbox(640, 480, 320, 320, PadAnchor::kCenter);
  std::vector<float> protos(80 * 80, -1.f);
  std::fill(protos.begin(), protos.begin() + 10 * 80, 100.f);  // pad rows 0..9 (input y < 40)
  const std::vector<float> coeffs = {1.f};
  const protocol::Mask mask = DecodeSegMask(coeffs, protos.data(), 1, 80, 80, lb, {0, 0, 640, 480});
  EXPECT_EQ(mask.Area(), 0);
}

// The definition the header gives: sigmoid(coeffs . protos), cut the padding away, resize the
// rest to the source image, threshold, crop. Only valid when the padding is a whole number of
// prototype cells.
protocol::Mask ReferenceMask(const std::vector<float>& coeffs, const std::vector<float>& protos,
                             int num_protos, int ph, int pw, const Letterbox& lb, cv::Rect box) {
  cv::Mat logits(ph, pw, CV_32F, cv::Scalar(0));
  for (int k = 0; k < num_protos; ++k) {
    cv::Mat p(ph, pw, CV_32F, const_cast<float*>(protos.data()) + k * ph * pw);
    logits += coeffs[k] * p;
  }
  cv::Mat prob;
  cv::exp(-logits, prob);
  prob = 1.0 / (1.0 + prob);
  const int r = lb.input_width / pw;
  const cv::Rect image(lb.pad_x / r, lb.pad_y / r, lb.resized_width / r, lb.resized_height / r);
  cv::Mat full;
  cv::resize(prob(image).clone(), full, cv::Size(lb.source_width, lb.source_height), 0, 0,
             cv::INTER_LINEAR);
  protocol::Mask m{box.x, box.y, box.width, box.height, {}};
  for (int y = box.y; y < box.y + box.height; ++y) {
    for (int x = box.x; x < box.x + box.width; ++x) {
      m.data.push_back(full.at<float>(y, x) > 0.5f ? 1 : 0);
    }
  }
  return m;
}

TEST(DecodeSegMaskTest, MatchesCropResizeThresholdReference) {
  // 1280x960 source into 320x320: scale 0.25, 320x240, pad_y 40 = 10 prototype rows.
  const Letterbox lb = ComputeLetterbox(1280, 960, 320, 320, PadAnchor::kCenter);
  constexpr int kProtos = 4;
  std::mt19937 rng(3);
  std::normal_distribution<float> noise(0, 1);
  std::vector<float> protos(kProtos * 80 * 80);
  // Smooth random fields, so the mask has real edges at sub-cell positions.
  for (int k = 0; k < kProtos; ++k) {
    cv::Mat p(80, 80, CV_32F, protos.data() + k * 6400);
    cv::randn(p, 0, 1);
    cv::GaussianBlur(p, p, cv::Size(0, 0), 3);
    p *= 10;
  }
  const std::vector<float> coeffs = {1.f, -0.5f, 0.8f, 0.3f};
  const cv::Rect box(100, 50, 1000, 850);
  const protocol::Mask mask =
      DecodeSegMask(coeffs, protos.data(), kProtos, 80, 80, lb,
                    {static_cast<float>(box.x), static_cast<float>(box.y),
                     static_cast<float>(box.width), static_cast<float>(box.height)});
  const protocol::Mask ref = ReferenceMask(coeffs, protos, kProtos, 80, 80, lb, box);
  ASSERT_EQ(mask.width, ref.width);
  ASSERT_EQ(mask.height, ref.height);
  ASSERT_GT(ref.Area(), 1000);
  ASSERT_LT(ref.Area(), box.area() - 1000);
  size_t differ = 0;
  for (size_t i = 0; i < mask.data.size(); ++i) differ += mask.data[i] != ref.data[i];
  // Only float rounding at the 0.5 crossing may differ.
  EXPECT_LT(differ, mask.data.size() / 1000);
}

}  // namespace
}  // namespace kadr::inference
