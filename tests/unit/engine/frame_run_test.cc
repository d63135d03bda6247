#include "engine/frame_run.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>

#include "fakes.h"

namespace kadr::engine {
namespace {

using testing::AsyncRun;
using testing::CountingSource;
using testing::ErrorResult;
using testing::Eventually;
using testing::FakeClock;
using testing::FakeDispatcher;
using testing::GatedSource;
using testing::InFlight;
using testing::kAnsweredMs;
using testing::OkResult;
using testing::RecordingSink;
using testing::TestFrame;
using testing::WaitForLoopPass;

constexpr auto kHold = FakeDispatcher::Mode::kHold;
// How soon a stopped run must return: well under the loop's longest wait (1 s), so a stop that
// only the loop's periodic wake-up notices fails.
constexpr std::chrono::milliseconds kPrompt{500};

RunOptions Lossless(std::size_t window = 4) {
  RunOptions o;
  o.id = "r";
  o.mode = Mode::kLossless;
  o.window = window;
  return o;
}

RunOptions Live(std::size_t window, FakeClock& clock) {
  RunOptions o;
  o.id = "r";
  o.mode = Mode::kLive;
  o.window = window;
  o.now_ms = clock.Fn();
  return o;
}

// ---------------------------------------------------------------------------------------------
// Lossless

TEST(FrameRunTest, LosslessSendsAndReleasesEveryFrameExactlyOnce) {
  constexpr int kFrames = 50;
  FakeDispatcher dispatcher;
  RecordingSink sink;
  CountingSource source(kFrames);
  FrameRun run(Lossless(4), dispatcher, sink);
  AsyncRun async(run, source);
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value()) << "the run did not end";
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();

  const auto sent = dispatcher.sent();
  ASSERT_EQ(sent.size(), static_cast<std::size_t>(kFrames));
  for (int i = 0; i < kFrames; ++i) {
    EXPECT_EQ(sent[i].index, i);
    EXPECT_EQ(sent[i].id, FrameIdOf("r", i));
    EXPECT_EQ(sent[i].frame.encoded, TestFrame(i).encoded) << "frame " << i;
    EXPECT_FALSE(sent[i].deadline_ms.has_value()) << "lossless frames carry no deadline";
    EXPECT_GT(sent[i].capture_ms, 0) << "the run stamps the read time";
  }
  std::multiset<std::int64_t> released;
  for (const auto& r : sink.frames()) {
    released.insert(r.index);
    EXPECT_EQ(r.id, FrameIdOf("r", r.index));
    ASSERT_TRUE(r.result.has_value());
    EXPECT_EQ(r.result->status, protocol::FrameStatus::kOk);
    EXPECT_EQ(r.answered_ms, kAnsweredMs);
    EXPECT_FALSE(r.dropped.has_value());
    EXPECT_EQ(r.frame, nullptr) << "keep_frames is off";
  }
  ASSERT_EQ(released.size(), static_cast<std::size_t>(kFrames));
  for (int i = 0; i < kFrames; ++i) EXPECT_EQ(released.count(i), 1u) << "frame " << i;

  const RunStats stats = run.stats();
  EXPECT_EQ(stats.read, static_cast<std::uint64_t>(kFrames));
  EXPECT_EQ(stats.sent, static_cast<std::uint64_t>(kFrames));
  EXPECT_EQ(stats.answered, static_cast<std::uint64_t>(kFrames));
  EXPECT_EQ(stats.in_flight, 0u);
  EXPECT_EQ(stats.dropped_backpressure + stats.dropped_deadline + stats.dropped_error, 0u);
}

TEST(FrameRunTest, LosslessFillsTheWindowNeverExceedsItAndReadsOnlyWithRoom) {
  constexpr int kFrames = 12;
  constexpr int kWindow = 3;
  InFlight in_flight;
  std::atomic<int> in_flight_at_read_max{0};
  FakeDispatcher dispatcher(kHold);
  dispatcher.on_send = [&] { in_flight.Add(); };
  RecordingSink sink;
  sink.on_release = [&](const Released&) { in_flight.Remove(); };
  CountingSource source(kFrames, [&] {
    in_flight_at_read_max = std::max(in_flight_at_read_max.load(), in_flight.count());
  });
  RunOptions options = Lossless(kWindow);
  options.keep_frames = true;
  FrameRun run(options, dispatcher, sink);
  AsyncRun async(run, source);

  // Answer one frame at a time, each time only once the run has filled its window.
  for (int answered = 0; answered < kFrames; ++answered) {
    const std::size_t expected = std::min(kWindow, kFrames - answered);
    ASSERT_TRUE(dispatcher.WaitForPending(expected)) << "after " << answered << " answers";
    EXPECT_EQ(dispatcher.pending().size(), expected);
    EXPECT_EQ(dispatcher.AnswerNext(), FrameIdOf("r", answered));
  }
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value()) << "the run did not end";
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
  EXPECT_EQ(in_flight.max(), kWindow);
  EXPECT_LT(in_flight_at_read_max.load(), kWindow) << "the source was read with a full window";
  EXPECT_EQ(source.reads(), kFrames + 1);  // every frame, then the end
  ASSERT_EQ(sink.count(), static_cast<std::size_t>(kFrames));
  for (const auto& r : sink.frames()) {
    ASSERT_NE(r.frame, nullptr) << "keep_frames";
    EXPECT_EQ(r.frame->encoded, TestFrame(static_cast<int>(r.index)).encoded);
  }
}

