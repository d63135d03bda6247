#include "worker/worker_service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "bus/fake_bus.h"

namespace kadr::worker {
namespace {

using namespace std::chrono_literals;
using protocol::FrameMeta;
using protocol::FrameResult;
using protocol::FrameStatus;

constexpr char kFramesTopic[] = "kadr.frames.fake";
constexpr char kResults[] = "kadr.results";
constexpr char kAnnotated[] = "kadr.annotated";
constexpr char kDlq[] = "kadr.dlq";

// A two-class detector that finds one box in the middle of every image and records the batch
// sizes it was called with.
class FakeDetector : public inference::Detector {
 public:
  FakeDetector() {
    info_.name = "fake";
    info_.labels = {"thing", "other"};
  }
  inference::ModelInfo& mutable_info() { return info_; }
  const inference::ModelInfo& info() const override { return info_; }
  Result<std::vector<std::vector<protocol::Detection>>> Detect(
      std::span<const cv::Mat> images, const protocol::DetectOptions&,
      inference::DetectTimings* timings) override {
    if (before_detect) before_detect(images);
    std::vector<std::vector<protocol::Detection>> out;
    {
      std::lock_guard lock(mu_);
      batch_sizes_.push_back(images.size());
      for (const auto& img : images) widths_.push_back(img.cols);
    }
    for (const auto& img : images) {
      if (img.empty()) return InvalidArgumentError("empty image");
      if (img.cols == fail_width) return InternalError("backend exploded");
      protocol::Detection d;
      d.label = "thing";
      d.score = 0.9f;
      d.box = {img.cols / 4.f, img.rows / 4.f, img.cols / 2.f, img.rows / 2.f};
      out.push_back({d});
    }
    if (timings != nullptr) *timings = {1, 2, 3};
    return out;
  }
  std::vector<std::size_t> batch_sizes() const {
    std::lock_guard lock(mu_);
    return batch_sizes_;
  }
  std::vector<int> widths() const {  // of every image it was given, in order
    std::lock_guard lock(mu_);
    return widths_;
  }
  // Set before the service runs. Called at the start of every Detect, on the service's
  // thread; may block (see Gate).
  std::function<void(std::span<const cv::Mat>)> before_detect;
  int fail_width = -1;  // a batch with an image this wide fails with kInternal

