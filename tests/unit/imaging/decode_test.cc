#include "imaging/decode.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <turbojpeg.h>

#include "imaging/encode.h"
#include "support/test_data.h"

namespace kadr::imaging {
namespace {

using Bytes = std::vector<std::uint8_t>;

// An image of 16x16 single-colour blocks, each a different colour, so every transform of it
// is distinguishable and JPEG (8x8 DCT blocks) reproduces it almost exactly.
cv::Mat BlockyImage(int width, int height) {
  cv::Mat image(height, width, CV_8UC3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const int bx = x / 16, by = y / 16;
      image.at<cv::Vec3b>(y, x) =
          cv::Vec3b(static_cast<uchar>(40 + 50 * bx % 200), static_cast<uchar>(30 + 70 * by % 200),
                    static_cast<uchar>((bx * 37 + by * 91) % 256));
    }
  }
  return image;
}

// A smooth image with some texture: gradients plus a gentle wave.
cv::Mat SmoothImage(int width, int height) {
  cv::Mat image(height, width, CV_8UC3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      image.at<cv::Vec3b>(y, x) =
          cv::Vec3b(static_cast<uchar>(255 * x / width), static_cast<uchar>(255 * y / height),
                    static_cast<uchar>(128 + 100 * std::sin(x * 0.05) * std::cos(y * 0.07)));
    }
  }
  return image;
}

Bytes Jpeg(const cv::Mat& image, int quality = 100) {
  auto encoded = EncodeJpeg(image, {.quality = quality, .subsample_420 = false});
  EXPECT_TRUE(encoded.has_value()) << encoded.status().ToString();
  return encoded.has_value() ? *encoded : Bytes{};
}

Bytes ImEncode(const std::string& ext, const cv::Mat& image, const std::vector<int>& params = {}) {
  std::vector<uchar> out;
  EXPECT_TRUE(cv::imencode(ext, image, out, params)) << ext;
  return out;
}

double MaxAbsDiff(const cv::Mat& a, const cv::Mat& b) {
  if (a.size() != b.size() || a.type() != b.type()) return 1e9;
  return cv::norm(a, b, cv::NORM_INF);
}

void Put16(Bytes& out, std::uint32_t v, bool big_endian) {
  if (big_endian) {
    out.insert(out.end(), {static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)});
  } else {
    out.insert(out.end(), {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8)});
  }
}
void Put32(Bytes& out, std::uint32_t v, bool big_endian) {
  if (big_endian) {
    Put16(out, v >> 16, true);
    Put16(out, v & 0xFFFF, true);
  } else {
    Put16(out, v & 0xFFFF, false);
    Put16(out, v >> 16, false);
  }
}
void PutString(Bytes& out, std::string_view s) { out.insert(out.end(), s.begin(), s.end()); }

// An APP1 segment holding a minimal Exif block: TIFF header plus an IFD0 with one entry,
// Orientation (0x0112, SHORT, count 1).
Bytes ExifApp1(int orientation, bool big_endian = false) {
  Bytes payload;
  PutString(payload, std::string_view("Exif\0\0", 6));
  PutString(payload, big_endian ? "MM" : "II");
  Put16(payload, 42, big_endian);
  Put32(payload, 8, big_endian);  // IFD0 right after the header
  Put16(payload, 1, big_endian);  // one entry
  Put16(payload, 0x0112, big_endian);
  Put16(payload, 3, big_endian);  // SHORT
  Put32(payload, 1, big_endian);
  Put16(payload, static_cast<std::uint32_t>(orientation), big_endian);
  Put16(payload, 0, big_endian);  // value field padding
  Put32(payload, 0, big_endian);  // no next IFD
  Bytes segment = {0xFF, 0xE1};
  Put16(segment, static_cast<std::uint32_t>(payload.size() + 2), true);
  segment.insert(segment.end(), payload.begin(), payload.end());
  return segment;
}

Bytes InsertAfterSoi(Bytes jpeg, const Bytes& segment) {
  jpeg.insert(jpeg.begin() + 2, segment.begin(), segment.end());
  return jpeg;
}

// Where stored pixel (row r, col c) of an h x w image appears once displayed, straight from the
// EXIF definition of where the stored 0th row and 0th column go.
cv::Point2i DisplayedAt(int orientation, int r, int c, int h, int w) {
  switch (orientation) {
    case 2:
      return {w - 1 - c, r};  // row0 top, col0 right
    case 3:
      return {w - 1 - c, h - 1 - r};  // row0 bottom, col0 right
    case 4:
      return {c, h - 1 - r};  // row0 bottom, col0 left
    case 5:
      return {r, c};  // row0 left, col0 top
    case 6:
      return {h - 1 - r, c};  // row0 right, col0 top
    case 7:
      return {h - 1 - r, w - 1 - c};  // row0 right, col0 bottom
    case 8:
      return {r, w - 1 - c};  // row0 left, col0 bottom
    default:
      return {c, r};
  }
}

cv::Mat ExpectedDisplay(const cv::Mat& stored, int orientation) {
  const bool swap = orientation >= 5;
  cv::Mat out(swap ? stored.cols : stored.rows, swap ? stored.rows : stored.cols, stored.type());
  for (int r = 0; r < stored.rows; ++r) {
    for (int c = 0; c < stored.cols; ++c) {
      out.at<cv::Vec3b>(DisplayedAt(orientation, r, c, stored.rows, stored.cols)) =
          stored.at<cv::Vec3b>(r, c);
    }
  }
  return out;
}

// Offset of the first SOFn marker (baseline or progressive) in an encoder's output.
std::size_t FindSof(const Bytes& jpeg) {
  for (std::size_t i = 2; i + 1 < jpeg.size(); ++i) {
    if (jpeg[i] == 0xFF && (jpeg[i + 1] == 0xC0 || jpeg[i + 1] == 0xC2)) return i;
  }
  ADD_FAILURE() << "no SOF marker";
  return 0;
}

// A PNG signature plus an IHDR chunk for the given size and a few bytes of IDAT: enough for
// any header reader, nowhere near enough pixels.
Bytes PngHeader(std::uint32_t width, std::uint32_t height) {
  Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  Put32(png, 13, true);
  PutString(png, "IHDR");
  Put32(png, width, true);
  Put32(png, height, true);
  png.insert(png.end(), {8, 2, 0, 0, 0});  // 8-bit RGB, deflate, no filter, no interlace
  Put32(png, 0, true);                     // CRC (unchecked by the header reader)
  Put32(png, 8, true);
  PutString(png, "IDAT");
  png.insert(png.end(), {0x78, 0x9C, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02});
  Put32(png, 0, true);
  return png;
}

