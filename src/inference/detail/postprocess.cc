#include "inference/detail/postprocess.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kadr::inference {
namespace {

// Ultralytics' max_nms: beyond this many candidates NMS only spends time on boxes that would be
// cut by max_detections anyway (and a degenerate model output cannot make NMS quadratic).
constexpr std::size_t kMaxNmsCandidates = 30000;

// YOLOX heads, finest first; the exported output concatenates their grids in this order.
constexpr std::array<int, 3> kYoloxStrides = {8, 16, 32};

protocol::Box FromCenter(float cx, float cy, float w, float h) {
  return {cx - 0.5f * w, cy - 0.5f * h, w, h};
}

// Argmax over `n` contiguous scores; ties go to the lowest index (like torch.max / np.argmax).
std::pair<int, float> ArgMax(const float* scores, int n) {
  int best = 0;
  float best_score = scores[0];
  for (int c = 1; c < n; ++c) {
    if (scores[c] > best_score) {
      best_score = scores[c];
      best = c;
    }
  }
  return {best, best_score};
}

// Whether any of `n` contiguous scores is at least `threshold`. Branch-free, so the compiler
// vectorises it: NanoDet rejects almost every one of its 3,549 cells x 80 classes with this
// instead of ArgMax (0.78 ms per image before, docs/performance.md).
bool AnyAtLeast(const float* scores, int n, float threshold) {
  bool any = false;
  for (int c = 0; c < n; ++c) any |= scores[c] >= threshold;
  return any;
}

// Expected value of the softmax distribution over `bins` logits: NanoDet's "general distribution"
// box regression. Max-subtracted so large logits cannot overflow exp().
float SoftmaxExpectation(const float* logits, int bins) {
  float max_logit = logits[0];
  for (int i = 1; i < bins; ++i) max_logit = std::max(max_logit, logits[i]);
  float sum = 0;
  float weighted = 0;
  for (int i = 0; i < bins; ++i) {
    const float e = std::exp(logits[i] - max_logit);
    sum += e;
    weighted += e * static_cast<float>(i);
  }
  return weighted / sum;
}

float Sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

// How one axis of a segmentation mask samples the prototype grid (bilinear, separable).
struct AxisPlan {
  int crop_begin = 0;  // first prototype cell the mask needs
  int crop_size = 0;   // number of cells it needs
  // Per output pixel: the two cells to blend (relative to crop_begin) and the weight of `hi`.
  std::vector<int> lo;
  std::vector<int> hi;
  std::vector<float> frac;
};

// Output pixel i (i = 0..count-1) samples the grid at `first + i * step`, in the pixel-centre
// convention of cv::resize (cell k has its centre at k). [image_begin, image_end] is the
// non-padded part of the input in continuous prototype coordinates: samples are clamped to the
// cells whose centres lie inside it, which is what cropping the padding away and then resizing
// (border-replicated) does, so the padding never bleeds into masks at the image edge.
AxisPlan PlanAxis(double first, double step, int count, double image_begin, double image_end,
                  int grid) {
  // The epsilon keeps an exact cell boundary (pad 40 px / 4 = 10.0) from flipping on rounding.
  constexpr double kEps = 1e-6;
  int valid_lo = std::clamp(static_cast<int>(std::ceil(image_begin - 0.5 - kEps)), 0, grid - 1);
  int valid_hi = std::clamp(static_cast<int>(std::floor(image_end - 0.5 + kEps)), 0, grid - 1);
  if (valid_lo > valid_hi) {
    // The image is narrower than one prototype cell: use the cell under its middle.
    valid_lo = valid_hi =
        std::clamp(static_cast<int>(std::floor(0.5 * (image_begin + image_end))), 0, grid - 1);
  }
  const auto cell = [&](double pos) {
    return std::clamp(static_cast<int>(std::floor(pos)), valid_lo, valid_hi);
  };
  AxisPlan plan;
  plan.crop_begin = cell(first);
  plan.crop_size = std::min(cell(first + step * (count - 1)) + 1, valid_hi) - plan.crop_begin + 1;
  plan.lo.resize(count);
  plan.hi.resize(count);
  plan.frac.resize(count);
  for (int i = 0; i < count; ++i) {
    const double pos = first + step * i;
    const double fl = std::floor(pos);
    const int k = static_cast<int>(fl);
    plan.lo[i] = std::clamp(k, valid_lo, valid_hi) - plan.crop_begin;
    plan.hi[i] = std::clamp(k + 1, valid_lo, valid_hi) - plan.crop_begin;
    plan.frac[i] = static_cast<float>(pos - fl);
  }
  return plan;
}

}  // namespace

