#include "imaging/annotate.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>

namespace kadr::imaging {
namespace {

using protocol::Box;
using protocol::Detection;
using protocol::Mask;

const cv::Vec3b kGrey(128, 128, 128);

cv::Vec3b ToVec(const cv::Scalar& s) {
  return {static_cast<std::uint8_t>(s[0]), static_cast<std::uint8_t>(s[1]),
          static_cast<std::uint8_t>(s[2])};
}

Detection MakeDetection(int class_id, Box box, std::string label = "person", float score = 0.87f) {
  Detection d;
  d.class_id = class_id;
  d.label = std::move(label);
  d.score = score;
  d.box = box;
  return d;
}

// A mask over the rectangle (x, y, w, h) whose pixels are set where `set(col, row)` holds
// (col, row relative to the rectangle).
template <typename Pred>
Mask MakeMask(int x, int y, int w, int h, Pred set) {
  Mask m{x, y, w, h, {}};
  m.data.resize(static_cast<std::size_t>(w) * h);
  for (int r = 0; r < h; ++r) {
    for (int c = 0; c < w; ++c) m.data[static_cast<std::size_t>(r) * w + c] = set(c, r) ? 1 : 0;
  }
  return m;
}

Mask FullMask(int x, int y, int w, int h) {
  return MakeMask(x, y, w, h, [](int, int) { return true; });
}

bool SameImage(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && cv::norm(a, b, cv::NORM_INF) == 0;
}

int ChangedPixels(const cv::Mat& a, const cv::Mat& b) {
  cv::Mat diff;
  cv::absdiff(a, b, diff);
  cv::Mat grey;
  cv::transform(diff, grey, cv::Matx13f(1, 1, 1));
  return cv::countNonZero(grey);
}

int CountColour(const cv::Mat& region, const cv::Scalar& colour) {
  cv::Mat hits;
  cv::inRange(region, colour, colour, hits);
  return cv::countNonZero(hits);
}

// Pixels within `tolerance` of `colour` on every channel.
int CountNear(const cv::Mat& region, const cv::Vec3b& colour, int tolerance) {
  const cv::Scalar lo(colour[0] - tolerance, colour[1] - tolerance, colour[2] - tolerance);
  const cv::Scalar hi(colour[0] + tolerance, colour[1] + tolerance, colour[2] + tolerance);
  cv::Mat hits;
  cv::inRange(region, lo, hi, hits);
  return cv::countNonZero(hits);
}

double Luma(const cv::Scalar& bgr) { return 0.299 * bgr[2] + 0.587 * bgr[1] + 0.114 * bgr[0]; }

TEST(ClassColorTest, IsStableForTheSameId) {
  for (int id = -50; id <= 100; ++id) EXPECT_EQ(ClassColor(id), ClassColor(id)) << id;
}

TEST(ClassColorTest, DiffersBetweenNeighbouringClasses) {
  for (int id = -50; id <= 100; ++id) EXPECT_NE(ClassColor(id), ClassColor(id + 1)) << id;
}

TEST(ClassColorTest, HandlesNegativeAndExtremeIds) {
  for (int id :
       {-1, -19, -20, -21, std::numeric_limits<int>::min(), std::numeric_limits<int>::max()}) {
    const cv::Scalar c = ClassColor(id);
    for (int ch = 0; ch < 3; ++ch) {
      EXPECT_GE(c[ch], 0) << id;
      EXPECT_LE(c[ch], 255) << id;
    }
  }
}

TEST(TrackColorTest, IsStableAndDiffersBetweenConsecutiveTracks) {
  for (std::int64_t id = 1; id <= 200; ++id) {
    EXPECT_EQ(TrackColor(id), TrackColor(id)) << id;
    EXPECT_NE(TrackColor(id), TrackColor(id + 1)) << id;
  }
  for (std::int64_t id :
       {std::int64_t{0}, std::int64_t{-1}, std::numeric_limits<std::int64_t>::max(),
        std::numeric_limits<std::int64_t>::min()}) {
    const cv::Scalar c = TrackColor(id);
    for (int ch = 0; ch < 3; ++ch) {
      EXPECT_GE(c[ch], 0) << id;
      EXPECT_LE(c[ch], 255) << id;
    }
  }
}

TEST(CaptionTextTest, ShowsTheTrackIdBeforeLabelAndScore) {
  Detection d = MakeDetection(2, {0, 0, 10, 10}, "car", 0.873f);
  EXPECT_EQ(CaptionText(d), "car 0.87");
  d.track_id = 12;
  EXPECT_EQ(CaptionText(d), "#12 car 0.87");
  d.label.clear();
  EXPECT_EQ(CaptionText(d), "#12 class 2 0.87");
}

TEST(AnnotateTest, TrackedDetectionIsDrawnInItsTrackColour) {
  // Two objects of the same class: untracked they share the class colour; tracked, each is
  // drawn in its own track's colour, box and caption tab alike.
  Detection a = MakeDetection(3, {100, 150, 200, 200}, "car");
  Detection b = MakeDetection(3, {350, 150, 200, 200}, "car");
  a.track_id = 4;
  b.track_id = 5;
  ASSERT_NE(TrackColor(4), TrackColor(5));
  ASSERT_NE(TrackColor(4), ClassColor(3));
  EXPECT_EQ(DetectionColor(a), TrackColor(4));
  EXPECT_EQ(DetectionColor(MakeDetection(3, {0, 0, 1, 1})), ClassColor(3));
  cv::Mat image(480, 640, CV_8UC3, cv::Scalar::all(128));
  const std::vector<Detection> dets = {a, b};
  Annotate(image, dets);
  EXPECT_EQ(image.at<cv::Vec3b>(250, 100), ToVec(TrackColor(4)));  // a's left edge
  EXPECT_EQ(image.at<cv::Vec3b>(250, 350), ToVec(TrackColor(5)));  // b's left edge
  EXPECT_GT(CountColour(image(cv::Rect(100, 135, 40, 14)), TrackColor(4)), 40 * 14 / 3);
  EXPECT_EQ(CountColour(image, ClassColor(3)), 0) << "the class colour is not used";
}

TEST(AnnotateTest, TrackIdWidensTheCaption) {
  // The caption "#123 car 0.87" is longer than "car 0.87": its tab reaches further right.
  Detection d = MakeDetection(3, {100, 150, 400, 250}, "car");
  cv::Mat plain(480, 640, CV_8UC3, cv::Scalar::all(128));
  Annotate(plain, std::span(&d, 1));
  d.track_id = 123;
  cv::Mat tracked(480, 640, CV_8UC3, cv::Scalar::all(128));
  Annotate(tracked, std::span(&d, 1));
  auto tab_width = [](const cv::Mat& image, const cv::Scalar& colour) {
    // Count tab-coloured pixels along a row through the middle of the tab.
    return CountColour(image(cv::Rect(0, 140, image.cols, 1)), colour);
  };
  EXPECT_GT(tab_width(tracked, TrackColor(123)), tab_width(plain, ClassColor(3)) + 10);
}

TEST(AnnotateTest, DrawsBoxBorderInClassColourAndLeavesInteriorUnchanged) {
  cv::Mat image(480, 640, CV_8UC3, cv::Scalar::all(128));
  const Detection d = MakeDetection(3, {100, 150, 400, 250});
  Annotate(image, std::span(&d, 1));

  const cv::Vec3b colour = ToVec(ClassColor(3));
  EXPECT_EQ(image.at<cv::Vec3b>(300, 100), colour);  // left edge
  EXPECT_EQ(image.at<cv::Vec3b>(300, 500), colour);  // right edge
  EXPECT_EQ(image.at<cv::Vec3b>(400, 300), colour);  // bottom edge
  EXPECT_EQ(image.at<cv::Vec3b>(150, 300), colour);  // top edge, right of the caption
  // Deep inside the box, away from border and caption, and far outside it: untouched.
  EXPECT_EQ(image.at<cv::Vec3b>(300, 300), kGrey);
  EXPECT_EQ(image.at<cv::Vec3b>(200, 450), kGrey);
  EXPECT_EQ(image.at<cv::Vec3b>(20, 600), kGrey);
  EXPECT_EQ(image.at<cv::Vec3b>(470, 20), kGrey);
}

TEST(AnnotateTest, PutsCaptionAboveTheBoxWhenThereIsRoom) {
  cv::Mat image(480, 640, CV_8UC3, cv::Scalar::all(128));
  const Detection d = MakeDetection(3, {100, 150, 400, 250}, "car");
  Annotate(image, std::span(&d, 1));

  // The caption tab sits on the box's top edge, at its left corner.
  const cv::Scalar colour = ClassColor(3);
  EXPECT_GT(CountColour(image(cv::Rect(100, 135, 40, 14)), colour), 40 * 14 / 3);
  EXPECT_EQ(CountColour(image(cv::Rect(105, 155, 40, 20)), colour), 0);
  EXPECT_EQ(CountColour(image(cv::Rect(100, 100, 40, 20)), colour), 0);
}

TEST(AnnotateTest, PutsCaptionInsideTheBoxWhenThereIsNoRoomAbove) {
  cv::Mat image(480, 640, CV_8UC3, cv::Scalar::all(128));
  const Detection d = MakeDetection(3, {100, 2, 400, 250}, "car");
  Annotate(image, std::span(&d, 1));

  const cv::Scalar colour = ClassColor(3);
  EXPECT_GT(CountColour(image(cv::Rect(100, 4, 40, 10)), colour), 40 * 10 / 3);
  EXPECT_EQ(CountColour(image(cv::Rect(105, 30, 40, 20)), colour), 0);
}

TEST(AnnotateTest, OmitsCaptionWhenLabelsAreOff) {
  cv::Mat image(480, 640, CV_8UC3, cv::Scalar::all(128));
  const Detection d = MakeDetection(3, {100, 150, 400, 250});
  AnnotateOptions options;
  options.draw_labels = false;
  Annotate(image, std::span(&d, 1), options);

  EXPECT_EQ(image.at<cv::Vec3b>(140, 110), kGrey);
  EXPECT_EQ(image.at<cv::Vec3b>(300, 100), ToVec(ClassColor(3)));
}

// Captions use black text on light class colours and white text on dark ones.
TEST(AnnotateTest, CaptionTextContrastsWithItsBackground) {
  int light = -1;
  int dark = -1;
  for (int id = 0; id < 100 && (light < 0 || dark < 0); ++id) {
    if (Luma(ClassColor(id)) > 170 && light < 0) light = id;
    if (Luma(ClassColor(id)) < 110 && dark < 0) dark = id;
  }
  ASSERT_GE(light, 0);
  ASSERT_GE(dark, 0);

  for (auto [id, ink] :
       {std::pair{light, cv::Vec3b(0, 0, 0)}, std::pair{dark, cv::Vec3b(255, 255, 255)}}) {
    cv::Mat image(480, 640, CV_8UC3, cv::Scalar::all(128));
    const Detection d = MakeDetection(id, {100, 150, 400, 250}, "WWWWWW");
    Annotate(image, std::span(&d, 1));
    EXPECT_GT(CountNear(image(cv::Rect(100, 110, 150, 40)), ink, 40), 20) << "class " << id;
  }
}

TEST(AnnotateTest, BlendsMaskPixelsAndLeavesOthersUnchanged) {
  const cv::Vec3b original(20, 200, 60);
  cv::Mat image(200, 200, CV_8UC3, cv::Scalar(original[0], original[1], original[2]));
  Detection d = MakeDetection(7, {50, 50, 100, 100});
  // Set only the central 60x60 square of the 100x100 mask rectangle.
  d.mask = MakeMask(50, 50, 100, 100,
                    [](int c, int r) { return c >= 20 && c < 80 && r >= 20 && r < 80; });
  AnnotateOptions options;
  options.draw_labels = false;
  Annotate(image, std::span(&d, 1), options);

  const cv::Vec3b colour = ToVec(ClassColor(7));
  const cv::Vec3b blended = image.at<cv::Vec3b>(100, 100);
  for (int ch = 0; ch < 3; ++ch) {
    const int lo = std::min(original[ch], colour[ch]);
    const int hi = std::max(original[ch], colour[ch]);
    EXPECT_GE(blended[ch], lo) << ch;
    EXPECT_LE(blended[ch], hi) << ch;
    const double expected =
        original[ch] * (1 - options.mask_alpha) + colour[ch] * options.mask_alpha;
    EXPECT_NEAR(blended[ch], expected, 1.5) << ch;
  }
  EXPECT_NE(blended, original);
  // Unset pixels inside the mask rectangle, and pixels outside it, keep their value.
  EXPECT_EQ(image.at<cv::Vec3b>(100, 58), original);
  EXPECT_EQ(image.at<cv::Vec3b>(58, 100), original);
  EXPECT_EQ(image.at<cv::Vec3b>(10, 10), original);
  EXPECT_EQ(image.at<cv::Vec3b>(190, 190), original);
}

TEST(AnnotateTest, MaskAlphaOnePaintsTheClassColour) {
  cv::Mat image(200, 200, CV_8UC3, cv::Scalar::all(128));
  Detection d = MakeDetection(2, {0, 0, 0, 0});  // no box: only the mask is drawn
  d.mask = FullMask(40, 40, 120, 120);
  AnnotateOptions options;
  options.mask_alpha = 1.0f;
  Annotate(image, std::span(&d, 1), options);

  EXPECT_EQ(image.at<cv::Vec3b>(100, 100), ToVec(ClassColor(2)));
  EXPECT_EQ(image.at<cv::Vec3b>(20, 20), kGrey);
}

TEST(AnnotateTest, ClipsMaskToTheImage) {
  cv::Mat image(64, 64, CV_8UC3, cv::Scalar::all(128));
  Detection d = MakeDetection(1, {-50, -50, 100, 100});
  d.mask = FullMask(-50, -50, 100, 100);
  AnnotateOptions options;
  options.draw_labels = false;
  Annotate(image, std::span(&d, 1), options);

  EXPECT_NE(image.at<cv::Vec3b>(10, 10), kGrey);  // inside mask and image
  EXPECT_EQ(image.at<cv::Vec3b>(60, 60), kGrey);  // outside the mask
}

TEST(AnnotateTest, DrawsIntoARegionOfALargerImageOnly) {
  cv::Mat full(300, 300, CV_8UC3, cv::Scalar::all(128));
  const cv::Mat before = full.clone();
  cv::Mat region = full(cv::Rect(100, 100, 100, 100));  // a view, not a copy
  Detection d = MakeDetection(4, {-20, -20, 200, 200});
  d.mask = FullMask(-30, -30, 200, 200);
  Annotate(region, std::span(&d, 1));

  const cv::Rect inside(100, 100, 100, 100);
  EXPECT_GT(ChangedPixels(full(inside), before(inside)), 0);
  cv::Mat outside_mask(full.size(), CV_8UC1, cv::Scalar(255));
  outside_mask(inside).setTo(0);
  cv::Mat diff;
  cv::absdiff(full, before, diff);
  EXPECT_EQ(cv::norm(diff, cv::NORM_INF, outside_mask), 0);
}

TEST(AnnotateTest, IgnoresDegenerateAndOffImageBoxes) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<Detection> detections = {
      MakeDetection(0, {100, 100, 0, 0}),        // zero size
      MakeDetection(1, {100, 100, 0, 50}),       // zero width
      MakeDetection(2, {100, 100, -40, -40}),    // negative size
      MakeDetection(3, {1000, 1000, 50, 50}),    // right of and below the image
      MakeDetection(4, {-500, -500, 100, 100}),  // left of and above the image
      MakeDetection(5, {nan, 10, 20, 20}),       // not a number
      MakeDetection(6, {10, 10, inf, 20}),       // infinitely wide
      MakeDetection(7, {-inf, 10, inf, 20}),     // inf - inf
  };
  cv::Mat image(240, 320, CV_8UC3, cv::Scalar::all(128));
  const cv::Mat original = image.clone();
  Annotate(image, detections);
  EXPECT_TRUE(SameImage(image, original));
}

TEST(AnnotateTest, ClipsBoxesPartlyOutsideTheImage) {
  const std::vector<Detection> detections = {
      MakeDetection(0, {-100, -100, 200, 200}),
      MakeDetection(1, {250, 200, 500, 500}),
      MakeDetection(2, {-1e30f, -1e30f, 2e30f, 2e30f}),  // covers everything
      MakeDetection(3, {300, 10, 1e9f, 30}, "a rather long label that does not fit"),
  };
  cv::Mat image(240, 320, CV_8UC3, cv::Scalar::all(128));
  const cv::Mat original = image.clone();
  Annotate(image, detections);
  EXPECT_GT(ChangedPixels(image, original), 0);
  EXPECT_EQ(image.at<cv::Vec3b>(60, 100), ToVec(ClassColor(0)));  // right edge, inside the image
}

TEST(AnnotateTest, SkipsEmptyMalformedAndOffImageMasks) {
  std::vector<Detection> detections(7, MakeDetection(0, {0, 0, 0, 0}));
  detections[0].mask = Mask{};                           // empty
  detections[1].mask = Mask{10, 10, 0, 5, {}};           // zero width
  detections[2].mask = Mask{10, 10, -5, -5, {}};         // negative size
  detections[3].mask = Mask{10, 10, 20, 20, {1, 1, 1}};  // fewer bytes than width*height
  detections[4].mask = FullMask(500, 500, 20, 20);       // below and right of the image
  detections[5].mask = FullMask(-100, -100, 20, 20);     // above and left of the image
  detections[6].mask = FullMask(std::numeric_limits<int>::max() - 5, 10, 20, 20);  // overflow
  cv::Mat image(240, 320, CV_8UC3, cv::Scalar::all(128));
  const cv::Mat original = image.clone();
  Annotate(image, detections);
  EXPECT_TRUE(SameImage(image, original));
}

TEST(AnnotateTest, IgnoresEmptyInputsAndUnsupportedImageTypes) {
  const Detection d = MakeDetection(0, {1, 1, 10, 10});
  cv::Mat empty;
  Annotate(empty, std::span(&d, 1));
  EXPECT_TRUE(empty.empty());

  cv::Mat grey(32, 32, CV_8UC1, cv::Scalar(7));
  Annotate(grey, std::span(&d, 1));
  EXPECT_EQ(cv::countNonZero(grey != 7), 0);

  cv::Mat image(32, 32, CV_8UC3, cv::Scalar::all(128));
  const cv::Mat original = image.clone();
  Annotate(image, {});
  EXPECT_TRUE(SameImage(image, original));
}

TEST(AnnotateTest, HandlesOddScoresLabelsAndAlpha) {
  std::vector<Detection> detections = {
      MakeDetection(-7, {10, 10, 50, 50}, ""),
      MakeDetection(1, {20, 20, 50, 50}, "x", std::numeric_limits<float>::quiet_NaN()),
      MakeDetection(2, {30, 30, 50, 50}, std::string(300, 'w'), -1e30f),
  };
  detections[0].mask = FullMask(10, 10, 50, 50);
  AnnotateOptions options;
  options.mask_alpha = std::numeric_limits<float>::quiet_NaN();
  cv::Mat image(120, 160, CV_8UC3, cv::Scalar::all(128));
  Annotate(image, detections, options);
  options.mask_alpha = 7.f;
  Annotate(image, detections, options);
  options.mask_alpha = -1.f;
  Annotate(image, detections, options);
}

TEST(AnnotateTest, WorksOnATinyImage) {
  cv::Mat image(16, 16, CV_8UC3, cv::Scalar::all(128));
  const cv::Mat original = image.clone();
  Detection d = MakeDetection(0, {2, 2, 10, 10});
  d.mask = FullMask(3, 3, 8, 8);
  Annotate(image, std::span(&d, 1));
  EXPECT_GT(ChangedPixels(image, original), 0);
  EXPECT_EQ(image.at<cv::Vec3b>(12, 7), ToVec(ClassColor(0)));  // bottom edge
}

// Line width grows with the image: a few pixels inside a box edge are still the border at 4K
// but already interior at VGA.
TEST(AnnotateTest, ScalesLineWidthWithImageSize) {
  const Detection d = MakeDetection(5, {1000, 800, 1600, 1000});
  cv::Mat uhd(2160, 3840, CV_8UC3, cv::Scalar::all(128));
  Annotate(uhd, std::span(&d, 1));
  EXPECT_EQ(uhd.at<cv::Vec3b>(1300, 1000), ToVec(ClassColor(5)));
  EXPECT_EQ(uhd.at<cv::Vec3b>(1300, 1003), ToVec(ClassColor(5)));
  EXPECT_EQ(uhd.at<cv::Vec3b>(1300, 1800), kGrey);

  const Detection small = MakeDetection(5, {100, 80, 400, 300});
  cv::Mat vga(480, 640, CV_8UC3, cv::Scalar::all(128));
  Annotate(vga, std::span(&small, 1));
  EXPECT_EQ(vga.at<cv::Vec3b>(200, 100), ToVec(ClassColor(5)));
  EXPECT_EQ(vga.at<cv::Vec3b>(200, 103), kGrey);
}

TEST(AnnotateTest, WorksOnA4kImageWithManyDetectionsAndMasks) {
  cv::Mat image(2160, 3840, CV_8UC3, cv::Scalar::all(128));
  const cv::Mat original = image.clone();
  std::vector<Detection> detections;
  for (int i = 0; i < 20; ++i) {
    Detection d =
        MakeDetection(i, {static_cast<float>(i * 190), static_cast<float>(i * 100), 400, 300});
    if (i % 4 == 0) {
      d.mask = MakeMask(i * 190, i * 100, 400, 300,
                        [](int c, int r) { return (c / 40 + r / 40) % 2 == 0; });
    }
    detections.push_back(std::move(d));
  }
  Annotate(image, detections);
  EXPECT_GT(ChangedPixels(image, original), 0);
  EXPECT_EQ(image.at<cv::Vec3b>(2100, 100), kGrey);
}

}  // namespace
}  // namespace kadr::imaging
