// Admission by bytes (engine/bus_dispatch.h): the budget, the queue's order and bounds, and
// the frame engine's runs on it through BusDispatcher.
#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "bus/fake_bus.h"
#include "common/clock.h"
#include "engine/bus_dispatch.h"
#include "fakes.h"
#include "protocol/frame.h"

namespace kadr::engine {
namespace {

using namespace std::chrono_literals;
using testing::AsyncRun;
using testing::Eventually;
using testing::OkResult;
using testing::RecordingSink;
using testing::TestFrame;
using Ticket = std::shared_ptr<const Admission::Ticket>;

constexpr char kTopic[] = "kadr.frames.m";

Admission Budget(std::size_t bytes, std::size_t max_waiting = 16) {
  AdmissionOptions o;
  o.budget_bytes = bytes;
  o.max_waiting = max_waiting;
  return Admission(o);
}

// Acquire on a thread of its own: the ticket (or error) once granted.
struct Waiting {
  Waiting(Admission& admission, std::size_t bytes, std::string client,
          std::optional<std::chrono::steady_clock::time_point> until = std::nullopt) {
    thread = std::jthread(
        [this, &admission, bytes, client = std::move(client), until](std::stop_token stop) {
          auto r = admission.Acquire(kTopic, bytes, client, stop, until);
          if (r) {
            ticket = std::move(r).value();
          } else {
            error = r.error();
          }
          done.set_value();
        });
  }
  bool Done(std::chrono::milliseconds within) {
    return future.wait_for(within) == std::future_status::ready;
  }
  std::promise<void> done;
  std::future<void> future = done.get_future();
  Ticket ticket;
  Status error;
  std::jthread thread;
};

TEST(AdmissionTest, FramesWithinTheBudgetPassAtOnceAndTheirBytesCount) {
  Admission a = Budget(100);
  std::stop_source stop;
  auto t1 = a.Acquire(kTopic, 60, "c", stop.get_token());
  auto t2 = a.Acquire(kTopic, 40, "c", stop.get_token());
  ASSERT_TRUE(t1.has_value() && t2.has_value());
  EXPECT_EQ(a.usage(kTopic).bytes, 100u);
  EXPECT_EQ(a.usage("kadr.frames.other").bytes, 0u) << "each topic has its own budget";
  t1->reset();
  EXPECT_EQ(a.usage(kTopic).bytes, 40u) << "a ticket gives its bytes back when it goes";
}

TEST(AdmissionTest, AFrameThatDoesNotFitWaitsUntilRoomIsGivenBack) {
  Admission a = Budget(100);
  std::stop_source stop;
  Ticket held = a.Acquire(kTopic, 80, "c", stop.get_token()).value();
  Waiting w(a, 50, "c");
  ASSERT_TRUE(Eventually([&] { return a.usage(kTopic).waiting == 1; }));
  EXPECT_FALSE(w.Done(50ms)) << "granted while the budget was full";
  held.reset();
  ASSERT_TRUE(w.Done(5s));
  ASSERT_TRUE(w.ticket) << w.error.ToString();
  EXPECT_EQ(w.ticket->bytes(), 50u);
  EXPECT_EQ(a.usage(kTopic).bytes, 50u);
  EXPECT_EQ(a.usage(kTopic).waiting, 0u);
}

TEST(AdmissionTest, ClientsTakeTurnsWhateverOneOfThemQueued) {
  Admission a = Budget(10);
  std::stop_source stop;
  Ticket held = a.Acquire(kTopic, 10, "flood", stop.get_token()).value();
  // The flooding client queues three frames before the other client's one.
  std::vector<std::unique_ptr<Waiting>> flood;
  for (int i = 0; i < 3; ++i) {
    flood.push_back(std::make_unique<Waiting>(a, 10, "flood"));
    ASSERT_TRUE(Eventually([&] { return a.usage(kTopic).waiting == std::size_t(i) + 1; }));
  }
  Waiting other(a, 10, "other");
  ASSERT_TRUE(Eventually([&] { return a.usage(kTopic).waiting == 4; }));

  held.reset();  // room for one: the flood's first frame (it came first)
  ASSERT_TRUE(flood[0]->Done(5s));
  EXPECT_FALSE(other.Done(50ms));
  flood[0]->ticket.reset();  // room for one: the other client's turn, not the flood's
  ASSERT_TRUE(other.Done(5s)) << "the other client waited behind the whole flood";
  EXPECT_FALSE(flood[1]->Done(50ms));
  other.ticket.reset();
  ASSERT_TRUE(flood[1]->Done(5s));
  EXPECT_FALSE(flood[2]->Done(50ms)) << "one client's frames leave in the order they came";
  flood[1]->ticket.reset();
  ASSERT_TRUE(flood[2]->Done(5s));
}

TEST(AdmissionTest, NothingOvertakesTheHeadOfTheQueue) {
  Admission a = Budget(100);
  std::stop_source stop;
  Ticket held = a.Acquire(kTopic, 60, "c1", stop.get_token()).value();
  Waiting big(a, 90, "c2");
  ASSERT_TRUE(Eventually([&] { return a.usage(kTopic).waiting == 1; }));
  // 30 bytes would fit beside the 60, but the 90 came first: no overtaking, so a large
  // frame is never starved by small ones.
  Waiting small(a, 30, "c3");
  EXPECT_FALSE(small.Done(50ms));
  EXPECT_EQ(a.TryAcquire(kTopic, 10), nullptr) << "TryAcquire may not jump the queue either";
  held.reset();
  ASSERT_TRUE(big.Done(5s));
  EXPECT_FALSE(small.Done(50ms));
  big.ticket.reset();
  ASSERT_TRUE(small.Done(5s));
}

TEST(AdmissionTest, AFullQueueRefusesAtOnce) {
  Admission a = Budget(10, /*max_waiting=*/2);
  std::stop_source stop;
  Ticket held = a.Acquire(kTopic, 10, "c", stop.get_token()).value();
  Waiting w1(a, 5, "c");
  Waiting w2(a, 5, "d");
  ASSERT_TRUE(Eventually([&] { return a.usage(kTopic).waiting == 2; }));
  const auto refused = a.Acquire(kTopic, 5, "e", stop.get_token());
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(refused.error().message().find("retry later"), std::string::npos);
}

TEST(AdmissionTest, AFrameLargerThanTheBudgetIsTooLarge) {
  Admission a = Budget(100);
  std::stop_source stop;
  const auto r = a.Acquire(kTopic, 101, "c", stop.get_token());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kTooLarge);
  EXPECT_NE(r.error().message().find("101"), std::string::npos) << r.error().ToString();
  EXPECT_EQ(a.TryAcquire(kTopic, 101), nullptr);
}

TEST(AdmissionTest, AFrameOverMaxFrameBytesIsTooLargeWhateverTheRoom) {
  AdmissionOptions o;
  o.budget_bytes = 100;
  o.max_frame_bytes = 40;
  Admission a(o);
  std::stop_source stop;
  const auto r = a.Acquire(kTopic, 41, "c", stop.get_token());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kTooLarge);
  EXPECT_NE(r.error().message().find("--max-frame-side"), std::string::npos)
      << r.error().ToString();
  EXPECT_EQ(a.TryAcquire(kTopic, 41), nullptr);
  EXPECT_TRUE(a.Acquire(kTopic, 40, "c", stop.get_token()).has_value());
}

