#include "camera/stream_runner.h"

#include <chrono>
#include <set>
#include <string>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include "bus/fake_bus.h"
#include "fakes.h"

namespace kadr::camera {
namespace {

using namespace std::chrono_literals;
using testing::FakeWorker;
using testing::ScriptedSources;
using testing::SourceScript;
using testing::WaitFor;

StreamSpec Spec(StreamMode mode = StreamMode::kLive) {
  StreamSpec s;
  s.id = "s0123456789abcdef";
  s.name = "dock";
  s.source = "rtsp://user:secret@cam/x";
  s.model = "m";
  s.mode = mode;
  s.window = 2;
  s.max_latency_ms = 60000;
  return s;
}

RunnerOptions FastOptions() {
  RunnerOptions o;
  o.initial_backoff = 10ms;
  o.max_backoff = 40ms;
  o.stall_timeout = 150ms;
  return o;
}

class StreamRunnerTest : public ::testing::Test {
 protected:
  bus::FakeBus bus_;
  bus::FakePublisher publisher_{bus_};
  MetricsRegistry metrics_;
  const std::string topic_ = protocol::FramesTopic("m");
};

TEST(BackoffTest, DoublesFromInitialToMaxWithinJitterBounds) {
  Backoff b(500ms, 30000ms, 0.2, 42);
  double base = 500;
  for (int i = 0; i < 12; ++i) {
    const auto d = b.Next().count();
    EXPECT_GE(d, static_cast<std::int64_t>(std::min(base, 30000.0) * 0.8) - 1) << "attempt " << i;
    EXPECT_LE(d, static_cast<std::int64_t>(std::min(base * 1.2, 30000.0))) << "attempt " << i;
    base *= 2;
  }
  b.Reset();
  const auto first = b.Next().count();
  EXPECT_GE(first, 399);
  EXPECT_LE(first, 600);
}

TEST(BackoffTest, JitterSpreadsTheDelays) {
  // Many generators (reconnecting cameras) must not retry in lock step.
  std::set<std::int64_t> seen;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    Backoff b(500ms, 30000ms, 0.2, seed);
    seen.insert(b.Next().count());
  }
  EXPECT_GT(seen.size(), 5u);
}

TEST_F(StreamRunnerTest, PublishesLiveFramesWithTheContractHeaders) {
  ScriptedSources sources({SourceScript{}});
  StreamSpec spec = Spec();
  spec.max_latency_ms = 1500;
  spec.conf = 0.4f;
  StreamRunner runner(spec, FastOptions(), sources.Factory(), publisher_, metrics_);
  runner.Start();
  ASSERT_TRUE(WaitFor([&] { return bus_.Size(topic_) >= 2; }));
  runner.Stop();
  const auto frames = bus_.Topic(topic_);
  ASSERT_GE(frames.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    const bus::Message& m = frames[i];
    EXPECT_EQ(m.key, spec.id);
    EXPECT_EQ(m.headers.Get(protocol::header::kKind), "live");
    auto meta = protocol::DecodeFrameHeaders(m.headers);
    ASSERT_TRUE(meta.has_value()) << meta.error().ToString();
    EXPECT_EQ(meta->stream_id, spec.id);
    EXPECT_EQ(meta->sequence, static_cast<std::int64_t>(i));
    EXPECT_EQ(meta->reply_to, "kadr.live.results");
    EXPECT_EQ(meta->annotated_to, "kadr.live.annotated");
    ASSERT_TRUE(meta->deadline_ms.has_value());
    EXPECT_EQ(*meta->deadline_ms, meta->capture_ms + 1500);
    EXPECT_GT(meta->capture_ms, 0);
    EXPECT_EQ(meta->source, "dock");
    ASSERT_TRUE(meta->options.confidence.has_value());
    EXPECT_FLOAT_EQ(*meta->options.confidence, 0.4f);
    // The frame is a JPEG (SOI marker).
    ASSERT_GE(m.value.size(), 2u);
    EXPECT_EQ(m.value[0], 0xFF);
    EXPECT_EQ(m.value[1], 0xD8);
  }
  // Nothing answered: the window (2) holds everything else back.
  EXPECT_EQ(frames.size(), 2u);
}

TEST_F(StreamRunnerTest, AtTwiceTheWorkerRateInFlightStaysWithinTheWindowAndDropsAreCounted) {
  // Camera: a frame every 5 ms; worker: 10 ms per frame.
  ScriptedSources sources({SourceScript{Status::Ok(), -1, SourceScript::After::kLost, 5ms}});
  StreamRunner runner(Spec(), FastOptions(), sources.Factory(), publisher_, metrics_);
  FakeWorker worker(bus_, topic_, 10ms,
                    [&](const protocol::FrameResult& r) { runner.OnResult(r, r.capture_ms + 25); });
  runner.Start();
  ASSERT_TRUE(WaitFor([&] { return runner.Snapshot().stats.frames_done >= 20; }));
  runner.Stop();
  worker.Stop();
  const StreamStats s = runner.Snapshot().stats;
  EXPECT_LE(worker.max_outstanding(), 2u);
  EXPECT_GT(s.dropped_backpressure, 0u);
  EXPECT_EQ(s.dropped_deadline, 0u);
  EXPECT_EQ(s.dropped_error, 0u);
  // Every captured frame was published, dropped, or is the one left in the mailbox.
  EXPECT_LE(s.frames_published + s.dropped_backpressure, s.frames_captured);
  EXPECT_GE(s.frames_published + s.dropped_backpressure + 1, s.frames_captured);
  ASSERT_TRUE(s.latency_p50_ms.has_value());
  EXPECT_DOUBLE_EQ(*s.latency_p50_ms, 25.0);
  const std::string text = metrics_.RenderPrometheus();
  EXPECT_NE(text.find("kadr_camera_frames_dropped_total{reason=\"backpressure\",stream=\"" +
                      Spec().id + "\"}"),
            std::string::npos)
      << text;
}

TEST_F(StreamRunnerTest, LosslessModeDropsNothingAndFinishesAFile) {
  SourceScript file{Status::Ok(), 30, SourceScript::After::kEnd, 1ms, /*live=*/false, 30};
  ScriptedSources sources({file});
  StreamRunner runner(Spec(StreamMode::kLossless), FastOptions(), sources.Factory(), publisher_,
                      metrics_);
  FakeWorker worker(bus_, topic_, 5ms,
                    [&](const protocol::FrameResult& r) { runner.OnResult(r, r.capture_ms); });
  runner.Start();
  ASSERT_TRUE(WaitFor([&] { return runner.Snapshot().state == StreamState::kFinished; }))
      << StreamStateName(runner.Snapshot().state);
  runner.Stop();
  worker.Stop();
  const StreamStats s = runner.Snapshot().stats;
  EXPECT_EQ(s.frames_captured, 30u);
  EXPECT_EQ(s.frames_published, 30u);
  EXPECT_EQ(s.frames_done, 30u);
  EXPECT_EQ(s.dropped(), 0u);
  EXPECT_LE(worker.max_outstanding(), 2u);
}

TEST_F(StreamRunnerTest, DecimatesAFileToTheTargetFps) {
  // 30 frames at 30 fps, lossless, target 10 fps: every third frame.
  SourceScript file{Status::Ok(), 30, SourceScript::After::kEnd, 0ms, /*live=*/false, 30};
  ScriptedSources sources({file});
  StreamSpec spec = Spec(StreamMode::kLossless);
  spec.fps = 10;
  StreamRunner runner(spec, FastOptions(), sources.Factory(), publisher_, metrics_);
  FakeWorker worker(bus_, topic_, 0ms,
                    [&](const protocol::FrameResult& r) { runner.OnResult(r, r.capture_ms); });
  runner.Start();
  ASSERT_TRUE(WaitFor([&] { return runner.Snapshot().state == StreamState::kFinished; }));
  runner.Stop();
  const StreamStats s = runner.Snapshot().stats;
  EXPECT_EQ(s.frames_captured, 30u);
  EXPECT_EQ(s.frames_published, 10u);
  EXPECT_EQ(s.dropped(), 0u);
}

TEST_F(StreamRunnerTest, ScalesLargeFramesDownKeepingTheAspect) {
  ScriptedSources sources({SourceScript{}});
  StreamSpec spec = Spec();
  spec.max_width = 16;
  spec.max_height = 16;
  StreamRunner runner(spec, FastOptions(), sources.Factory(), publisher_, metrics_);
  runner.Start();
  ASSERT_TRUE(WaitFor([&] { return bus_.Size(topic_) >= 1; }));
  runner.Stop();
  const bus::Message m = bus_.Topic(topic_)[0];
  const cv::Mat img = cv::imdecode(m.value, cv::IMREAD_COLOR);
  EXPECT_EQ(img.cols, 16);  // 32x24 -> 16x12
  EXPECT_EQ(img.rows, 12);
}

TEST_F(StreamRunnerTest, LostSourceReconnectsWithBackoffAndReportsTheGap) {
  ScriptedSources sources({SourceScript{Status::Ok(), 5, SourceScript::After::kLost},
                           SourceScript{UnavailableError("cannot connect to cam:554: refused")},
                           SourceScript{Status::Ok(), -1}});
  StreamRunner runner(Spec(), FastOptions(), sources.Factory(), publisher_, metrics_);
  FakeWorker worker(bus_, topic_, 0ms,
                    [&](const protocol::FrameResult& r) { runner.OnResult(r, r.capture_ms); });
  runner.Start();
  ASSERT_TRUE(WaitFor([&] {
    const auto s = runner.Snapshot();
    return s.state == StreamState::kRunning && s.stats.reconnects >= 2 &&
           s.stats.last_gap_ms.has_value();
  }));
  const StreamSnapshot s = runner.Snapshot();
  runner.Stop();
  EXPECT_GE(sources.opens(), 3);
  EXPECT_GE(*s.stats.last_gap_ms, 0);
  ASSERT_TRUE(s.stats.last_error.has_value());
  EXPECT_EQ(s.stats.last_error->code(), StatusCode::kUnavailable);
  EXPECT_EQ(s.stats.last_error->message().find("secret"), std::string::npos);
  EXPECT_NE(metrics_.RenderPrometheus().find("kadr_camera_reconnects_total"), std::string::npos);
}

TEST_F(StreamRunnerTest, StalledSourceCountsAsLost) {
  ScriptedSources sources(
      {SourceScript{Status::Ok(), 3, SourceScript::After::kStall}, SourceScript{Status::Ok(), -1}});
  StreamRunner runner(Spec(), FastOptions(), sources.Factory(), publisher_, metrics_);
  FakeWorker worker(bus_, topic_, 0ms,
                    [&](const protocol::FrameResult& r) { runner.OnResult(r, r.capture_ms); });
  runner.Start();
  ASSERT_TRUE(WaitFor([&] {
    const auto s = runner.Snapshot();
    return s.stats.reconnects >= 1 && s.stats.last_gap_ms.has_value();
  }));
  const StreamSnapshot s = runner.Snapshot();
  runner.Stop();
  ASSERT_TRUE(s.stats.last_error.has_value());
  EXPECT_NE(s.stats.last_error->message().find("stalled"), std::string::npos)
      << s.stats.last_error->message();
  EXPECT_GE(*s.stats.last_gap_ms, 150);  // at least the stall timeout
}

TEST_F(StreamRunnerTest, NotAVideoFailsForGood) {
  ScriptedSources sources({SourceScript{UnsupportedError("not a video: /x.txt")}});
  StreamRunner runner(Spec(), FastOptions(), sources.Factory(), publisher_, metrics_);
  runner.Start();
  ASSERT_TRUE(WaitFor([&] { return runner.Snapshot().state == StreamState::kFailed; }));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(sources.opens(), 1);
  runner.Stop();
}

// A source the policy refuses (a restored stream, a name that now resolves to loopback)
// fails for good instead of knocking again and again.
TEST_F(StreamRunnerTest, APolicyRefusalFailsForGood) {
  ScriptedSources sources(
      {SourceScript{PermissionDeniedError("source host 'cam' resolves to a "
                                          "loopback address")}});
  StreamRunner runner(Spec(), FastOptions(), sources.Factory(), publisher_, metrics_);
  runner.Start();
  ASSERT_TRUE(WaitFor([&] { return runner.Snapshot().state == StreamState::kFailed; }));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(sources.opens(), 1);
  const StreamSnapshot s = runner.Snapshot();
  ASSERT_TRUE(s.stats.last_error.has_value());
  EXPECT_EQ(s.stats.last_error->code(), StatusCode::kPermissionDenied);
  runner.Stop();
}

// Why a network source did not open stays in the log: the stream's last_error, which the API
// shows, says the same for refused, unknown host, timeout and not a video.
TEST_F(StreamRunnerTest, NetworkOpenFailuresShowOneGenericError) {
  ScriptedSources sources({SourceScript{UnavailableError(
      "rtsp://user:secret@cam/x: cannot connect to 10.0.0.7:554: Connection refused")}});
  StreamRunner runner(Spec(), FastOptions(), sources.Factory(), publisher_, metrics_);
  runner.Start();
  ASSERT_TRUE(WaitFor([&] { return runner.Snapshot().stats.last_error.has_value(); }));
  const StreamSnapshot s = runner.Snapshot();
  runner.Stop();
  EXPECT_EQ(s.stats.last_error->code(), StatusCode::kUnavailable);
  EXPECT_EQ(s.stats.last_error->message(),
            "cannot open the source rtsp://***@cam/x: no video stream answered (the server log "
            "has the reason)");
}

TEST(PublicSourceErrorTest, HidesNetworkReasonsButKeepsPolicyAndFileErrors) {
  for (const Status& s :
       {UnavailableError("cannot connect to 10.0.0.7:22: Connection refused"),
        DeadlineExceededError("no answer from 10.0.0.7:554 within 5000 ms"),
        UnavailableError("cannot resolve host 'intranet': Name not known"),
        InternalError("opening: OpenCV threw"), UnsupportedError("not a video")}) {
    const Status shown = PublicSourceError(s, "http://u:pw@intranet:8080/x");
    EXPECT_EQ(shown.code(), StatusCode::kUnavailable) << s.ToString();
    EXPECT_EQ(shown.message(),
              "cannot open the source http://***@intranet:8080/x: no video stream answered (the "
              "server log has the reason)");
  }
  const Status denied = PermissionDeniedError("source host 'x' is a loopback address");
  EXPECT_EQ(PublicSourceError(denied, "http://x/"), denied);
  const Status missing = NotFoundError("no such file /srv/media/a.mp4");
  EXPECT_EQ(PublicSourceError(missing, "/srv/media/a.mp4"), missing);
  const Status device = NotFoundError("no such device /dev/video0");
  EXPECT_EQ(PublicSourceError(device, "/dev/video0"), device);
}

TEST_F(StreamRunnerTest, SkippedResultsAndMissingResultsAreDeadlineDrops) {
  ScriptedSources sources({SourceScript{Status::Ok(), -1, SourceScript::After::kLost, 5ms}});
  StreamSpec spec = Spec();
  spec.max_latency_ms = 50;
  StreamRunner runner(spec, FastOptions(), sources.Factory(), publisher_, metrics_);
  // Nobody answers: frames expire after max_latency_ms, and the window keeps moving.
  runner.Start();
  ASSERT_TRUE(WaitFor([&] { return runner.Snapshot().stats.dropped_deadline >= 4; }));
  EXPECT_GE(runner.Snapshot().stats.frames_published, 4u);
  // A worker that skips everything: also deadline drops, never done.
  FakeWorker worker(
      bus_, topic_, 0ms, [&](const protocol::FrameResult& r) { runner.OnResult(r, r.capture_ms); },
      protocol::FrameStatus::kSkipped);
  const std::uint64_t before = runner.Snapshot().stats.dropped_deadline;
  ASSERT_TRUE(WaitFor([&] { return runner.Snapshot().stats.dropped_deadline >= before + 5; }));
  runner.Stop();
  worker.Stop();
  EXPECT_EQ(runner.Snapshot().stats.frames_done, 0u);
}

TEST_F(StreamRunnerTest, FailedPublishIsAnErrorDrop) {
  publisher_.FailNext(3, UnavailableError("broker down"));
  ScriptedSources sources({SourceScript{}});
  StreamRunner runner(Spec(), FastOptions(), sources.Factory(), publisher_, metrics_);
  FakeWorker worker(bus_, topic_, 0ms,
                    [&](const protocol::FrameResult& r) { runner.OnResult(r, r.capture_ms); });
  runner.Start();
  ASSERT_TRUE(WaitFor([&] { return runner.Snapshot().stats.frames_done >= 3; }));
  runner.Stop();
  const StreamStats s = runner.Snapshot().stats;
  EXPECT_EQ(s.dropped_error, 3u);
  ASSERT_TRUE(s.last_error.has_value());
  EXPECT_NE(s.last_error->message().find("broker down"), std::string::npos);
}

}  // namespace
}  // namespace kadr::camera
