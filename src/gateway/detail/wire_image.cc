#include "gateway/detail/wire_image.h"

#include <algorithm>
#include <cstring>
#include <string_view>

#include "imaging/encode.h"

namespace kadr::gateway::detail {
namespace {

bool StartsWith(std::span<const std::uint8_t> bytes, std::string_view magic) {
  return bytes.size() >= magic.size() && std::memcmp(bytes.data(), magic.data(), magic.size()) == 0;
}

// Start-of-frame markers: C0..CF except DHT (C4), JPG (C8) and DAC (CC).
bool IsSof(std::uint8_t marker) {
  return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

}  // namespace

JpegLayout ScanJpegLayout(std::span<const std::uint8_t> jpeg) {
  JpegLayout out;
  bool jfif = false;
  bool adobe = false;
  int adobe_transform = -1;
  std::uint8_t ids[3] = {0, 0, 0};
  std::size_t pos = 2;  // after SOI
  std::size_t scan = 0;
  while (pos + 4 <= jpeg.size()) {
    if (jpeg[pos] != 0xFF) return out;  // not a marker: corrupt, leave it to the decoder
    const std::uint8_t marker = jpeg[pos + 1];
    if (marker == 0xFF) {  // fill byte
      ++pos;
      continue;
    }
    if (marker == 0xD9) return out;                              // EOI before any scan
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {  // TEM, RSTn: no length
      pos += 2;
      continue;
    }
    const std::size_t length = (std::size_t{jpeg[pos + 2]} << 8) | jpeg[pos + 3];
    if (length < 2 || pos + 2 + length > jpeg.size()) return out;
    const std::span<const std::uint8_t> payload = jpeg.subspan(pos + 4, length - 2);
    if (marker == 0xDA) {  // SOS: the entropy-coded data follows
      scan = pos + 2 + length;
      break;
    }
    if (marker == 0xE0 && StartsWith(payload, std::string_view("JFIF\0", 5))) {
      jfif = true;
    } else if (marker == 0xEE && StartsWith(payload, "Adobe")) {
      adobe = true;
      if (payload.size() >= 12) adobe_transform = payload[11];
    } else if (IsSof(marker) && out.sof_marker == 0 && payload.size() >= 6) {
      out.sof_marker = marker;
      out.precision = payload[0];
      out.components = payload[5];
      for (std::size_t i = 0; i < 3 && 6 + 3 * i < payload.size(); ++i) ids[i] = payload[6 + 3 * i];
    }
    pos += 2 + length;
  }
  if (scan == 0) return out;
  // libjpeg's rule for 3 components: a JFIF marker means YCbCr; else an Adobe marker's
  // transform flag decides (0: RGB); else component ids 'R','G','B' mean RGB.
  if (out.components == 3 && !jfif) {
    out.rgb = adobe ? adobe_transform == 0 : (ids[0] == 'R' && ids[1] == 'G' && ids[2] == 'B');
  }
  // Inside entropy-coded data every 0xFF is followed by 0x00 or a restart marker, so FF D9
  // after the first scan starts is the end-of-image marker.
  for (std::size_t i = scan; i + 1 < jpeg.size(); ++i) {
    if (jpeg[i] == 0xFF && jpeg[i + 1] == 0xD9) {
      out.has_eoi = true;
      break;
    }
  }
  return out;
}

bool IsWireJpeg(std::span<const std::uint8_t> jpeg, const imaging::ImageInfo& info) {
  if (info.format != imaging::ImageFormat::kJpeg || info.orientation != 1) return false;
  const JpegLayout layout = ScanJpegLayout(jpeg);
  // A file that looks truncated is decoded, so the client learns now rather than from the worker.
  return layout.sof_marker == 0xC0 && layout.precision == 8 && layout.components == 3 &&
         !layout.rgb && layout.has_eoi;
}

Result<WireImage> ToWireImage(std::span<const std::uint8_t> bytes, const imaging::ImageInfo& info,
                              const imaging::DecodeLimits& limits, int jpeg_quality, int max_side) {
  WireImage out;
  out.info = info;
  const bool turned = info.orientation >= 5 && info.orientation <= 8;  // 90 or 270 degrees
  out.width = turned ? info.height : info.width;
  out.height = turned ? info.width : info.height;
  const bool too_big = max_side > 0 && std::max(info.width, info.height) > max_side;
  if (!too_big && IsWireJpeg(bytes, info)) {
    out.jpeg.assign(bytes.begin(), bytes.end());
    return out;
  }
  cv::Mat pixels;
  if (too_big) {
    ASSIGN_OR_RETURN(pixels, imaging::DecodeImageReduced(bytes, max_side, limits));
    pixels = imaging::FitLongSide(pixels, max_side);
    out.scaled = true;
  } else {
    ASSIGN_OR_RETURN(pixels, imaging::DecodeImage(bytes, limits));
  }
  imaging::JpegOptions options;
  options.quality = std::clamp(jpeg_quality, 1, 100);
  ASSIGN_OR_RETURN(out.jpeg, imaging::EncodeJpeg(pixels, options));
  out.converted = true;
  return out;
}

}  // namespace kadr::gateway::detail
