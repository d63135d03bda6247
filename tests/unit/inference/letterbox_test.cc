#include "inference/detail/letterbox.h"

#include <algorithm>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

namespace kadr::inference {
namespace {

struct Size {
  int w;
  int h;
};

// Tall, wide, tiny, larger and smaller than the input, exact fit, odd padding, extreme aspect.
const std::vector<Size> kSources = {{810, 1080},  {1080, 810}, {1, 1},     {640, 640},
                                    {1920, 1080}, {33, 17},    {100, 51},  {4000, 3000},
                                    {3, 1000},    {1000, 3},   {641, 639}, {320, 320}};
const std::vector<Size> kInputs = {{640, 640}, {416, 416}, {320, 320}, {640, 384}};

std::string Describe(Size src, Size in, PadAnchor anchor) {
  return std::to_string(src.w) + "x" + std::to_string(src.h) + " -> " + std::to_string(in.w) + "x" +
         std::to_string(in.h) + (anchor == PadAnchor::kCenter ? " centre" : " top-left");
}

void ExpectBoxNear(const protocol::Box& actual, const protocol::Box& expected, float tol) {
  EXPECT_NEAR(actual.x, expected.x, tol);
  EXPECT_NEAR(actual.y, expected.y, tol);
  EXPECT_NEAR(actual.width, expected.width, tol);
  EXPECT_NEAR(actual.height, expected.height, tol);
}

TEST(LetterboxTest, CentresTallImage) {
  // bus.jpg is 810x1080: scale 640/1080, 480 wide, 80 px of padding each side.
  const Letterbox lb = ComputeLetterbox(810, 1080, 640, 640, PadAnchor::kCenter);
  EXPECT_FLOAT_EQ(lb.scale, 640.f / 1080.f);
  EXPECT_EQ(lb.resized_width, 480);
  EXPECT_EQ(lb.resized_height, 640);
  EXPECT_EQ(lb.pad_x, 80);
  EXPECT_EQ(lb.pad_y, 0);
  EXPECT_EQ(lb.input_width, 640);
  EXPECT_EQ(lb.input_height, 640);
  EXPECT_EQ(lb.source_width, 810);
  EXPECT_EQ(lb.source_height, 1080);
}

TEST(LetterboxTest, TopLeftAnchorHasNoLeadingPadding) {
  const Letterbox lb = ComputeLetterbox(1080, 810, 416, 416, PadAnchor::kTopLeft);
  EXPECT_EQ(lb.resized_width, 416);
  EXPECT_EQ(lb.resized_height, 312);
  EXPECT_EQ(lb.pad_x, 0);
  EXPECT_EQ(lb.pad_y, 0);
}

TEST(LetterboxTest, OddPaddingPutsTheExtraPixelAfterTheImage) {
  // 100x51 -> 64x64: scale 0.64, 33 rows, 31 rows of padding: 15 above, 16 below
  // (Ultralytics: top = round(15.5 - 0.1) = 15, bottom = round(15.5 + 0.1) = 16).
  const Letterbox lb = ComputeLetterbox(100, 51, 64, 64, PadAnchor::kCenter);
  EXPECT_EQ(lb.resized_width, 64);
  EXPECT_EQ(lb.resized_height, 33);
  EXPECT_EQ(lb.pad_x, 0);
  EXPECT_EQ(lb.pad_y, 15);
}

TEST(LetterboxTest, UpscalesSmallImages) {
  const Letterbox lb = ComputeLetterbox(10, 20, 640, 640, PadAnchor::kCenter);
  EXPECT_FLOAT_EQ(lb.scale, 32.f);
  EXPECT_EQ(lb.resized_width, 320);
  EXPECT_EQ(lb.resized_height, 640);
  EXPECT_EQ(lb.pad_x, 160);

  const Letterbox one = ComputeLetterbox(1, 1, 640, 640, PadAnchor::kCenter);
  EXPECT_FLOAT_EQ(one.scale, 640.f);
  EXPECT_EQ(one.resized_width, 640);
  EXPECT_EQ(one.pad_x, 0);
  EXPECT_EQ(one.pad_y, 0);
}

TEST(LetterboxTest, ExtremeAspectKeepsAtLeastOnePixel) {
  const Letterbox lb = ComputeLetterbox(1, 10000, 640, 640, PadAnchor::kCenter);
  EXPECT_EQ(lb.resized_width, 1);
  EXPECT_EQ(lb.resized_height, 640);
  EXPECT_EQ(lb.pad_x, 319);
}

TEST(LetterboxTest, ResizedImageAlwaysFitsTheInput) {
  for (const Size src : kSources) {
    for (const Size in : kInputs) {
      for (const PadAnchor anchor : {PadAnchor::kCenter, PadAnchor::kTopLeft}) {
        SCOPED_TRACE(Describe(src, in, anchor));
        const Letterbox lb = ComputeLetterbox(src.w, src.h, in.w, in.h, anchor);
        EXPECT_GE(lb.pad_x, 0);
        EXPECT_GE(lb.pad_y, 0);
        EXPECT_LE(lb.pad_x + lb.resized_width, in.w);
        EXPECT_LE(lb.pad_y + lb.resized_height, in.h);
        // One side always fills the input.
        EXPECT_TRUE(lb.resized_width == in.w || lb.resized_height == in.h);
        if (anchor == PadAnchor::kCenter) {
          EXPECT_EQ(lb.pad_x, (in.w - lb.resized_width) / 2);
          EXPECT_EQ(lb.pad_y, (in.h - lb.resized_height) / 2);
        }
      }
    }
  }
}

TEST(LetterboxTest, EmptySourceGivesAllPadding) {
  const Letterbox lb = ComputeLetterbox(0, 0, 64, 32, PadAnchor::kCenter);
  EXPECT_EQ(lb.resized_width, 0);
  EXPECT_EQ(lb.resized_height, 0);
  cv::Mat out;
  ApplyLetterbox(cv::Mat(), lb, cv::Scalar::all(114), out);
  ASSERT_EQ(out.rows, 32);
  ASSERT_EQ(out.cols, 64);
  EXPECT_EQ(cv::countNonZero(out != 114), 0);
}

TEST(LetterboxTest, BoxRoundTripIsIdentity) {
  for (const Size src : kSources) {
    for (const Size in : kInputs) {
      for (const PadAnchor anchor : {PadAnchor::kCenter, PadAnchor::kTopLeft}) {
        SCOPED_TRACE(Describe(src, in, anchor));
        const Letterbox lb = ComputeLetterbox(src.w, src.h, in.w, in.h, anchor);
        const float w = static_cast<float>(src.w);
        const float h = static_cast<float>(src.h);
        const std::vector<protocol::Box> boxes = {
            {0, 0, w, h},
            {0.25f * w, 0.1f * h, 0.5f * w, 0.3f * h},
            {0.9f * w, 0.8f * h, 0.1f * w, 0.2f * h},
            {0.5f * w, 0.5f * h, 0, 0},
        };
        for (const protocol::Box& b : boxes) {
          ExpectBoxNear(ToSource(ToInput(b, lb), lb), b, 1e-3f);
        }
      }
    }
  }
}

TEST(LetterboxTest, ToInputMapsTheImageOntoTheResizedArea) {
  const Letterbox lb = ComputeLetterbox(810, 1080, 640, 640, PadAnchor::kCenter);
  ExpectBoxNear(ToInput({0, 0, 810, 1080}, lb), {80, 0, 480, 640}, 1e-3f);
  // A box 10 source pixels from the left edge moves right by the padding.
  ExpectBoxNear(ToInput({10.8f, 0, 108, 54}, lb), {86.4f, 0, 64, 32}, 1e-3f);
}

TEST(LetterboxTest, ToSourceClipsBoxesReachingIntoThePadding) {
  const Letterbox lb = ComputeLetterbox(810, 1080, 640, 640, PadAnchor::kCenter);
  // From the left padding to the middle of the image.
  const protocol::Box b = ToSource({40, -10, 280, 100}, lb);
  EXPECT_FLOAT_EQ(b.x, 0);
  EXPECT_FLOAT_EQ(b.y, 0);
  EXPECT_NEAR(b.width, (320 - 80) / lb.scale, 1e-3);
  EXPECT_NEAR(b.height, 90 / lb.scale, 1e-3);
  // Entirely inside the right padding: collapses onto the right edge.
  const protocol::Box outside = ToSource({600, 100, 30, 30}, lb);
  EXPECT_FLOAT_EQ(outside.x, 810);
  EXPECT_FLOAT_EQ(outside.width, 0);
}

TEST(LetterboxTest, ApplyFillsPaddingAndKeepsType) {
  cv::Mat source(1080, 810, CV_8UC3, cv::Scalar(10, 20, 30));
  const Letterbox lb = ComputeLetterbox(810, 1080, 640, 640, PadAnchor::kCenter);
  cv::Mat out;
  ApplyLetterbox(source, lb, cv::Scalar::all(114), out);
  ASSERT_EQ(out.type(), CV_8UC3);
  ASSERT_EQ(out.rows, 640);
  ASSERT_EQ(out.cols, 640);
  const cv::Vec3b pad(114, 114, 114);
  const cv::Vec3b image(10, 20, 30);
  EXPECT_EQ(out.at<cv::Vec3b>(0, 0), pad);
  EXPECT_EQ(out.at<cv::Vec3b>(639, 79), pad);
  EXPECT_EQ(out.at<cv::Vec3b>(320, 80), image);
  EXPECT_EQ(out.at<cv::Vec3b>(320, 559), image);
  EXPECT_EQ(out.at<cv::Vec3b>(320, 560), pad);
  EXPECT_EQ(out.at<cv::Vec3b>(0, 639), pad);
  // Exactly the padding columns hold the pad value.
  cv::Mat is_pad;
  cv::inRange(out, pad, pad, is_pad);
  EXPECT_EQ(cv::countNonZero(is_pad), 2 * 80 * 640);
}

TEST(LetterboxTest, ApplyPadsEveryAnchorAndSizeCorrectly) {
  for (const Size src : kSources) {
    for (const Size in : kInputs) {
      for (const PadAnchor anchor : {PadAnchor::kCenter, PadAnchor::kTopLeft}) {
        SCOPED_TRACE(Describe(src, in, anchor));
        const Letterbox lb = ComputeLetterbox(src.w, src.h, in.w, in.h, anchor);
        cv::Mat source(src.h, src.w, CV_8UC1, cv::Scalar(200));
        cv::Mat out;
        ApplyLetterbox(source, lb, cv::Scalar(7), out);
        ASSERT_EQ(out.size(), cv::Size(in.w, in.h));
        const cv::Rect inner(lb.pad_x, lb.pad_y, lb.resized_width, lb.resized_height);
        EXPECT_EQ(cv::countNonZero(out(inner) != 200), 0);
        EXPECT_EQ(cv::countNonZero(out == 7), in.w * in.h - inner.area());
      }
    }
  }
}

TEST(LetterboxTest, ApplyReusesAnOutputOfTheRightSize) {
  const Letterbox lb = ComputeLetterbox(800, 600, 640, 640, PadAnchor::kCenter);
  cv::Mat source(600, 800, CV_8UC3, cv::Scalar::all(50));
  cv::Mat out(640, 640, CV_8UC3, cv::Scalar::all(0));
  const uchar* buffer = out.data;
  ApplyLetterbox(source, lb, cv::Scalar::all(114), out);
  EXPECT_EQ(out.data, buffer);
  EXPECT_EQ(out.at<cv::Vec3b>(0, 0), cv::Vec3b(114, 114, 114));
  EXPECT_EQ(out.at<cv::Vec3b>(320, 320), cv::Vec3b(50, 50, 50));

  // The wrong size or type is replaced.
  cv::Mat small(10, 10, CV_8UC1);
  ApplyLetterbox(source, lb, cv::Scalar::all(114), small);
  EXPECT_EQ(small.size(), cv::Size(640, 640));
  EXPECT_EQ(small.type(), CV_8UC3);
}

TEST(LetterboxTest, ApplyWorksOnFloatImages) {
  const Letterbox lb = ComputeLetterbox(20, 10, 16, 16, PadAnchor::kTopLeft);
  cv::Mat source(10, 20, CV_32FC3, cv::Scalar::all(0.5));
  cv::Mat out;
  ApplyLetterbox(source, lb, cv::Scalar::all(114.0 / 255), out);
  ASSERT_EQ(out.type(), CV_32FC3);
  EXPECT_FLOAT_EQ(out.at<cv::Vec3f>(0, 0)[0], 0.5f);
  EXPECT_FLOAT_EQ(out.at<cv::Vec3f>(15, 15)[0], 114.f / 255);
  EXPECT_EQ(lb.resized_height, 8);
}

// Centroid of the pixels brighter than the background, in continuous coordinates (pixel i
// covers [i, i + 1), so its centre is i + 0.5).
cv::Point2d BrightCentroid(const cv::Mat& gray, uchar background) {
  const cv::Mat weights = gray - background;  // saturates to 0 below the background
  const cv::Moments m = cv::moments(weights);
  return {m.m10 / m.m00 + 0.5, m.m01 / m.m00 + 0.5};
}

TEST(LetterboxTest, PaintedPixelsLandWhereToInputSays) {
  for (const Size src : kSources) {
    if (src.w < 40 || src.h < 40) continue;  // too small to paint a spot that survives resizing
    for (const Size in : kInputs) {
      for (const PadAnchor anchor : {PadAnchor::kCenter, PadAnchor::kTopLeft}) {
        SCOPED_TRACE(Describe(src, in, anchor));
        const Letterbox lb = ComputeLetterbox(src.w, src.h, in.w, in.h, anchor);
        // A square about 8 input pixels across, in the lower right quadrant of the image.
        const int side = std::max(2, static_cast<int>(8 / lb.scale));
        const cv::Rect spot(src.w * 3 / 5, src.h * 2 / 3, side, side);
        if ((spot & cv::Rect(0, 0, src.w, src.h)) != spot) continue;
        cv::Mat source(src.h, src.w, CV_8UC1, cv::Scalar(0));
        source(spot).setTo(255);
        cv::Mat out;
        ApplyLetterbox(source, lb, cv::Scalar(0), out);
        const protocol::Box expected =
            ToInput({static_cast<float>(spot.x), static_cast<float>(spot.y),
                     static_cast<float>(side), static_cast<float>(side)},
                    lb);
        const cv::Point2d centroid = BrightCentroid(out, 0);
        // Within a pixel: cv::resize scales each axis by resized/source, which differs from the
        // single `scale` by the rounding of the resized size.
        EXPECT_NEAR(centroid.x, expected.x + expected.width / 2, 1.0);
        EXPECT_NEAR(centroid.y, expected.y + expected.height / 2, 1.0);
      }
    }
  }
}

TEST(LetterboxTest, SinglePixelImageFillsTheInput) {
  cv::Mat source(1, 1, CV_8UC1, cv::Scalar(42));
  const Letterbox lb = ComputeLetterbox(1, 1, 32, 16, PadAnchor::kCenter);
  cv::Mat out;
  ApplyLetterbox(source, lb, cv::Scalar(114), out);
  EXPECT_EQ(lb.pad_x, 8);
  EXPECT_EQ(cv::countNonZero(out == 42), 16 * 16);
  EXPECT_EQ(cv::countNonZero(out == 114), 16 * 16);
  ExpectBoxNear(ToSource({8, 0, 16, 16}, lb), {0, 0, 1, 1}, 1e-5f);
}

// The one-pass tensor writer against the two-step reference (ApplyLetterbox, then the per-pixel
// transform): the same value (to float rounding) at every tensor position, for both anchors, RGB
// and BGR, mean/std, an image that needs no resize, an ROI that is not continuous, and an empty
// slot.
TEST(LetterboxTest, LetterboxToTensorEqualsLetterboxThenTransform) {
  cv::Mat noise(300, 500, CV_8UC3);
  cv::randu(noise, cv::Scalar::all(0), cv::Scalar::all(255));
  const cv::Mat big = noise;
  const cv::Mat roi = big(cv::Rect(7, 11, 321, 123));            // not continuous
  const cv::Mat exact(24, 40, CV_8UC3, cv::Scalar(10, 20, 30));  // already the resized size
  PixelTransform nanodet;
  nanodet.mean = {103.53f, 116.28f, 123.675f};
  nanodet.inv_std = {1 / 57.375f, 1 / 57.12f, 1 / 58.395f};
  PixelTransform ultralytics;
  ultralytics.swap_rb = true;
  ultralytics.inv_std = {1 / 255.f, 1 / 255.f, 1 / 255.f};
  cv::Mat scratch;
  for (const cv::Mat* img : {&big, &roi, &exact}) {
    for (PadAnchor anchor : {PadAnchor::kCenter, PadAnchor::kTopLeft}) {
      for (const PixelTransform& t : {nanodet, ultralytics}) {
        const Letterbox lb = ComputeLetterbox(img->cols, img->rows, 40, 40, anchor);
        cv::Mat letterboxed;
        ApplyLetterbox(*img, lb, cv::Scalar::all(114), letterboxed);
        std::vector<float> tensor(3 * 40 * 40, -1.f);
        LetterboxToTensor(*img, lb, 114, t, scratch, tensor.data());
        for (int c = 0; c < 3; ++c) {
          const int src = t.swap_rb ? 2 - c : c;
          for (int y = 0; y < 40; ++y) {
            for (int x = 0; x < 40; ++x) {
              const float want =
                  (static_cast<float>(letterboxed.at<cv::Vec3b>(y, x)[src]) - t.mean[c]) *
                  t.inv_std[c];
              ASSERT_NEAR(tensor[(c * 40 + y) * 40 + x], want, 1e-5f)
                  << img->cols << "x" << img->rows << " c" << c << " (" << x << "," << y << ")";
            }
          }
        }
      }
    }
  }
  // No image (a padded batch slot): all padding.
  std::vector<float> tensor(3 * 8 * 8, -1.f);
  const Letterbox none = ComputeLetterbox(0, 0, 8, 8, PadAnchor::kCenter);
  LetterboxToTensor(cv::Mat(), none, 114, ultralytics, scratch, tensor.data());
  for (float v : tensor) ASSERT_FLOAT_EQ(v, 114 / 255.f);
}

}  // namespace
}  // namespace kadr::inference