// A 24-bit BMP with rows stored top-down (negative height in BITMAPINFOHEADER).
Bytes TopDownBmp(const cv::Mat& bgr) {
  const int row_bytes = (bgr.cols * 3 + 3) / 4 * 4;
  Bytes bmp;
  PutString(bmp, "BM");
  Put32(bmp, 54 + row_bytes * bgr.rows, false);
  Put32(bmp, 0, false);
  Put32(bmp, 54, false);  // pixel data offset
  Put32(bmp, 40, false);  // BITMAPINFOHEADER
  Put32(bmp, static_cast<std::uint32_t>(bgr.cols), false);
  Put32(bmp, static_cast<std::uint32_t>(-bgr.rows), false);
  Put16(bmp, 1, false);   // planes
  Put16(bmp, 24, false);  // bits per pixel
  Put32(bmp, 0, false);   // BI_RGB
  Put32(bmp, static_cast<std::uint32_t>(row_bytes * bgr.rows), false);
  Put32(bmp, 2835, false);
  Put32(bmp, 2835, false);
  Put32(bmp, 0, false);
  Put32(bmp, 0, false);
  for (int y = 0; y < bgr.rows; ++y) {
    const auto* row = bgr.ptr<std::uint8_t>(y);
    bmp.insert(bmp.end(), row, row + bgr.cols * 3);
    bmp.insert(bmp.end(), static_cast<std::size_t>(row_bytes - bgr.cols * 3), 0);
  }
  return bmp;
}

// A big-endian TIFF header whose first IFD has ImageWidth as SHORT and ImageLength as LONG.
Bytes BigEndianTiffHeader(std::uint16_t width, std::uint32_t height) {
  Bytes tiff;
  PutString(tiff, "MM");
  Put16(tiff, 42, true);
  Put32(tiff, 8, true);
  Put16(tiff, 2, true);
  Put16(tiff, 256, true);
  Put16(tiff, 3, true);
  Put32(tiff, 1, true);
  Put16(tiff, width, true);
  Put16(tiff, 0, true);
  Put16(tiff, 257, true);
  Put16(tiff, 4, true);
  Put32(tiff, 1, true);
  Put32(tiff, height, true);
  Put32(tiff, 0, true);
  return tiff;
}

std::span<const std::uint8_t> Span(const Bytes& b) { return {b.data(), b.size()}; }

// ----------------------------------------------------------------------------------------------

TEST(SniffFormatTest, RecognisesEachFormatByItsMagic) {
  const cv::Mat image = BlockyImage(32, 16);
  EXPECT_EQ(SniffFormat(Span(Jpeg(image))), ImageFormat::kJpeg);
  EXPECT_EQ(SniffFormat(Span(ImEncode(".png", image))), ImageFormat::kPng);
  EXPECT_EQ(SniffFormat(Span(ImEncode(".bmp", image))), ImageFormat::kBmp);
  EXPECT_EQ(SniffFormat(Span(ImEncode(".webp", image))), ImageFormat::kWebp);
  EXPECT_EQ(SniffFormat(Span(ImEncode(".tiff", image))), ImageFormat::kTiff);
  EXPECT_EQ(SniffFormat(Span(BigEndianTiffHeader(1, 1))), ImageFormat::kTiff);
}

TEST(SniffFormatTest, UnknownForOtherOrShortInput) {
  EXPECT_EQ(SniffFormat(AsBytes("")), ImageFormat::kUnknown);
  EXPECT_EQ(SniffFormat(AsBytes("\xFF\xD8")), ImageFormat::kUnknown);
  EXPECT_EQ(SniffFormat(AsBytes("GIF89a....")), ImageFormat::kUnknown);
  EXPECT_EQ(SniffFormat(AsBytes("RIFF....WAVE")), ImageFormat::kUnknown);
  EXPECT_EQ(SniffFormat(AsBytes(std::string_view("II+\0\x08\0\0\0", 8))), ImageFormat::kUnknown);
}

TEST(FormatNameTest, IsLowercaseAndStable) {
  EXPECT_EQ(FormatName(ImageFormat::kJpeg), "jpeg");
  EXPECT_EQ(FormatName(ImageFormat::kPng), "png");
  EXPECT_EQ(FormatName(ImageFormat::kBmp), "bmp");
  EXPECT_EQ(FormatName(ImageFormat::kWebp), "webp");
  EXPECT_EQ(FormatName(ImageFormat::kTiff), "tiff");
  EXPECT_EQ(FormatName(ImageFormat::kUnknown), "unknown");
}

TEST(DecodeImageTest, EmptyInputIsInvalidArgument) {
  auto result = DecodeImage({});
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error(), InvalidArgumentError("empty image"));
  EXPECT_EQ(ProbeImage({}).status(), InvalidArgumentError("empty image"));
}

TEST(DecodeImageTest, UnknownFormatIsUnsupportedAndListsTheFormats) {
  auto result = DecodeImage(AsBytes("GIF89a\x01\x00\x01\x00"));
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error(),
            UnsupportedError("unsupported image format; supported: JPEG, PNG, BMP, WebP, TIFF"));
}

TEST(DecodeImageTest, InputOverMaxBytesIsTooLargeBeforeLookingAtIt) {
  const Bytes garbage(1000, 0x42);
  auto result = DecodeImage(Span(garbage), {.max_bytes = 999});
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code(), StatusCode::kTooLarge);
  EXPECT_EQ(result.error().message(), "image is 1000 bytes, over the limit of 999 bytes");
  // Exactly at the limit is fine (and then the garbage is reported as such).
  EXPECT_EQ(DecodeImage(Span(garbage), {.max_bytes = 1000}).error().code(),
            StatusCode::kUnsupported);
}

TEST(DecodeImageTest, DecodesColourJpegToBgr) {
  const cv::Mat image = BlockyImage(64, 48);
  auto decoded = DecodeImage(Span(Jpeg(image)));
  ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
  EXPECT_EQ(decoded->type(), CV_8UC3);
  EXPECT_LE(MaxAbsDiff(*decoded, image), 8);
}

TEST(DecodeImageTest, DecodesGrayscaleJpegToBgrWithEqualChannels) {
  cv::Mat gray;
  cv::cvtColor(BlockyImage(48, 32), gray, cv::COLOR_BGR2GRAY);
  const Bytes jpeg = Jpeg(gray);
  auto decoded = DecodeImage(Span(jpeg));
  ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
  ASSERT_EQ(decoded->type(), CV_8UC3);
  cv::Mat channels[3];
  cv::split(*decoded, channels);
  EXPECT_EQ(cv::norm(channels[0], channels[1], cv::NORM_INF), 0);
  EXPECT_EQ(cv::norm(channels[0], channels[2], cv::NORM_INF), 0);
  EXPECT_LE(cv::norm(channels[0], gray, cv::NORM_INF), 4);
}