// A lossless source may block in Read (a camera until its next frame, or through a stall and
// its reconnect backoff); a frame answered meanwhile must still leave, and not wait for the
// source's next frame.
TEST(FrameRunTest, LosslessReleasesAnswersWhileTheSourceReadBlocks) {
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  GatedSource source;
  FrameRun run(Lossless(2), dispatcher, sink);
  AsyncRun async(run, source);
  source.Push(TestFrame(0));
  ASSERT_TRUE(dispatcher.WaitForPending(1));
  ASSERT_TRUE(source.WaitForBlockedRead());  // the window has room: the run waits for frame 1
  dispatcher.Answer("r:0");
  EXPECT_TRUE(sink.WaitForCount(1, kPrompt))
      << "the answered frame waits for the source's next frame";
  source.End();
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
  EXPECT_EQ(sink.count(), 1u);
}

TEST(FrameRunTest, OrderedReleasesOutOfOrderAnswersInIndexOrder) {
  FakeClock clock;
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(3);
  RunOptions options = Lossless(3);
  options.ordered = true;
  options.now_ms = clock.Fn();
  options.answer_timeout = std::chrono::milliseconds(5);  // for WaitForLoopPass
  FrameRun run(options, dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(3));
  ASSERT_TRUE(Eventually([&] { return run.stats().sent == 3; }));

  dispatcher.Answer("r:2");
  ASSERT_TRUE(WaitForLoopPass(clock));
  dispatcher.Answer("r:1");
  ASSERT_TRUE(WaitForLoopPass(clock));
  EXPECT_EQ(run.stats().answered, 2u);
  EXPECT_EQ(sink.count(), 0u) << "frames 1 and 2 must wait for frame 0";
  dispatcher.Answer("r:0");
  ASSERT_TRUE(sink.WaitForCount(3));
  EXPECT_EQ(sink.indexes(), (std::vector<std::int64_t>{0, 1, 2}));
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
}

TEST(FrameRunTest, OrderedWindowCountsAnsweredFramesWaitingForAnEarlierOne) {
  FakeClock clock;
  InFlight in_flight;
  FakeDispatcher dispatcher(kHold);
  dispatcher.on_send = [&] { in_flight.Add(); };
  RecordingSink sink;
  sink.on_release = [&](const Released&) { in_flight.Remove(); };
  CountingSource source(3);
  RunOptions options = Lossless(2);
  options.ordered = true;
  options.now_ms = clock.Fn();
  options.answer_timeout = std::chrono::milliseconds(5);  // for WaitForLoopPass
  FrameRun run(options, dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(2));
  ASSERT_TRUE(Eventually([&] { return run.stats().sent == 2; }));
  dispatcher.Answer("r:1");  // answered, but waits for frame 0: the window stays full
  ASSERT_TRUE(WaitForLoopPass(clock));
  EXPECT_EQ(dispatcher.sent().size(), 2u);
  EXPECT_EQ(sink.count(), 0u);
  dispatcher.Answer("r:0");
  ASSERT_TRUE(dispatcher.WaitForPending(1));
  EXPECT_EQ(dispatcher.AnswerNext(), "r:2");
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
  EXPECT_EQ(in_flight.max(), 2);
  EXPECT_EQ(sink.indexes(), (std::vector<std::int64_t>{0, 1, 2}));
}

TEST(FrameRunTest, UnorderedReleasesAnswersAsTheyCome) {
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(3);
  FrameRun run(Lossless(3), dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(3));

  dispatcher.Answer("r:2");
  ASSERT_TRUE(sink.WaitForCount(1)) << "frame 2 must not wait for frames 0 and 1";
  dispatcher.Answer("r:0");
  ASSERT_TRUE(sink.WaitForCount(2));
  dispatcher.Answer("r:1");
  ASSERT_TRUE(sink.WaitForCount(3));
  EXPECT_EQ(sink.indexes(), (std::vector<std::int64_t>{2, 0, 1}));
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
}

TEST(FrameRunTest, LosslessFrameUnansweredPastAnswerTimeoutIsDroppedDeadline) {
  FakeClock clock;
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(2);
  RunOptions options = Lossless(2);
  options.answer_timeout = std::chrono::milliseconds(50);
  options.now_ms = clock.Fn();
  FrameRun run(options, dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(2));
  ASSERT_TRUE(Eventually([&] { return run.stats().sent == 2; }));
  dispatcher.Answer("r:0");
  ASSERT_TRUE(sink.WaitForCount(1));

  clock.Advance(49);
  EXPECT_EQ(run.stats().dropped_deadline, 0u);
  clock.Advance(2);
  ASSERT_TRUE(sink.WaitForCount(2)) << "frame 1 was never dropped";
  const Released dropped = sink.frames()[1];
  EXPECT_EQ(dropped.index, 1);
  EXPECT_EQ(dropped.id, "r:1");
  EXPECT_EQ(dropped.dropped, DropReason::kDeadline);
  EXPECT_FALSE(dropped.result.has_value());
  EXPECT_EQ(dropped.answered_ms, 0);
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
  EXPECT_EQ(run.stats().dropped_deadline, 1u);

  dispatcher.Answer("r:1");  // too late: ignored
  EXPECT_EQ(run.stats().answered, 1u);
}

TEST(FrameRunTest, LosslessAnswerTimeoutFailsTheRunWithFailOnTimeout) {
  FakeClock clock;
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(1);
  RunOptions options = Lossless(2);
  options.answer_timeout = std::chrono::milliseconds(50);
  options.fail_on_timeout = true;
  options.now_ms = clock.Fn();
  FrameRun run(options, dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(1));
  ASSERT_TRUE(Eventually([&] { return run.stats().sent == 1; }));
  clock.Advance(51);
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value()) << "the run did not fail";
  EXPECT_EQ(outcome->code(), StatusCode::kDeadlineExceeded) << outcome->ToString();
  EXPECT_EQ(sink.count(), 0u);
}

