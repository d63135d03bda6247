#include "viewer/live_hub.h"

#include <atomic>
#include <chrono>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace kadr::viewer {
namespace {

using namespace std::chrono_literals;

class LiveHubTest : public ::testing::Test {
 protected:
  LiveHub MakeHub(LiveHubOptions options = {}) {
    return LiveHub(options, [this] { return now_ms_.load(); });
  }
  std::atomic<std::int64_t> now_ms_{1'000'000};
  std::stop_source stop_;
};

TEST_F(LiveHubTest, LatestWinsAndNextNeverReturnsTheSameItemTwice) {
  LiveHub hub = MakeHub();
  EXPECT_FALSE(hub.Latest(LiveKind::kFrame, "s1"));
  ASSERT_TRUE(hub.Put(LiveKind::kFrame, "s1", 1, "jpeg-1").ok());
  ASSERT_TRUE(hub.Put(LiveKind::kFrame, "s1", 2, "jpeg-2").ok());
  ASSERT_TRUE(hub.Put(LiveKind::kFrame, "s1", 3, "jpeg-3").ok());

  // A reader that saw nothing gets the newest only: the older two were replaced.
  auto first = hub.Next(LiveKind::kFrame, "s1", 0, 0ms, stop_.get_token());
  ASSERT_TRUE(first);
  EXPECT_EQ(*first->data, "jpeg-3");
  EXPECT_EQ(first->sequence, 3);
  EXPECT_EQ(first->received_ms, now_ms_.load());
  EXPECT_FALSE(hub.Next(LiveKind::kFrame, "s1", first->generation, 0ms, stop_.get_token()));

  ASSERT_TRUE(hub.Put(LiveKind::kFrame, "s1", 4, "jpeg-4").ok());
  auto second = hub.Next(LiveKind::kFrame, "s1", first->generation, 0ms, stop_.get_token());
  ASSERT_TRUE(second);
  EXPECT_EQ(*second->data, "jpeg-4");
  EXPECT_GT(second->generation, first->generation);
  EXPECT_EQ(*hub.Latest(LiveKind::kFrame, "s1")->data, "jpeg-4");
}

TEST_F(LiveHubTest, FramesResultsAndStreamsAreKeptApart) {
  LiveHub hub = MakeHub();
  ASSERT_TRUE(hub.Put(LiveKind::kFrame, "a", 1, "frame-a").ok());
  ASSERT_TRUE(hub.Put(LiveKind::kResult, "a", 1, R"({"a":1})").ok());
  ASSERT_TRUE(hub.Put(LiveKind::kResult, "b", 7, R"({"b":7})").ok());
  EXPECT_EQ(*hub.Latest(LiveKind::kFrame, "a")->data, "frame-a");
  EXPECT_EQ(*hub.Latest(LiveKind::kResult, "a")->data, R"({"a":1})");
  EXPECT_EQ(*hub.Latest(LiveKind::kResult, "b")->data, R"({"b":7})");
  EXPECT_FALSE(hub.Latest(LiveKind::kFrame, "b"));
  EXPECT_FALSE(hub.Next(LiveKind::kFrame, "b", 0, 0ms, stop_.get_token()));
  EXPECT_EQ(hub.stream_count(), 2U);
}

TEST_F(LiveHubTest, NextWaitsForTheNextItemOfItsStream) {
  LiveHub hub = MakeHub();
  std::optional<LiveItem> got;
  std::thread waiter([&] { got = hub.Next(LiveKind::kResult, "s1", 0, 30s, stop_.get_token()); });
  // Items of another stream or kind do not end the wait.
  ASSERT_TRUE(hub.Put(LiveKind::kResult, "other", 1, "x").ok());
  ASSERT_TRUE(hub.Put(LiveKind::kFrame, "s1", 1, "y").ok());
  ASSERT_TRUE(hub.Put(LiveKind::kResult, "s1", 2, R"({"n":2})").ok());
  waiter.join();
  ASSERT_TRUE(got);
  EXPECT_EQ(*got->data, R"({"n":2})");
}

TEST_F(LiveHubTest, NextEndsWhenStopIsRequestedOrItTimesOut) {
  LiveHub hub = MakeHub();
  std::optional<LiveItem> got = LiveItem{};
  const auto start = std::chrono::steady_clock::now();
  std::thread waiter([&] { got = hub.Next(LiveKind::kFrame, "s1", 0, 60s, stop_.get_token()); });
  stop_.request_stop();
  waiter.join();
  EXPECT_FALSE(got);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);  // not the 60 s timeout