// TurboJPEG writes CMYK as YCCK with an Adobe APP14 marker, the way Photoshop does; such
// files store inverted CMYK (255 = no ink).
TEST(DecodeImageTest, DecodesAdobeCmykJpegToBgr) {
  struct Block {
    cv::Vec4b inverted_cmyk;
    cv::Vec3b bgr;
  };
  const Block blocks[] = {
      {{255, 0, 0, 255}, {0, 0, 255}},          // red: full magenta and yellow ink
      {{0, 255, 0, 255}, {0, 255, 0}},          // green
      {{0, 0, 255, 255}, {255, 0, 0}},          // blue
      {{255, 255, 255, 255}, {255, 255, 255}},  // white: no ink
      {{255, 255, 255, 128}, {128, 128, 128}},  // half black
      {{255, 255, 255, 0}, {0, 0, 0}},          // full black
  };
  const int n = static_cast<int>(std::size(blocks));
  cv::Mat cmyk(16, 16 * n, CV_8UC4);
  for (int i = 0; i < n; ++i)
    cmyk(cv::Rect(16 * i, 0, 16, 16)).setTo(cv::Scalar(blocks[i].inverted_cmyk));

  tjhandle tj = tjInitCompress();
  ASSERT_NE(tj, nullptr);
  unsigned char* out = nullptr;
  unsigned long size = 0;
  ASSERT_EQ(tjCompress2(tj, cmyk.data, cmyk.cols, static_cast<int>(cmyk.step), cmyk.rows, TJPF_CMYK,
                        &out, &size, TJSAMP_444, 100, 0),
            0)
      << tjGetErrorStr2(tj);
  const Bytes jpeg(out, out + size);
  tjFree(out);
  tjDestroy(tj);

  auto decoded = DecodeImage(Span(jpeg));
  ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
  ASSERT_EQ(decoded->type(), CV_8UC3);
  for (int i = 0; i < n; ++i) {
    const cv::Vec3b got = decoded->at<cv::Vec3b>(8, 16 * i + 8);
    for (int ch = 0; ch < 3; ++ch) {
      EXPECT_NEAR(got[ch], blocks[i].bgr[ch], 6) << "block " << i << " channel " << ch;
    }
  }
}

class ExifOrientationTest : public ::testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(ExifOrientationTest, AppliesOrientationSoTheResultIsUpright) {
  const auto [orientation, big_endian] = GetParam();
  const cv::Mat stored = BlockyImage(64, 32);  // wide, so a missing rotation shows in the size
  const Bytes jpeg = InsertAfterSoi(Jpeg(stored), ExifApp1(orientation, big_endian));

  auto info = ProbeImage(Span(jpeg));
  ASSERT_TRUE(info.has_value()) << info.status().ToString();
  EXPECT_EQ(info->orientation, orientation);
  EXPECT_EQ(info->width, 64);  // as stored
  EXPECT_EQ(info->height, 32);

  auto decoded = DecodeImage(Span(jpeg));
  ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
  const cv::Mat expected = ExpectedDisplay(stored, orientation);
  ASSERT_EQ(decoded->size(), expected.size());
  EXPECT_LE(MaxAbsDiff(*decoded, expected), 8);
}

INSTANTIATE_TEST_SUITE_P(AllOrientations, ExifOrientationTest,
                         ::testing::Combine(::testing::Range(1, 9), ::testing::Bool()),
                         [](const auto& p) {
                           return "Orientation" + std::to_string(std::get<0>(p.param)) +
                                  (std::get<1>(p.param) ? "BigEndian" : "LittleEndian");
                         });

TEST(DecodeImageTest, IgnoresOutOfRangeOrientation) {
  const cv::Mat stored = BlockyImage(64, 32);
  for (int orientation : {0, 9, 0xFFFF}) {
    const Bytes jpeg = InsertAfterSoi(Jpeg(stored), ExifApp1(orientation));
    auto decoded = DecodeImage(Span(jpeg));
    ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
    EXPECT_LE(MaxAbsDiff(*decoded, stored), 8) << orientation;
  }
}

TEST(DecodeImageTest, BrokenExifBlockDoesNotStopDecoding) {
  const cv::Mat stored = BlockyImage(64, 32);
  Bytes app1 = ExifApp1(6);
  // Point IFD0 far past the end of the block.
  app1[4 + 6 + 4] = 0xFF;
  app1[4 + 6 + 5] = 0xFF;
  const Bytes jpeg = InsertAfterSoi(Jpeg(stored), app1);
  auto decoded = DecodeImage(Span(jpeg));
  ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
  EXPECT_LE(MaxAbsDiff(*decoded, stored), 8);
}

TEST(DecodeImageTest, JpegTruncatedMidScanIsAnErrorNotAGreyImage) {
  const Bytes jpeg = Jpeg(SmoothImage(128, 96), 90);
  const Bytes truncated(jpeg.begin(), jpeg.begin() + static_cast<long>(jpeg.size() * 2 / 3));
  auto decoded = DecodeImage(Span(truncated));
  ASSERT_FALSE(decoded.has_value());
  EXPECT_EQ(decoded.error(), InvalidArgumentError("truncated JPEG"));
}

TEST(DecodeImageTest, JpegTruncatedInHeaderIsInvalidArgument) {
  const Bytes jpeg = Jpeg(SmoothImage(128, 96), 90);
  const Bytes truncated(jpeg.begin(), jpeg.begin() + 100);
  auto decoded = DecodeImage(Span(truncated));
  ASSERT_FALSE(decoded.has_value());
  EXPECT_EQ(decoded.error().code(), StatusCode::kInvalidArgument);
}

// Regression: TurboJPEG 2.1 left the reused per-thread handle mid-stream after a failed header
// read, and the next, valid, file failed with "Bogus DQT index".
TEST(DecodeImageTest, GoodJpegDecodesAfterACorruptOne) {
  const cv::Mat image = BlockyImage(64, 48);
  const Bytes good = Jpeg(image);
  for (std::size_t cut : {3u, 20u, 100u, 300u}) {
    const Bytes bad(good.begin(), good.begin() + static_cast<long>(cut));
    ASSERT_FALSE(DecodeImage(Span(bad)).has_value()) << cut;
    auto decoded = DecodeImage(Span(good));
    ASSERT_TRUE(decoded.has_value()) << "after cut " << cut << ": " << decoded.status().ToString();
    EXPECT_LE(MaxAbsDiff(*decoded, image), 8);
  }
}

