#include "imaging/annotate.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <opencv2/imgproc.hpp>

namespace kadr::imaging {
namespace {

// Ultralytics' 20-colour palette (RGB hex FF3838, FF9D97, ...), stored as BGR. Saturated,
// distinct from its neighbours, and readable both on photos and under a translucent mask.
constexpr std::array<std::array<std::uint8_t, 3>, 20> kPalette = {{
    {0x38, 0x38, 0xFF}, {0x97, 0x9D, 0xFF}, {0x1F, 0x70, 0xFF}, {0x1D, 0xB2, 0xFF},
    {0x31, 0xD2, 0xCF}, {0x0A, 0xF9, 0x48}, {0x17, 0xCC, 0x92}, {0x86, 0xDB, 0x3D},
    {0x34, 0x93, 0x1A}, {0xBB, 0xD4, 0x00}, {0xA8, 0x99, 0x2C}, {0xFF, 0xC2, 0x00},
    {0x93, 0x45, 0x34}, {0xFF, 0x73, 0x64}, {0xEC, 0x18, 0x00}, {0xFF, 0x38, 0x84},
    {0x85, 0x00, 0x52}, {0xFF, 0x38, 0xCB}, {0xC8, 0x95, 0xFF}, {0xC7, 0x37, 0xFF},
}};

constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;

const std::array<std::uint8_t, 3>& PaletteEntry(int class_id) {
  constexpr int kSize = static_cast<int>(kPalette.size());
  const int index = ((class_id % kSize) + kSize) % kSize;  // negative ids wrap too
  return kPalette[static_cast<std::size_t>(index)];
}

const std::array<std::uint8_t, 3>& TrackEntry(std::int64_t track_id) {
  // Stepping the palette by 7 (coprime with its 20 entries) gives 20 consecutive ids 20
  // different colours, and neighbours contrasting ones. Unsigned: any id is fine.
  const auto index = (static_cast<std::uint64_t>(track_id) * 7u) % kPalette.size();
  return kPalette[static_cast<std::size_t>(index)];
}

const std::array<std::uint8_t, 3>& EntryFor(const protocol::Detection& d) {
  return d.track_id ? TrackEntry(*d.track_id) : PaletteEntry(d.class_id);
}

cv::Scalar ToScalar(const std::array<std::uint8_t, 3>& bgr) {
  return {static_cast<double>(bgr[0]), static_cast<double>(bgr[1]), static_cast<double>(bgr[2])};
}

// Sizes derived from the image so annotations look alike from thumbnails to 4K frames.
struct Style {
  int line = 1;     // box line thickness, pixels
  int outline = 1;  // mask outline thickness, pixels
  double font_scale = 0.4;
  int font_thickness = 1;
  int pad = 2;  // caption padding around the text, pixels
};

Style StyleFor(const cv::Mat& image) {
  const double mean_side = (image.cols + image.rows) / 2.0;
  Style s;
  s.line = std::max(1, static_cast<int>(std::lround(mean_side * 0.003)));
  s.outline = std::max(1, s.line / 2);
  s.font_scale = std::max(0.35, mean_side * 0.0006);
  s.font_thickness = std::max(1, static_cast<int>(std::lround(s.font_scale * 1.3)));
  s.pad = std::max(1, static_cast<int>(std::lround(s.font_scale * 4)));
  return s;
}

// Integer pixel corners of a box, clamped to a margin around the image so that huge or
// non-finite coordinates can neither overflow an int nor make OpenCV walk far off-image.
struct PixelBox {
  int x1, y1, x2, y2;
};

bool ToPixelBox(const protocol::Box& box, const cv::Mat& image, int margin, PixelBox& out) {
  if (!std::isfinite(box.x) || !std::isfinite(box.y) || !std::isfinite(box.width) ||
      !std::isfinite(box.height) || !(box.width > 0) || !(box.height > 0)) {
    return false;
  }
  const double lo = -margin;
  const double hi_x = image.cols + static_cast<double>(margin);
  const double hi_y = image.rows + static_cast<double>(margin);
  const double x1 = std::clamp<double>(box.x, lo, hi_x);
  const double y1 = std::clamp<double>(box.y, lo, hi_y);
  const double x2 = std::clamp<double>(static_cast<double>(box.x) + box.width, lo, hi_x);
  const double y2 = std::clamp<double>(static_cast<double>(box.y) + box.height, lo, hi_y);
  out = {static_cast<int>(std::lround(x1)), static_cast<int>(std::lround(y1)),
         static_cast<int>(std::lround(x2)), static_cast<int>(std::lround(y2))};
  // Entirely outside the image: nothing of it would be visible.
  return out.x2 >= 0 && out.y2 >= 0 && out.x1 < image.cols && out.y1 < image.rows;
}

// Run scanning over mask bytes, eight at a time: masks are mostly long runs of 0s and 1s.
std::uint64_t Load8(const std::uint8_t* p) {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

bool HasZeroByte(std::uint64_t v) {
  constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
  constexpr std::uint64_t kHighs = 0x8080808080808080ULL;
  return ((v - kOnes) & ~v & kHighs) != 0;
}

// Index of the first non-zero byte in m[c, end), or end.
int SkipZeros(const std::uint8_t* m, int c, int end) {
  while (c + 8 <= end && Load8(m + c) == 0) c += 8;
  while (c < end && m[c] == 0) ++c;
  return c;
}

// Index of the first zero byte in m[c, end), or end.
int SkipNonZeros(const std::uint8_t* m, int c, int end) {
  while (c + 8 <= end && !HasZeroByte(Load8(m + c))) c += 8;
  while (c < end && m[c] != 0) ++c;
  return c;
}

// Blends the set pixels of `mask` (within its rectangle, clipped to the image) towards
// `bgr` with opacity alpha/256, then outlines the visible part of the mask.
void DrawMask(cv::Mat& image, const protocol::Mask& mask, const std::array<std::uint8_t, 3>& bgr,
              int alpha256, const Style& style) {
  if (mask.width <= 0 || mask.height <= 0) return;
  const auto cells = static_cast<std::size_t>(mask.width) * static_cast<std::size_t>(mask.height);
  if (mask.data.size() < cells) return;  // malformed: not enough bytes for the rectangle

  // Clip in 64-bit: mask.x + mask.width may not fit an int.
  const std::int64_t x0 = std::max<std::int64_t>(mask.x, 0);
  const std::int64_t y0 = std::max<std::int64_t>(mask.y, 0);
  const std::int64_t x1 = std::min<std::int64_t>(std::int64_t{mask.x} + mask.width, image.cols);
  const std::int64_t y1 = std::min<std::int64_t>(std::int64_t{mask.y} + mask.height, image.rows);
  if (x0 >= x1 || y0 >= y1) return;
  const cv::Rect roi(static_cast<int>(x0), static_cast<int>(y0), static_cast<int>(x1 - x0),
                     static_cast<int>(y1 - y0));
  const auto mask_col0 = static_cast<std::size_t>(x0 - mask.x);
  const auto mask_row0 = static_cast<std::size_t>(y0 - mask.y);
  const auto stride = static_cast<std::size_t>(mask.width);

  if (alpha256 > 0) {
    // out = (in * (256 - a) + colour * a + 128) >> 8 per byte. Both products sum to at most
    // 255 * 256 + 128, so 16 bits suffice and the run loop below vectorises.
    const auto keep = static_cast<std::uint16_t>(256 - alpha256);
    std::vector<std::uint16_t> add(static_cast<std::size_t>(roi.width) * 3);
    for (std::size_t k = 0; k < add.size(); ++k) {
      add[k] = static_cast<std::uint16_t>(bgr[k % 3] * alpha256 + 128);
    }
    for (int r = 0; r < roi.height; ++r) {
      const std::uint8_t* m = mask.data.data() + (mask_row0 + r) * stride + mask_col0;
      std::uint8_t* row =
          image.ptr<std::uint8_t>(roi.y + r) + static_cast<std::ptrdiff_t>(roi.x) * 3;
      // Blend each run of set mask pixels as one contiguous byte range.
      int c = 0;
      while (c < roi.width) {
        c = SkipZeros(m, c, roi.width);
        const int begin = c;
        c = SkipNonZeros(m, c, roi.width);
        const std::size_t end_byte = static_cast<std::size_t>(c) * 3;
        for (std::size_t k = static_cast<std::size_t>(begin) * 3; k < end_byte; ++k) {
          row[k] =
              static_cast<std::uint8_t>(static_cast<std::uint16_t>(row[k] * keep + add[k]) >> 8);
        }
      }
    }
  }

  // A header over the caller's bytes (no copy); findContours only reads its input.
  const cv::Mat whole(mask.height, mask.width, CV_8UC1,
                      const_cast<std::uint8_t*>(mask.data.data()));  // NOLINT
  const cv::Mat visible = whole(
      cv::Rect(static_cast<int>(mask_col0), static_cast<int>(mask_row0), roi.width, roi.height));
  std::vector<std::vector<cv::Point>> contours;
  cv::findContours(visible, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_SIMPLE, roi.tl());
  if (!contours.empty()) {
    const cv::Scalar colour(bgr[0], bgr[1], bgr[2]);
    cv::drawContours(image, contours, -1, colour, style.outline, cv::LINE_AA);
  }
}

// Caption on a filled tab in the class colour: above the box when there is room, otherwise
// just inside its top edge; shifted left when it would run off the right of the image.
void DrawCaption(cv::Mat& image, const protocol::Detection& d, const PixelBox& b,
                 const std::array<std::uint8_t, 3>& bgr, const Style& style) {
  const std::string text = CaptionText(d);
  int baseline = 0;
  const cv::Size size =
      cv::getTextSize(text, kFont, style.font_scale, style.font_thickness, &baseline);
  const int tab_w = size.width + 2 * style.pad;
  const int tab_h = size.height + baseline + style.pad;

  const int edge = std::clamp(b.y1 - style.line / 2, 0, image.rows - 1);  // outer top edge
  int left = std::max(b.x1 - style.line / 2, 0);
  left = std::max(0, std::min(left, image.cols - tab_w));
  const int top = edge - tab_h >= 0 ? edge - tab_h : edge;

  const cv::Scalar background(bgr[0], bgr[1], bgr[2]);
  // ITU-R BT.601 luma decides black or white text, whichever contrasts more.
  const double luma = 0.299 * bgr[2] + 0.587 * bgr[1] + 0.114 * bgr[0];
  const cv::Scalar ink = luma > 150 ? cv::Scalar(0, 0, 0) : cv::Scalar(255, 255, 255);

  cv::rectangle(image, cv::Rect(left, top, tab_w, tab_h), background, cv::FILLED, cv::LINE_8);
  cv::putText(image, text, cv::Point(left + style.pad, top + style.pad + size.height), kFont,
              style.font_scale, ink, style.font_thickness, cv::LINE_AA);
}

}  // namespace

cv::Scalar ClassColor(int class_id) { return ToScalar(PaletteEntry(class_id)); }

cv::Scalar TrackColor(std::int64_t track_id) { return ToScalar(TrackEntry(track_id)); }

cv::Scalar DetectionColor(const protocol::Detection& detection) {
  return ToScalar(EntryFor(detection));
}

std::string CaptionText(const protocol::Detection& d) {
  std::string text = d.track_id ? "#" + std::to_string(*d.track_id) + " " : std::string();
  text += d.label.empty() ? "class " + std::to_string(d.class_id) : d.label;
  char score[32];
  std::snprintf(score, sizeof(score), " %.2f", static_cast<double>(d.score));
  return text + score;
}

void Annotate(cv::Mat& image, std::span<const protocol::Detection> detections,
              const AnnotateOptions& options) {
  if (image.empty() || image.type() != CV_8UC3 || detections.empty()) return;
  const Style style = StyleFor(image);

  // Masks first so boxes and captions stay crisp on top of them.
  const float alpha = std::isfinite(options.mask_alpha) ? std::clamp(options.mask_alpha, 0.f, 1.f)
                                                        : AnnotateOptions{}.mask_alpha;
  const int alpha256 = static_cast<int>(std::lround(alpha * 256.f));
  for (const auto& d : detections) {
    if (d.mask) DrawMask(image, *d.mask, EntryFor(d), alpha256, style);
  }

  // Boxes, then captions, so no box line crosses another detection's caption.
  const int margin = 2 * style.line + 2;
  std::vector<PixelBox> boxes(detections.size());
  std::vector<bool> visible(detections.size());
  for (std::size_t i = 0; i < detections.size(); ++i) {
    visible[i] = ToPixelBox(detections[i].box, image, margin, boxes[i]);
    if (!visible[i]) continue;
    const auto& bgr = EntryFor(detections[i]);
    cv::rectangle(image, cv::Point(boxes[i].x1, boxes[i].y1), cv::Point(boxes[i].x2, boxes[i].y2),
                  cv::Scalar(bgr[0], bgr[1], bgr[2]), style.line, cv::LINE_8);
  }
  if (!options.draw_labels) return;
  for (std::size_t i = 0; i < detections.size(); ++i) {
    if (visible[i]) {
      DrawCaption(image, detections[i], boxes[i], EntryFor(detections[i]), style);
    }
  }
}

}  // namespace kadr::imaging