bool DecodeParams::Keeps(int class_id) const {
  return classes.empty() || std::find(classes.begin(), classes.end(), class_id) != classes.end();
}

std::vector<Candidate> DecodeYoloV8(const float* data, int channels, int anchors, int num_classes,
                                    const DecodeParams& params) {
  std::vector<Candidate> out;
  if (data == nullptr || anchors <= 0 || num_classes <= 0 || channels < 4 + num_classes) {
    return out;
  }
  const auto n = static_cast<std::size_t>(anchors);
  // The tensor is channels-first, so one anchor's scores are `anchors` floats apart. Walking
  // anchor by anchor would touch a new cache line per class score (80 x 8400 misses); instead
  // keep a running argmax per anchor and stream each class row once.
  const float* class_rows = data + 4 * n;
  std::vector<float> best_score(class_rows, class_rows + n);
  std::vector<int> best_class(n, 0);
  float* __restrict bs = best_score.data();
  int* __restrict bc = best_class.data();
  for (int c = 1; c < num_classes; ++c) {
    const float* __restrict row = class_rows + static_cast<std::size_t>(c) * n;
    for (std::size_t a = 0; a < n; ++a) {
      // Written as a select on an all-ones/all-zeros mask rather than `if` or `?:` on bc[a]:
      // GCC vectorizes this form (SSE compare + and/or, maxps) but not the other two, and it
      // is ~6x faster on 84 x 8400 (0.1 ms instead of 0.65 ms at -O3).
      const float v = row[a];
      const float b = bs[a];
      const int better = -static_cast<int>(v > b);
      bc[a] = (bc[a] & ~better) | (c & better);
      bs[a] = v > b ? v : b;
    }
  }
  for (std::size_t a = 0; a < n; ++a) {
    if (!(bs[a] >= params.confidence) || !params.Keeps(bc[a])) continue;
    out.push_back({.box = FromCenter(data[a], data[n + a], data[2 * n + a], data[3 * n + a]),
                   .class_id = bc[a],
                   .score = bs[a],
                   .index = static_cast<int>(a)});
  }
  return out;
}

std::vector<Candidate> DecodeYoloV5(const float* data, int rows, int num_classes,
                                    const DecodeParams& params) {
  std::vector<Candidate> out;
  if (data == nullptr || rows <= 0 || num_classes <= 0) return out;
  const std::size_t stride = 5 + static_cast<std::size_t>(num_classes);
  for (int r = 0; r < rows; ++r) {
    const float* row = data + static_cast<std::size_t>(r) * stride;
    // score = obj * cls <= obj, so most rows are rejected before looking at their 80 classes.
    const float objectness = row[4];
    if (!(objectness >= params.confidence)) continue;
    const auto [class_id, class_score] = ArgMax(row + 5, num_classes);
    const float score = objectness * class_score;
    if (!(score >= params.confidence) || !params.Keeps(class_id)) continue;
    out.push_back({.box = FromCenter(row[0], row[1], row[2], row[3]),
                   .class_id = class_id,
                   .score = score,
                   .index = r});
  }
  return out;
}

std::vector<Candidate> DecodeYolox(const float* data, int rows, int num_classes, int input_width,
                                   int input_height, const DecodeParams& params) {
  std::vector<Candidate> out;
  if (data == nullptr || rows <= 0 || num_classes <= 0 || input_width <= 0 || input_height <= 0) {
    return out;
  }
  // Grid sizes as in YOLOX's demo_postprocess (input // stride). A row count that does not add up
  // means the model is not what the caller thinks it is; decoding it would invent boxes.
  int expected_rows = 0;
  for (const int s : kYoloxStrides) expected_rows += (input_width / s) * (input_height / s);
  if (rows != expected_rows) return out;

  const std::size_t stride = 5 + static_cast<std::size_t>(num_classes);
  int r = 0;
  for (const int s : kYoloxStrides) {
    const int grid_w = input_width / s;
    const int grid_h = input_height / s;
    const auto fs = static_cast<float>(s);
    for (int gy = 0; gy < grid_h; ++gy) {
      for (int gx = 0; gx < grid_w; ++gx, ++r) {
        const float* row = data + static_cast<std::size_t>(r) * stride;
        const float objectness = row[4];
        if (!(objectness >= params.confidence)) continue;
        const auto [class_id, class_score] = ArgMax(row + 5, num_classes);
        const float score = objectness * class_score;
        if (!(score >= params.confidence) || !params.Keeps(class_id)) continue;
        const float cx = (row[0] + static_cast<float>(gx)) * fs;
        const float cy = (row[1] + static_cast<float>(gy)) * fs;
        const float w = std::exp(row[2]) * fs;
        const float h = std::exp(row[3]) * fs;
        out.push_back(
            {.box = FromCenter(cx, cy, w, h), .class_id = class_id, .score = score, .index = r});
      }
    }
  }
  return out;
}