TEST(DecodeImageTest, AcceptsJpegWithTrailingBytesAfterEoi) {
  const cv::Mat image = BlockyImage(64, 48);
  Bytes jpeg = Jpeg(image);
  jpeg.insert(jpeg.end(), 100, 0x00);
  auto decoded = DecodeImage(Span(jpeg));
  ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
  EXPECT_LE(MaxAbsDiff(*decoded, image), 8);
}

// Some cameras leave junk between segments; libjpeg warns and the pixels are fine.
TEST(DecodeImageTest, AcceptsJpegWithExtraneousBytesBeforeAMarker) {
  const cv::Mat image = BlockyImage(64, 48);
  Bytes jpeg = Jpeg(image);
  const std::size_t sof = FindSof(jpeg);
  jpeg.insert(jpeg.begin() + static_cast<long>(sof), {0x00, 0x00, 0x00});
  auto decoded = DecodeImage(Span(jpeg));
  ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
  EXPECT_LE(MaxAbsDiff(*decoded, image), 8);
}

TEST(DecodeImageTest, RefusesJpegBombFromTheHeaderAlone) {
  Bytes jpeg = Jpeg(BlockyImage(64, 48), 90);
  const std::size_t sof = FindSof(jpeg);
  // SOFn: FF Cx, length (2), precision (1), height (2), width (2).
  jpeg[sof + 5] = 60000 >> 8;
  jpeg[sof + 6] = 60000 & 0xFF;
  jpeg[sof + 7] = 60000 >> 8;
  jpeg[sof + 8] = 60000 & 0xFF;

  const auto start = std::chrono::steady_clock::now();
  auto decoded = DecodeImage(Span(jpeg));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(decoded.has_value());
  EXPECT_EQ(decoded.error(),
            TooLargeError("image is 60000x60000 (3600000000 pixels), over the limit of "
                          "50000000 pixels"));
  EXPECT_LT(elapsed, std::chrono::milliseconds(500));
  EXPECT_EQ(ProbeImage(Span(jpeg)).status().code(), StatusCode::kTooLarge);
}

TEST(DecodeImageTest, RefusesPngBombFromTheHeaderAlone) {
  const Bytes png = PngHeader(60000, 60000);
  const auto start = std::chrono::steady_clock::now();
  auto decoded = DecodeImage(Span(png));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(decoded.has_value());
  EXPECT_EQ(decoded.error(),
            TooLargeError("image is 60000x60000 (3600000000 pixels), over the limit of "
                          "50000000 pixels"));
  EXPECT_LT(elapsed, std::chrono::milliseconds(500));
}

TEST(DecodeImageTest, RefusesImageOverMaxSide) {
  auto decoded = DecodeImage(Span(PngHeader(20000, 10)));
  ASSERT_FALSE(decoded.has_value());
  EXPECT_EQ(decoded.error(),
            TooLargeError("image is 20000x10, over the limit of 16384 pixels per side"));
}

TEST(DecodeImageTest, HonoursCustomPixelLimit) {
  const Bytes jpeg = Jpeg(BlockyImage(64, 48));
  EXPECT_TRUE(DecodeImage(Span(jpeg), {.max_pixels = 64 * 48}).has_value());
  auto decoded = DecodeImage(Span(jpeg), {.max_pixels = 64 * 48 - 1});
  ASSERT_FALSE(decoded.has_value());
  EXPECT_EQ(decoded.error().code(), StatusCode::kTooLarge);
  EXPECT_EQ(DecodeImage(Span(jpeg), {.max_side = 63}).error().code(), StatusCode::kTooLarge);
}

TEST(DecodeImageTest, ZeroOrHugeHeaderDimensionsAreRefused) {
  EXPECT_EQ(ProbeImage(Span(PngHeader(0, 10))).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ProbeImage(Span(PngHeader(10, 0))).status().code(), StatusCode::kInvalidArgument);
  // 0xFFFFFFFF must not wrap to -1 and pass as "invalid" or, worse, as small.
  EXPECT_EQ(ProbeImage(Span(PngHeader(0xFFFFFFFF, 1))).status().code(), StatusCode::kTooLarge);
}

TEST(ProbeImageTest, ReadsEveryFormatsHeader) {
  const cv::Mat image = BlockyImage(48, 32);
  struct Case {
    Bytes bytes;
    ImageFormat format;
  };
  const Case cases[] = {
      {Jpeg(image), ImageFormat::kJpeg},
      {ImEncode(".png", image), ImageFormat::kPng},
      {ImEncode(".bmp", image), ImageFormat::kBmp},
      {ImEncode(".webp", image, {cv::IMWRITE_WEBP_QUALITY, 90}), ImageFormat::kWebp},
      {ImEncode(".webp", image, {cv::IMWRITE_WEBP_QUALITY, 101}), ImageFormat::kWebp},
      {ImEncode(".tiff", image), ImageFormat::kTiff},
  };
  for (const auto& c : cases) {
    auto info = ProbeImage(Span(c.bytes));
    ASSERT_TRUE(info.has_value()) << FormatName(c.format) << ": " << info.status().ToString();
    EXPECT_EQ(info->format, c.format);
    EXPECT_EQ(info->width, 48) << FormatName(c.format);
    EXPECT_EQ(info->height, 32) << FormatName(c.format);
    EXPECT_EQ(info->orientation, 1);
  }
}

TEST(ProbeImageTest, ReadsBigEndianTiffWithShortAndLongSizes) {
  auto info = ProbeImage(Span(BigEndianTiffHeader(640, 480)));
  ASSERT_TRUE(info.has_value()) << info.status().ToString();
  EXPECT_EQ(info->format, ImageFormat::kTiff);
  EXPECT_EQ(info->width, 640);
  EXPECT_EQ(info->height, 480);
  EXPECT_EQ(ProbeImage(Span(BigEndianTiffHeader(60000, 60000))).status().code(),
            StatusCode::kTooLarge);
}

TEST(ProbeImageTest, ReadsWebpExtendedHeader) {
  Bytes webp;
  PutString(webp, "RIFF");
  Put32(webp, 22, false);
  PutString(webp, "WEBPVP8X");
  Put32(webp, 10, false);
  Put32(webp, 0x10, false);                     // flags: alpha
  webp.insert(webp.end(), {0x7F, 0x02, 0x00});  // canvas width - 1 = 639
  webp.insert(webp.end(), {0xDF, 0x01, 0x00});  // canvas height - 1 = 479
  auto info = ProbeImage(Span(webp));
  ASSERT_TRUE(info.has_value()) << info.status().ToString();
  EXPECT_EQ(info->format, ImageFormat::kWebp);
  EXPECT_EQ(info->width, 640);
  EXPECT_EQ(info->height, 480);

  webp[24] = webp[25] = webp[26] = 0xFF;  // 16M pixels wide
  EXPECT_EQ(ProbeImage(Span(webp)).status().code(), StatusCode::kTooLarge);
}

