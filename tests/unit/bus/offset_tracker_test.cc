#include "bus/offset_tracker.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <numeric>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace kadr::bus {
namespace {

constexpr char kTopic[] = "kadr.frames.m";

void TrackRange(OffsetTracker& t, const std::string& topic, int partition, std::int64_t from,
                std::int64_t to) {
  for (std::int64_t o = from; o < to; ++o) t.Track(topic, partition, o);
}

TEST(OffsetTrackerTest, InOrderAcksAdvanceOnePastEachOffset) {
  OffsetTracker t;
  TrackRange(t, kTopic, 0, 0, 3);
  EXPECT_EQ(t.Ack(kTopic, 0, 0), 1);
  EXPECT_EQ(t.Ack(kTopic, 0, 1), 2);
  EXPECT_EQ(t.Ack(kTopic, 0, 2), 3);
  EXPECT_EQ(t.InFlight(), 0u);
}

TEST(OffsetTrackerTest, StartsFromTheFirstTrackedOffset) {
  OffsetTracker t;
  TrackRange(t, kTopic, 0, 100, 102);
  EXPECT_EQ(t.Ack(kTopic, 0, 100), 101);
  EXPECT_EQ(t.Ack(kTopic, 0, 101), 102);
}

TEST(OffsetTrackerTest, OutOfOrderAcksHoldTheCommitPointAtTheLowestInFlightOffset) {
  OffsetTracker t;
  TrackRange(t, kTopic, 0, 0, 5);
  // Offset 0 is still in flight: whatever is reported must not pass it.
  for (std::int64_t o : {3, 1, 4}) {
    const auto c = t.Ack(kTopic, 0, o);
    EXPECT_LE(c.value_or(0), 0) << "committed past in-flight offset 0 after acking " << o;
  }
  EXPECT_EQ(t.InFlight(), 2u);
  // Filling the first gap jumps to the next hole (2), not to the end.
  EXPECT_EQ(t.Ack(kTopic, 0, 0), 2);
  // Filling the last gap jumps past everything acknowledged so far.
  EXPECT_EQ(t.Ack(kTopic, 0, 2), 5);
  EXPECT_EQ(t.InFlight(), 0u);
}

TEST(OffsetTrackerTest, ReversedAcksCommitOnlyWhenTheFirstOffsetIsDone) {
  OffsetTracker t;
  TrackRange(t, kTopic, 0, 10, 20);
  for (std::int64_t o = 19; o > 10; --o) EXPECT_LE(t.Ack(kTopic, 0, o).value_or(10), 10);
  EXPECT_EQ(t.Ack(kTopic, 0, 10), 20);
}

TEST(OffsetTrackerTest, TrackingMoreAfterAllAckedContinuesFromThere) {
  OffsetTracker t;
  TrackRange(t, kTopic, 0, 0, 2);
  EXPECT_EQ(t.Ack(kTopic, 0, 1).value_or(0), 0);
  EXPECT_EQ(t.Ack(kTopic, 0, 0), 2);
  TrackRange(t, kTopic, 0, 2, 4);
  EXPECT_EQ(t.Ack(kTopic, 0, 3), std::nullopt) << "offset 2 is in flight; 2 was already reported";
  EXPECT_EQ(t.Ack(kTopic, 0, 2), 4);
}

TEST(OffsetTrackerTest, PartitionsAreIndependent) {
  OffsetTracker t;
  TrackRange(t, kTopic, 0, 0, 3);
  TrackRange(t, kTopic, 1, 50, 53);
  EXPECT_EQ(t.Ack(kTopic, 1, 50), 51);
  EXPECT_EQ(t.Ack(kTopic, 1, 51), 52);
  // Partition 0 has not moved: its first ack still reports its own position.
  EXPECT_EQ(t.Ack(kTopic, 0, 0), 1);
  EXPECT_EQ(t.Ack(kTopic, 1, 52), 53);
  EXPECT_EQ(t.InFlight(), 2u);
  // An offset known only to partition 1 means nothing on partition 0.
  EXPECT_EQ(t.Ack(kTopic, 0, 50), std::nullopt);
  EXPECT_EQ(t.InFlight(), 2u);
}

TEST(OffsetTrackerTest, TopicsAreIndependent) {
  OffsetTracker t;
  TrackRange(t, "a", 0, 0, 2);
  TrackRange(t, "b", 0, 0, 2);
  EXPECT_EQ(t.Ack("a", 0, 0), 1);
  EXPECT_EQ(t.Ack("a", 0, 1), 2);
  EXPECT_EQ(t.InFlight(), 2u);
  EXPECT_EQ(t.Ack("b", 0, 0), 1) << "topic b must not see topic a's progress";
  EXPECT_EQ(t.Ack("b", 0, 1), 2);
  EXPECT_EQ(t.InFlight(), 0u);
}

TEST(OffsetTrackerTest, DuplicateAcksAreIgnored) {
  OffsetTracker t;
  TrackRange(t, kTopic, 0, 0, 3);
  EXPECT_EQ(t.Ack(kTopic, 0, 0), 1);
  EXPECT_EQ(t.Ack(kTopic, 0, 0), std::nullopt);
  EXPECT_EQ(t.InFlight(), 2u);
  EXPECT_LE(t.Ack(kTopic, 0, 2).value_or(1), 1);
  EXPECT_EQ(t.Ack(kTopic, 0, 2), std::nullopt);
  EXPECT_EQ(t.InFlight(), 1u);
  EXPECT_EQ(t.Ack(kTopic, 0, 1), 3);
}

TEST(OffsetTrackerTest, UnknownAcksAreIgnored) {
  OffsetTracker t;
  EXPECT_EQ(t.Ack(kTopic, 0, 0), std::nullopt) << "untracked partition";
  TrackRange(t, kTopic, 0, 5, 7);
  EXPECT_EQ(t.Ack(kTopic, 0, 4), std::nullopt) << "below the tracked range";
  EXPECT_EQ(t.Ack(kTopic, 0, 9), std::nullopt) << "above the tracked range";
  EXPECT_EQ(t.Ack("other", 0, 5), std::nullopt) << "another topic";
  EXPECT_EQ(t.Ack(kTopic, 3, 5), std::nullopt) << "another partition";
  EXPECT_EQ(t.InFlight(), 2u);
  EXPECT_EQ(t.Ack(kTopic, 0, 5), 6);
}

TEST(OffsetTrackerTest, ForgetDropsLaterAcksForThatPartitionOnly) {
  OffsetTracker t;
  TrackRange(t, kTopic, 0, 0, 3);
  TrackRange(t, kTopic, 1, 0, 3);
  t.Forget(kTopic, 0);
  EXPECT_EQ(t.InFlight(), 3u);
  EXPECT_EQ(t.Ack(kTopic, 0, 0), std::nullopt);
  EXPECT_EQ(t.Ack(kTopic, 0, 1), std::nullopt);
  EXPECT_EQ(t.InFlight(), 3u);
  EXPECT_EQ(t.Ack(kTopic, 1, 0), 1);
  t.Forget(kTopic, 7);  // never tracked: harmless
  EXPECT_EQ(t.InFlight(), 2u);
}

TEST(OffsetTrackerTest, PartitionTrackedAgainAfterForgetStartsFresh) {
  OffsetTracker t;
  TrackRange(t, kTopic, 0, 0, 10);
  EXPECT_EQ(t.Ack(kTopic, 0, 0), 1);
  t.Forget(kTopic, 0);
  // Reassigned later, consumption resumes from the committed offset 1.
  TrackRange(t, kTopic, 0, 1, 3);
  EXPECT_EQ(t.InFlight(), 2u);
  EXPECT_EQ(t.Ack(kTopic, 0, 1), 2);
  EXPECT_EQ(t.Ack(kTopic, 0, 2), 3);
}

TEST(OffsetTrackerTest, InFlightCountsTrackedNotAckedAcrossPartitions) {
  OffsetTracker t;
  EXPECT_EQ(t.InFlight(), 0u);
  TrackRange(t, kTopic, 0, 0, 4);
  TrackRange(t, kTopic, 1, 0, 2);
  TrackRange(t, "other", 0, 0, 3);
  EXPECT_EQ(t.InFlight(), 9u);
  t.Track(kTopic, 0, 2);  // the same offset twice is one message
  EXPECT_EQ(t.InFlight(), 9u);
  (void)t.Ack(kTopic, 0, 3);
  (void)t.Ack("other", 0, 0);
  EXPECT_EQ(t.InFlight(), 7u);
}

// Each thread owns one partition, tracks in order and acks a little behind, out of order,
// while the others do the same: every partition ends fully committed.
TEST(OffsetTrackerTest, ConcurrentTrackAndAckOnManyPartitionsStaysConsistent) {
  OffsetTracker t;
  constexpr int kThreads = 8;
  constexpr std::int64_t kPerThread = 2000;
  std::vector<std::int64_t> last(kThreads, -1);
  std::vector<int> regressions(kThreads, 0);
  {
    std::vector<std::jthread> threads;
    for (int p = 0; p < kThreads; ++p) {
      threads.emplace_back([&, p] {
        std::mt19937 rng(static_cast<unsigned>(p));
        std::vector<std::int64_t> window;
        auto ack_one = [&](std::size_t i) {
          const auto c = t.Ack(kTopic, p, window[i]);
          window.erase(window.begin() + static_cast<std::ptrdiff_t>(i));
          if (!c) return;
          if (*c <= last[p]) ++regressions[p];
          last[p] = *c;
        };
        for (std::int64_t o = 0; o < kPerThread; ++o) {
          t.Track(kTopic, p, o);
          window.push_back(o);
          if (window.size() > 8) ack_one(rng() % window.size());
        }
        while (!window.empty()) ack_one(rng() % window.size());
      });
    }
  }
  EXPECT_EQ(t.InFlight(), 0u);
  for (int p = 0; p < kThreads; ++p) {
    EXPECT_EQ(last[p], kPerThread) << "partition " << p;
    EXPECT_EQ(regressions[p], 0) << "partition " << p;
  }
}

// Several threads ack disjoint shares of one partition's offsets at once: the commit point
// reaches the end exactly once and never moves backwards.
TEST(OffsetTrackerTest, ConcurrentAcksOnOnePartitionReachTheEnd) {
  OffsetTracker t;
  constexpr int kThreads = 6;
  constexpr std::int64_t kTotal = 6000;
  TrackRange(t, kTopic, 0, 0, kTotal);
  std::vector<std::int64_t> order(kTotal);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(42));

  std::atomic<int> reached_end{0};
  std::atomic<std::int64_t> highest{-1};
  {
    std::vector<std::jthread> threads;
    for (int k = 0; k < kThreads; ++k) {
      threads.emplace_back([&, k] {
        for (std::size_t i = static_cast<std::size_t>(k); i < order.size(); i += kThreads) {
          const auto c = t.Ack(kTopic, 0, order[i]);
          if (!c) continue;
          if (*c == kTotal) ++reached_end;
          std::int64_t h = highest.load();
          while (h < *c && !highest.compare_exchange_weak(h, *c)) {
          }
        }
      });
    }
    // Acks of a partition tracked by nobody, concurrently: ignored, no interference.
    threads.emplace_back([&] {
      for (std::int64_t o = 0; o < 1000; ++o) EXPECT_EQ(t.Ack("other", 0, o), std::nullopt);
    });
  }
  EXPECT_EQ(reached_end.load(), 1);
  EXPECT_EQ(highest.load(), kTotal);
  EXPECT_EQ(t.InFlight(), 0u);
}

}  // namespace
}  // namespace kadr::bus