std::vector<Candidate> DecodeNanoDet(std::span<const NanoDetLevel> levels, int num_classes,
                                     int reg_max, int input_width, int input_height,
                                     const DecodeParams& params) {
  std::vector<Candidate> out;
  if (num_classes <= 0 || reg_max < 0 || input_width <= 0 || input_height <= 0) return out;
  const int bins = reg_max + 1;
  const std::size_t box_stride = 4 * static_cast<std::size_t>(bins);
  int index = 0;  // running cell index over all levels, in output order
  for (const NanoDetLevel& level : levels) {
    if (level.scores == nullptr || level.boxes == nullptr || level.stride <= 0) return {};
    const int s = level.stride;
    // NanoDet sizes its feature maps as ceil(input / stride) (conv padding rounds up).
    const int grid_w = (input_width + s - 1) / s;
    const int grid_h = (input_height + s - 1) / s;
    const auto fs = static_cast<float>(s);
    for (int row = 0; row < grid_h; ++row) {
      for (int col = 0; col < grid_w; ++col, ++index) {
        const std::size_t cell = static_cast<std::size_t>(row) * grid_w + col;
        const float* scores = level.scores + cell * static_cast<std::size_t>(num_classes);
        // No class reaches the threshold: its maximum cannot either (the same cells are kept).
        if (!AnyAtLeast(scores, num_classes, params.confidence)) continue;
        const auto [class_id, score] = ArgMax(scores, num_classes);
        if (!(score >= params.confidence) || !params.Keeps(class_id)) continue;
        // The softmaxes are the expensive part, so they run only for cells that survive.
        const float* dist = level.boxes + cell * box_stride;
        const float left = SoftmaxExpectation(dist, bins) * fs;
        const float top = SoftmaxExpectation(dist + bins, bins) * fs;
        const float right = SoftmaxExpectation(dist + 2 * bins, bins) * fs;
        const float bottom = SoftmaxExpectation(dist + 3 * bins, bins) * fs;
        // Old NanoDet convention: centre at (col + 0.5) * s - 0.5 (see models/SOURCES.md).
        const float cx = (static_cast<float>(col) + 0.5f) * fs - 0.5f;
        const float cy = (static_cast<float>(row) + 0.5f) * fs - 0.5f;
        out.push_back({.box = {cx - left, cy - top, left + right, top + bottom},
                       .class_id = class_id,
                       .score = score,
                       .index = index});
      }
    }
  }
  return out;
}

std::vector<Candidate> NonMaxSuppression(std::vector<Candidate> candidates, float iou_threshold,
                                         int max_detections) {
  std::vector<Candidate> kept;
  if (max_detections <= 0) return kept;
  // NaN scores would break the strict weak ordering below.
  std::erase_if(candidates, [](const Candidate& c) { return std::isnan(c.score); });
  // Score descending; ties by raw index, then class, so the result does not depend on the
  // input order.
  const auto higher = [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.index != b.index) return a.index < b.index;
    return a.class_id < b.class_id;
  };
  if (candidates.size() > kMaxNmsCandidates) {
    std::nth_element(candidates.begin(), candidates.begin() + kMaxNmsCandidates, candidates.end(),
                     higher);
    candidates.resize(kMaxNmsCandidates);
  }
  std::sort(candidates.begin(), candidates.end(), higher);

  // Greedy NMS in global score order, comparing each box only with the kept boxes of its own
  // class. That is exactly per-class greedy NMS, and since kept boxes come out in descending
  // score order we can stop as soon as max_detections are kept: the rest would be cut anyway.
  // So the work is bounded by candidates x max_detections, not candidates squared.
  std::unordered_map<int, std::vector<protocol::Box>> kept_by_class;
  for (const Candidate& c : candidates) {
    std::vector<protocol::Box>& same_class = kept_by_class[c.class_id];
    const bool suppressed = std::any_of(same_class.begin(), same_class.end(), [&](const auto& k) {
      return protocol::Iou(k, c.box) > iou_threshold;
    });
    if (suppressed) continue;
    same_class.push_back(c.box);
    kept.push_back(c);
    if (static_cast<int>(kept.size()) >= max_detections) break;
  }
  return kept;
}