 private:
  inference::ModelInfo info_;
  mutable std::mutex mu_;
  std::vector<std::size_t> batch_sizes_;
  std::vector<int> widths_;
};

// Holds the threads that Wait() until Open(), and counts them: a model that is busy for as
// long as the test wants.
class Gate {
 public:
  void Wait() {
    std::unique_lock lock(mu_);
    ++arrived_;
    cv_.wait(lock, [&] { return open_; });
  }
  void Open() {
    {
      std::lock_guard lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  int arrived() const {
    std::lock_guard lock(mu_);
    return arrived_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  bool open_ = false;
};

// Forwards to a FakeSubscriber and records every Ack, duplicates included.
class RecordingSubscriber final : public bus::FrameSubscriber {
 public:
  explicit RecordingSubscriber(bus::FakeSubscriber& inner) : inner_(inner) {}
  std::vector<bus::InboundMessage> Poll(std::size_t max_messages, std::chrono::milliseconds timeout,
                                        std::chrono::milliseconds linger) override {
    {
      std::lock_guard lock(mu_);
      asked_.push_back(max_messages);
    }
    return inner_.Poll(max_messages, timeout, linger);
  }
  void Ack(const bus::AckToken& token) override {
    {
      std::lock_guard lock(mu_);
      acks_.push_back(token.offset);
    }
    if (on_ack) on_ack(token);
    inner_.Ack(token);
  }
  Status Close() override { return inner_.Close(); }
  std::vector<bus::Loss> TakeLosses() override { return inner_.TakeLosses(); }
  void AddLoss(bus::Loss loss) { inner_.AddLoss(std::move(loss)); }

  std::vector<std::int64_t> acks() const {
    std::lock_guard lock(mu_);
    return acks_;
  }
  // max_messages of every Poll, in order.
  std::vector<std::size_t> asked() const {
    std::lock_guard lock(mu_);
    return asked_;
  }
  std::function<void(const bus::AckToken&)> on_ack;  // set before the service runs

 private:
  bus::FakeSubscriber& inner_;
  mutable std::mutex mu_;
  std::vector<std::int64_t> acks_;
  std::vector<std::size_t> asked_;
};

// Forwards to a FakePublisher (so messages land on the bus at once) but holds each delivery
// callback until the test releases it: the transport has not confirmed delivery yet.
class HoldingPublisher final : public bus::FramePublisher {
 public:
  explicit HoldingPublisher(bus::FakePublisher& inner) : inner_(inner) {}
  Status Publish(bus::Message message, bus::DeliveryCallback on_delivery) override {
    return inner_.Publish(std::move(message),
                          [this, on_delivery](const Status& s, const bus::AckToken& at) {
                            std::lock_guard lock(mu_);
                            held_.push_back({on_delivery, s, at});
                          });
  }
  Status Flush(std::chrono::milliseconds) override { return Status::Ok(); }

  std::size_t held() const {
    std::lock_guard lock(mu_);
    return held_.size();
  }
  // Delivers the oldest held callback; false when none is held.
  bool ReleaseOne() {
    Held next;
    {
      std::lock_guard lock(mu_);
      if (held_.empty()) return false;
      next = std::move(held_.front());
      held_.erase(held_.begin());
    }
    if (next.callback) next.callback(next.status, next.at);
    return true;
  }

 private:
  bus::FakePublisher& inner_;
  mutable std::mutex mu_;
  struct Held {
    bus::DeliveryCallback callback;
    Status status;
    bus::AckToken at;
  };
  std::vector<Held> held_;
};

std::vector<std::uint8_t> Png(int width = 80, int height = 60) {
  const cv::Mat img(height, width, CV_8UC3, cv::Scalar(10, 20, 30));
  std::vector<std::uint8_t> buf;
  cv::imencode(".png", img, buf);
  return buf;
}

// A PNG of noise: it decodes slowly, and its JPEG is large.
std::vector<std::uint8_t> NoisyPng(int width, int height) {
  cv::Mat img(height, width, CV_8UC3);
  cv::randu(img, cv::Scalar::all(0), cv::Scalar::all(255));
  std::vector<std::uint8_t> buf;
  cv::imencode(".png", img, buf);
  return buf;
}

// A PNG whose signature and IHDR (the first 33 bytes) are intact but whose pixel data is
// garbage: probing succeeds, decoding fails.
std::vector<std::uint8_t> PngWithGarbagePixels(int width = 80, int height = 60) {
  std::vector<std::uint8_t> png = Png(width, height);
  for (std::size_t i = 33; i < png.size(); ++i) png[i] = static_cast<std::uint8_t>(i * 131 + 7);
  return png;
}

FrameMeta Meta(const std::string& id) {
  FrameMeta m;
  m.frame_id = id;
  m.stream_id = "cam1";
  m.model = "fake";
  return m;
}

std::string Text(const std::vector<std::uint8_t>& v) { return {v.begin(), v.end()}; }

class WorkerServiceTest : public ::testing::Test {
 protected:
  WorkerServiceTest() {
    options_.poll_timeout = 5ms;
    options_.batch_linger = 0ms;
    options_.drain_timeout = 2s;
    options_.heartbeat_topic = "";  // counted publishes below are the frames' outputs only
  }
  ~WorkerServiceTest() override {
    model_.Open();  // a test that failed half-way must not leave the service stuck in it
    (void)Stop();
  }

  void Enqueue(const FrameMeta& meta, std::vector<std::uint8_t> bytes) {
    bus::Message m;
    m.topic = kFramesTopic;
    m.key = meta.stream_id;
    m.value = std::move(bytes);
    protocol::EncodeFrameHeaders(meta, m.headers);
    bus_.Append(std::move(m));
  }
  void EnqueueRaw(bus::Message m) {
    m.topic = kFramesTopic;
    bus_.Append(std::move(m));
  }

  void Start() { Start(publisher_); }
  void Start(bus::FramePublisher& publisher) {
    service_ = std::make_unique<WorkerService>(options_, detector_, publisher, subscriber_);
    thread_ =
        std::jthread([this](const std::stop_token& stop) { run_status_ = service_->Run(stop); });
  }
  Status Stop() {
    if (thread_.joinable()) {
      thread_.request_stop();
      thread_.join();
    }
    return run_status_;
  }

  // Waits (bounded) for the service thread to make `done` true.
  static bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds limit = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(1ms);
    }
    return true;
  }
  bool WaitForAcks(std::size_t n) {
    return WaitFor([&] { return service_->stats().acked >= n; });
  }

  std::vector<FrameResult> Results(const std::string& topic = kResults) const {
    std::vector<FrameResult> out;
    for (const auto& m : bus_.Topic(topic)) {
      auto r = protocol::FrameResultFromJson(Text(m.value));
      EXPECT_TRUE(r.has_value()) << r.error().ToString() << "\n" << Text(m.value);
      if (r) out.push_back(std::move(*r));
    }
    return out;
  }

  // The kadr-frame-id of every message on `topic`, in the order they were published.
  std::vector<std::string> FrameIds(const std::string& topic) const {
    std::vector<std::string> out;
    for (const auto& m : bus_.Topic(topic))
      out.push_back(m.headers.Get("kadr-frame-id").value_or("?"));
    return out;
  }

  // Makes every model call wait for model_.Open(): a model busy for as long as a test wants.
  void BlockModel() {
    detector_->before_detect = [this](std::span<const cv::Mat>) { model_.Wait(); };
  }

  WorkerOptions options_;
  Gate model_;  // see BlockModel; opened before the service is stopped
  std::shared_ptr<FakeDetector> detector_ = std::make_shared<FakeDetector>();
  bus::FakeBus bus_;
  bus::FakePublisher publisher_{bus_};
  HoldingPublisher holding_{publisher_};  // for tests that confirm deliveries by hand
  bus::FakeSubscriber fake_subscriber_{bus_, kFramesTopic};
  RecordingSubscriber subscriber_{fake_subscriber_};
  std::unique_ptr<WorkerService> service_;
  Status run_status_;
  std::jthread thread_;  // last: stopped and joined before the service goes
};

TEST_F(WorkerServiceTest, GoodFrameYieldsOneOkResultAndAnAnnotatedJpeg) {
  FrameMeta meta = Meta("f1");
  meta.sequence = 7;
  meta.capture_ms = 1234;
  meta.correlation_id = "req-1";
  Enqueue(meta, Png(80, 60));
  Start();
  ASSERT_TRUE(WaitForAcks(1));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();

  const auto results = Results();
  ASSERT_EQ(results.size(), 1u);
  const FrameResult& r = results[0];
  EXPECT_EQ(r.status, FrameStatus::kOk);
  EXPECT_EQ(r.frame_id, "f1");
  EXPECT_EQ(r.stream_id, "cam1");
  EXPECT_EQ(r.sequence, 7);
  EXPECT_EQ(r.capture_ms, 1234);
  EXPECT_EQ(r.correlation_id, "req-1");
  EXPECT_EQ(r.annotated_topic, kAnnotated);
  EXPECT_EQ(r.result.model, "fake");
  EXPECT_EQ(r.result.image_width, 80);
  EXPECT_EQ(r.result.image_height, 60);
  EXPECT_EQ(r.result.detections.size(), 1u);

  const auto result_msgs = bus_.Topic(kResults);
  EXPECT_EQ(result_msgs[0].key, "cam1");
  EXPECT_EQ(result_msgs[0].headers.Get("kadr-status"), "ok");
  EXPECT_EQ(result_msgs[0].headers.Get("kadr-frame-id"), "f1");
  EXPECT_EQ(result_msgs[0].headers.Get("content-type"), "application/json");

  const auto annotated = bus_.Topic(kAnnotated);
  ASSERT_EQ(annotated.size(), 1u);
  EXPECT_EQ(annotated[0].headers.Get("kadr-frame-id"), "f1");
  EXPECT_EQ(annotated[0].headers.Get("content-type"), "image/jpeg");
  EXPECT_EQ(annotated[0].key, "cam1");
  const cv::Mat jpeg = cv::imdecode(annotated[0].value, cv::IMREAD_COLOR);
  ASSERT_FALSE(jpeg.empty()) << "annotated output is not an image";
  EXPECT_EQ(jpeg.cols, 80);
  EXPECT_EQ(jpeg.rows, 60);
  EXPECT_EQ(annotated[0].value[0], 0xFF);
  EXPECT_EQ(annotated[0].value[1], 0xD8);

  EXPECT_EQ(bus_.Size(kDlq), 0u);
  EXPECT_EQ(subscriber_.acks(), (std::vector<std::int64_t>{0}));
  const WorkerStats s = service_->stats();
  EXPECT_EQ(s.frames, 1u);
  EXPECT_EQ(s.processed, 1u);
  EXPECT_EQ(s.failed, 0u);
  EXPECT_EQ(s.acked, 1u);
}

TEST_F(WorkerServiceTest, HonoursACustomReplyTo) {
  FrameMeta meta = Meta("f1");
  meta.reply_to = "kadr.replies.gateway-2";
  Enqueue(meta, Png());
  Start();
  ASSERT_TRUE(WaitForAcks(1));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  EXPECT_EQ(bus_.Size(kResults), 0u);
  const auto results = Results("kadr.replies.gateway-2");
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].frame_id, "f1");
  EXPECT_EQ(results[0].status, FrameStatus::kOk);
}

// A frame cannot make the worker write to a topic outside the allowed prefixes (kadr. by
// default): it is answered with an error on kadr.results and dead-lettered, and nothing goes
// to the topic it named. The operator may allow other prefixes.
TEST_F(WorkerServiceTest, AForeignReplyTopicIsRefusedUnlessItsPrefixIsAllowed) {
  FrameMeta bad_reply = Meta("f1");
  bad_reply.reply_to = "billing.events";
  FrameMeta bad_image = Meta("f2");
  bad_image.annotated_to = "__consumer_offsets";
  Enqueue(bad_reply, Png());
  Enqueue(bad_image, Png());
  Start();
  ASSERT_TRUE(WaitForAcks(2));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  EXPECT_EQ(bus_.Size("billing.events"), 0u);
  EXPECT_EQ(bus_.Size("__consumer_offsets"), 0u);
  const auto results = Results();
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) {
    EXPECT_EQ(r.status, FrameStatus::kError);
    EXPECT_EQ(r.error.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.error.message().find("only to topics starting with kadr."), std::string::npos)
        << r.error.ToString();
  }
  EXPECT_EQ(bus_.Size(std::string(protocol::kDeadLetterTopic)), 2u);
  EXPECT_EQ(service_->stats().failed, 2u);
}