// ---------------------------------------------------------------------------------------------
// Live

TEST(FrameRunTest, LiveMailboxReplacesUnsentFramesAsBackpressureDrops) {
  FakeClock clock;
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  GatedSource source;
  RunOptions options = Live(1, clock);
  options.max_latency = std::chrono::milliseconds(60000);
  FrameRun run(options, dispatcher, sink);
  AsyncRun async(run, source);
  const std::int64_t t0 = clock.Now();

  source.Push(TestFrame(0, t0 + 1));
  ASSERT_TRUE(dispatcher.WaitForPending(1));  // the window (1) is now full
  source.Push(TestFrame(1, t0 + 2));
  source.Push(TestFrame(2, t0 + 3));
  source.Push(TestFrame(3, t0 + 4));
  ASSERT_TRUE(Eventually([&] { return run.stats().read == 4; }));
  // Frames 1 and 2 were replaced in the mailbox by their successors before they could be sent.
  ASSERT_TRUE(sink.WaitForCount(2));
  for (const auto& r : sink.frames()) {
    EXPECT_EQ(r.index, -1);
    EXPECT_EQ(r.dropped, DropReason::kBackpressure);
    EXPECT_FALSE(r.result.has_value());
  }
  EXPECT_EQ(sink.frames()[0].capture_ms, t0 + 2);
  EXPECT_EQ(sink.frames()[1].capture_ms, t0 + 3);
  EXPECT_EQ(run.stats().dropped_backpressure, 2u);
  EXPECT_EQ(dispatcher.sent().size(), 1u);

  source.End();
  EXPECT_EQ(dispatcher.AnswerNext(), "r:0");
  ASSERT_TRUE(dispatcher.WaitForPending(1)) << "the mailbox's frame was not sent";
  EXPECT_EQ(dispatcher.AnswerNext(), "r:1");
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value()) << "the run did not end";
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();

  const auto sent = dispatcher.sent();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].frame.encoded, TestFrame(0).encoded);
  EXPECT_EQ(sent[1].frame.encoded, TestFrame(3).encoded) << "the newest frame wins";
  EXPECT_EQ(sent[1].index, 1);
  EXPECT_EQ(sink.indexes(), (std::vector<std::int64_t>{-1, -1, 0, 1}));
  const RunStats stats = run.stats();
  EXPECT_EQ(stats.read, 4u);
  EXPECT_EQ(stats.sent, 2u);
  EXPECT_EQ(stats.answered, 2u);
  EXPECT_EQ(stats.dropped_backpressure, 2u);
}

TEST(FrameRunTest, LiveFramesCarryCaptureTimePlusMaxLatencyAsDeadline) {
  FakeClock clock;
  FakeDispatcher dispatcher;
  RecordingSink sink;
  GatedSource source;
  RunOptions options = Live(4, clock);
  options.max_latency = std::chrono::milliseconds(750);
  FrameRun run(options, dispatcher, sink);
  AsyncRun async(run, source);
  source.Push(TestFrame(0, clock.Now() - 100));  // a camera's own timestamp
  ASSERT_TRUE(sink.WaitForCount(1));
  source.Push(TestFrame(1));  // none: the run stamps the time it read it
  ASSERT_TRUE(sink.WaitForCount(2));
  source.End();
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();

  const auto sent = dispatcher.sent();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].capture_ms, clock.Now() - 100);
  EXPECT_EQ(sent[0].deadline_ms, clock.Now() - 100 + 750);
  EXPECT_EQ(sent[1].capture_ms, clock.Now());
  EXPECT_EQ(sent[1].deadline_ms, clock.Now() + 750);
}

TEST(FrameRunTest, LiveFrameUnansweredPastItsDeadlineIsDroppedDeadline) {
  FakeClock clock;
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  GatedSource source;
  RunOptions options = Live(1, clock);
  options.max_latency = std::chrono::milliseconds(50);
  FrameRun run(options, dispatcher, sink);
  AsyncRun async(run, source);
  source.Push(TestFrame(0));
  ASSERT_TRUE(dispatcher.WaitForPending(1));
  ASSERT_TRUE(Eventually([&] { return run.stats().sent == 1; }));
  EXPECT_EQ(dispatcher.sent()[0].deadline_ms, clock.Now() + 50);

  clock.Advance(51);
  ASSERT_TRUE(sink.WaitForCount(1)) << "the frame was never dropped";
  const Released r = sink.frames()[0];
  EXPECT_EQ(r.index, 0);
  EXPECT_EQ(r.id, "r:0");
  EXPECT_EQ(r.dropped, DropReason::kDeadline);
  EXPECT_FALSE(r.result.has_value());
  EXPECT_EQ(run.stats().dropped_deadline, 1u);
  EXPECT_EQ(run.stats().in_flight, 0u) << "a lost answer must not wedge the window";

  dispatcher.AnswerNext();  // too late: ignored
  EXPECT_EQ(run.stats().answered, 0u);
  source.End();
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
  EXPECT_EQ(sink.count(), 1u);
}