TEST(ProbeImageTest, WebpLosslessOfAnUnknownVersionIsRefused) {
  Bytes webp = ImEncode(".webp", BlockyImage(8, 6), {cv::IMWRITE_WEBP_QUALITY, 101});
  ASSERT_GE(webp.size(), 30U);
  ASSERT_EQ(std::string(webp.begin() + 12, webp.begin() + 16), "VP8L");
  webp[24] |= 0x40;  // version bits (the top 3 of the 32 after the signature byte) = 2
  EXPECT_EQ(ProbeImage(Span(webp)).status(),
            InvalidArgumentError("corrupt WebP header: VP8L version is not 0"));
}

// Found by the image_decode fuzzer: a 154-byte "WebP" that libwebp declines and that carries
// DICOM's signature at byte 128 went to OpenCV's DICOM reader (GDCM), which allocated 1.8 GB.
TEST(DecodeImageTest, AFileCarryingDicomsSignatureNeverReachesOpenCv) {
  const cv::Mat image = BlockyImage(48, 32);
  for (const auto& [ext, format] : std::vector<std::pair<std::string, std::string>>{
           {".png", "PNG"}, {".bmp", "BMP"}, {".webp", "WebP"}, {".tiff", "TIFF"}}) {
    Bytes bytes = ImEncode(ext, image);
    if (bytes.size() < 132) bytes.resize(132, 0);
    std::copy_n("DICM", 4, bytes.begin() + 128);
    const Status expected =
        InvalidArgumentError("corrupt " + format +
                             " header: DICOM's signature \"DICM\" at byte 128 (OpenCV would "
                             "hand the file to its DICOM reader)");
    EXPECT_EQ(ProbeImage(Span(bytes)).status(), expected) << ext;
    EXPECT_EQ(DecodeImage(Span(bytes)).status(), expected) << ext;
  }
  // A JPEG is decoded by TurboJPEG, whatever its bytes say at 128.
  Bytes jpeg = Jpeg(image);
  ASSERT_GE(jpeg.size(), 132U);
  std::copy_n("DICM", 4, jpeg.begin() + 128);
  EXPECT_TRUE(ProbeImage(Span(jpeg)).has_value());
}

// Sets `tag` (one value) in the first IFD of a little-endian TIFF to the LONG `value`.
void SetTiffTag(Bytes& tiff, std::uint16_t tag, std::uint32_t value) {
  const auto u16 = [&](std::size_t at) { return tiff[at] | (tiff[at + 1] << 8); };
  std::size_t ifd = 0;
  for (int i = 0; i < 4; ++i) ifd |= static_cast<std::size_t>(tiff[4 + i]) << (8 * i);
  for (int i = 0; i < u16(ifd); ++i) {
    const std::size_t entry = ifd + 2 + 12 * i;
    if (u16(entry) != tag) continue;
    tiff[entry + 2] = 4;  // LONG
    tiff[entry + 3] = 0;
    for (int b = 0; b < 4; ++b) tiff[entry + 8 + b] = (value >> (8 * b)) & 0xFF;
    return;
  }
  ADD_FAILURE() << "no tag " << tag;
}

// Found by the image_decode fuzzer: OpenCV 4.6 sizes its TIFF strip buffer from RowsPerStrip
// as stated (4 bytes a pixel), so a 250x6 image saying 2,884,494 rows per strip allocated 2.9 GB.
TEST(ProbeImageTest, ATiffStripTallerThanTheLimitIsRefused) {
  const cv::Mat image = BlockyImage(250, 6);
  Bytes tiff = ImEncode(".tiff", image);
  ASSERT_EQ(tiff[0], 'I');
  SetTiffTag(tiff, 278, 2'884'494);  // RowsPerStrip
  EXPECT_EQ(ProbeImage(Span(tiff)).status(),
            TooLargeError("TIFF strip or tile of 721123500 pixels, over the limit of 50000000 "
                          "pixels"));
  EXPECT_EQ(DecodeImage(Span(tiff), {.max_pixels = 1'000'000}).status(),
            TooLargeError("TIFF strip or tile of 721123500 pixels, over the limit of 1000000 "
                          "pixels"));

  // 2^32 - 1, "the whole image in one strip" (the TIFF default), is what writers put there.
  SetTiffTag(tiff, 278, 0xFFFFFFFF);
  auto decoded = DecodeImage(Span(tiff));
  ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
  EXPECT_EQ(MaxAbsDiff(*decoded, image), 0);
  // A strip taller than the image but within the limit is read as before.
  SetTiffTag(tiff, 278, 64);
  decoded = DecodeImage(Span(tiff));
  ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
  EXPECT_EQ(MaxAbsDiff(*decoded, image), 0);
}

// Found by the image_decode fuzzer: ImageWidth twice (56,319, then 1). kadr read the last,
// libtiff the first, so the strip bound above was computed on the wrong width.
TEST(ProbeImageTest, ATiffThatRepeatsASizeTagIsRefused) {
  const auto header = [](const std::vector<std::pair<std::uint16_t, std::uint32_t>>& entries) {
    Bytes tiff;
    PutString(tiff, "II");
    Put16(tiff, 42, false);
    Put32(tiff, 8, false);
    Put16(tiff, static_cast<std::uint16_t>(entries.size()), false);
    for (const auto& [tag, value] : entries) {
      Put16(tiff, tag, false);
      Put16(tiff, 4, false);  // LONG
      Put32(tiff, 1, false);
      Put32(tiff, value, false);
    }
    Put32(tiff, 0, false);
    return tiff;
  };
  auto info = ProbeImage(Span(header({{256, 5000}, {257, 6}, {278, 6}})));
  ASSERT_TRUE(info.has_value()) << info.status().ToString();
  EXPECT_EQ(info->width, 5000);
  EXPECT_EQ(ProbeImage(Span(header({{256, 5000}, {257, 6}, {256, 1}, {278, 12942}}))).status(),
            InvalidArgumentError("corrupt TIFF header: tag 256 appears twice in the first IFD"));
}