TEST_F(WorkerServiceTest, TheOperatorMayAllowOtherReplyTopicPrefixes) {
  options_.reply_topic_prefixes = {"kadr.", "billing."};
  FrameMeta allowed = Meta("f3");
  allowed.reply_to = "billing.events";
  Enqueue(allowed, Png());
  Start();
  ASSERT_TRUE(WaitFor([&] { return bus_.Size("billing.events") == 1; }));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  const auto billed = Results("billing.events");
  ASSERT_EQ(billed.size(), 1u);
  EXPECT_EQ(billed[0].status, FrameStatus::kOk);
}

TEST_F(WorkerServiceTest, AnnotatedImageGoesWhereTheFrameAsksAndEchoesTheSource) {
  FrameMeta meta = Meta("f1");
  meta.reply_to = "kadr.replies.gw1";
  meta.annotated_to = "kadr.replies.gw1";
  meta.source = "bus.jpg";
  Enqueue(meta, Png());
  Start();
  ASSERT_TRUE(WaitForAcks(1));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  EXPECT_EQ(bus_.Size(kAnnotated), 0u);
  const auto replies = bus_.Topic("kadr.replies.gw1");
  ASSERT_EQ(replies.size(), 2u);
  // The image comes first, then the result that names where it went.
  EXPECT_EQ(replies[0].headers.Get("content-type"), "image/jpeg");
  EXPECT_EQ(replies[1].headers.Get("content-type"), "application/json");
  EXPECT_EQ(replies[0].headers.Get("kadr-source"), "bus.jpg");
  EXPECT_EQ(replies[1].headers.Get("kadr-source"), "bus.jpg");
  const auto r = protocol::FrameResultFromJson(Text(replies[1].value));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->annotated_topic, "kadr.replies.gw1");
}

TEST_F(WorkerServiceTest, AnnouncesItselfWhileRunningAndWhenStopping) {
  options_.heartbeat_topic = "kadr.workers";
  options_.heartbeat_interval = 20ms;
  options_.worker_id = "w1";
  detector_->mutable_info().input_width = 64;
  Enqueue(Meta("f1"), Png());
  Start();
  ASSERT_TRUE(WaitForAcks(1));
  ASSERT_TRUE(WaitFor([&] { return bus_.Size("kadr.workers") >= 3; }));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  const auto beats = bus_.Topic("kadr.workers");
  std::vector<protocol::WorkerHeartbeat> parsed;
  for (const auto& m : beats) {
    EXPECT_EQ(m.key, "w1");
    auto hb = protocol::WorkerHeartbeatFromJson(Text(m.value));
    ASSERT_TRUE(hb.has_value()) << hb.error().ToString();
    parsed.push_back(*hb);
  }
  EXPECT_EQ(parsed.front().state, "running");
  EXPECT_EQ(parsed.front().model, "fake");
  EXPECT_EQ(parsed.front().labels, (std::vector<std::string>{"thing", "other"}));
  EXPECT_EQ(parsed.front().input_width, 64);
  EXPECT_EQ(parsed.front().interval_ms, 20);
  EXPECT_EQ(parsed.back().state, "stopping");
  EXPECT_EQ(parsed.back().processed, 1u);
  EXPECT_EQ(parsed.back().frames, 1u);
}

// Frames the broker deleted before the worker read them: counted, told to on_lost, and
// announced at once (not an interval later) with their partition and offsets, in every
// announcement for protocol::kLossReportMs, so that their producers learn of it.
TEST_F(WorkerServiceTest, FramesDeletedBeforeTheyWereReadAreCountedAndAnnouncedAtOnce) {
  options_.heartbeat_topic = "kadr.workers";
  options_.heartbeat_interval = 60s;  // only the first one and the ones losses cause
  options_.worker_id = "w1";
  std::vector<bus::Loss> told;
  std::mutex told_mu;
  options_.on_lost = [&](const bus::Loss& loss) {
    std::lock_guard lock(told_mu);
    told.push_back(loss);
  };
  Start();
  ASSERT_TRUE(WaitFor([&] { return bus_.Size("kadr.workers") >= 1; }));
  subscriber_.AddLoss({kFramesTopic, 2, 40, 45});
  subscriber_.AddLoss({kFramesTopic, 3, 7, -1});  // the broker did not say how many
  ASSERT_TRUE(WaitFor([&] { return bus_.Size("kadr.workers") >= 2; }));
  EXPECT_EQ(service_->stats().lost, 6u);
  {
    std::lock_guard lock(told_mu);
    ASSERT_EQ(told.size(), 2u);
    EXPECT_EQ(told[0].from, 40);
  }
  auto hb = protocol::WorkerHeartbeatFromJson(Text(bus_.Topic("kadr.workers")[1].value));
  ASSERT_TRUE(hb.has_value()) << hb.error().ToString();
  EXPECT_EQ(hb->lost, 6u);
  ASSERT_EQ(hb->losses.size(), 2u);
  EXPECT_EQ(hb->losses[0].topic, kFramesTopic);
  EXPECT_EQ(hb->losses[0].partition, 2);
  EXPECT_EQ(hb->losses[0].from, 40);
  EXPECT_EQ(hb->losses[0].to, 45);
  EXPECT_EQ(hb->losses[1].to, -1);
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  hb = protocol::WorkerHeartbeatFromJson(Text(bus_.Topic("kadr.workers").back().value));
  ASSERT_TRUE(hb.has_value());
  EXPECT_EQ(hb->state, "stopping");
  EXPECT_EQ(hb->losses.size(), 2u) << "still reported within kLossReportMs";
}

TEST_F(WorkerServiceTest, MessageKeyNamesTheStreamWhenTheHeaderIsAbsent) {
  bus::Message m;
  m.key = "cam9";
  m.value = Png();
  m.headers.Set("kadr-frame-id", "f1");
  EnqueueRaw(std::move(m));
  Start();
  ASSERT_TRUE(WaitForAcks(1));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  const auto results = Results();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].stream_id, "cam9");
}

