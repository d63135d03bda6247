#include "tracking/tracker.h"

#include <limits>
#include <set>

#include <gtest/gtest.h>

namespace kadr::tracking {
namespace {

using protocol::Box;
using protocol::Detection;

Detection Det(float x, float y, float score = 0.9f, int class_id = 0, float size = 20.f) {
  Detection d;
  d.class_id = class_id;
  d.label = "c" + std::to_string(class_id);
  d.score = score;
  d.box = Box{x, y, size, size};
  return d;
}

std::vector<Detection> Frame(std::vector<Detection> d) { return d; }

TEST(TrackerTest, NewHighScoreDetectionsGetDistinctIdsStartingAtOne) {
  Tracker tracker;
  auto frame = Frame({Det(0, 0), Det(100, 100), Det(200, 0)});
  tracker.Update(frame);
  ASSERT_TRUE(frame[0].track_id && frame[1].track_id && frame[2].track_id);
  EXPECT_EQ(*frame[0].track_id, 1);
  EXPECT_EQ(*frame[1].track_id, 2);
  EXPECT_EQ(*frame[2].track_id, 3);
  EXPECT_EQ(tracker.track_count(), 3u);
}

TEST(TrackerTest, ObjectsMovingSteadilyKeepTheirIds) {
  Tracker tracker;
  auto first = Frame({Det(0, 0), Det(300, 300)});
  tracker.Update(first);
  const auto a = *first[0].track_id;
  const auto b = *first[1].track_id;
  for (int i = 1; i <= 50; ++i) {
    // 4 px per frame on a 20 px box: IoU ~0.67 between consecutive frames. Order swapped on
    // purpose: association does not depend on detection order.
    auto frame = Frame({Det(300 - 4.f * i, 300), Det(4.f * i, 2.f * i)});
    tracker.Update(frame);
    ASSERT_TRUE(frame[0].track_id && frame[1].track_id) << "frame " << i;
    EXPECT_EQ(*frame[0].track_id, b) << "frame " << i;
    EXPECT_EQ(*frame[1].track_id, a) << "frame " << i;
  }
  EXPECT_EQ(tracker.track_count(), 2u);
}

TEST(TrackerTest, JumpBeyondMatchIouStartsANewTrack) {
  Tracker tracker;
  auto first = Frame({Det(0, 0)});
  tracker.Update(first);
  auto jumped = Frame({Det(15, 0)});  // IoU 5/35 ~ 0.14 < 0.3
  tracker.Update(jumped);
  ASSERT_TRUE(jumped[0].track_id);
  EXPECT_NE(*jumped[0].track_id, *first[0].track_id);
}

TEST(TrackerTest, TwoCrossingObjectsKeepTheirIds) {
  // A moves right along y=0, B moves left along y=10; they overlap in the middle frames.
  // Greedy highest-IoU matching keeps each on its own track as long as each detection overlaps
  // its own previous box more than the other's.
  Tracker tracker;
  std::int64_t id_a = 0;
  std::int64_t id_b = 0;
  for (int i = 0; i <= 20; ++i) {
    auto frame = Frame({Det(5.f * i, 0), Det(100 - 5.f * i, 10)});
    tracker.Update(frame);
    ASSERT_TRUE(frame[0].track_id && frame[1].track_id) << "frame " << i;
    if (i == 0) {
      id_a = *frame[0].track_id;
      id_b = *frame[1].track_id;
      ASSERT_NE(id_a, id_b);
    }
    EXPECT_EQ(*frame[0].track_id, id_a) << "frame " << i;
    EXPECT_EQ(*frame[1].track_id, id_b) << "frame " << i;
  }
}

TEST(TrackerTest, ObjectMissingForFewerThanMaxAgeFramesGetsItsIdBack) {
  TrackerOptions options;
  options.max_age = 5;
  Tracker tracker(options);
  auto first = Frame({Det(50, 50)});
  tracker.Update(first);
  const auto id = *first[0].track_id;
  for (int i = 0; i < 5; ++i) {  // exactly max_age frames without it
    auto empty = Frame({});
    tracker.Update(empty);
  }
  EXPECT_EQ(tracker.track_count(), 1u);
  auto back = Frame({Det(52, 50)});
  tracker.Update(back);
  ASSERT_TRUE(back[0].track_id);
  EXPECT_EQ(*back[0].track_id, id);
}

TEST(TrackerTest, ObjectMissingForMoreThanMaxAgeFramesGetsANewId) {
  TrackerOptions options;
  options.max_age = 5;
  Tracker tracker(options);
  auto first = Frame({Det(50, 50)});
  tracker.Update(first);
  const auto id = *first[0].track_id;
  for (int i = 0; i < 6; ++i) {
    auto empty = Frame({});
    tracker.Update(empty);
  }
  EXPECT_EQ(tracker.track_count(), 0u);
  auto back = Frame({Det(50, 50)});
  tracker.Update(back);
  ASSERT_TRUE(back[0].track_id);
  EXPECT_NE(*back[0].track_id, id);
  EXPECT_GT(*back[0].track_id, id) << "ids are never reused";
}

TEST(TrackerTest, LowScoreDetectionsExtendButDoNotStartTracks) {
  Tracker tracker;
  auto low_only = Frame({Det(0, 0, 0.3f)});
  tracker.Update(low_only);
  EXPECT_FALSE(low_only[0].track_id) << "a low-score detection must not start a track";
  EXPECT_EQ(tracker.track_count(), 0u);

  auto high = Frame({Det(100, 100, 0.9f)});
  tracker.Update(high);
  const auto id = *high[0].track_id;
  // The same object, now detected with low confidence (occlusion, blur): same track.
  for (int i = 1; i <= 3; ++i) {
    auto low = Frame({Det(100 + 2.f * i, 100, 0.2f)});
    tracker.Update(low);
    ASSERT_TRUE(low[0].track_id) << "frame " << i;
    EXPECT_EQ(*low[0].track_id, id);
  }
}

TEST(TrackerTest, HighScoreDetectionsAreMatchedBeforeLowScoreOnes) {
  Tracker tracker;
  auto first = Frame({Det(0, 0)});
  tracker.Update(first);
  const auto id = *first[0].track_id;
  // The low-score detection overlaps the track better, but the high-score one gets it.
  auto next = Frame({Det(1, 0, 0.2f), Det(4, 0, 0.8f)});
  tracker.Update(next);
  ASSERT_TRUE(next[1].track_id);
  EXPECT_EQ(*next[1].track_id, id);
  EXPECT_FALSE(next[0].track_id);
}

TEST(TrackerTest, LowScoreDetectionsDoNotReacquireLostTracks) {
  Tracker tracker;
  auto first = Frame({Det(0, 0)});
  tracker.Update(first);
  const auto id = *first[0].track_id;
  auto empty = Frame({});
  tracker.Update(empty);
  auto low = Frame({Det(0, 0, 0.2f)});
  tracker.Update(low);
  EXPECT_FALSE(low[0].track_id);
  auto high = Frame({Det(0, 0, 0.9f)});
  tracker.Update(high);
  ASSERT_TRUE(high[0].track_id);
  EXPECT_EQ(*high[0].track_id, id);
}

TEST(TrackerTest, DetectionsBelowLowScoreGetNoIdEvenOverALiveTrack) {
  Tracker tracker;
  auto first = Frame({Det(0, 0)});
  tracker.Update(first);
  auto faint = Frame({Det(0, 0, 0.05f)});
  faint[0].track_id = 99;  // a stale id in the input is cleared
  tracker.Update(faint);
  EXPECT_FALSE(faint[0].track_id);
}

TEST(TrackerTest, ClassesNeverMix) {
  Tracker tracker;
  auto first = Frame({Det(0, 0, 0.9f, /*class_id=*/1)});
  tracker.Update(first);
  const auto id = *first[0].track_id;
  // Same place, other class: a new track, and the class-1 track is lost, not stolen.
  auto other = Frame({Det(0, 0, 0.9f, /*class_id=*/2)});
  tracker.Update(other);
  ASSERT_TRUE(other[0].track_id);
  EXPECT_NE(*other[0].track_id, id);
  // A low-score detection of a third class at the same place gets nothing.
  auto third = Frame({Det(0, 0, 0.9f, 2), Det(0, 0, 0.3f, 3)});
  tracker.Update(third);
  EXPECT_EQ(*third[0].track_id, *other[0].track_id);
  EXPECT_FALSE(third[1].track_id);
  // The class-1 object comes back: its own id.
  auto back = Frame({Det(0, 0, 0.9f, 1), Det(0, 0, 0.9f, 2)});
  tracker.Update(back);
  EXPECT_EQ(*back[0].track_id, id);
  EXPECT_EQ(*back[1].track_id, *other[0].track_id);
}

TEST(TrackerTest, IdsAreNeverReused) {
  TrackerOptions options;
  options.max_age = 0;
  Tracker tracker(options);
  std::set<std::int64_t> seen;
  for (int i = 0; i < 20; ++i) {
    // Each frame's object is far from the previous one: always a new track.
    auto frame = Frame({Det(100.f * i, 0)});
    tracker.Update(frame);
    ASSERT_TRUE(frame[0].track_id);
    EXPECT_TRUE(seen.insert(*frame[0].track_id).second) << "id reused: " << *frame[0].track_id;
  }
  EXPECT_EQ(tracker.track_count(), 1u);
}

TEST(TrackerTest, SameInputGivesSameIds) {
  auto run = [] {
    Tracker tracker;
    std::vector<std::int64_t> ids;
    for (int i = 0; i < 10; ++i) {
      auto frame = Frame({Det(3.f * i, 0), Det(3.f * i + 5, 2), Det(200, 3.f * i, 0.3f)});
      tracker.Update(frame);
      for (const auto& d : frame) ids.push_back(d.track_id.value_or(0));
    }
    return ids;
  };
  EXPECT_EQ(run(), run());
}

TEST(TrackerTest, MaxTracksBoundsLostTracksButKeepsLiveOnes) {
  TrackerOptions options;
  options.max_tracks = 3;
  Tracker tracker(options);
  auto first = Frame({Det(0, 0), Det(100, 0), Det(200, 0)});
  tracker.Update(first);
  // Two far-away new objects; the first object stays. Room is made from lost tracks only.
  auto next = Frame({Det(0, 0), Det(0, 500), Det(100, 500)});
  tracker.Update(next);
  EXPECT_EQ(*next[0].track_id, *first[0].track_id);
  EXPECT_TRUE(next[1].track_id);
  EXPECT_TRUE(next[2].track_id);
  EXPECT_EQ(tracker.track_count(), 3u);
  // All three live: a fourth object cannot get a track.
  auto full = Frame({Det(0, 0), Det(0, 500), Det(100, 500), Det(900, 900)});
  tracker.Update(full);
  EXPECT_FALSE(full[3].track_id);
  EXPECT_EQ(tracker.track_count(), 3u);
}

TEST(TrackerTest, DegenerateBoxesAndNanScoresDoNotMatch) {
  Tracker tracker;
  auto first = Frame({Det(0, 0)});
  first[0].box.width = 0;
  tracker.Update(first);
  auto next = Frame({Det(0, 0), Det(50, 50, std::numeric_limits<float>::quiet_NaN())});
  next[0].box.width = 0;
  tracker.Update(next);
  EXPECT_NE(next[0].track_id, first[0].track_id);
  EXPECT_FALSE(next[1].track_id);
}

TEST(TrackerSetTest, StreamsAreTrackedIndependently) {
  TrackerSet set(TrackerOptions{});
  auto a = Frame({Det(0, 0)});
  set.Update("a", 0, a);
  auto b = Frame({Det(0, 0)});
  set.Update("b", 0, b);
  EXPECT_EQ(*a[0].track_id, 1);
  EXPECT_EQ(*b[0].track_id, 1) << "each stream has its own ids";
  auto a2 = Frame({Det(1, 0)});
  set.Update("a", 10, a2);
  EXPECT_EQ(*a2[0].track_id, 1);
  EXPECT_EQ(set.size(), 2u);
}

TEST(TrackerSetTest, EvictsStreamsIdleLongerThanIdleMs) {
  TrackerSet set(TrackerOptions{}, /*idle_ms=*/1000);
  auto a = Frame({Det(0, 0), Det(100, 0)});
  set.Update("a", 0, a);
  auto b = Frame({Det(0, 0)});
  set.Update("b", 900, b);
  auto b2 = Frame({Det(0, 0)});
  set.Update("b", 1500, b2);  // "a" idle 1500 ms > 1000: evicted
  EXPECT_EQ(set.size(), 1u);
  auto a2 = Frame({Det(100, 0)});
  set.Update("a", 1600, a2);
  EXPECT_EQ(*a2[0].track_id, 1) << "an evicted stream starts fresh";
  EXPECT_EQ(set.size(), 2u);
}

TEST(TrackerSetTest, EvictsLeastRecentlyUsedBeyondMaxStreams) {
  TrackerSet set(TrackerOptions{}, /*idle_ms=*/60000, /*max_streams=*/2);
  auto a = Frame({Det(0, 0), Det(100, 0)});
  set.Update("a", 0, a);
  auto b = Frame({Det(0, 0), Det(100, 0)});
  set.Update("b", 1, b);
  auto a2 = Frame({Det(100, 0)});
  set.Update("a", 2, a2);  // "a" now most recent
  auto c = Frame({Det(0, 0)});
  set.Update("c", 3, c);  // evicts "b"
  EXPECT_EQ(set.size(), 2u);
  auto a3 = Frame({Det(100, 0)});
  set.Update("a", 4, a3);
  EXPECT_EQ(*a3[0].track_id, 2) << "\"a\" kept its tracks";
  auto b2 = Frame({Det(100, 0)});
  set.Update("b", 5, b2);
  EXPECT_EQ(*b2[0].track_id, 1) << "\"b\" was evicted and starts fresh";
  EXPECT_EQ(set.size(), 2u);
}

}  // namespace
}  // namespace kadr::tracking
