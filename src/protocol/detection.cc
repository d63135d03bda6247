#include <algorithm>

#include "protocol/result.h"

namespace kadr::protocol {

float Iou(const Box& a, const Box& b) {
  const float x1 = std::max(a.x, b.x);
  const float y1 = std::max(a.y, b.y);
  const float x2 = std::min(a.x + a.width, b.x + b.width);
  const float y2 = std::min(a.y + a.height, b.y + b.height);
  const float inter = std::max(0.f, x2 - x1) * std::max(0.f, y2 - y1);
  const float uni = a.area() + b.area() - inter;
  return uni > 0 ? inter / uni : 0.f;
}

std::int64_t Mask::Area() const { return std::count(data.begin(), data.end(), std::uint8_t{1}); }

bool Mask::At(int image_x, int image_y) const {
  const int cx = image_x - x;
  const int cy = image_y - y;
  if (cx < 0 || cy < 0 || cx >= width || cy >= height) return false;
  return data[static_cast<size_t>(cy) * width + cx] != 0;
}

}  // namespace kadr::protocol