TEST_F(WorkerServiceTest, AcksAFrameOnlyAfterAllItsOutputsAreDelivered) {
  Enqueue(Meta("f1"), Png());
  Start(holding_);
  // The result and the annotated image are published, but not yet confirmed.
  ASSERT_TRUE(WaitFor([&] { return holding_.held() == 2; }));
  EXPECT_EQ(bus_.Size(kResults), 1u);
  EXPECT_EQ(bus_.Size(kAnnotated), 1u);
  EXPECT_TRUE(subscriber_.acks().empty());

  ASSERT_TRUE(holding_.ReleaseOne());
  EXPECT_TRUE(subscriber_.acks().empty()) << "acked with one output still undelivered";
  EXPECT_EQ(service_->stats().acked, 0u);

  ASSERT_TRUE(holding_.ReleaseOne());
  EXPECT_EQ(subscriber_.acks(), (std::vector<std::int64_t>{0}));
  EXPECT_EQ(service_->stats().acked, 1u);
  EXPECT_TRUE(Stop().ok()) << run_status_.ToString();
}

TEST_F(WorkerServiceTest, StopWithUndeliveredOutputsReportsDeadlineExceededWithoutAcking) {
  options_.drain_timeout = 50ms;
  Enqueue(Meta("f1"), Png());
  Start(holding_);
  ASSERT_TRUE(WaitFor([&] { return holding_.held() == 2; }));
  const Status s = Stop();
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
  EXPECT_TRUE(subscriber_.acks().empty());
  EXPECT_TRUE(fake_subscriber_.closed());
}

TEST_F(WorkerServiceTest, SendsCorruptFrameToDeadLetterTopicAndKeepsGoing) {
  const std::vector<std::uint8_t> corrupt = PngWithGarbagePixels();
  FrameMeta bad = Meta("bad");
  bad.correlation_id = "req-bad";
  Enqueue(bad, corrupt);
  Enqueue(Meta("good"), Png());
  Start();
  ASSERT_TRUE(WaitForAcks(2));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();

  std::map<std::string, FrameResult> by_id;
  for (auto& r : Results()) by_id[r.frame_id] = r;
  ASSERT_EQ(by_id.size(), 2u);
  ASSERT_EQ(bus_.Size(kResults), 2u) << "exactly one result per frame";

  const FrameResult& err = by_id["bad"];
  EXPECT_EQ(err.status, FrameStatus::kError);
  EXPECT_EQ(err.error.code(), StatusCode::kInvalidArgument) << err.error.ToString();
  EXPECT_FALSE(err.error.message().empty());
  EXPECT_EQ(err.correlation_id, "req-bad");
  EXPECT_TRUE(err.annotated_topic.empty());
  EXPECT_EQ(by_id["good"].status, FrameStatus::kOk);

  const auto dlq = bus_.Topic(kDlq);
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_EQ(dlq[0].value, corrupt) << "the DLQ keeps the original bytes";
  EXPECT_EQ(dlq[0].key, "cam1");
  EXPECT_EQ(dlq[0].headers.Get("kadr-frame-id"), "bad") << "original headers are kept";
  EXPECT_EQ(dlq[0].headers.Get("kadr-error-code"), "invalid_argument");
  EXPECT_EQ(dlq[0].headers.Get("kadr-error-message"), err.error.message());

  const auto annotated = bus_.Topic(kAnnotated);
  ASSERT_EQ(annotated.size(), 1u);
  EXPECT_EQ(annotated[0].headers.Get("kadr-frame-id"), "good");

  EXPECT_EQ(subscriber_.acks().size(), 2u);
  const WorkerStats s = service_->stats();
  EXPECT_EQ(s.failed, 1u);
  EXPECT_EQ(s.processed, 1u);
}

TEST_F(WorkerServiceTest, FrameWithoutFrameIdGetsAnErrorResultAndGoesToDeadLetterTopic) {
  bus::Message m;
  m.key = "cam1";
  m.value = Png();
  m.headers.Set("kadr-stream-id", "cam1");
  EnqueueRaw(std::move(m));
  Enqueue(Meta("next"), Png());
  Start();
  ASSERT_TRUE(WaitForAcks(2));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();

  const auto results = Results();
  ASSERT_EQ(results.size(), 2u);
  const FrameResult& err = results[0];
  EXPECT_EQ(err.status, FrameStatus::kError);
  EXPECT_EQ(err.error.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(err.error.message().find("kadr-frame-id"), std::string::npos) << err.error.message();
  EXPECT_EQ(err.frame_id, std::string(kFramesTopic) + "/0/0") << "identified by its position";
  EXPECT_EQ(err.stream_id, "cam1");
  EXPECT_EQ(results[1].frame_id, "next");
  EXPECT_EQ(results[1].status, FrameStatus::kOk);

  const auto dlq = bus_.Topic(kDlq);
  ASSERT_EQ(dlq.size(), 1u);
  EXPECT_EQ(dlq[0].headers.Get("kadr-error-code"), "invalid_argument");
  EXPECT_NE(dlq[0].headers.Get("kadr-error-message")->find("kadr-frame-id"), std::string::npos);
  EXPECT_EQ(dlq[0].value, Png());
  EXPECT_EQ(subscriber_.acks().size(), 2u);
}

TEST_F(WorkerServiceTest, BadHeaderGetsAnErrorResultAndGoesToDeadLetterTopic) {
  bus::Message m;
  m.key = "cam1";
  m.value = Png();
  m.headers.Set("kadr-frame-id", "f1");
  m.headers.Set("kadr-conf", "1.5");
  EnqueueRaw(std::move(m));
  Start();
  ASSERT_TRUE(WaitForAcks(1));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  const auto results = Results();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].status, FrameStatus::kError);
  EXPECT_NE(results[0].error.message().find("kadr-conf"), std::string::npos);
  EXPECT_EQ(results[0].frame_id, "f1");  // the requester can still match it
  ASSERT_EQ(bus_.Size(kDlq), 1u);
  EXPECT_EQ(bus_.Size(kAnnotated), 0u);
}

TEST_F(WorkerServiceTest, BadHeaderResultKeepsCorrelationIdAndReplyTo) {
  bus::Message m;
  m.value = Png();
  m.headers.Set("kadr-frame-id", "f2");
  m.headers.Set("kadr-correlation-id", "req-7");
  m.headers.Set("kadr-reply-to", "kadr.replies.gw1");
  m.headers.Set("kadr-seq", "not-a-number");
  EnqueueRaw(std::move(m));
  Start();
  ASSERT_TRUE(WaitForAcks(1));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  const auto replies = bus_.Topic("kadr.replies.gw1");
  ASSERT_EQ(replies.size(), 1u);
  auto r =
      protocol::FrameResultFromJson(std::string(replies[0].value.begin(), replies[0].value.end()));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->frame_id, "f2");
  EXPECT_EQ(r->correlation_id, "req-7");
  EXPECT_EQ(r->status, FrameStatus::kError);
}

TEST_F(WorkerServiceTest, InvalidReplyToTopicFallsBackToResultsTopic) {
  bus::Message m;
  m.value = Png();
  m.headers.Set("kadr-frame-id", "f3");
  m.headers.Set("kadr-reply-to", "no spaces/allowed");
  EnqueueRaw(std::move(m));
  Start();
  ASSERT_TRUE(WaitForAcks(1));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  const auto results = Results();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].frame_id, "f3");
  EXPECT_NE(results[0].error.message().find("kadr-reply-to"), std::string::npos);
}

