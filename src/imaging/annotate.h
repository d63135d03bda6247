// Drawing detections onto an image: boxes, "label score" captions, translucent instance masks.
//
// Each class has a stable colour (a fixed palette indexed by class id), line width and text
// size scale with the image so the annotation reads the same on a 320px thumbnail and a 4K
// frame. Pure function of its inputs; thread-safe.
#pragma once

#include <span>

#include <opencv2/core/mat.hpp>

#include "protocol/detection.h"

namespace kadr::imaging {

struct AnnotateOptions {
  float mask_alpha = 0.45f;  // opacity of instance masks, 0..1
  bool draw_labels = true;   // caption "label 0.87" above each box
};

// The colour for a class id, BGR. Same id -> same colour, always.
cv::Scalar ClassColor(int class_id);

// Draws in place on a CV_8UC3 BGR image. Detections outside the image are clipped.
void Annotate(cv::Mat& image, std::span<const protocol::Detection> detections,
              const AnnotateOptions& options = {});

}  // namespace kadr::imaging
