// Output decoders for the model families kadr runs, and NMS. Pure functions over raw float
// tensors, so each is unit-tested on hand-built tensors. Thread-safe.
//
// Decoders produce Candidates in network-input pixels; the caller runs NMS, then maps the
// kept boxes back through the letterbox (letterbox.h) and builds masks (segmentation).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <opencv2/core/mat.hpp>

#include "inference/detail/letterbox.h"
#include "protocol/result.h"

namespace kadr::inference {

struct Candidate {
  protocol::Box box;  // network-input pixels
  int class_id = 0;
  float score = 0;
  int index = 0;  // anchor / row index in the raw output (to fetch mask coefficients)
};

// Class filter + confidence threshold, shared by all decoders. A candidate is kept when its
// score is >= confidence and its best class (argmax over all classes, as Ultralytics does) is
// in `classes`; a box whose best class is filtered out is dropped, not demoted to its
// second-best class.
struct DecodeParams {
  float confidence = 0.25f;
  std::span<const int> classes;  // empty keeps all
  bool Keeps(int class_id) const;
};

// Ultralytics YOLOv8 / YOLO11 detection, and the box+class part of YOLOv8-seg:
// `data` is 1 x channels x anchors, channels-first; each column is
// [cx, cy, w, h, class scores (num_classes, sigmoided), extra (ignored, e.g. mask coeffs)].
std::vector<Candidate> DecodeYoloV8(const float* data, int channels, int anchors, int num_classes,
                                    const DecodeParams& params);

// YOLOv5 (and YOLOv7/v6 exports of the same shape): `data` is 1 x rows x (5 + num_classes);
// each row is [cx, cy, w, h, objectness, class scores...], already decoded and sigmoided.
// score = objectness * class score.
std::vector<Candidate> DecodeYoloV5(const float* data, int rows, int num_classes,
                                    const DecodeParams& params);

// YOLOX exported with decode_in_inference=False: `data` is 1 x rows x (5 + num_classes) raw
// grid outputs for strides 8, 16, 32 in row-major order, stride 8 first. Row [x, y, w, h, obj,
// cls...]: cx = (x + gx) * s, cy = (y + gy) * s, w = exp(w) * s, h = exp(h) * s;
// obj and cls already sigmoided; score = obj * cls. Each grid is (input_h / s) x (input_w / s)
// (integer division, as YOLOX's demo_postprocess); if `rows` is not the sum of the grid sizes
// the output is empty.
std::vector<Candidate> DecodeYolox(const float* data, int rows, int num_classes, int input_width,
                                   int input_height, const DecodeParams& params);

// NanoDet (-m, old convention): per stride level, class scores [1, cells, num_classes]
// (sigmoided) and box distributions [1, cells, 4 * (reg_max + 1)] (sides l, t, r, b).
// Distance = stride * sum_i softmax(bins)_i * i. Cell centre = ((col + 0.5) * s - 0.5,
// (row + 0.5) * s - 0.5). Each level's grid is ceil(input_w / s) x ceil(input_h / s), row-major;
// the caller must have checked that each tensor has that many cells. Candidate::index counts
// cells across the levels in the order given.
struct NanoDetLevel {
  const float* scores = nullptr;
  const float* boxes = nullptr;
  int stride = 8;
};
std::vector<Candidate> DecodeNanoDet(std::span<const NanoDetLevel> levels, int num_classes,
                                     int reg_max, int input_width, int input_height,
                                     const DecodeParams& params);

// Class-aware (per-class) greedy NMS: returns the kept candidates, highest score first (ties by
// index). A box is suppressed by a higher-scoring kept box of the same class when their IoU is
// > iou_threshold. `max_detections` bounds the output (<= 0 gives none). Only the best 30000
// candidates are considered (Ultralytics' max_nms), and the work is bounded by
// candidates x max_detections.
std::vector<Candidate> NonMaxSuppression(std::vector<Candidate> candidates, float iou_threshold,
                                         int max_detections = 300);

// YOLOv8-seg mask for one kept candidate: sigmoid(coeffs . protos) over the prototype grid
// (proto_h x proto_w, at 1/4 of the input), the letterbox padding cut away, resized to the
// source image, thresholded at 0.5 and cropped to `source_box`.
// `coeffs` has num_protos values; `protos` is num_protos x proto_h x proto_w, contiguous.
// The mask rectangle is `source_box` rounded outwards and clipped to the image. Source pixel
// (X, Y) gets the bilinear sample (cv::resize's pixel-centre convention) of the prototype mask at
// input position ((X + 0.5) * scale + pad_x, (Y + 0.5) * scale + pad_y), clamped to prototype
// cells inside the non-padded area; only the cells under the box are computed. Invalid inputs
// (coefficient count, null protos) or a box outside the image give an empty mask (no data).
protocol::Mask DecodeSegMask(std::span<const float> coeffs, const float* protos, int num_protos,
                             int proto_h, int proto_w, const Letterbox& lb,
                             const protocol::Box& source_box);

}  // namespace kadr::inference