TEST_F(WorkerServiceTest, PastDeadlineIsSkippedWithoutProcessing) {
  options_.now_ms = [] { return std::int64_t{1'000'000}; };
  FrameMeta late = Meta("late");
  late.deadline_ms = 999'000;
  FrameMeta on_time = Meta("on-time");
  on_time.deadline_ms = 1'000'500;
  Enqueue(late, Png());
  Enqueue(on_time, Png());
  Start();
  ASSERT_TRUE(WaitForAcks(2));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();

  std::map<std::string, FrameResult> by_id;
  for (auto& r : Results()) by_id[r.frame_id] = r;
  ASSERT_EQ(by_id.size(), 2u);
  const FrameResult& skipped = by_id["late"];
  EXPECT_EQ(skipped.status, FrameStatus::kSkipped);
  EXPECT_EQ(skipped.error.code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(skipped.error.message().find("1000 ms"), std::string::npos) << skipped.error.message();
  EXPECT_TRUE(skipped.annotated_topic.empty());
  EXPECT_TRUE(skipped.result.detections.empty());
  EXPECT_EQ(by_id["on-time"].status, FrameStatus::kOk);

  const auto annotated = bus_.Topic(kAnnotated);
  ASSERT_EQ(annotated.size(), 1u);
  EXPECT_EQ(annotated[0].headers.Get("kadr-frame-id"), "on-time");
  EXPECT_EQ(bus_.Size(kDlq), 0u) << "a late frame is not a bad frame";
  EXPECT_EQ(bus_.Topic(kResults)[0].headers.Get("kadr-status"), "skipped");
  EXPECT_EQ(service_->stats().skipped, 1u);
  EXPECT_EQ(detector_->batch_sizes(), (std::vector<std::size_t>{1}));
}

TEST_F(WorkerServiceTest, OptionsOutOfRangeForTheModelGetAnErrorResult) {
  FrameMeta meta = Meta("f1");
  meta.options.classes = {1, 99};  // the fake model has two classes
  Enqueue(meta, Png());
  Start();
  ASSERT_TRUE(WaitForAcks(1));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  const auto results = Results();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].status, FrameStatus::kError);
  EXPECT_EQ(results[0].error.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(results[0].error.message().find("99"), std::string::npos) << results[0].error.message();
  EXPECT_EQ(results[0].frame_id, "f1");
  EXPECT_EQ(bus_.Size(kDlq), 1u);
  EXPECT_EQ(bus_.Size(kAnnotated), 0u);
  EXPECT_TRUE(detector_->batch_sizes().empty()) << "the model never ran";
}

TEST_F(WorkerServiceTest, NoDrawSendsNoAnnotatedImage) {
  FrameMeta meta = Meta("f1");
  meta.draw = false;
  Enqueue(meta, Png());
  Start();
  ASSERT_TRUE(WaitForAcks(1));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  const auto results = Results();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].status, FrameStatus::kOk);
  EXPECT_TRUE(results[0].annotated_topic.empty());
  EXPECT_EQ(results[0].result.detections.size(), 1u);
  EXPECT_EQ(bus_.Size(kAnnotated), 0u);
}

TEST_F(WorkerServiceTest, RepublishesAFailedDeliveryAndAcksOnce) {
  publisher_.FailNext(1, UnavailableError("broker down"));
  Enqueue(Meta("f1"), Png());
  Start();
  ASSERT_TRUE(WaitForAcks(1));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();

  EXPECT_GT(service_->stats().publish_retries, 0u);
  EXPECT_EQ(bus_.Size(kResults), 1u);
  EXPECT_EQ(bus_.Size(kAnnotated), 1u) << "the failed output was re-published";
  EXPECT_EQ(subscriber_.acks(), (std::vector<std::int64_t>{0}));
  EXPECT_EQ(service_->stats().acked, 1u);
}

TEST_F(WorkerServiceTest, RepublishesRepeatedFailuresOfEveryOutput) {
  publisher_.FailNext(5, UnavailableError("broker down"));
  Enqueue(Meta("f1"), Png());
  Enqueue(Meta("f2"), PngWithGarbagePixels());
  Start();
  ASSERT_TRUE(WaitForAcks(2));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  EXPECT_GE(service_->stats().publish_retries, 5u);
  EXPECT_EQ(bus_.Size(kResults), 2u);
  EXPECT_EQ(bus_.Size(kAnnotated), 1u);
  EXPECT_EQ(bus_.Size(kDlq), 1u);
  auto acks = subscriber_.acks();
  std::sort(acks.begin(), acks.end());
  EXPECT_EQ(acks, (std::vector<std::int64_t>{0, 1})) << "each frame acked exactly once";
}

TEST_F(WorkerServiceTest, ClosesTheSubscriberOnStop) {
  Start();
  EXPECT_FALSE(fake_subscriber_.closed());
  EXPECT_TRUE(Stop().ok()) << run_status_.ToString();
  EXPECT_TRUE(fake_subscriber_.closed());
  EXPECT_EQ(service_->stats().frames, 0u);
}

TEST_F(WorkerServiceTest, BatchesQueuedFramesUpToTheModelBatchSize) {
  options_.max_batch = 4;
  detector_->mutable_info().max_batch = 4;
  constexpr int kFrames = 10;
  for (int i = 0; i < kFrames; ++i) {
    FrameMeta m = Meta("f" + std::to_string(i));
    m.sequence = i;
    Enqueue(m, Png(40 + i, 30));
  }
  Start();
  ASSERT_TRUE(WaitForAcks(kFrames));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();

  const auto sizes = detector_->batch_sizes();
  std::size_t total = 0;
  std::size_t largest = 0;
  for (std::size_t s : sizes) {
    total += s;
    largest = std::max(largest, s);
    EXPECT_LE(s, 4u);
  }
  EXPECT_EQ(total, static_cast<std::size_t>(kFrames));
  EXPECT_GT(largest, 1u) << "queued frames were not batched";

  const auto results = Results();
  ASSERT_EQ(results.size(), static_cast<std::size_t>(kFrames));
  std::set<std::string> ids;
  for (const auto& r : results) {
    ids.insert(r.frame_id);
    EXPECT_EQ(r.status, FrameStatus::kOk);
    // Each frame got its own detections, from its own image.
    EXPECT_EQ(r.result.image_width, 40 + r.sequence) << r.frame_id;
    ASSERT_EQ(r.result.detections.size(), 1u);
    EXPECT_FLOAT_EQ(r.result.detections[0].box.x, (40 + r.sequence) / 4.f) << r.frame_id;
  }
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(kFrames));
  EXPECT_EQ(bus_.Size(kAnnotated), static_cast<std::size_t>(kFrames));
  EXPECT_EQ(subscriber_.acks().size(), static_cast<std::size_t>(kFrames));
}

TEST_F(WorkerServiceTest, BatchOfOneModelRunsFramesOneByOne) {
  options_.max_batch = 4;
  for (int i = 0; i < 6; ++i) Enqueue(Meta("f" + std::to_string(i)), Png());
  Start();
  ASSERT_TRUE(WaitForAcks(6));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  EXPECT_EQ(detector_->batch_sizes(), std::vector<std::size_t>(6, 1));
}

