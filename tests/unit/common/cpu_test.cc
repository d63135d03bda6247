#include "common/cpu.h"

#include <optional>
#include <thread>

#include <gtest/gtest.h>

namespace kadr::cpu {
namespace {

TEST(CpuTest, CpuMaxRoundsTheQuotaUpToWholeCores) {
  EXPECT_EQ(CoresFromCpuMax("200000 100000"), 2);
  EXPECT_EQ(CoresFromCpuMax("150000 100000\n"), 2);
  EXPECT_EQ(CoresFromCpuMax("50000 100000"), 1);
  EXPECT_EQ(CoresFromCpuMax("100000 100000"), 1);
  EXPECT_EQ(CoresFromCpuMax("6400000 100000"), 64);
}

TEST(CpuTest, CpuMaxWithoutALimitOrUnreadableIsNoLimit) {
  EXPECT_EQ(CoresFromCpuMax("max 100000"), std::nullopt);
  EXPECT_EQ(CoresFromCpuMax(""), std::nullopt);
  EXPECT_EQ(CoresFromCpuMax("200000"), std::nullopt);
  EXPECT_EQ(CoresFromCpuMax("-1 100000"), std::nullopt);
  EXPECT_EQ(CoresFromCpuMax("200000 0"), std::nullopt);
  EXPECT_EQ(CoresFromCpuMax("2e5 100000"), std::nullopt);
  EXPECT_EQ(CoresFromCpuMax("200000 100000 7"), std::nullopt);
}

TEST(CpuTest, UsableCoresIsAtLeastOneAndNoMoreThanTheMachineHas) {
  const int cores = UsableCores();
  EXPECT_GE(cores, 1);
  const unsigned machine = std::thread::hardware_concurrency();
  if (machine > 0) {
    EXPECT_LE(cores, static_cast<int>(machine));
  }
}

}  // namespace
}  // namespace kadr::cpu