TEST(FrameRunTest, LiveFailOnTimeoutDoesNotFailTheRun) {
  FakeClock clock;
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  GatedSource source;
  RunOptions options = Live(1, clock);
  options.max_latency = std::chrono::milliseconds(50);
  options.fail_on_timeout = true;  // a lossless policy: live frames are dropped
  FrameRun run(options, dispatcher, sink);
  AsyncRun async(run, source);
  source.Push(TestFrame(0));
  ASSERT_TRUE(dispatcher.WaitForPending(1));
  ASSERT_TRUE(Eventually([&] { return run.stats().sent == 1; }));
  clock.Advance(51);
  ASSERT_TRUE(sink.WaitForCount(1));
  EXPECT_EQ(sink.frames()[0].dropped, DropReason::kDeadline);
  source.End();
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
}

// ---------------------------------------------------------------------------------------------
// Send errors

TEST(FrameRunTest, SendErrorDropsTheFrameWithTheError) {
  FakeDispatcher dispatcher;
  dispatcher.FailSend(1, UnavailableError("broker down"));
  RecordingSink sink;
  CountingSource source(3);
  FrameRun run(Lossless(), dispatcher, sink);
  AsyncRun async(run, source);
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();

  ASSERT_EQ(sink.count(), 3u);
  for (const auto& r : sink.frames()) {
    if (r.index == 1) {
      EXPECT_EQ(r.dropped, DropReason::kError);
      EXPECT_EQ(r.error, UnavailableError("broker down"));
      EXPECT_FALSE(r.result.has_value());
    } else {
      EXPECT_FALSE(r.dropped.has_value());
      EXPECT_TRUE(r.error.ok());
      EXPECT_TRUE(r.result.has_value());
    }
  }
  const RunStats stats = run.stats();
  EXPECT_EQ(stats.sent, 2u);
  EXPECT_EQ(stats.dropped_error, 1u);
  EXPECT_EQ(stats.in_flight, 0u);
}

TEST(FrameRunTest, SendErrorFailsTheRunWithFailOnSendError) {
  FakeDispatcher dispatcher;
  dispatcher.FailSend(1, TooLargeError("frame over the limit"));
  RecordingSink sink;
  CountingSource source(3);
  RunOptions options = Lossless();
  options.fail_on_send_error = true;
  FrameRun run(options, dispatcher, sink);
  AsyncRun async(run, source);
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(*outcome, TooLargeError("frame over the limit"));
  EXPECT_EQ(dispatcher.sent().size(), 2u) << "the run goes no further";
  for (const auto& r : sink.frames()) EXPECT_NE(r.index, 1);
}

TEST(FrameRunTest, DeliveryFailureReportedLaterDropsTheFrame) {
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(3);
  FrameRun run(Lossless(3), dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(3));
  ASSERT_TRUE(Eventually([&] { return run.stats().sent == 3; }));

  run.DeliveryCallback("r:0")(Status::Ok(), {});  // delivered: nothing happens
  run.DeliveryCallback("r:1")(UnavailableError("broker lost the message"), {});
  ASSERT_TRUE(sink.WaitForCount(1));
  run.OnSendFailed("r:2", ResourceExhaustedError("queue full"));
  ASSERT_TRUE(sink.WaitForCount(2));
  EXPECT_EQ(sink.frames()[0].index, 1);
  EXPECT_EQ(sink.frames()[0].dropped, DropReason::kError);
  EXPECT_EQ(sink.frames()[0].error, UnavailableError("broker lost the message"));
  EXPECT_EQ(sink.frames()[1].index, 2);
  EXPECT_EQ(sink.frames()[1].error, ResourceExhaustedError("queue full"));
  EXPECT_EQ(run.stats().dropped_error, 2u);

  dispatcher.Answer("r:0");
  dispatcher.Answer("r:1");  // its delivery failed: an answer now is ignored
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
  ASSERT_EQ(sink.count(), 3u);
  EXPECT_EQ(sink.frames()[2].index, 0);
  EXPECT_FALSE(sink.frames()[2].dropped.has_value());
  EXPECT_EQ(run.stats().answered, 1u);
}

TEST(FrameRunTest, DeliveryFailureFailsTheRunWithFailOnSendError) {
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(2);
  RunOptions options = Lossless(2);
  options.fail_on_send_error = true;
  FrameRun run(options, dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(2));
  run.DeliveryCallback("r:1")(UnavailableError("broker lost the message"), {});
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value()) << "the run did not fail";
  EXPECT_EQ(*outcome, UnavailableError("broker lost the message"));
}

// A frame the broker lost (a fail-over) is sent again under the same id, and its answer
// counts once; only when every attempt failed is it dropped.
TEST(FrameRunTest, AFailedDeliveryIsSentAgainUpToSendAttempts) {
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(2);
  RunOptions options = Lossless(2);
  options.send_attempts = 2;
  FrameRun run(options, dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForSent(2));
  run.DeliveryCallback("r:0")(UnavailableError("out of order sequence number"), {});
  ASSERT_TRUE(dispatcher.WaitForSent(3));  // frame 0 again
  EXPECT_EQ(dispatcher.sent()[2].id, "r:0");
  EXPECT_EQ(run.stats().resent, 1u);
  run.DeliveryCallback("r:1")(UnavailableError("broker lost the message"), {});
  ASSERT_TRUE(dispatcher.WaitForSent(4));
  run.DeliveryCallback("r:1")(UnavailableError("broker lost it again"), {});  // the last attempt
  ASSERT_TRUE(sink.WaitForCount(1));
  EXPECT_EQ(sink.frames()[0].index, 1);
  EXPECT_EQ(sink.frames()[0].dropped, DropReason::kError);
  EXPECT_EQ(sink.frames()[0].error, UnavailableError("broker lost it again"));
  dispatcher.Answer("r:0");
  dispatcher.Answer("r:0");  // the first send was not lost after all: a duplicate answer
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
  ASSERT_EQ(sink.count(), 2u);
  EXPECT_EQ(sink.frames()[1].index, 0);
  EXPECT_TRUE(sink.frames()[1].result.has_value());
  EXPECT_EQ(run.stats().answered, 1u);
  EXPECT_EQ(run.stats().dropped_error, 1u);
}