TEST_F(WorkerServiceTest, BadFrameInABatchFailsAlone) {
  options_.max_batch = 4;
  detector_->mutable_info().max_batch = 4;
  Enqueue(Meta("a"), Png());
  Enqueue(Meta("b"), PngWithGarbagePixels());
  Enqueue(Meta("c"), Png());
  Enqueue(Meta("d"), Png());
  Start();
  ASSERT_TRUE(WaitForAcks(4));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  std::map<std::string, FrameStatus> status;
  for (const auto& r : Results()) status[r.frame_id] = r.status;
  EXPECT_EQ(status, (std::map<std::string, FrameStatus>{{"a", FrameStatus::kOk},
                                                        {"b", FrameStatus::kError},
                                                        {"c", FrameStatus::kOk},
                                                        {"d", FrameStatus::kOk}}));
  EXPECT_EQ(bus_.Size(kDlq), 1u);
}

TEST_F(WorkerServiceTest, ModelThatNeedsNoPixelsNeverDecodesTheFrame) {
  detector_->mutable_info().needs_pixels = false;
  detector_->mutable_info().name = "null";
  Enqueue(Meta("f1"), PngWithGarbagePixels(64, 48));
  Start();
  ASSERT_TRUE(WaitForAcks(1));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();

  EXPECT_TRUE(detector_->batch_sizes().empty()) << "the model was given pixels";
  const auto results = Results();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].status, FrameStatus::kOk) << results[0].error.ToString();
  EXPECT_EQ(results[0].result.model, "null");
  EXPECT_EQ(results[0].result.image_width, 64) << "the size still comes from the header";
  EXPECT_EQ(results[0].result.image_height, 48);
  EXPECT_TRUE(results[0].annotated_topic.empty());
  EXPECT_EQ(bus_.Size(kAnnotated), 0u);
  EXPECT_EQ(bus_.Size(kDlq), 0u);
}

// ---------------------------------------------------------------------------------------------
// The pipeline: the stages of consecutive frames overlap, and everything still comes out in
// the order the frames were taken.

TEST_F(WorkerServiceTest, ResultsComeOutInFrameOrderWhenStageTimesVary) {
  options_.max_batch = 4;
  detector_->mutable_info().max_batch = 2;
  options_.now_ms = [] { return std::int64_t{1'000'000}; };
  // Slow decodes (noise) ahead of fast ones, frames answered at once (bad header, late)
  // between frames that take the whole trip, and a model whose time varies with the image.
  detector_->before_detect = [](std::span<const cv::Mat> images) {
    if (images.front().cols % 3 == 0) std::this_thread::sleep_for(5ms);
  };
  std::vector<std::string> expected;
  for (int i = 0; i < 12; ++i) {
    FrameMeta m = Meta("f" + std::to_string(i));
    m.sequence = i;
    expected.push_back(m.frame_id);
    if (i % 4 == 1) {
      m.options.classes = {7};  // unknown to the model: rejected when taken
      Enqueue(m, Png());
    } else if (i == 6) {
      m.deadline_ms = 999'000;  // already late: skipped when taken
      Enqueue(m, Png());
    } else if (i % 4 == 0) {
      Enqueue(m, NoisyPng(600 + i, 450));
    } else {
      Enqueue(m, Png(30 + i, 20));
    }
  }
  Start();
  ASSERT_TRUE(WaitForAcks(expected.size()));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();

  EXPECT_EQ(FrameIds(kResults), expected);
  std::vector<std::string> drawn;
  for (const auto& id : expected) {
    const int i = std::stoi(id.substr(1));
    if (i % 4 != 1 && i != 6) drawn.push_back(id);
  }
  EXPECT_EQ(FrameIds(kAnnotated), drawn);
  EXPECT_EQ(FrameIds(kDlq), (std::vector<std::string>{"f1", "f5", "f9"}));
  const WorkerStats s = service_->stats();
  EXPECT_EQ(s.processed, 8u);
  EXPECT_EQ(s.failed, 3u);
  EXPECT_EQ(s.skipped, 1u);
}

TEST_F(WorkerServiceTest, AFrameFailingInAnyStageDoesNotStopOrReorderTheOthers) {
  options_.max_batch = 4;  // the model's batch is 1: a failed model call is one frame's
  detector_->fail_width = 13;
  publisher_.max_message_bytes = 64 << 10;
  const std::vector<std::string> ids = {"ok0",    "header", "ok2",     "decode", "ok4",
                                        "detect", "ok6",    "publish", "ok8"};
  for (const auto& id : ids) {
    FrameMeta m = Meta(id);
    if (id == "header") {
      m.options.confidence = 2.0f;  // fails in the poll stage
      Enqueue(m, Png());
    } else if (id == "decode") {
      Enqueue(m, PngWithGarbagePixels());
    } else if (id == "detect") {
      Enqueue(m, Png(13, 20));
    } else if (id == "publish") {
      Enqueue(m, NoisyPng(400, 400));  // its annotated JPEG is over the publisher's limit
    } else {
      Enqueue(m, Png());
    }
  }
  Start();
  ASSERT_TRUE(WaitForAcks(ids.size()));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();

  EXPECT_EQ(FrameIds(kResults), ids) << "one result per frame, in frame order";
  std::map<std::string, FrameStatus> status;
  for (const auto& r : Results()) status[r.frame_id] = r.status;
  for (const auto& id : {"ok0", "ok2", "ok4", "ok6", "ok8", "publish"}) {
    EXPECT_EQ(status[id], FrameStatus::kOk) << id;
  }
  for (const auto& id : {"header", "decode", "detect"}) {
    EXPECT_EQ(status[id], FrameStatus::kError) << id;
  }
  EXPECT_EQ(FrameIds(kDlq), (std::vector<std::string>{"header", "decode", "detect"}));
  EXPECT_EQ(FrameIds(kAnnotated), (std::vector<std::string>{"ok0", "ok2", "ok4", "ok6", "ok8"}));
  auto acks = subscriber_.acks();
  std::sort(acks.begin(), acks.end());
  EXPECT_EQ(acks, (std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(service_->stats().failed, 3u);
  EXPECT_EQ(service_->stats().processed, 6u);
}

TEST_F(WorkerServiceTest, StatsSayHowLongFramesWereHeldWithoutAnyFinishing) {
  BlockModel();
  Start();
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(service_->stats().stalled_ms, 0) << "an idle worker holds nothing: not stalled";
  Enqueue(Meta("f1"), Png());
  ASSERT_TRUE(WaitFor([&] { return model_.arrived() == 1; }));
  std::this_thread::sleep_for(300ms);
  // The clock started when f1 was taken (not at start-up), and runs while the model hangs.
  const std::int64_t stalled = service_->stats().stalled_ms;
  EXPECT_GE(stalled, 300);
  EXPECT_LT(stalled, 10000);
  model_.Open();
  ASSERT_TRUE(WaitForAcks(1));
  EXPECT_EQ(service_->stats().stalled_ms, 0);
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
}

TEST_F(WorkerServiceTest, DrawingAndPublishingOverlapTheNextFramesDetection) {
  options_.max_batch = 4;  // both frames in one poll; the model takes one at a time
  auto calls = std::make_shared<std::atomic<int>>(0);
  detector_->before_detect = [this, calls](std::span<const cv::Mat>) {
    if (++*calls == 2) model_.Wait();
  };
  Enqueue(Meta("f1"), Png());
  Enqueue(Meta("f2"), Png());
  Start();
  ASSERT_TRUE(WaitFor([&] { return model_.arrived() == 1; }));
  // f2 is inside the model; f1 is already answered.
  const bool f1_published = WaitFor([&] { return bus_.Size(kResults) == 1; }, 2s);
  // Read while f2 is still held in the model: once it is let go, f2 may be published too.
  const std::vector<std::string> while_f2_in_model = FrameIds(kResults);
  model_.Open();
  ASSERT_TRUE(f1_published) << "f1's result waited for f2's detection";
  EXPECT_EQ(while_f2_in_model, (std::vector<std::string>{"f1"}));
  ASSERT_TRUE(WaitForAcks(2));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  EXPECT_EQ(FrameIds(kResults), (std::vector<std::string>{"f1", "f2"}));
}

TEST_F(WorkerServiceTest, DeadlineThatPassesWhileWaitingForTheModelIsSkippedBeforeDetecting) {
  auto now = std::make_shared<std::atomic<std::int64_t>>(1'000'000);
  options_.now_ms = [now] { return now->load(); };
  BlockModel();
  FrameMeta first = Meta("first");
  FrameMeta live = Meta("live");
  live.deadline_ms = 1'000'100;  // in time when taken
  Enqueue(first, Png(50, 40));
  Enqueue(live, Png(60, 40));
  Start();
  ASSERT_TRUE(WaitFor([&] { return model_.arrived() == 1 && service_->stats().frames == 2; }));
  now->store(1'000'500);  // while "first" is in the model, "live" becomes late
  model_.Open();
  ASSERT_TRUE(WaitForAcks(2));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();

  const auto results = Results();
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].status, FrameStatus::kOk);
  EXPECT_EQ(results[1].frame_id, "live");
  EXPECT_EQ(results[1].status, FrameStatus::kSkipped);
  EXPECT_NE(results[1].error.message().find("400 ms"), std::string::npos)
      << results[1].error.message();
  EXPECT_EQ(detector_->widths(), (std::vector<int>{50})) << "the late frame reached the model";
  EXPECT_EQ(FrameIds(kAnnotated), (std::vector<std::string>{"first"}));
  EXPECT_EQ(service_->stats().skipped, 1u);
}

