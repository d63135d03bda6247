#include <gtest/gtest.h>

#include "protocol/result.h"

namespace kadr::protocol {
namespace {

TEST(IouTest, IdenticalBoxesGiveOne) {
  const Box a{10, 20, 30, 40};
  EXPECT_FLOAT_EQ(Iou(a, a), 1.f);
}

TEST(IouTest, DisjointBoxesGiveZero) {
  EXPECT_FLOAT_EQ(Iou({0, 0, 10, 10}, {20, 20, 10, 10}), 0.f);
}

TEST(IouTest, BoxesThatOnlyTouchGiveZero) {
  EXPECT_FLOAT_EQ(Iou({0, 0, 10, 10}, {10, 0, 10, 10}), 0.f);
}

TEST(IouTest, BoxCoveringHalfOfTheOtherGivesOneHalf) {
  // Intersection 50, union 100.
  EXPECT_FLOAT_EQ(Iou({0, 0, 10, 10}, {0, 0, 10, 5}), 0.5f);
}

TEST(IouTest, BoxesShiftedByHalfTheirWidthGiveOneThird) {
  // Intersection 50, union 150.
  EXPECT_FLOAT_EQ(Iou({0, 0, 10, 10}, {5, 0, 10, 10}), 1.f / 3.f);
}

TEST(IouTest, IsSymmetric) {
  const Box a{1, 2, 30, 17};
  const Box b{12, 5, 9, 40};
  EXPECT_FLOAT_EQ(Iou(a, b), Iou(b, a));
}

TEST(IouTest, EmptyBoxesGiveZeroNotNan) {
  EXPECT_FLOAT_EQ(Iou({0, 0, 0, 0}, {0, 0, 0, 0}), 0.f);
  EXPECT_FLOAT_EQ(Iou({5, 5, 0, 10}, {0, 0, 10, 10}), 0.f);
  EXPECT_FLOAT_EQ(Iou({5, 5, -4, -4}, {0, 0, 10, 10}), 0.f);
}

TEST(BoxTest, AreaIsZeroForEmptyOrNegativeSizes) {
  EXPECT_FLOAT_EQ((Box{0, 0, 4, 5}).area(), 20.f);
  EXPECT_FLOAT_EQ((Box{0, 0, 0, 5}).area(), 0.f);
  EXPECT_FLOAT_EQ((Box{0, 0, -4, -5}).area(), 0.f);
}

// 3x2 mask at (10, 20):  row 0 = 1 0 1, row 1 = 0 1 1.
Mask SmallMask() { return Mask{10, 20, 3, 2, {1, 0, 1, 0, 1, 1}}; }

TEST(MaskTest, AreaCountsSetPixels) {
  EXPECT_EQ(SmallMask().Area(), 4);
  EXPECT_EQ(Mask{}.Area(), 0);
  EXPECT_EQ((Mask{0, 0, 2, 2, {0, 0, 0, 0}}).Area(), 0);
  EXPECT_EQ((Mask{0, 0, 2, 2, {1, 1, 1, 1}}).Area(), 4);
}

TEST(MaskTest, AtTakesImageCoordinates) {
  const Mask m = SmallMask();
  EXPECT_TRUE(m.At(10, 20));
  EXPECT_FALSE(m.At(11, 20));
  EXPECT_TRUE(m.At(12, 20));
  EXPECT_FALSE(m.At(10, 21));
  EXPECT_TRUE(m.At(11, 21));
  EXPECT_TRUE(m.At(12, 21));
}

TEST(MaskTest, AtIsFalseOutsideTheRectangle) {
  const Mask m = SmallMask();
  EXPECT_FALSE(m.At(9, 20));
  EXPECT_FALSE(m.At(13, 20));
  EXPECT_FALSE(m.At(10, 19));
  EXPECT_FALSE(m.At(10, 22));
  EXPECT_FALSE(m.At(0, 0));
  EXPECT_FALSE(m.At(-5, -5));
  EXPECT_FALSE(Mask{}.At(0, 0));
}

}  // namespace
}  // namespace kadr::protocol