// Frames the broker deleted before a worker read them (a worker's announcement names the
// partition and offsets) are sent again; once they have no attempts left they leave with an
// error that says what happened. Frames stored elsewhere, or answered, are not touched.
TEST(FrameRunTest, FramesDeletedUnreadAreSentAgainThenFailWithAnErrorThatSaysSo) {
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(3);
  RunOptions options = Lossless(3);
  options.send_attempts = 2;
  FrameRun run(options, dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForSent(3));
  run.DeliveryCallback("r:0")(Status::Ok(), {"kadr.frames.m", 1, 10});
  run.DeliveryCallback("r:1")(Status::Ok(), {"kadr.frames.m", 1, 11});
  run.DeliveryCallback("r:2")(Status::Ok(), {"kadr.frames.m", 2, 11});  // another partition
  dispatcher.Answer("r:0");  // read and answered before the rest was deleted
  ASSERT_TRUE(sink.WaitForCount(1));

  const bus::Loss loss{"kadr.frames.m", 1, 5, 12};
  EXPECT_EQ(run.OnDeletedUnread(loss), 1u) << "only r:1: r:0 is answered, r:2 elsewhere";
  ASSERT_TRUE(dispatcher.WaitForSent(4));
  EXPECT_EQ(dispatcher.sent()[3].id, "r:1");
  EXPECT_EQ(run.OnDeletedUnread(loss), 0u) << "the same report again hits nothing";
  EXPECT_EQ(run.OnDeletedUnread({"kadr.frames.m", 1, 0, -1}), 0u) << "an unknown range";

  run.DeliveryCallback("r:1")(Status::Ok(), {"kadr.frames.m", 1, 20});
  EXPECT_EQ(run.OnDeletedUnread({"kadr.frames.m", 1, 12, 21}), 1u);  // the resend too
  ASSERT_TRUE(sink.WaitForCount(2));
  const Released r1 = sink.frames()[1];
  EXPECT_EQ(r1.index, 1);
  EXPECT_EQ(r1.dropped, DropReason::kError);
  EXPECT_EQ(r1.error.code(), StatusCode::kUnavailable);
  EXPECT_NE(r1.error.message().find("deleted the frame before a worker read it"), std::string::npos)
      << r1.error.ToString();
  EXPECT_NE(r1.error.message().find("kadr.frames.m partition 1, offsets 12..20"), std::string::npos)
      << r1.error.ToString();
  dispatcher.Answer("r:2");
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
  EXPECT_EQ(run.stats().resent, 1u);
  EXPECT_EQ(run.stats().dropped_error, 1u);
}

// A synchronous refusal that retrying cannot fix (over the size limit) is not sent again.
TEST(FrameRunTest, ATooLargeFrameIsNotSentAgain) {
  FakeDispatcher dispatcher(kHold);
  dispatcher.FailSend(0, TooLargeError("frame over the limit"));
  RecordingSink sink;
  CountingSource source(1);
  RunOptions options = Lossless(1);
  options.send_attempts = 3;
  FrameRun run(options, dispatcher, sink);
  AsyncRun async(run, source);
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok());
  EXPECT_EQ(dispatcher.sent().size(), 1u);
  ASSERT_EQ(sink.count(), 1u);
  EXPECT_EQ(sink.frames()[0].error.code(), StatusCode::kTooLarge);
}

TEST(FrameRunTest, DeliveryCallbackAfterTheRunIsDestroyedDoesNothing) {
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  bus::DeliveryCallback late;
  {
    CountingSource source(1);
    FrameRun run(Lossless(), dispatcher, sink);
    late = run.DeliveryCallback("r:0");
    AsyncRun async(run, source);
    ASSERT_TRUE(dispatcher.WaitForPending(1));
    async.Stop();
    ASSERT_TRUE(async.Wait().has_value());
  }
  late(UnavailableError("delivery failed after the run ended"), {});
  late(Status::Ok(), {"kadr.frames.m", 0, 7});
  EXPECT_EQ(sink.count(), 0u);
}

// ---------------------------------------------------------------------------------------------
// want_image

RunOptions WantImage() {
  RunOptions o = Lossless(2);
  o.want_image = true;
  o.image_topic = "kadr.replies.g1";
  return o;
}

const std::vector<std::uint8_t> kAnnotatedJpeg = {0xFF, 0xD8, 0xAA, 0xBB, 0xFF, 0xD9};

TEST(FrameRunTest, WantImageResultBeforeImageWaitsForTheImage) {
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(1);
  FrameRun run(WantImage(), dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(1));
  dispatcher.Answer("r:0", OkResult("r:0", "kadr.replies.g1"));
  EXPECT_EQ(run.stats().answered, 1u);
  EXPECT_EQ(sink.count(), 0u) << "the frame left before its annotated image";
  run.OnImage("r:0", kAnnotatedJpeg);
  ASSERT_TRUE(sink.WaitForCount(1));
  const Released r = sink.frames()[0];
  ASSERT_TRUE(r.result.has_value());
  EXPECT_EQ(r.image, kAnnotatedJpeg);
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
}