TEST(AdmissionTest, AWaitEndsAtItsDeadlineOrStopAndLeavesTheQueue) {
  Admission a = Budget(10);
  std::stop_source stop;
  Ticket held = a.Acquire(kTopic, 10, "c", stop.get_token()).value();

  Waiting timed(a, 5, "c", std::chrono::steady_clock::now() + 100ms);
  ASSERT_TRUE(timed.Done(5s));
  EXPECT_EQ(timed.error.code(), StatusCode::kDeadlineExceeded) << timed.error.ToString();
  EXPECT_EQ(a.usage(kTopic).waiting, 0u);

  auto stopped = std::make_unique<Waiting>(a, 5, "d");
  ASSERT_TRUE(Eventually([&] { return a.usage(kTopic).waiting == 1; }));
  Waiting behind(a, 5, "e");
  ASSERT_TRUE(Eventually([&] { return a.usage(kTopic).waiting == 2; }));
  stopped->thread.request_stop();
  ASSERT_TRUE(stopped->Done(5s));
  EXPECT_EQ(stopped->error.code(), StatusCode::kCancelled);
  held.reset();
  ASSERT_TRUE(behind.Done(5s)) << "the frame behind a cancelled one was not served";
  ASSERT_TRUE(behind.ticket);
}

TEST(AdmissionTest, TicketsOutliveTheirAdmission) {
  Ticket t;
  {
    Admission a = Budget(10);
    t = a.TryAcquire(kTopic, 5);
    ASSERT_TRUE(t);
  }
  t.reset();  // no use after free (the sanitizer run would say)
}

// ---------------------------------------------------------------------------------------------
// Runs on an admission