  std::stop_source fresh;
  EXPECT_FALSE(hub.Next(LiveKind::kFrame, "s1", 0, 20ms, fresh.get_token()));
}

TEST_F(LiveHubTest, IdleStreamsAreForgotten) {
  LiveHubOptions options;
  options.idle_timeout = 60s;
  LiveHub hub = MakeHub(options);
  ASSERT_TRUE(hub.Put(LiveKind::kFrame, "idle", 1, "old").ok());
  now_ms_ += 30'000;
  ASSERT_TRUE(hub.Put(LiveKind::kFrame, "busy", 1, "f").ok());
  now_ms_ += 31'000;  // idle: 61 s without a message; busy: 31 s
  ASSERT_TRUE(hub.Put(LiveKind::kResult, "busy", 2, "{}").ok());
  EXPECT_FALSE(hub.Latest(LiveKind::kFrame, "idle"));
  EXPECT_TRUE(hub.Latest(LiveKind::kFrame, "busy"));
  EXPECT_EQ(hub.stream_count(), 1U);
  now_ms_ += 61'000;
  EXPECT_EQ(hub.Sweep(), 1U);
  EXPECT_EQ(hub.stream_count(), 0U);
}

TEST_F(LiveHubTest, BeyondMaxStreamsTheLeastRecentlyUpdatedIsForgotten) {
  LiveHubOptions options;
  options.max_streams = 2;
  LiveHub hub = MakeHub(options);
  ASSERT_TRUE(hub.Put(LiveKind::kFrame, "a", 1, "a1").ok());
  now_ms_ += 10;
  ASSERT_TRUE(hub.Put(LiveKind::kFrame, "b", 1, "b1").ok());
  now_ms_ += 10;
  ASSERT_TRUE(hub.Put(LiveKind::kFrame, "a", 2, "a2").ok());  // a is now the fresher
  now_ms_ += 10;
  ASSERT_TRUE(hub.Put(LiveKind::kFrame, "c", 1, "c1").ok());
  EXPECT_EQ(hub.stream_count(), 2U);
  EXPECT_TRUE(hub.Latest(LiveKind::kFrame, "a"));
  EXPECT_FALSE(hub.Latest(LiveKind::kFrame, "b"));
  EXPECT_TRUE(hub.Latest(LiveKind::kFrame, "c"));
}

TEST_F(LiveHubTest, GenerationsKeepGrowingAfterAStreamIsForgotten) {
  LiveHubOptions options;
  options.max_streams = 1;
  LiveHub hub = MakeHub(options);
  ASSERT_TRUE(hub.Put(LiveKind::kFrame, "a", 1, "a1").ok());
  const std::uint64_t seen = hub.Latest(LiveKind::kFrame, "a")->generation;
  ASSERT_TRUE(hub.Put(LiveKind::kFrame, "b", 1, "b1").ok());  // forgets a
  ASSERT_TRUE(hub.Put(LiveKind::kFrame, "a", 1, "a-again").ok());
  // A reader of "a" that saw the first frame still gets the new one.
  auto next = hub.Next(LiveKind::kFrame, "a", seen, 0ms, stop_.get_token());
  ASSERT_TRUE(next);
  EXPECT_EQ(*next->data, "a-again");
}

TEST_F(LiveHubTest, RejectsItemsItCannotHold) {
  LiveHubOptions options;
  options.max_item_bytes = 8;
  options.max_stream_id_bytes = 4;
  LiveHub hub = MakeHub(options);
  EXPECT_EQ(hub.Put(LiveKind::kFrame, "", 1, "x").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(hub.Put(LiveKind::kFrame, "12345", 1, "x").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(hub.Put(LiveKind::kFrame, "s", 1, "").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(hub.Put(LiveKind::kFrame, "s", 1, "123456789").code(), StatusCode::kTooLarge);
  EXPECT_EQ(hub.stream_count(), 0U);
  EXPECT_TRUE(hub.Put(LiveKind::kFrame, "1234", 1, "12345678").ok());
}

}  // namespace
}  // namespace kadr::viewer