TEST(FrameRunTest, WantImageImageBeforeResult) {
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(1);
  FrameRun run(WantImage(), dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(1));
  run.OnImage("r:0", kAnnotatedJpeg);
  EXPECT_EQ(sink.count(), 0u) << "an image alone does not answer a frame";
  dispatcher.Answer("r:0", OkResult("r:0", "kadr.replies.g1"));
  ASSERT_TRUE(sink.WaitForCount(1));
  const Released r = sink.frames()[0];
  ASSERT_TRUE(r.result.has_value());
  EXPECT_EQ(r.image, kAnnotatedJpeg);
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
}

TEST(FrameRunTest, WantImagePixelsFromADispatcherInProcess) {
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(1);
  FrameRun run(WantImage(), dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(1));
  dispatcher.Answer("r:0", OkResult("r:0", "kadr.replies.g1"));
  run.OnImage("r:0", cv::Mat(4, 6, CV_8UC3, cv::Scalar(1, 2, 3)));
  ASSERT_TRUE(sink.WaitForCount(1));
  const Released r = sink.frames()[0];
  EXPECT_EQ(r.annotated.cols, 6);
  EXPECT_EQ(r.annotated.rows, 4);
  EXPECT_TRUE(r.image.empty());
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
}

TEST(FrameRunTest, WantImageResultNamingAnotherTopicDoesNotWait) {
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(2);
  FrameRun run(WantImage(), dispatcher, sink);  // answer_timeout: 60 s, never reached here
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(2));
  dispatcher.Answer("r:0", OkResult("r:0", "kadr.annotated"));
  dispatcher.Answer("r:1", ErrorResult("r:1", InvalidArgumentError("corrupt frame")));
  ASSERT_TRUE(sink.WaitForCount(2)) << "a frame waited for an image that is not coming";
  for (const auto& r : sink.frames()) EXPECT_TRUE(r.image.empty());
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
}

TEST(FrameRunTest, WantImageFrameLeavesWithoutTheImageWhenItTimesOut) {
  FakeClock clock;
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(1);
  RunOptions options = WantImage();
  options.answer_timeout = std::chrono::milliseconds(50);
  options.now_ms = clock.Fn();
  FrameRun run(options, dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(1));
  ASSERT_TRUE(Eventually([&] { return run.stats().sent == 1; }));
  dispatcher.Answer("r:0", OkResult("r:0", "kadr.replies.g1"));
  clock.Advance(51);
  ASSERT_TRUE(sink.WaitForCount(1)) << "the frame waited for its image for ever";
  const Released r = sink.frames()[0];
  ASSERT_TRUE(r.result.has_value());
  EXPECT_EQ(r.result->status, protocol::FrameStatus::kOk);
  EXPECT_FALSE(r.dropped.has_value()) << "answered: it leaves, without its image";
  EXPECT_TRUE(r.image.empty());
  EXPECT_EQ(run.stats().dropped_deadline, 0u);
  run.OnImage("r:0", kAnnotatedJpeg);  // too late: ignored
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
  EXPECT_EQ(sink.count(), 1u);
}

TEST(FrameRunTest, ImagesAreIgnoredWithoutWantImage) {
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(1);
  FrameRun run(Lossless(), dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(1));
  run.OnImage("r:0", kAnnotatedJpeg);
  dispatcher.Answer("r:0", OkResult("r:0", "kadr.replies.g1"));
  ASSERT_TRUE(sink.WaitForCount(1));
  EXPECT_TRUE(sink.frames()[0].image.empty());
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
}

// ---------------------------------------------------------------------------------------------
// Identity of answers

TEST(FrameRunTest, BareIdOneFrameRunUsesTheRunIdAsFrameId) {
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(1);
  RunOptions options = Lossless(1);
  options.id = "upload-7f3a";
  options.bare_id = true;
  FrameRun run(options, dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(1));
  EXPECT_EQ(dispatcher.sent()[0].id, "upload-7f3a");
  EXPECT_EQ(dispatcher.sent()[0].index, 0);
  run.OnResult(OkResult("upload-7f3a:0"), 1);  // not this run's frame id
  EXPECT_EQ(run.stats().answered, 0u);
  dispatcher.Answer("upload-7f3a");
  ASSERT_TRUE(sink.WaitForCount(1));
  EXPECT_EQ(sink.frames()[0].id, "upload-7f3a");
  EXPECT_EQ(sink.frames()[0].index, 0);
  ASSERT_TRUE(sink.frames()[0].result.has_value());
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
}

TEST(FrameRunTest, IgnoresAnswersToUnknownDuplicateAndOtherRunsFrames) {
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(2);
  FrameRun run(Lossless(2), dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(2));

  for (const std::string id : {"r:7", "other:0", "rr:0", "r", "r:", "r:x", "r:0x", "", "r:1:0"}) {
    run.OnResult(OkResult(id), 1);
    run.OnSendFailed(id, UnavailableError("not ours"));
  }
  EXPECT_EQ(run.stats().answered, 0u);
  EXPECT_EQ(run.stats().dropped_error, 0u);
  EXPECT_EQ(run.stats().in_flight, 2u);

  run.OnResult(OkResult("r:0"), 10);
  run.OnResult(ErrorResult("r:0", InternalError("duplicate")), 11);  // a redelivery
  ASSERT_TRUE(sink.WaitForCount(1));
  run.OnResult(OkResult("r:0"), 12);  // after it left
  EXPECT_EQ(run.stats().answered, 1u);
  EXPECT_EQ(sink.frames()[0].answered_ms, 10);
  EXPECT_EQ(sink.frames()[0].result->status, protocol::FrameStatus::kOk);

  // An answer named by its frame id alone (no correlation id) is this frame's.
  protocol::FrameResult by_frame_id = OkResult("r:1");
  by_frame_id.correlation_id.clear();
  run.OnResult(by_frame_id, 13);
  ASSERT_TRUE(sink.WaitForCount(2));
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
  EXPECT_EQ(sink.count(), 2u);
  EXPECT_EQ(run.stats().answered, 2u);
}