// The common compressions decode; libtiff's rare codecs (PixarLog here, written by libtiff
// itself through OpenCV; LogLuv, which OpenCV writes for float colour) are refused by the
// probe.
TEST(ProbeImageTest, ATiffDecodesWithTheCommonCompressionsOnly) {
  const cv::Mat image = BlockyImage(24, 16);
  // None, LZW, Deflate (both codes), PackBits, LZMA, ZSTD: lossless; WebP: lossy by default.
  for (const int compression : {1, 5, 8, 32773, 32946, 34925, 50000, 50001}) {
    auto decoded =
        DecodeImage(Span(ImEncode(".tiff", image, {cv::IMWRITE_TIFF_COMPRESSION, compression})));
    ASSERT_TRUE(decoded.has_value()) << compression << ": " << decoded.status().ToString();
    EXPECT_LE(MaxAbsDiff(*decoded, image), compression == 50001 ? 64 : 0) << compression;
  }
  const Bytes pixar = ImEncode(".tiff", image, {cv::IMWRITE_TIFF_COMPRESSION, 32909});
  EXPECT_EQ(ProbeImage(Span(pixar)).status(),
            UnsupportedError("unsupported TIFF compression 32909; supported: none, LZW, JPEG, "
                             "Deflate, PackBits, LZMA, ZSTD, WebP"));
  EXPECT_EQ(DecodeImage(Span(pixar)).status(), ProbeImage(Span(pixar)).status());
  const Bytes logluv = ImEncode(".tiff", cv::Mat(8, 8, CV_32FC3, cv::Scalar(0.25, 0.5, 1.0)));
  EXPECT_EQ(DecodeImage(Span(logluv)).status(),
            UnsupportedError("unsupported TIFF compression 34676; supported: none, LZW, JPEG, "
                             "Deflate, PackBits, LZMA, ZSTD, WebP"));
}

// 32- and 64-bit samples are refused by the probe, before libtiff inflates strips of up to 32
// bytes a pixel for an image that ToBgr8 would refuse anyway; 8 and 16 bits still decode.
TEST(ProbeImageTest, ATiffOfSamplesWiderThan16BitsIsRefusedBeforeDecoding) {
  for (const auto& [type, bits] : {std::pair{CV_32FC1, 32}, std::pair{CV_64FC1, 64}}) {
    const Bytes tiff = ImEncode(".tiff", cv::Mat(8, 8, type, cv::Scalar(0.25)));
    const Status refused = UnsupportedError(
        "unsupported TIFF sample size: " + std::to_string(bits) + " bits; 1 to 16 are supported");
    EXPECT_EQ(ProbeImage(Span(tiff)).status(), refused);
    EXPECT_EQ(DecodeImage(Span(tiff)).status(), refused);
  }
  for (int type : {CV_8UC3, CV_16UC3, CV_8UC1, CV_16UC1}) {
    auto ok = DecodeImage(Span(ImEncode(".tiff", cv::Mat(8, 8, type, cv::Scalar::all(7)))));
    EXPECT_TRUE(ok.has_value()) << type << ": " << ok.status().ToString();
  }

  // A hand-made header: 5 samples of 8 bits (the array at an offset), then 2 of 64 bits (in
  // the entry itself).
  const auto header = [](std::uint32_t samples, std::uint16_t bits) {
    Bytes tiff;
    PutString(tiff, "II");
    Put16(tiff, 42, false);
    Put32(tiff, 8, false);
    Put16(tiff, 3, false);
    for (const std::uint16_t tag : {256, 257}) {
      Put16(tiff, tag, false);
      Put16(tiff, 4, false);  // LONG
      Put32(tiff, 1, false);
      Put32(tiff, 64, false);
    }
    Put16(tiff, 258, false);
    Put16(tiff, 3, false);  // SHORT
    Put32(tiff, samples, false);
    if (samples <= 2) {
      Put16(tiff, bits, false);
      Put16(tiff, samples == 2 ? bits : 0, false);
    } else {
      Put32(tiff, 8 + 2 + 3 * 12 + 4, false);  // right after the IFD
    }
    Put32(tiff, 0, false);
    for (std::uint32_t s = 0; samples > 2 && s < samples; ++s) Put16(tiff, bits, false);
    return tiff;
  };
  EXPECT_EQ(ProbeImage(Span(header(2, 64))).status(),
            UnsupportedError("unsupported TIFF sample size: 64 bits; 1 to 16 are supported"));
  EXPECT_EQ(ProbeImage(Span(header(5, 8))).status(),
            UnsupportedError("unsupported TIFF: 5 samples per pixel; 1 to 4 are supported"));
  EXPECT_TRUE(ProbeImage(Span(header(4, 16))).has_value());
  Bytes cut = header(4, 16);
  cut.resize(cut.size() - 2);  // the last sample's size is missing
  EXPECT_EQ(ProbeImage(Span(cut)).status(), InvalidArgumentError("truncated TIFF header"));
}

TEST(ProbeImageTest, BmpBombIsRefused) {
  Bytes bmp = TopDownBmp(BlockyImage(4, 2));
  bmp[18] = bmp[19] = 0x60;  // width 0x6060 = 24672
  bmp[22] = 0x00;
  bmp[23] = 0x00;
  bmp[24] = 0x01;
  bmp[25] = 0x00;  // height 65536
  EXPECT_EQ(DecodeImage(Span(bmp)).error().code(), StatusCode::kTooLarge);
}

TEST(ProbeImageTest, TruncatedHeadersAreInvalidArgument) {
  for (const auto& bytes :
       {ImEncode(".png", BlockyImage(8, 8)), ImEncode(".bmp", BlockyImage(8, 8)),
        ImEncode(".webp", BlockyImage(8, 8)), ImEncode(".tiff", BlockyImage(8, 8))}) {
    const Bytes head(bytes.begin(), bytes.begin() + 12);
    auto info = ProbeImage(Span(head));
    ASSERT_FALSE(info.has_value());
    EXPECT_EQ(info.error().code(), StatusCode::kInvalidArgument) << info.error().ToString();
  }
}

TEST(DecodeImageTest, DecodesPngBgr) {
  const cv::Mat image = BlockyImage(40, 24);
  auto decoded = DecodeImage(Span(ImEncode(".png", image)));
  ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
  EXPECT_EQ(MaxAbsDiff(*decoded, image), 0);
}

TEST(DecodeImageTest, DecodesPngGrayToBgr) {
  cv::Mat gray;
  cv::cvtColor(BlockyImage(40, 24), gray, cv::COLOR_BGR2GRAY);
  cv::Mat expected;
  cv::cvtColor(gray, expected, cv::COLOR_GRAY2BGR);
  auto decoded = DecodeImage(Span(ImEncode(".png", gray)));
  ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
  EXPECT_EQ(MaxAbsDiff(*decoded, expected), 0);
}

