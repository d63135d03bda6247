// Letterbox preprocessing: resize keeping the aspect ratio, pad to the network's input size.
//
// The forward and inverse mappings are exact inverses of each other (up to float rounding):
// a box mapped to the network input and back lands where it started. Pure, thread-safe.
#pragma once

#include <array>

#include <opencv2/core/mat.hpp>

#include "protocol/result.h"

namespace kadr::inference {

enum class PadAnchor {
  kCenter,   // image centred, padding split on both sides (Ultralytics, NanoDet)
  kTopLeft,  // image in the top-left corner, padding right and bottom (YOLOX)
};

struct Letterbox {
  float scale = 1;        // input pixels per source pixel
  int pad_x = 0;          // left padding in input pixels
  int pad_y = 0;          // top padding in input pixels
  int resized_width = 0;  // size of the scaled image inside the input
  int resized_height = 0;
  int input_width = 0;
  int input_height = 0;
  int source_width = 0;
  int source_height = 0;
};

// Geometry only. Scale = min(input_w/src_w, input_h/src_h) (may upscale small images); the
// resized size is round(src * scale), at least 1 px. kCenter puts floor(padding / 2) on the
// left/top and the odd pixel, if any, on the right/bottom (Ultralytics' round(d -/+ 0.1)).
// A zero-sized source gives resized 0 x 0 (all padding).
Letterbox ComputeLetterbox(int source_width, int source_height, int input_width, int input_height,
                           PadAnchor anchor);

// Resizes `source` (bilinear) into an input_height x input_width image of the same type, filled
// with `pad_value` outside the resized area. `out` is reused when it already has that size and
// type (no allocation on the hot path), reallocated otherwise.
void ApplyLetterbox(const cv::Mat& source, const Letterbox& lb, const cv::Scalar& pad_value,
                    cv::Mat& out);

// How a network wants its pixels: channel c of the input tensor is
// (source[channel_c] - mean[c]) * inv_std[c], with channel_c = 2 - c when swap_rb (the network
// takes RGB, kadr's images are BGR), else c.
struct PixelTransform {
  bool swap_rb = false;
  std::array<float, 3> mean{0, 0, 0};
  std::array<float, 3> inv_std{1, 1, 1};
};

// Letterbox, colour order and scaling straight into a network's input tensor: `dst` is one
// image's 3 x input_height x input_width float planes (NCHW). The source is resized (bilinear, as
// ApplyLetterbox) into `scratch` (reused between calls; the resize is skipped when the source
// already has the resized size) and de-interleaved there; then every tensor value is written
// once: padding as `pad_value` transformed, the image area by one vectorised convert-and-scale
// per channel. The same values as ApplyLetterbox followed by the per-pixel transform (to float
// rounding: v * inv_std - mean * inv_std).
void LetterboxToTensor(const cv::Mat& source, const Letterbox& lb, float pad_value,
                       const PixelTransform& transform, cv::Mat& scratch, float* dst);

// Network-input box -> source-image box: (x - pad) / scale, clipped to the source image.
protocol::Box ToSource(const protocol::Box& input_box, const Letterbox& lb);
// Source-image box -> network-input box (the forward mapping; used by tests and tools).
protocol::Box ToInput(const protocol::Box& source_box, const Letterbox& lb);

}  // namespace kadr::inference