// Frame ids are strings: "r:00" or "r:-0" names no frame of run "r", although its digits
// parse to 0.
TEST(FrameRunTest, IgnoresAnswersWhoseIndexIsNotSpelledAsTheFrameId) {
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(2);
  FrameRun run(Lossless(2), dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(2));
  for (const std::string id : {"r:00", "r:-0", "r:01"}) run.OnResult(OkResult(id), 1);
  EXPECT_EQ(run.stats().answered, 0u);
  dispatcher.AnswerNext();
  dispatcher.AnswerNext();
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
}

// ---------------------------------------------------------------------------------------------
// Stop

TEST(FrameRunTest, StopMidRunReturnsCancelledWithoutReleasingFramesInFlight) {
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  CountingSource source(10);
  FrameRun run(Lossless(2), dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(dispatcher.WaitForPending(2));
  async.Stop();
  const auto outcome = async.Wait(kPrompt);
  ASSERT_TRUE(outcome.has_value()) << "the run did not stop promptly";
  EXPECT_EQ(outcome->code(), StatusCode::kCancelled) << outcome->ToString();
  EXPECT_EQ(sink.count(), 0u);
  EXPECT_EQ(run.stats().in_flight, 0u);
  dispatcher.AnswerNext();  // after the run: ignored
  EXPECT_EQ(run.stats().answered, 0u);
}

TEST(FrameRunTest, StopWhileLosslessReadBlocksReturnsCancelled) {
  FakeDispatcher dispatcher;
  RecordingSink sink;
  GatedSource source;
  FrameRun run(Lossless(), dispatcher, sink);
  AsyncRun async(run, source);
  source.Push(TestFrame(0));
  ASSERT_TRUE(sink.WaitForCount(1));
  ASSERT_TRUE(source.WaitForBlockedRead());
  async.Stop();
  const auto outcome = async.Wait(kPrompt);
  ASSERT_TRUE(outcome.has_value()) << "the run did not stop promptly";
  EXPECT_EQ(outcome->code(), StatusCode::kCancelled) << outcome->ToString();
}

// A source may end a read that stop interrupted with an error (a camera's "interrupted"); the
// run was still stopped, as in live mode, whose reader ignores errors after stop.
TEST(FrameRunTest, StopWhileLosslessReadBlocksReturnsCancelledWhenTheReadFails) {
  FakeDispatcher dispatcher;
  RecordingSink sink;
  GatedSource source;
  source.FailOnStop(UnavailableError("read interrupted"));
  FrameRun run(Lossless(), dispatcher, sink);
  AsyncRun async(run, source);
  ASSERT_TRUE(source.WaitForBlockedRead());
  async.Stop();
  const auto outcome = async.Wait(kPrompt);
  ASSERT_TRUE(outcome.has_value()) << "the run did not stop promptly";
  EXPECT_EQ(outcome->code(), StatusCode::kCancelled) << outcome->ToString();
}

TEST(FrameRunTest, StopWhileLiveReaderBlocksReturnsCancelled) {
  FakeClock clock;
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  GatedSource source;
  source.FailOnStop(UnavailableError("read interrupted"));
  FrameRun run(Live(2, clock), dispatcher, sink);
  AsyncRun async(run, source);
  source.Push(TestFrame(0, clock.Now()));
  ASSERT_TRUE(dispatcher.WaitForPending(1));
  ASSERT_TRUE(source.WaitForBlockedRead());
  async.Stop();
  const auto outcome = async.Wait(kPrompt);
  ASSERT_TRUE(outcome.has_value()) << "the run did not stop promptly";
  EXPECT_EQ(outcome->code(), StatusCode::kCancelled) << outcome->ToString();
  EXPECT_EQ(sink.count(), 0u);
}

TEST(FrameRunTest, StopRequestedBeforeRunReturnsCancelled) {
  FakeDispatcher dispatcher;
  RecordingSink sink;
  CountingSource source(3);
  FrameRun run(Lossless(), dispatcher, sink);
  std::stop_source stop;
  stop.request_stop();
  EXPECT_EQ(run.Run(source, stop.get_token()).code(), StatusCode::kCancelled);
  EXPECT_EQ(sink.count(), 0u);
}

// ---------------------------------------------------------------------------------------------
// Sink and source errors

TEST(FrameRunTest, SinkErrorFailsTheRunWithThatError) {
  FakeDispatcher dispatcher;
  RecordingSink sink;
  sink.FailAt(1, InternalError("disk full"));
  CountingSource source(5);
  FrameRun run(Lossless(1), dispatcher, sink);
  AsyncRun async(run, source);
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(*outcome, InternalError("disk full"));
  EXPECT_EQ(sink.calls(), 2) << "nothing is released after the sink failed";
  EXPECT_EQ(dispatcher.sent().size(), 2u);
}

TEST(FrameRunTest, SinkErrorOnABackpressureDropFailsTheRun) {
  FakeClock clock;
  FakeDispatcher dispatcher(kHold);
  RecordingSink sink;
  sink.FailAt(0, InternalError("disk full"));
  GatedSource source;
  FrameRun run(Live(1, clock), dispatcher, sink);
  AsyncRun async(run, source);
  source.Push(TestFrame(0, clock.Now()));
  ASSERT_TRUE(dispatcher.WaitForPending(1));
  source.Push(TestFrame(1, clock.Now()));
  source.Push(TestFrame(2, clock.Now()));
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(*outcome, InternalError("disk full"));
}

TEST(FrameRunTest, LosslessSourceErrorEndsTheRunWithIt) {
  FakeDispatcher dispatcher;
  RecordingSink sink;
  CountingSource source(5);
  source.FailAfter(2, InvalidArgumentError("truncated video"));
  FrameRun run(Lossless(), dispatcher, sink);
  AsyncRun async(run, source);
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(*outcome, InvalidArgumentError("truncated video"));
  EXPECT_EQ(dispatcher.sent().size(), 2u);
}

TEST(FrameRunTest, LiveSourceErrorEndsTheRunWithIt) {
  FakeClock clock;
  FakeDispatcher dispatcher;
  RecordingSink sink;
  GatedSource source;
  FrameRun run(Live(2, clock), dispatcher, sink);
  AsyncRun async(run, source);
  source.Push(TestFrame(0, clock.Now()));
  ASSERT_TRUE(sink.WaitForCount(1));
  source.Fail(UnavailableError("camera lost"));
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(*outcome, UnavailableError("camera lost"));
}

// ---------------------------------------------------------------------------------------------
// Options and ids

TEST(FrameRunTest, ValidateRunOptionsRejectsBadIds) {
  RunOptions o = Lossless();
  EXPECT_TRUE(ValidateRunOptions(o).ok());
  o.id = std::string(200, 'a');
  EXPECT_TRUE(ValidateRunOptions(o).ok());
  o.id = "Cam-1.x_Y";
  EXPECT_TRUE(ValidateRunOptions(o).ok());
  for (const std::string& bad : {std::string(), std::string(201, 'a'), std::string("a:b"),
                                 std::string("a b"), std::string("a/b"), std::string("é")}) {
    o.id = bad;
    const Status s = ValidateRunOptions(o);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << "id '" << bad << "'";
    EXPECT_NE(s.message().find("id"), std::string::npos) << s.message();
  }
}

TEST(FrameRunTest, ValidateRunOptionsRejectsBadFields) {
  RunOptions o = Lossless();
  o.window = 0;
  Status s = ValidateRunOptions(o);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("window"), std::string::npos) << s.message();

  o = Lossless();
  o.want_image = true;
  s = ValidateRunOptions(o);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("image_topic"), std::string::npos) << s.message();
  o.image_topic = "kadr.annotated";
  EXPECT_TRUE(ValidateRunOptions(o).ok());

  o = Lossless();
  o.max_latency = std::chrono::milliseconds(0);
  EXPECT_EQ(ValidateRunOptions(o).code(), StatusCode::kInvalidArgument);
  o = Lossless();
  o.answer_timeout = std::chrono::milliseconds(-1);
  EXPECT_EQ(ValidateRunOptions(o).code(), StatusCode::kInvalidArgument);
}