TEST_F(WorkerServiceTest, StopsPollingWhileThePipelineIsFull) {
  options_.max_batch = 2;
  options_.pipeline_depth = 3;
  BlockModel();
  constexpr int kFrames = 10;
  std::vector<std::string> ids;
  for (int i = 0; i < kFrames; ++i) {
    ids.push_back("f" + std::to_string(i));
    Enqueue(Meta(ids.back()), Png());
  }
  Start();
  ASSERT_TRUE(WaitFor([&] { return model_.arrived() == 1 && service_->stats().frames == 3; }));
  const std::size_t polls = subscriber_.asked().size();
  // Many poll intervals (5 ms) while the model is busy: nothing more is taken or polled.
  std::this_thread::sleep_for(60ms);
  EXPECT_EQ(service_->stats().frames, 3u) << "took frames beyond the pipeline's depth";
  EXPECT_EQ(subscriber_.asked().size(), polls) << "polled while the pipeline was full";
  EXPECT_TRUE(subscriber_.acks().empty());
  model_.Open();
  ASSERT_TRUE(WaitForAcks(kFrames));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  EXPECT_EQ(FrameIds(kResults), ids);
  for (std::size_t asked : subscriber_.asked()) EXPECT_LE(asked, 2u);
}

TEST_F(WorkerServiceTest, AnnouncesItselfWhileTheModelIsBusy) {
  options_.heartbeat_topic = "kadr.workers";
  options_.heartbeat_interval = 10ms;
  options_.pipeline_depth = 2;
  BlockModel();
  for (int i = 0; i < 4; ++i) Enqueue(Meta("f" + std::to_string(i)), Png());
  Start();
  ASSERT_TRUE(WaitFor([&] { return model_.arrived() == 1 && service_->stats().frames == 2; }));
  const std::size_t before = bus_.Size("kadr.workers");
  const bool announced = WaitFor([&] { return bus_.Size("kadr.workers") >= before + 3; }, 2s);
  model_.Open();
  ASSERT_TRUE(announced) << "no heartbeats while the model was busy";
  const auto beats = bus_.Topic("kadr.workers");
  auto hb = protocol::WorkerHeartbeatFromJson(Text(beats[before + 2].value));
  ASSERT_TRUE(hb.has_value());
  EXPECT_EQ(hb->state, "running");
  EXPECT_EQ(hb->in_flight, 2);
  ASSERT_TRUE(WaitForAcks(4));
  EXPECT_TRUE(Stop().ok()) << run_status_.ToString();
}

TEST_F(WorkerServiceTest, StopDrainsAFullPipelineWithNothingLost) {
  options_.max_batch = 2;
  options_.pipeline_depth = 4;
  options_.heartbeat_topic = "kadr.workers";
  options_.heartbeat_interval = 1h;
  BlockModel();
  constexpr int kFrames = 12;
  for (int i = 0; i < kFrames; ++i) Enqueue(Meta("f" + std::to_string(i)), Png());
  Start();
  ASSERT_TRUE(WaitFor([&] { return model_.arrived() == 1 && service_->stats().frames == 4; }));
  thread_.request_stop();
  std::this_thread::sleep_for(20ms);  // the poll loop sees the stop while the model is busy
  model_.Open();
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();

  // The four frames in the pipeline were all finished, answered and acked; the rest were
  // never taken (another worker gets them).
  EXPECT_EQ(FrameIds(kResults), (std::vector<std::string>{"f0", "f1", "f2", "f3"}));
  EXPECT_EQ(FrameIds(kAnnotated), (std::vector<std::string>{"f0", "f1", "f2", "f3"}));
  for (const auto& r : Results()) EXPECT_EQ(r.status, FrameStatus::kOk) << r.frame_id;
  EXPECT_EQ(fake_subscriber_.acked(), (std::set<std::int64_t>{0, 1, 2, 3}));
  EXPECT_TRUE(fake_subscriber_.closed());
  const WorkerStats s = service_->stats();
  EXPECT_EQ(s.frames, 4u);
  EXPECT_EQ(s.processed, 4u);
  EXPECT_EQ(s.acked, 4u);
  // The "stopping" announcement comes after the drain, and counts every frame.
  auto hb = protocol::WorkerHeartbeatFromJson(Text(bus_.Topic("kadr.workers").back().value));
  ASSERT_TRUE(hb.has_value());
  EXPECT_EQ(hb->state, "stopping");
  EXPECT_EQ(hb->processed, 4u);
  EXPECT_EQ(hb->in_flight, 0);
}

