#include "imaging/decode.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include <libexif/exif-data.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <turbojpeg.h>

namespace kadr::imaging {
namespace {

using Bytes = std::span<const std::uint8_t>;

constexpr std::string_view kUnsupportedMessage =
    "unsupported image format; supported: JPEG, PNG, BMP, WebP, TIFF";

// The name used in error messages, spelled as people write it ("WebP", not "webp").
std::string DisplayName(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg:
      return "JPEG";
    case ImageFormat::kPng:
      return "PNG";
    case ImageFormat::kBmp:
      return "BMP";
    case ImageFormat::kWebp:
      return "WebP";
    case ImageFormat::kTiff:
      return "TIFF";
    case ImageFormat::kUnknown:
      break;
  }
  return "unknown";
}

bool StartsWith(Bytes bytes, std::string_view magic, std::size_t offset = 0) {
  return bytes.size() >= offset + magic.size() &&
         std::memcmp(bytes.data() + offset, magic.data(), magic.size()) == 0;
}

// Little- and big-endian readers. Callers check bounds first.
std::uint32_t Le16(const std::uint8_t* p) { return p[0] | (p[1] << 8); }
std::uint32_t Le24(const std::uint8_t* p) { return p[0] | (p[1] << 8) | (p[2] << 16); }
std::uint32_t Le32(const std::uint8_t* p) {
  return p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}
std::uint32_t Be16(const std::uint8_t* p) { return (p[0] << 8) | p[1]; }
std::uint32_t Be32(const std::uint8_t* p) {
  return (static_cast<std::uint32_t>(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
}

Status TruncatedHeader(ImageFormat format) {
  return InvalidArgumentError("truncated " + DisplayName(format) + " header");
}
Status CorruptHeader(ImageFormat format, std::string_view what) {
  return InvalidArgumentError("corrupt " + DisplayName(format) + " header: " + std::string(what));
}

// Dimensions as the header states them; 64-bit so that a hostile 0xFFFFFFFF width survives
// until CheckLimits can report it instead of wrapping to a negative int.
struct Dims {
  std::int64_t width = 0;
  std::int64_t height = 0;
  // Pixels of the largest buffer the decoder sizes from other fields of the header than the
  // image's sides (a TIFF strip or tile); 0 when none.
  std::int64_t buffer_pixels = 0;
};

Status CheckLimits(Dims dims, const DecodeLimits& limits) {
  if (dims.width <= 0 || dims.height <= 0) {
    return InvalidArgumentError("image has invalid dimensions " + std::to_string(dims.width) + "x" +
                                std::to_string(dims.height));
  }
  const std::string size = std::to_string(dims.width) + "x" + std::to_string(dims.height);
  // A header may state two sides near 2^32: their product does not fit in 64 bits, and
  // counts as more than any limit.
  std::int64_t pixels = 0;
  if (__builtin_mul_overflow(dims.width, dims.height, &pixels)) {
    pixels = std::numeric_limits<std::int64_t>::max();
  }
  if (pixels > limits.max_pixels) {
    return TooLargeError("image is " + size + " (" + std::to_string(pixels) +
                         " pixels), over the limit of " + std::to_string(limits.max_pixels) +
                         " pixels");
  }
  if (dims.width > limits.max_side || dims.height > limits.max_side) {
    return TooLargeError("image is " + size + ", over the limit of " +
                         std::to_string(limits.max_side) + " pixels per side");
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// JPEG

// One TurboJPEG decompressor per thread: creating one costs allocations, and a handle must not
// be shared between threads.
class ThreadDecompressor {
 public:
  static tjhandle Get() { return Instance().handle_; }
  // TurboJPEG 2.1 leaves a handle mid-stream when a header read fails, and the next file then
  // fails with nonsense ("Bogus DQT index"). After any failure, start over with a fresh one.
  static void Reset() {
    ThreadDecompressor& self = Instance();
    if (self.handle_ != nullptr) tjDestroy(self.handle_);
    self.handle_ = tjInitDecompress();
  }

 private:
  ThreadDecompressor() : handle_(tjInitDecompress()) {}
  ~ThreadDecompressor() {
    if (handle_ != nullptr) tjDestroy(handle_);
  }
  static ThreadDecompressor& Instance() {
    thread_local ThreadDecompressor instance;
    return instance;
  }
  tjhandle handle_;
};

// The segments before the first scan that decoding needs beyond what TurboJPEG reports.
struct JpegSegments {
  Bytes exif;          // APP1 payload starting with "Exif\0\0"; empty when absent
  bool adobe = false;  // an APP14 "Adobe" marker is present
};

JpegSegments ScanJpegSegments(Bytes bytes) {
  JpegSegments out;
  std::size_t pos = 2;  // after SOI
  while (pos + 4 <= bytes.size()) {
    if (bytes[pos] != 0xFF) break;  // not a marker: corrupt; TurboJPEG will say so
    const std::uint8_t marker = bytes[pos + 1];
    if (marker == 0xFF) {  // fill byte
      ++pos;
      continue;
    }
    if (marker == 0xDA || marker == 0xD9) break;  // SOS / EOI: no more header segments
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {  // TEM, RSTn: no length
      pos += 2;
      continue;
    }
    const std::size_t length = Be16(&bytes[pos + 2]);
    if (length < 2 || pos + 2 + length > bytes.size()) break;
    const Bytes payload = bytes.subspan(pos + 4, length - 2);
    if (marker == 0xE1 && out.exif.empty() &&
        StartsWith(payload, std::string_view("Exif\0\0", 6))) {
      out.exif = payload;
    } else if (marker == 0xEE && StartsWith(payload, "Adobe")) {
      out.adobe = true;
    }
    pos += 2 + length;
  }
  return out;
}

// EXIF orientation 1..8 from an APP1 payload; 1 when absent or unreadable (a broken EXIF
// block is common in the wild and must not make an otherwise good photo undecodable).
int ExifOrientation(Bytes exif) {
  if (exif.empty() || exif.size() > UINT_MAX) return 1;
  ExifData* data = exif_data_new();
  if (data == nullptr) return 1;
  std::unique_ptr<ExifData, decltype(&exif_data_unref)> guard(data, &exif_data_unref);
  // "Follow specification" makes libexif add and rewrite tags; we only read.
  exif_data_unset_option(data, EXIF_DATA_OPTION_FOLLOW_SPECIFICATION);
  exif_data_load_data(data, exif.data(), static_cast<unsigned int>(exif.size()));
  ExifEntry* entry = exif_content_get_entry(data->ifd[EXIF_IFD_0], EXIF_TAG_ORIENTATION);
  if (entry == nullptr || entry->format != EXIF_FORMAT_SHORT || entry->components < 1 ||
      entry->data == nullptr || entry->size < 2) {
    return 1;
  }
  const int orientation = exif_get_short(entry->data, exif_data_get_byte_order(data));
  return orientation >= 1 && orientation <= 8 ? orientation : 1;
}

struct JpegHeader {
  Dims dims;
  int colorspace = TJCS_RGB;
};

Result<JpegHeader> ReadJpegHeader(Bytes bytes) {
  tjhandle tj = ThreadDecompressor::Get();
  if (tj == nullptr) return InternalError("cannot create a TurboJPEG decompressor");
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
  const int rc = tjDecompressHeader3(tj, bytes.data(), static_cast<unsigned long>(bytes.size()),
                                     &width, &height, &subsamp, &colorspace);
  if (rc != 0) {
    const bool warning = tjGetErrorCode(tj) == TJERR_WARNING;
    const std::string message = tjGetErrorStr2(tj);
    ThreadDecompressor::Reset();
    // A warning (e.g. a bad ICC marker) still fills in the header; only a fatal error or a
    // header without dimensions is a failure.
    if (!warning || width <= 0 || height <= 0) {
      return InvalidArgumentError("corrupt JPEG data: " + message);
    }
  }
  return JpegHeader{{width, height}, colorspace};
}

// libjpeg reports a file that ends early as a warning and fills the rest with grey. Only the
// first warning's text survives, so also look for the end-of-image marker after the last
// start-of-scan: inside entropy-coded data 0xFF is always stuffed, so FF D9 there means EOI.
bool LooksTruncated(Bytes bytes) {
  std::size_t last_sos = 0;
  for (std::size_t i = 0; i + 1 < bytes.size(); ++i) {
    if (bytes[i] == 0xFF && bytes[i + 1] == 0xDA) last_sos = i;
  }
  for (std::size_t i = last_sos; i + 1 < bytes.size(); ++i) {
    if (bytes[i] == 0xFF && bytes[i + 1] == 0xD9) return false;
  }
  return true;
}

// Maps a libjpeg warning to an error, or to OK for warnings that leave the pixels intact.
Status JpegWarningStatus(std::string_view message, Bytes bytes) {
  const auto contains = [&](std::string_view s) { return message.find(s) != message.npos; };
  if (contains("Premature end") || contains("premature end") || LooksTruncated(bytes)) {
    return InvalidArgumentError("truncated JPEG");
  }
  // Extraneous bytes between segments, an odd JFIF version, an unknown Adobe transform code or
  // a broken ICC profile are common in camera files and do not affect the pixels.
  if (contains("extraneous bytes") || contains("JFIF revision") ||
      contains("Adobe color transform") || contains("ICC")) {
    return Status::Ok();
  }
  return InvalidArgumentError("corrupt JPEG data: " + std::string(message));
}

// CMYK -> BGR by the usual naive formula (no colour management). Photoshop and most other
// writers of CMYK JPEGs mark them with an APP14 Adobe segment and store the channels inverted
// (255 = no ink); libjpeg passes them through unchanged, so we undo the inversion here, as
// libjpeg's djpeg, Pillow and OpenCV do.
cv::Mat CmykToBgr(const cv::Mat& cmyk, bool inverted) {
  cv::Mat bgr(cmyk.rows, cmyk.cols, CV_8UC3);
  for (int y = 0; y < cmyk.rows; ++y) {
    const std::uint8_t* in = cmyk.ptr<std::uint8_t>(y);
    std::uint8_t* out = bgr.ptr<std::uint8_t>(y);
    for (int x = 0; x < cmyk.cols; ++x, in += 4, out += 3) {
      int c = in[0], m = in[1], ye = in[2], k = in[3];
      if (!inverted) {
        c = 255 - c;
        m = 255 - m;
        ye = 255 - ye;
        k = 255 - k;
      }
      // Now 255 means "no ink": each channel is (1 - ink) * (1 - black).
      out[0] = static_cast<std::uint8_t>((ye * k + 127) / 255);
      out[1] = static_cast<std::uint8_t>((m * k + 127) / 255);
      out[2] = static_cast<std::uint8_t>((c * k + 127) / 255);
    }
  }
  return bgr;
}

cv::Mat ApplyOrientation(cv::Mat image, int orientation) {
  cv::Mat out;
  switch (orientation) {
    case 2:
      cv::flip(image, out, 1);
      break;
    case 3:
      cv::rotate(image, out, cv::ROTATE_180);
      break;
    case 4:
      cv::flip(image, out, 0);
      break;
    case 5:
      cv::transpose(image, out);
      break;
    case 6:
      cv::rotate(image, out, cv::ROTATE_90_CLOCKWISE);
      break;
    case 7:
      cv::transpose(image, out);
      cv::flip(out, out, -1);
      break;
    case 8:
      cv::rotate(image, out, cv::ROTATE_90_COUNTERCLOCKWISE);
      break;
    default:
      return image;
  }
  return out;
}

// `scale_denom` 1, 2, 4 or 8: TurboJPEG scales while decoding (in the DCT), far cheaper than
// decoding in full and resizing.
Result<cv::Mat> DecodeJpeg(Bytes bytes, const ImageInfo& info, int colorspace,
                           int scale_denom = 1) {
  const bool cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
  const tjscalingfactor factor{1, scale_denom};
  const int width = TJSCALED(info.width, factor);
  const int height = TJSCALED(info.height, factor);
  cv::Mat pixels(height, width, cmyk ? CV_8UC4 : CV_8UC3);
  tjhandle tj = ThreadDecompressor::Get();
  if (tj == nullptr) return InternalError("cannot create a TurboJPEG decompressor");
  // LIMITSCANS refuses progressive files with hundreds of scans, a known CPU-exhaustion trick.
  const int rc = tjDecompress2(tj, bytes.data(), static_cast<unsigned long>(bytes.size()),
                               pixels.data, width, static_cast<int>(pixels.step), height,
                               cmyk ? TJPF_CMYK : TJPF_BGR, TJFLAG_LIMITSCANS);
  if (rc != 0) {
    const bool warning = tjGetErrorCode(tj) == TJERR_WARNING;
    const std::string message = tjGetErrorStr2(tj);
    ThreadDecompressor::Reset();
    if (!warning) {
      return InvalidArgumentError("corrupt JPEG data: " + message);
    }
    RETURN_IF_ERROR(JpegWarningStatus(message, bytes));
  }
  if (cmyk) pixels = CmykToBgr(pixels, ScanJpegSegments(bytes).adobe);
  return ApplyOrientation(std::move(pixels), info.orientation);
}

// ---------------------------------------------------------------------------------------------
// Other formats: the header readers below parse just enough to learn the size.

Result<Dims> PngDims(Bytes bytes) {
  // Signature (8), then the first chunk, which must be IHDR: length (4), type (4), width, height.
  if (bytes.size() < 24) return TruncatedHeader(ImageFormat::kPng);
  if (!StartsWith(bytes, "IHDR", 12)) return CorruptHeader(ImageFormat::kPng, "no IHDR chunk");
  return Dims{Be32(&bytes[16]), Be32(&bytes[20])};
}

Result<Dims> BmpDims(Bytes bytes) {
  // BITMAPFILEHEADER (14 bytes), then a DIB header whose first field is its own size.
  if (bytes.size() < 18) return TruncatedHeader(ImageFormat::kBmp);
  const std::uint32_t dib_size = Le32(&bytes[14]);
  if (dib_size == 12) {  // BITMAPCOREHEADER: 16-bit unsigned width and height
    if (bytes.size() < 22) return TruncatedHeader(ImageFormat::kBmp);
    return Dims{Le16(&bytes[18]), Le16(&bytes[20])};
  }
  if (dib_size < 16) return CorruptHeader(ImageFormat::kBmp, "bad DIB header size");
  if (bytes.size() < 26) return TruncatedHeader(ImageFormat::kBmp);
  // BITMAPINFOHEADER and later: signed 32-bit; a negative height means rows are top-down.
  const auto width = static_cast<std::int32_t>(Le32(&bytes[18]));
  const auto height = static_cast<std::int32_t>(Le32(&bytes[22]));
  return Dims{width, height < 0 ? -static_cast<std::int64_t>(height) : height};
}

Result<Dims> WebpDims(Bytes bytes) {
  // "RIFF" size "WEBP", then the first chunk: fourcc (4), size (4), payload from offset 20.
  if (bytes.size() < 30) return TruncatedHeader(ImageFormat::kWebp);
  const std::uint8_t* p = &bytes[20];
  if (StartsWith(bytes, "VP8 ", 12)) {  // lossy: frame tag (3), start code, 14-bit sizes
    if ((p[0] & 1) != 0) return CorruptHeader(ImageFormat::kWebp, "first frame is not a key frame");
    if (p[3] != 0x9D || p[4] != 0x01 || p[5] != 0x2A) {
      return CorruptHeader(ImageFormat::kWebp, "bad VP8 start code");
    }
    return Dims{Le16(p + 6) & 0x3FFF, Le16(p + 8) & 0x3FFF};
  }
  if (StartsWith(bytes, "VP8L", 12)) {  // lossless: signature byte, then 14-bit sizes minus one
    if (p[0] != 0x2F) return CorruptHeader(ImageFormat::kWebp, "bad VP8L signature");
    const std::uint32_t bits = Le32(p + 1);
    // The 3 bits after the sizes and the alpha hint: libwebp reads only version 0.
    if ((bits >> 29) != 0) return CorruptHeader(ImageFormat::kWebp, "VP8L version is not 0");
    return Dims{(bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1};
  }
  if (StartsWith(bytes, "VP8X", 12)) {  // extended: flags (4), 24-bit canvas sizes minus one
    return Dims{Le24(p + 4) + 1, Le24(p + 7) + 1};
  }
  return CorruptHeader(ImageFormat::kWebp, "no VP8, VP8L or VP8X chunk");
}

// A TIFF's integers, in the byte order its header names ("II": little-endian, "MM": big).
// Callers check that `at` + the integer's size is within `bytes`.
struct TiffReader {
  Bytes bytes;
  bool le = bytes[0] == 'I';
  std::uint32_t U16(std::size_t at) const { return le ? Le16(&bytes[at]) : Be16(&bytes[at]); }
  std::uint32_t U32(std::size_t at) const { return le ? Le32(&bytes[at]) : Be32(&bytes[at]); }
};

// OpenCV decodes a TIFF of 32- or 64-bit samples into float or int images that ToBgr8 then
// refuses, but only after libtiff has inflated every strip into buffers of up to 32 bytes a
// pixel: a 0.9 MB Deflate TIFF of 5400x5400 RGBA doubles took 971 MB before its refusal
// (an 8-bit RGB file of the same size takes 257 MB). BitsPerSample is one SHORT per sample,
// in the entry when there are at most two, else at the offset it gives; every sample must be
// 16 bits or fewer, which is all ToBgr8 keeps.
Status CheckTiffBitsPerSample(const TiffReader& tiff, std::size_t entry, std::uint32_t type) {
  if (type != 3) return CorruptHeader(ImageFormat::kTiff, "BitsPerSample is not SHORT");
  const std::size_t samples = tiff.U32(entry + 4);
  // OpenCV 4.6 decodes 1 to 4 samples a pixel and fails on more (as corrupt data).
  if (samples == 0 || samples > 4) {
    return UnsupportedError("unsupported TIFF: " + std::to_string(samples) +
                            " samples per pixel; 1 to 4 are supported");
  }
  const std::size_t at = samples <= 2 ? entry + 8 : tiff.U32(entry + 8);
  if (at + samples * 2 > tiff.bytes.size()) return TruncatedHeader(ImageFormat::kTiff);
  for (std::size_t s = 0; s < samples; ++s) {
    const std::uint32_t bits = tiff.U16(at + s * 2);
    if (bits == 0 || bits > 16) {
      return UnsupportedError("unsupported TIFF sample size: " + std::to_string(bits) +
                              " bits; 1 to 16 are supported");
    }
  }
  return Status::Ok();
}

// The compressions a TIFF may use: none, LZW, JPEG, Deflate (both codes), PackBits, LZMA, ZSTD
// and WebP, which cover what cameras, scanners' colour modes and image tools write. The rest
// of libtiff's codecs (CCITT fax, old-style JPEG, JBIG, LERC, SGI LogLuv, PixarLog, NeXT,
// ThunderScan, ...) are rare in photos and a decoder attack surface of their own; LogLuv
// decodes to floats that ToBgr8 refuses anyway.
Status CheckTiffCompression(std::uint32_t compression) {
  static constexpr std::array<std::uint32_t, 9> kAllowed = {1,     5,     7,     8,    32773,
                                                            32946, 34925, 50000, 50001};
  if (std::find(kAllowed.begin(), kAllowed.end(), compression) != kAllowed.end()) {
    return Status::Ok();
  }
  return UnsupportedError("unsupported TIFF compression " + std::to_string(compression) +
                          "; supported: none, LZW, JPEG, Deflate, PackBits, LZMA, ZSTD, WebP");
}

Result<Dims> TiffDims(Bytes bytes) {
  if (bytes.size() < 8) return TruncatedHeader(ImageFormat::kTiff);
  const TiffReader tiff{bytes};
  const std::size_t ifd = tiff.U32(4);
  if (ifd < 8 || ifd + 2 > bytes.size()) return TruncatedHeader(ImageFormat::kTiff);
  const std::size_t count = tiff.U16(ifd);
  if (ifd + 2 + count * 12 > bytes.size()) return TruncatedHeader(ImageFormat::kTiff);
  Dims dims{-1, -1};
  std::int64_t rows_per_strip = 0;
  std::int64_t tile_width = 0;
  std::int64_t tile_length = 0;
  std::vector<std::uint32_t> seen;  // the tags below read so far: at most 7
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t entry = ifd + 2 + i * 12;
    const std::uint32_t tag = tiff.U16(entry);
    // ImageWidth, ImageLength, BitsPerSample, Compression, RowsPerStrip, TileWidth, TileLength
    if (tag != 256 && tag != 257 && tag != 258 && tag != 259 && tag != 278 && tag != 322 &&
        tag != 323) {
      continue;
    }
    // A second copy of a tag could say something else than the one libtiff reads (a width of
    // 1 here and 56,319 there, found by the image_decode fuzzer); no writer repeats one.
    if (std::find(seen.begin(), seen.end(), tag) != seen.end()) {
      return CorruptHeader(ImageFormat::kTiff,
                           "tag " + std::to_string(tag) + " appears twice in the first IFD");
    }
    seen.push_back(tag);
    const std::uint32_t type = tiff.U16(entry + 2);
    if (tag == 258) {
      RETURN_IF_ERROR(CheckTiffBitsPerSample(tiff, entry, type));
      continue;
    }
    if (tag == 259) {  // one SHORT; absent means none
      if (type != 3) return CorruptHeader(ImageFormat::kTiff, "Compression is not SHORT");
      RETURN_IF_ERROR(CheckTiffCompression(tiff.U16(entry + 8)));
      continue;
    }
    std::int64_t value;
    if (type == 3) {  // SHORT: left-justified in the 4-byte value field
      value = tiff.U16(entry + 8);
    } else if (type == 4) {  // LONG
      value = tiff.U32(entry + 8);
    } else {
      return CorruptHeader(ImageFormat::kTiff, "image size is neither SHORT nor LONG");
    }
    switch (tag) {
      case 256:
        dims.width = value;
        break;
      case 257:
        dims.height = value;
        break;
      case 278:
        rows_per_strip = value;
        break;
      case 322:
        tile_width = value;
        break;
      default:
        tile_length = value;
        break;
    }
  }
  if (dims.width < 0 || dims.height < 0) {
    return CorruptHeader(ImageFormat::kTiff, "no ImageWidth/ImageLength in the first IFD");
  }
  // OpenCV 4.6's TIFF reader sizes its strip buffer from RowsPerStrip as the file states it,
  // at up to 4 bytes a pixel, and clamps it to the height only when it reads as a negative
  // int: a 250x6 image that said 2,884,494 rows per strip made it allocate 2.9 GB (found by
  // the image_decode fuzzer). Its tile buffer is TileWidth x TileLength. Both are bounded
  // like the image itself (Probe).
  // OpenCV refuses a strip or tile side over 2^24 before it allocates; capping there keeps
  // the products far from overflowing.
  static constexpr std::int64_t kSideCap = (std::int64_t{1} << 24) + 1;
  const auto capped = [](std::int64_t v) { return std::min(v, kSideCap); };
  if (rows_per_strip > 0 && rows_per_strip <= 0x7FFFFFFF) {
    dims.buffer_pixels = capped(rows_per_strip) * capped(dims.width);
  }
  dims.buffer_pixels = std::max(dims.buffer_pixels, capped(tile_width) * capped(tile_length));
  return dims;
}

// 16-bit samples to 8 bits, any channel layout to BGR. Alpha is dropped, not composited: that
// is what cv::imread(IMREAD_COLOR) and PIL's convert("RGB") do, which is how the models'
// reference pipelines load images, so detections match theirs.
Result<cv::Mat> ToBgr8(cv::Mat image, ImageFormat format) {
  if (image.depth() == CV_16U) {
    cv::Mat eight;
    image.convertTo(eight, CV_8U, 1.0 / 256.0);
    image = std::move(eight);
  } else if (image.depth() != CV_8U) {
    return UnsupportedError("unsupported " + DisplayName(format) + " sample type (depth " +
                            std::to_string(image.depth()) + "); 8- and 16-bit are supported");
  }
  cv::Mat bgr;
  switch (image.channels()) {
    case 1:
      cv::cvtColor(image, bgr, cv::COLOR_GRAY2BGR);
      break;
    case 2: {  // gray + alpha
      cv::Mat gray;
      cv::extractChannel(image, gray, 0);
      cv::cvtColor(gray, bgr, cv::COLOR_GRAY2BGR);
      break;
    }
    case 3:
      bgr = std::move(image);
      break;
    case 4:
      cv::cvtColor(image, bgr, cv::COLOR_BGRA2BGR);
      break;
    default:
      return UnsupportedError("unsupported " + DisplayName(format) + " channel count " +
                              std::to_string(image.channels()));
  }
  return bgr;
}

Result<cv::Mat> DecodeWithOpenCv(Bytes bytes, const ImageInfo& info) {
  const std::string name = DisplayName(info.format);
  // imdecode only reads the buffer; the Mat header is a view, not a copy.
  const cv::Mat buffer(1, static_cast<int>(bytes.size()), CV_8U,
                       const_cast<std::uint8_t*>(bytes.data()));
  cv::Mat decoded;
  try {
    decoded = cv::imdecode(buffer, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    return InvalidArgumentError("corrupt " + name + " data: " + e.err);
  }
  if (decoded.empty()) {
    return InvalidArgumentError("corrupt or truncated " + name + " data");
  }
  // The limits were checked against the header; a decoder that disagrees with it was fed a
  // file whose parts contradict each other.
  if (decoded.cols != info.width || decoded.rows != info.height) {
    return InvalidArgumentError("corrupt " + name + " data: header says " +
                                std::to_string(info.width) + "x" + std::to_string(info.height) +
                                ", pixels are " + std::to_string(decoded.cols) + "x" +
                                std::to_string(decoded.rows));
  }
  return ToBgr8(std::move(decoded), info.format);
}

// ImageInfo plus what the JPEG decoder needs from the header, so it is parsed once.
struct Probed {
  ImageInfo info;
  int jpeg_colorspace = TJCS_RGB;
};

Result<Probed> Probe(Bytes bytes, const DecodeLimits& limits) {
  // Size first: it costs nothing and bounds everything after.
  if (bytes.size() > limits.max_bytes) {
    return TooLargeError("image is " + std::to_string(bytes.size()) + " bytes, over the limit of " +
                         std::to_string(limits.max_bytes) + " bytes");
  }
  if (bytes.empty()) return InvalidArgumentError("empty image");
  Probed out;
  ImageInfo& info = out.info;
  info.format = SniffFormat(bytes);
  Dims dims;
  switch (info.format) {
    case ImageFormat::kJpeg: {
      ASSIGN_OR_RETURN(const JpegHeader header, ReadJpegHeader(bytes));
      dims = header.dims;
      out.jpeg_colorspace = header.colorspace;
      break;
    }
    case ImageFormat::kPng: {
      ASSIGN_OR_RETURN(dims, PngDims(bytes));
      break;
    }
    case ImageFormat::kBmp: {
      ASSIGN_OR_RETURN(dims, BmpDims(bytes));
      break;
    }
    case ImageFormat::kWebp: {
      ASSIGN_OR_RETURN(dims, WebpDims(bytes));
      break;
    }
    case ImageFormat::kTiff: {
      ASSIGN_OR_RETURN(dims, TiffDims(bytes));
      break;
    }
    case ImageFormat::kUnknown:
      return UnsupportedError(std::string(kUnsupportedMessage));
  }
  // cv::imdecode picks its decoder by signature, not by the format probed here: when the
  // format's own decoder declines a file (libwebp checks more of a WebP header than WebpDims
  // does), it tries the others in turn. DICOM's signature is the only one that does not sit at
  // the start: "DICM" at byte 128, which any file can carry. GDCM then parses the rest and
  // allocates what its element lengths say (1.8 GB for 154 bytes, found by the image_decode
  // fuzzer), so such a file never reaches OpenCV. A genuine PNG, BMP, WebP or TIFF has these
  // 4 bytes there by chance once in 2^32 files; JPEG goes to TurboJPEG and is not affected.
  if (info.format != ImageFormat::kJpeg && bytes.size() >= 132 && StartsWith(bytes, "DICM", 128)) {
    return CorruptHeader(info.format,
                         "DICOM's signature \"DICM\" at byte 128 (OpenCV would hand the file "
                         "to its DICOM reader)");
  }
  RETURN_IF_ERROR(CheckLimits(dims, limits));
  if (dims.buffer_pixels > limits.max_pixels) {
    return TooLargeError(DisplayName(info.format) + " strip or tile of " +
                         std::to_string(dims.buffer_pixels) + " pixels, over the limit of " +
                         std::to_string(limits.max_pixels) + " pixels");
  }
  // CheckLimits bounded both sides by max_side, an int.
  info.width = static_cast<int>(dims.width);
  info.height = static_cast<int>(dims.height);
  if (info.format == ImageFormat::kJpeg) {
    info.orientation = ExifOrientation(ScanJpegSegments(bytes).exif);
  }
  return out;
}

}  // namespace

std::string_view FormatName(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg:
      return "jpeg";
    case ImageFormat::kPng:
      return "png";
    case ImageFormat::kBmp:
      return "bmp";
    case ImageFormat::kWebp:
      return "webp";
    case ImageFormat::kTiff:
      return "tiff";
    case ImageFormat::kUnknown:
      break;
  }
  return "unknown";
}

ImageFormat SniffFormat(std::span<const std::uint8_t> bytes) {
  if (StartsWith(bytes, "\xFF\xD8\xFF")) return ImageFormat::kJpeg;
  if (StartsWith(bytes, "\x89PNG\r\n\x1A\n")) return ImageFormat::kPng;
  if (StartsWith(bytes, "BM")) return ImageFormat::kBmp;
  if (StartsWith(bytes, "RIFF") && StartsWith(bytes, "WEBP", 8)) return ImageFormat::kWebp;
  // Classic TIFF only; BigTIFF ("II+\0") is not accepted.
  if (StartsWith(bytes, std::string_view("II*\0", 4)) ||
      StartsWith(bytes, std::string_view("MM\0*", 4))) {
    return ImageFormat::kTiff;
  }
  return ImageFormat::kUnknown;
}

Result<ImageInfo> ProbeImage(std::span<const std::uint8_t> bytes, const DecodeLimits& limits) {
  try {
    ASSIGN_OR_RETURN(Probed probed, Probe(bytes, limits));
    return probed.info;
  } catch (const std::exception& e) {
    return InternalError(std::string("probing image: ") + e.what());
  }
}

Result<cv::Mat> DecodeImage(std::span<const std::uint8_t> bytes, const DecodeLimits& limits) {
  try {
    ASSIGN_OR_RETURN(const Probed probed, Probe(bytes, limits));
    const ImageInfo& info = probed.info;
    if (info.format == ImageFormat::kJpeg) return DecodeJpeg(bytes, info, probed.jpeg_colorspace);
    if (bytes.size() > static_cast<std::size_t>(INT_MAX)) {  // cv::Mat sizes are int
      return TooLargeError("image is " + std::to_string(bytes.size()) + " bytes, too large");
    }
    return DecodeWithOpenCv(bytes, info);
  } catch (const cv::Exception& e) {
    return InvalidArgumentError("corrupt " + DisplayName(SniffFormat(bytes)) + " data: " + e.err);
  } catch (const std::bad_alloc&) {
    return InternalError("out of memory decoding image");
  } catch (const std::exception& e) {
    return InternalError(std::string("decoding image: ") + e.what());
  }
}

Result<cv::Mat> DecodeImageReduced(std::span<const std::uint8_t> bytes, int min_long_side,
                                   const DecodeLimits& limits) {
  try {
    ASSIGN_OR_RETURN(const Probed probed, Probe(bytes, limits));
    const ImageInfo& info = probed.info;
    if (info.format != ImageFormat::kJpeg) return DecodeImage(bytes, limits);
    const int long_side = std::max(info.width, info.height);
    int denom = 1;
    while (denom < 8 && long_side / (denom * 2) >= min_long_side) denom *= 2;
    return DecodeJpeg(bytes, info, probed.jpeg_colorspace, denom);
  } catch (const cv::Exception& e) {
    return InvalidArgumentError("corrupt JPEG data: " + e.err);
  } catch (const std::bad_alloc&) {
    return InternalError("out of memory decoding image");
  }
}

cv::Mat FitLongSide(const cv::Mat& image, int max_side) {
  return FitWithin(image, max_side, max_side);
}

cv::Mat FitWithin(const cv::Mat& image, int max_width, int max_height) {
  if (max_width <= 0 || max_height <= 0 || (image.cols <= max_width && image.rows <= max_height)) {
    return image;
  }
  const double scale = std::min(static_cast<double>(max_width) / image.cols,
                                static_cast<double>(max_height) / image.rows);
  cv::Mat out;
  cv::resize(image, out,
             cv::Size(std::max(1, static_cast<int>(std::lround(image.cols * scale))),
                      std::max(1, static_cast<int>(std::lround(image.rows * scale)))),
             0, 0, cv::INTER_AREA);
  return out;
}

}  // namespace kadr::imaging