class AdmittedRunTest : public ::testing::Test {
 protected:
  // Answers every frame on the frames topic, one at a time, as a worker would.
  void StartWorker(Router& router) {
    worker_ = std::jthread([this, &router](std::stop_token stop) {
      std::size_t answered = 0;
      while (!stop.stop_requested()) {
        const auto frames = bus_.Topic(topic_);
        if (answered < frames.size()) {
          const auto id = frames[answered].headers.Get(protocol::header::kFrameId).value_or("");
          bus::InboundMessage in;
          const std::string json = protocol::FrameResultToJson(OkResult(id));
          in.message = {"kadr.replies.g1", id, {json.begin(), json.end()}, {}};
          in.message.headers.Set(protocol::header::kCorrelationId, id);
          max_waiting_bytes_ = std::max(max_waiting_bytes_.load(), admission_.usage(topic_).bytes);
          router.Route(in, 1);
          ++answered;
        } else {
          std::this_thread::sleep_for(1ms);
        }
      }
    });
  }
  BusDispatchOptions Options() {
    BusDispatchOptions o;
    o.model = "m";
    o.reply_to = "kadr.replies.g1";
    o.admission = &admission_;
    o.client = "test";
    return o;
  }

  bus::FakeBus bus_;
  bus::FakePublisher publisher_{bus_};
  const std::string topic_ = protocol::FramesTopic("m");
  // Room for about two of the test frames (TestFrame: a few hundred bytes with headers).
  Admission admission_ = Budget(1500);
  std::atomic<std::size_t> max_waiting_bytes_{0};
  std::jthread worker_;
};

TEST_F(AdmittedRunTest, ALosslessRunWithAWindowLargerThanTheBudgetSendsEveryFrame) {
  BusDispatcher dispatcher(Options(), publisher_);
  RecordingSink sink;
  RunOptions ro;
  ro.id = "r";
  ro.window = 16;  // far more than fits: the run waits for room, it does not deadlock
  ro.ordered = true;
  FrameRun run(ro, dispatcher, sink);
  Router router;
  router.Add(run);
  testing::CountingSource source(20);
  StartWorker(router);
  AsyncRun async(run, source);
  const auto outcome = async.Wait();
  router.Remove(run);
  ASSERT_TRUE(outcome.has_value()) << "the run did not end";
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
  EXPECT_EQ(sink.count(), 20u);
  for (const auto& f : sink.frames()) EXPECT_TRUE(f.result.has_value()) << f.id;
  EXPECT_LE(max_waiting_bytes_.load(), admission_.options().budget_bytes);
  EXPECT_GT(max_waiting_bytes_.load(), 0u);
  EXPECT_EQ(admission_.usage(topic_).bytes, 0u) << "every answer gave its room back";
}

TEST_F(AdmittedRunTest, ALiveFrameWithoutRoomIsABackpressureDrop) {
  BusDispatcher dispatcher(Options(), publisher_);
  std::stop_source stop;
  Ticket all = admission_.Acquire(topic_, 1500, "camera", stop.get_token()).value();
  RecordingSink sink;
  RunOptions ro;
  ro.id = "live";
  ro.mode = Mode::kLive;
  FrameRun run(ro, dispatcher, sink);
  testing::CountingSource source(1);
  AsyncRun async(run, source);
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
  ASSERT_EQ(sink.count(), 1u);
  EXPECT_EQ(sink.frames()[0].dropped, DropReason::kBackpressure);
  EXPECT_EQ(bus_.Size(topic_), 0u) << "the frame was published without room";
}

TEST_F(AdmittedRunTest, ALosslessFrameThatNeverGetsRoomFailsAtItsDeadline) {
  BusDispatcher dispatcher(Options(), publisher_);
  std::stop_source stop;
  Ticket all = admission_.Acquire(topic_, 1500, "other", stop.get_token()).value();
  RecordingSink sink;
  RunOptions ro;
  ro.id = "upload";
  ro.bare_id = true;
  ro.window = 1;
  ro.fail_on_send_error = true;
  FrameRun run(ro, dispatcher, sink);
  std::vector<SourceFrame> frames;
  frames.push_back(TestFrame(0));
  frames.back().deadline_ms = UnixMillis() + 150;
  FramesSource source(std::move(frames));
  AsyncRun async(run, source);
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(outcome->code(), StatusCode::kDeadlineExceeded) << outcome->ToString();
  EXPECT_NE(outcome->message().find("no room on " + topic_), std::string::npos);
  EXPECT_EQ(admission_.usage(topic_).waiting, 0u);
  EXPECT_EQ(bus_.Size(topic_), 0u);
}

}  // namespace
}  // namespace kadr::engine
