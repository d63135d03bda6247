// Drawing detections onto an image: boxes, "label score" captions, translucent instance masks.
//
// Each class has a stable colour (a fixed palette indexed by class id); a tracked detection
// (Detection::track_id set) is drawn in its track's stable colour instead and captioned
// "#<id> label score", so one object keeps its colour across a video. Line width and text
// size scale with the image so the annotation reads the same on a 320px thumbnail and a 4K
// frame. Pure function of its inputs; thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include <opencv2/core/mat.hpp>

#include "protocol/result.h"

namespace kadr::imaging {

struct AnnotateOptions {
  float mask_alpha = 0.45f;  // opacity of instance masks, 0..1
  bool draw_labels = true;   // caption "label 0.87" above each box
};

// The colour for a class id, BGR. Same id -> same colour, always.
cv::Scalar ClassColor(int class_id);

// The colour for a track id, BGR, from the same palette. Same id -> same colour, always;
// consecutive ids get different colours.
cv::Scalar TrackColor(std::int64_t track_id);

// The colour a detection is drawn in: TrackColor when it has a track id, else ClassColor.
cv::Scalar DetectionColor(const protocol::Detection& detection);

// The caption drawn above a detection's box: "label 0.87", or "#12 label 0.87" when tracked
// ("class <id>" stands in for an empty label).
std::string CaptionText(const protocol::Detection& detection);

// Draws in place on a CV_8UC3 BGR image. Detections outside the image are clipped.
void Annotate(cv::Mat& image, std::span<const protocol::Detection> detections,
              const AnnotateOptions& options = {});

}  // namespace kadr::imaging