TEST_F(WorkerServiceTest, TotalTimeCountsFromTheFrameBeingTaken) {
  detector_->before_detect = [this](std::span<const cv::Mat> images) {
    if (images.front().cols == 50) model_.Wait();
  };
  Enqueue(Meta("first"), Png(50, 40));
  Enqueue(Meta("second"), Png(60, 40));
  Start();
  ASSERT_TRUE(WaitFor([&] { return model_.arrived() == 1 && service_->stats().frames == 2; }));
  std::this_thread::sleep_for(30ms);
  model_.Open();
  ASSERT_TRUE(WaitForAcks(2));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  const auto results = Results();
  ASSERT_EQ(results.size(), 2u);
  // "second" waited behind "first" inside the worker; that wait is part of its total.
  EXPECT_GE(results[1].result.timings_ms.at("total"), 30.0);
  for (const char* k : {"decode", "preprocess", "inference", "postprocess", "draw", "encode"}) {
    EXPECT_TRUE(results[1].result.timings_ms.count(k)) << k;
  }
}

// ---------------------------------------------------------------------------------------------
// Tracking and kadr-kind

FrameMeta KindMeta(const std::string& id, const std::string& stream, const std::string& kind,
                   std::int64_t seq) {
  FrameMeta m = Meta(id);
  m.stream_id = stream;
  m.kind = kind;
  m.sequence = seq;
  return m;
}

TEST_F(WorkerServiceTest, ConsecutiveVideoFramesOfAnObjectGetTheSameTrackId) {
  // The fake model finds the same box in both frames: one object, one track.
  Enqueue(KindMeta("v0", "job1", "video", 0), Png(80, 60));
  Enqueue(KindMeta("v1", "job1", "video", 1), Png(80, 60));
  Start();
  ASSERT_TRUE(WaitForAcks(2));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  const auto results = Results();
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) {
    ASSERT_EQ(r.status, FrameStatus::kOk) << r.frame_id;
    ASSERT_EQ(r.result.detections.size(), 1u) << r.frame_id;
    ASSERT_TRUE(r.result.detections[0].track_id.has_value()) << r.frame_id;
    EXPECT_EQ(*r.result.detections[0].track_id, 1) << r.frame_id;
    EXPECT_TRUE(r.result.timings_ms.count("track")) << r.frame_id;
  }
  EXPECT_EQ(service_->stats().tracked, 2u);
  // The kind is echoed on the result and on the annotated image.
  for (const auto& m : bus_.Topic(kResults)) EXPECT_EQ(m.headers.Get("kadr-kind"), "video");
  const auto annotated = bus_.Topic(kAnnotated);
  ASSERT_EQ(annotated.size(), 2u);
  for (const auto& m : annotated) EXPECT_EQ(m.headers.Get("kadr-kind"), "video");
}

TEST_F(WorkerServiceTest, LiveStreamsAreTrackedEachOnItsOwn) {
  // Interleaved frames of two streams whose objects are in different places. One tracker for
  // both would give cam-b's object id 2; per stream, both are 1, frame after frame.
  Enqueue(KindMeta("a0", "cam-a", "live", 0), Png(80, 60));
  Enqueue(KindMeta("b0", "cam-b", "live", 0), Png(400, 300));
  Enqueue(KindMeta("a1", "cam-a", "live", 1), Png(80, 60));
  Enqueue(KindMeta("b1", "cam-b", "live", 1), Png(400, 300));
  Start();
  ASSERT_TRUE(WaitForAcks(4));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  const auto results = Results();
  ASSERT_EQ(results.size(), 4u);
  for (const auto& r : results) {
    ASSERT_EQ(r.result.detections.size(), 1u) << r.frame_id;
    EXPECT_EQ(r.result.detections[0].track_id, std::optional<std::int64_t>(1)) << r.frame_id;
  }
  for (const auto& m : bus_.Topic(kResults)) EXPECT_EQ(m.headers.Get("kadr-kind"), "live");
}

TEST_F(WorkerServiceTest, ImageFramesAreNeverTracked) {
  Enqueue(KindMeta("i0", "s1", "", 0), Png(80, 60));
  Enqueue(KindMeta("i1", "s1", "image", 1), Png(80, 60));
  Start();
  ASSERT_TRUE(WaitForAcks(2));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  const auto results = Results();
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) {
    ASSERT_EQ(r.result.detections.size(), 1u) << r.frame_id;
    EXPECT_FALSE(r.result.detections[0].track_id.has_value()) << r.frame_id;
    EXPECT_FALSE(r.result.timings_ms.count("track")) << r.frame_id;
  }
  EXPECT_EQ(service_->stats().tracked, 0u);
  const auto msgs = bus_.Topic(kResults);
  EXPECT_FALSE(msgs[0].headers.Get("kadr-kind").has_value()) << "absent stays absent";
  EXPECT_EQ(msgs[1].headers.Get("kadr-kind"), "image");
  EXPECT_EQ(bus_.Topic(kAnnotated)[1].headers.Get("kadr-kind"), "image");
}

TEST_F(WorkerServiceTest, UnknownKindGetsAnErrorResultNamingTheHeader) {
  bus::Message m;
  m.key = "cam1";
  m.value = Png();
  m.headers.Set("kadr-frame-id", "f1");
  m.headers.Set("kadr-kind", "movie");
  EnqueueRaw(std::move(m));
  Start();
  ASSERT_TRUE(WaitForAcks(1));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  const auto results = Results();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].status, FrameStatus::kError);
  EXPECT_EQ(results[0].error.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(results[0].error.message().find("kadr-kind"), std::string::npos);
  EXPECT_EQ(bus_.Size(kDlq), 1u);
}

TEST_F(WorkerServiceTest, LiveFramePastItsDeadlineIsSkippedWithoutInferenceOrTracking) {
  options_.now_ms = [] { return std::int64_t{1'000'000}; };
  FrameMeta late = KindMeta("late", "cam1", "live", 0);
  late.capture_ms = 997'000;
  late.deadline_ms = 999'000;
  FrameMeta on_time = KindMeta("on-time", "cam1", "live", 1);
  on_time.deadline_ms = 1'002'000;
  Enqueue(late, Png());
  Enqueue(on_time, Png());
  Start();
  ASSERT_TRUE(WaitForAcks(2));
  ASSERT_TRUE(Stop().ok()) << run_status_.ToString();
  const auto results = Results();
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].frame_id, "late");
  EXPECT_EQ(results[0].status, FrameStatus::kSkipped);
  EXPECT_EQ(results[0].error.code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(results[0].capture_ms, 997'000) << "the camera measures drops by capture time";
  EXPECT_EQ(bus_.Topic(kResults)[0].headers.Get("kadr-kind"), "live");
  EXPECT_EQ(bus_.Topic(kResults)[0].headers.Get("kadr-status"), "skipped");
  // Only the on-time frame reached the model and the tracker; its object starts track 1.
  EXPECT_EQ(detector_->batch_sizes(), (std::vector<std::size_t>{1}));
  EXPECT_EQ(results[1].status, FrameStatus::kOk);
  ASSERT_EQ(results[1].result.detections.size(), 1u);
  EXPECT_EQ(results[1].result.detections[0].track_id, std::optional<std::int64_t>(1));
  EXPECT_EQ(service_->stats().tracked, 1u);
  EXPECT_EQ(service_->stats().skipped, 1u);
}

}  // namespace
}  // namespace kadr::worker