TEST(FrameRunTest, RunChecksItsOptionsAndRunsOnce) {
  FakeDispatcher dispatcher;
  RecordingSink sink;
  CountingSource source(1);
  RunOptions bad = Lossless();
  bad.window = 0;
  FrameRun invalid(bad, dispatcher, sink);
  EXPECT_EQ(invalid.Run(source, {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(source.reads(), 0);

  FrameRun run(Lossless(), dispatcher, sink);
  EXPECT_TRUE(run.Run(source, {}).ok());
  EXPECT_EQ(run.Run(source, {}).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(sink.count(), 1u);
}

TEST(FrameRunTest, FrameIdOfAndRunIdOf) {
  EXPECT_EQ(FrameIdOf("job-1", 0), "job-1:0");
  EXPECT_EQ(FrameIdOf("job-1", 1234567890123), "job-1:1234567890123");
  EXPECT_EQ(RunIdOf("job-1:42"), "job-1");
  EXPECT_EQ(RunIdOf(FrameIdOf("a.b_c", 3)), "a.b_c");
  EXPECT_EQ(RunIdOf("a:b:3"), "a:b");  // the part before the last ':'
  EXPECT_EQ(RunIdOf("upload-1"), "upload-1");
  EXPECT_EQ(RunIdOf(""), "");
}

TEST(FrameRunTest, DropReasonNames) {
  EXPECT_EQ(DropReasonName(DropReason::kBackpressure), "backpressure");
  EXPECT_EQ(DropReasonName(DropReason::kDeadline), "deadline");
  EXPECT_EQ(DropReasonName(DropReason::kError), "error");
}

TEST(FrameRunTest, FramesSourceYieldsItsFramesThenEnds) {
  std::vector<SourceFrame> frames;
  frames.push_back(TestFrame(0, 5));
  frames.push_back(TestFrame(1, 6));
  FramesSource source(std::move(frames));
  for (int i = 0; i < 2; ++i) {
    auto read = source.Read({});
    ASSERT_TRUE(read.has_value());
    ASSERT_TRUE(read->has_value());
    EXPECT_EQ((*read)->encoded, TestFrame(i).encoded);
    EXPECT_EQ((*read)->capture_ms, 5 + i);
  }
  auto end = source.Read({});
  ASSERT_TRUE(end.has_value());
  EXPECT_FALSE(end->has_value());
}

}  // namespace
}  // namespace kadr::engine