TEST(DecodeImageTest, DropsAlphaOfBgraPngKeepingTheColourUnderneath) {
  const cv::Mat bgr = BlockyImage(40, 24);
  cv::Mat bgra;
  cv::cvtColor(bgr, bgra, cv::COLOR_BGR2BGRA);
  bgra(cv::Rect(0, 0, 20, 24)).forEach<cv::Vec4b>([](cv::Vec4b& p, const int*) { p[3] = 0; });
  auto decoded = DecodeImage(Span(ImEncode(".png", bgra)));
  ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
  EXPECT_EQ(decoded->type(), CV_8UC3);
  EXPECT_EQ(MaxAbsDiff(*decoded, bgr), 0);
}

TEST(DecodeImageTest, Scales16BitPngAndTiffTo8Bit) {
  cv::Mat wide(8, 8, CV_16UC3);
  wide.setTo(cv::Scalar(0, 0x8000, 0xFFFF));
  wide(cv::Rect(0, 0, 4, 8)).setTo(cv::Scalar(0x0100, 0x40FF, 0x1234));
  cv::Mat gray16(8, 8, CV_16UC1, cv::Scalar(0xC000));
  for (const std::string ext : {".png", ".tiff"}) {
    auto decoded = DecodeImage(Span(ImEncode(ext, wide)));
    ASSERT_TRUE(decoded.has_value()) << ext << ": " << decoded.status().ToString();
    ASSERT_EQ(decoded->type(), CV_8UC3) << ext;
    EXPECT_EQ(decoded->at<cv::Vec3b>(0, 7), cv::Vec3b(0, 128, 255)) << ext;
    EXPECT_EQ(decoded->at<cv::Vec3b>(0, 0), cv::Vec3b(1, 65, 18)) << ext;

    auto gray = DecodeImage(Span(ImEncode(ext, gray16)));
    ASSERT_TRUE(gray.has_value()) << ext << ": " << gray.status().ToString();
    ASSERT_EQ(gray->type(), CV_8UC3) << ext;
    EXPECT_EQ(gray->at<cv::Vec3b>(3, 3), cv::Vec3b(192, 192, 192)) << ext;
  }
}

TEST(DecodeImageTest, DecodesBmp) {
  const cv::Mat image = BlockyImage(37, 21);  // odd width: rows are padded
  auto decoded = DecodeImage(Span(ImEncode(".bmp", image)));
  ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
  EXPECT_EQ(MaxAbsDiff(*decoded, image), 0);

  cv::Mat gray;
  cv::cvtColor(image, gray, cv::COLOR_BGR2GRAY);
  auto decoded_gray = DecodeImage(Span(ImEncode(".bmp", gray)));
  ASSERT_TRUE(decoded_gray.has_value()) << decoded_gray.status().ToString();
  cv::Mat expected;
  cv::cvtColor(gray, expected, cv::COLOR_GRAY2BGR);
  EXPECT_EQ(MaxAbsDiff(*decoded_gray, expected), 0);
}

TEST(DecodeImageTest, DecodesTopDownBmp) {
  const cv::Mat image = BlockyImage(37, 21);
  const Bytes bmp = TopDownBmp(image);
  auto info = ProbeImage(Span(bmp));
  ASSERT_TRUE(info.has_value()) << info.status().ToString();
  EXPECT_EQ(info->height, 21);
  auto decoded = DecodeImage(Span(bmp));
  ASSERT_TRUE(decoded.has_value()) << decoded.status().ToString();
  EXPECT_EQ(MaxAbsDiff(*decoded, image), 0);
}

TEST(DecodeImageTest, DecodesLossyAndLosslessWebp) {
  const cv::Mat image = BlockyImage(48, 32);
  auto lossless = DecodeImage(Span(ImEncode(".webp", image, {cv::IMWRITE_WEBP_QUALITY, 101})));
  ASSERT_TRUE(lossless.has_value()) << lossless.status().ToString();
  EXPECT_EQ(MaxAbsDiff(*lossless, image), 0);

  auto lossy = DecodeImage(Span(ImEncode(".webp", image, {cv::IMWRITE_WEBP_QUALITY, 95})));
  ASSERT_TRUE(lossy.has_value()) << lossy.status().ToString();
  EXPECT_EQ(lossy->size(), image.size());
  EXPECT_GT(cv::PSNR(*lossy, image), 25);

  cv::Mat bgra;
  cv::cvtColor(image, bgra, cv::COLOR_BGR2BGRA);
  auto with_alpha = DecodeImage(Span(ImEncode(".webp", bgra, {cv::IMWRITE_WEBP_QUALITY, 101})));
  ASSERT_TRUE(with_alpha.has_value()) << with_alpha.status().ToString();
  EXPECT_EQ(MaxAbsDiff(*with_alpha, image), 0);
}

TEST(DecodeImageTest, DecodesTiffColourGrayAndBgra) {
  const cv::Mat image = BlockyImage(40, 24);
  auto colour = DecodeImage(Span(ImEncode(".tiff", image)));
  ASSERT_TRUE(colour.has_value()) << colour.status().ToString();
  EXPECT_EQ(MaxAbsDiff(*colour, image), 0);

  cv::Mat gray, expected;
  cv::cvtColor(image, gray, cv::COLOR_BGR2GRAY);
  cv::cvtColor(gray, expected, cv::COLOR_GRAY2BGR);
  auto from_gray = DecodeImage(Span(ImEncode(".tiff", gray)));
  ASSERT_TRUE(from_gray.has_value()) << from_gray.status().ToString();
  EXPECT_EQ(MaxAbsDiff(*from_gray, expected), 0);

  cv::Mat bgra;
  cv::cvtColor(image, bgra, cv::COLOR_BGR2BGRA);
  auto from_bgra = DecodeImage(Span(ImEncode(".tiff", bgra)));
  ASSERT_TRUE(from_bgra.has_value()) << from_bgra.status().ToString();
  EXPECT_EQ(MaxAbsDiff(*from_bgra, image), 0);
}