protocol::Mask DecodeSegMask(std::span<const float> coeffs, const float* protos, int num_protos,
                             int proto_h, int proto_w, const Letterbox& lb,
                             const protocol::Box& source_box) {
  protocol::Mask mask;
  // The mask rectangle: the box rounded outwards, clipped to the image.
  // (Clamped in double first: a NaN or huge coordinate must not reach the int conversion.)
  const auto clip = [](double v, int hi) {
    return v >= 0 ? static_cast<int>(std::min(v, static_cast<double>(hi))) : 0;
  };
  const int x0 = clip(std::floor(source_box.x), lb.source_width);
  const int y0 = clip(std::floor(source_box.y), lb.source_height);
  const int x1 =
      clip(std::ceil(static_cast<double>(source_box.x) + source_box.width), lb.source_width);
  const int y1 =
      clip(std::ceil(static_cast<double>(source_box.y) + source_box.height), lb.source_height);
  mask.x = x0;
  mask.y = y0;
  if (protos == nullptr || num_protos <= 0 ||
      coeffs.size() != static_cast<std::size_t>(num_protos) || proto_h <= 0 || proto_w <= 0 ||
      lb.scale <= 0 || lb.input_width <= 0 || lb.input_height <= 0 || x1 <= x0 || y1 <= y0) {
    return mask;  // empty rectangle, no data
  }
  mask.width = x1 - x0;
  mask.height = y1 - y0;

  // Source pixel X (centre X + 0.5) sits at input x = (X + 0.5) * scale + pad_x, i.e. at
  // prototype coordinate x * proto_w / input_w, which in cv::resize's pixel-centre convention is
  // sample position (that) - 0.5. Sampling the prototype grid directly at these positions is the
  // same as "cut away the padding, resize to the image, crop to the box", without resizing the
  // whole image and without rounding the padding to whole prototype cells.
  const double ratio_x = static_cast<double>(proto_w) / lb.input_width;
  const double ratio_y = static_cast<double>(proto_h) / lb.input_height;
  const AxisPlan xs =
      PlanAxis(((x0 + 0.5) * lb.scale + lb.pad_x) * ratio_x - 0.5, lb.scale * ratio_x, mask.width,
               lb.pad_x * ratio_x, (lb.pad_x + lb.resized_width) * ratio_x, proto_w);
  const AxisPlan ys =
      PlanAxis(((y0 + 0.5) * lb.scale + lb.pad_y) * ratio_y - 0.5, lb.scale * ratio_y, mask.height,
               lb.pad_y * ratio_y, (lb.pad_y + lb.resized_height) * ratio_y, proto_h);

  // sigmoid(coeffs . protos), only over the prototype cells under the box: the dot product is
  // num_protos multiply-adds per cell, so doing the whole grid for every detection would
  // dominate. Prototype-major, so the inner loop is contiguous.
  const int crop_w = xs.crop_size;
  const int crop_h = ys.crop_size;
  std::vector<float> prob(static_cast<std::size_t>(crop_w) * crop_h, 0.f);
  const std::size_t plane = static_cast<std::size_t>(proto_h) * proto_w;
  for (int k = 0; k < num_protos; ++k) {
    const float c = coeffs[k];
    const float* p = protos + plane * k;
    for (int v = 0; v < crop_h; ++v) {
      const float* src = p + static_cast<std::size_t>(v + ys.crop_begin) * proto_w + xs.crop_begin;
      float* dst = prob.data() + static_cast<std::size_t>(v) * crop_w;
      for (int u = 0; u < crop_w; ++u) dst[u] += c * src[u];
    }
  }
  for (float& v : prob) v = Sigmoid(v);

  // Blend two prototype rows once per output row, then two columns per output pixel.
  mask.data.resize(static_cast<std::size_t>(mask.width) * mask.height);
  std::vector<float> blended(crop_w);
  for (int y = 0; y < mask.height; ++y) {
    const float* r0 = prob.data() + static_cast<std::size_t>(ys.lo[y]) * crop_w;
    const float* r1 = prob.data() + static_cast<std::size_t>(ys.hi[y]) * crop_w;
    const float fy = ys.frac[y];
    for (int u = 0; u < crop_w; ++u) blended[u] = r0[u] + fy * (r1[u] - r0[u]);
    std::uint8_t* dst = mask.data.data() + static_cast<std::size_t>(y) * mask.width;
    for (int x = 0; x < mask.width; ++x) {
      const float a = blended[xs.lo[x]];
      const float b = blended[xs.hi[x]];
      dst[x] = (a + xs.frac[x] * (b - a)) > 0.5f ? 1 : 0;
    }
  }
  return mask;
}

}  // namespace kadr::inference