TEST(DecodeImageTest, CorruptPngPixelDataIsInvalidArgument) {
  Bytes png = ImEncode(".png", SmoothImage(64, 48));
  // Stomp on the middle of the IDAT stream; the chunk CRC no longer matches.
  for (std::size_t i = png.size() / 2; i < png.size() / 2 + 16; ++i) png[i] ^= 0x5A;
  auto decoded = DecodeImage(Span(png));
  ASSERT_FALSE(decoded.has_value());
  EXPECT_EQ(decoded.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(decoded.error().message().find("PNG"), std::string::npos) << decoded.error().message();
}

TEST(DecodeImageTest, IsSafeToCallFromManyThreads) {
  const cv::Mat image = BlockyImage(64, 48);
  const Bytes jpeg = Jpeg(image);
  const Bytes png = ImEncode(".png", image);
  std::vector<std::thread> threads;
  std::atomic<int> failures = 0;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        auto a = DecodeImage(Span(jpeg));
        auto b = DecodeImage(Span(png));
        if (!a.has_value() || !b.has_value() || MaxAbsDiff(*a, image) > 8 ||
            MaxAbsDiff(*b, image) != 0) {
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);
}

// ----------------------------------------------------------------------------------------------
// Robustness: every truncation and a few hundred random corruptions of a valid file must give
// either an image of the size the header states or an error. Run under ASan to mean anything.

struct FuzzCase {
  std::string name;
  Bytes bytes;
};

Bytes ProgressiveJpeg(const cv::Mat& bgr) {
  tjhandle tj = tjInitCompress();
  unsigned char* out = nullptr;
  unsigned long size = 0;
  EXPECT_EQ(tjCompress2(tj, bgr.data, bgr.cols, static_cast<int>(bgr.step), bgr.rows, TJPF_BGR,
                        &out, &size, TJSAMP_420, 90, TJFLAG_PROGRESSIVE),
            0);
  Bytes jpeg(out, out + size);
  tjFree(out);
  tjDestroy(tj);
  return jpeg;
}

void ExpectImageOfHeaderSizeOrError(std::span<const std::uint8_t> bytes, const DecodeLimits& limits,
                                    const std::string& what) {
  auto decoded = DecodeImage(bytes, limits);
  if (!decoded.has_value()) {
    const StatusCode code = decoded.error().code();
    EXPECT_TRUE(code == StatusCode::kInvalidArgument || code == StatusCode::kUnsupported ||
                code == StatusCode::kTooLarge)
        << what << ": " << decoded.error().ToString();
    return;
  }
  auto info = ProbeImage(bytes, limits);
  ASSERT_TRUE(info.has_value()) << what << ": decoded, but probe says " << info.status().ToString();
  const bool swap = info->orientation >= 5;
  EXPECT_EQ(decoded->type(), CV_8UC3) << what;
  EXPECT_EQ(decoded->cols, swap ? info->height : info->width) << what;
  EXPECT_EQ(decoded->rows, swap ? info->width : info->height) << what;
}

std::vector<FuzzCase> FuzzCases() {
  const cv::Mat image = SmoothImage(40, 32);
  cv::Mat bgra;
  cv::cvtColor(image, bgra, cv::COLOR_BGR2BGRA);
  return {
      {"jpeg", InsertAfterSoi(Jpeg(image, 90), ExifApp1(6))},
      {"progressive jpeg", ProgressiveJpeg(image)},
      {"png", ImEncode(".png", bgra)},
      {"webp", ImEncode(".webp", image, {cv::IMWRITE_WEBP_QUALITY, 80})},
      {"bmp", ImEncode(".bmp", image)},
      {"tiff", ImEncode(".tiff", image)},
  };
}

// Stronger than "an image or an error": no format may pass off a cut file as a whole one.
TEST(DecodeRobustnessTest, EveryTruncationIsAnError) {
  const DecodeLimits limits{.max_pixels = 40 * 32 * 16};
  for (const auto& c : FuzzCases()) {
    ASSERT_TRUE(DecodeImage(Span(c.bytes), limits).has_value()) << c.name;
    constexpr int kCuts = 50;
    for (int i = 0; i < kCuts; ++i) {
      const std::size_t cut = c.bytes.size() * static_cast<std::size_t>(i) / kCuts;
      const std::span<const std::uint8_t> prefix(c.bytes.data(), cut);
      const std::string what = c.name + " cut at " + std::to_string(cut);
      auto decoded = DecodeImage(prefix, limits);
      ASSERT_FALSE(decoded.has_value()) << what;
      EXPECT_NE(decoded.error().code(), StatusCode::kInternal) << what;
    }
  }
}

TEST(DecodeRobustnessTest, RandomCorruptionIsAnImageOrAnError) {
  const DecodeLimits limits{.max_pixels = 40 * 32 * 16};
  std::mt19937 rng(20240611);
  for (const auto& c : FuzzCases()) {
    for (int i = 0; i < 300; ++i) {
      Bytes corrupt = c.bytes;
      const int changes = 1 + static_cast<int>(rng() % 4);
      for (int k = 0; k < changes; ++k) {
        corrupt[rng() % corrupt.size()] = static_cast<std::uint8_t>(rng());
      }
      ExpectImageOfHeaderSizeOrError(Span(corrupt), limits,
                                     c.name + " corruption " + std::to_string(i));
    }
  }
}

// ----------------------------------------------------------------------------------------------

TEST(DecodeImageTest, DecodesTheSharedPhotos) {
  KADR_REQUIRE_TEST_DATA();
  const auto dir = kadr::testing::MediaPath("");
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".jpg") continue;
    const Bytes bytes = kadr::testing::ReadFileBytes(entry.path());
    auto decoded = DecodeImage(Span(bytes));
    ASSERT_TRUE(decoded.has_value()) << entry.path() << ": " << decoded.status().ToString();
    EXPECT_EQ(decoded->type(), CV_8UC3);
    EXPECT_GT(decoded->cols, 0);
    ++count;
  }
  EXPECT_GT(count, 0);

  auto bus = DecodeImage(Span(kadr::testing::ReadFileBytes(kadr::testing::MediaPath("bus.jpg"))));
  ASSERT_TRUE(bus.has_value()) << bus.status().ToString();
  EXPECT_EQ(bus->cols, 810);
  EXPECT_EQ(bus->rows, 1080);
}

}  // namespace
}  // namespace kadr::imaging

namespace kadr::imaging {
namespace {

// Found by fuzz/image_decode_fuzzer: a PNG header stating 0xFFFFFFFF x 0xFFFFFFFF made the
// pixel count overflow 64 bits (undefined behaviour) before the limit check.
TEST(ProbeImageTest, SidesWhoseProductOverflowsAreTooLarge) {
  // Signature, then an IHDR chunk: length 13, "IHDR", width and height 0xFFFFFFFF, ...
  const std::string png(
      "\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\xff\xff\xff\xff\xff\xff\xff\xff"
      "\x08\x02\0\0\0\x5d\x94\xb9\x69",
      33);
  auto info = ProbeImage(AsBytes(png));
  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code(), StatusCode::kTooLarge) << info.error().ToString();
}

}  // namespace
}  // namespace kadr::imaging
