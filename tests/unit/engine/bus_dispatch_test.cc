#include "engine/bus_dispatch.h"

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "bus/fake_bus.h"
#include "fakes.h"
#include "protocol/frame.h"

namespace kadr::engine {
namespace {

using testing::AsyncRun;
using testing::Eventually;
using testing::FakeDispatcher;
using testing::OkResult;
using testing::RecordingSink;
using testing::TestFrame;
namespace header = protocol::header;

constexpr char kModel[] = "yolov8n";
constexpr char kReplies[] = "kadr.replies.g1";

BusDispatchOptions Addressing() {
  BusDispatchOptions o;
  o.model = kModel;
  o.stream_id = "cam1";
  o.reply_to = kReplies;
  o.annotated_to = "kadr.annotated.g1";
  o.source = "dock.mp4";
  o.kind = protocol::kind::kVideo;
  o.options.confidence = 0.25f;
  o.options.iou = 0.5f;
  o.options.classes = {0, 2};
  o.draw = false;
  return o;
}

RunOptions Lossless(std::string id = "r", std::size_t window = 1) {
  RunOptions o;
  o.id = std::move(id);
  o.window = window;
  return o;
}

Outgoing Out(std::int64_t index, const std::string& id, const SourceFrame& frame) {
  Outgoing out;
  out.index = index;
  out.id = id;
  out.capture_ms = 1'700'000'000'123;
  out.frame = &frame;
  return out;
}

// ---------------------------------------------------------------------------------------------
// BusDispatcher

class BusDispatcherTest : public ::testing::Test {
 protected:
  bus::FakeBus bus_;
  bus::FakePublisher publisher_{bus_};
  RecordingSink sink_;
  const std::string topic_ = protocol::FramesTopic(kModel);
};

TEST_F(BusDispatcherTest, EncodesPixelsAsJpegOnTheModelsFramesTopic) {
  BusDispatcher dispatcher(Addressing(), publisher_);
  FrameRun run(Lossless(), dispatcher, sink_);
  SourceFrame frame;
  frame.image = cv::Mat(24, 32, CV_8UC3, cv::Scalar(255, 0, 0));  // BGR: blue
  ASSERT_TRUE(dispatcher.Send(Out(0, "r:0", frame), run).ok());

  const auto messages = bus_.Topic(topic_);
  ASSERT_EQ(messages.size(), 1u) << "nothing on " << topic_;
  const auto& value = messages[0].value;
  ASSERT_GE(value.size(), 3u);
  EXPECT_EQ(value[0], 0xFF);
  EXPECT_EQ(value[1], 0xD8);
  const cv::Mat decoded = cv::imdecode(value, cv::IMREAD_COLOR);
  ASSERT_FALSE(decoded.empty()) << "not a JPEG";
  EXPECT_EQ(decoded.cols, 32);
  EXPECT_EQ(decoded.rows, 24);
  const cv::Vec3b px = decoded.at<cv::Vec3b>(12, 16);
  EXPECT_GT(px[0], 235) << "channels swapped";
  EXPECT_LT(px[2], 20) << "channels swapped";
  EXPECT_EQ(messages[0].headers.Get(header::kContentType), "image/jpeg");
}

// The wire carries no more than max_side on the long side; smaller frames go as they are.
TEST_F(BusDispatcherTest, FramesOverMaxSideAreScaledDownKeepingTheAspect) {
  BusDispatchOptions o = Addressing();
  o.max_side = 40;
  BusDispatcher dispatcher(o, publisher_);
  FrameRun run(Lossless(), dispatcher, sink_);
  SourceFrame big;
  big.image = cv::Mat(90, 160, CV_8UC3, cv::Scalar(10, 200, 30));
  SourceFrame small;
  small.image = cv::Mat(20, 30, CV_8UC3, cv::Scalar(10, 200, 30));
  ASSERT_TRUE(dispatcher.Send(Out(0, "r:0", big), run).ok());
  ASSERT_TRUE(dispatcher.Send(Out(1, "r:1", small), run).ok());
  const auto messages = bus_.Topic(topic_);
  ASSERT_EQ(messages.size(), 2u);
  const cv::Mat sent = cv::imdecode(messages[0].value, cv::IMREAD_COLOR);
  EXPECT_EQ(sent.cols, 40);
  EXPECT_EQ(sent.rows, 23);  // 90 * 40 / 160 = 22.5
  EXPECT_EQ(big.image.cols, 160) << "the source frame itself is left as it is";
  const cv::Mat as_is = cv::imdecode(messages[1].value, cv::IMREAD_COLOR);
  EXPECT_EQ(as_is.cols, 30);
  EXPECT_EQ(as_is.rows, 20);
}

TEST_F(BusDispatcherTest, PublishesEncodedBytesUnchanged) {
  BusDispatcher dispatcher(Addressing(), publisher_);
  FrameRun run(Lossless(), dispatcher, sink_);
  SourceFrame frame = TestFrame(7);
  frame.image = cv::Mat(8, 8, CV_8UC3, cv::Scalar(0, 0, 255));  // ignored: bytes win
  ASSERT_TRUE(dispatcher.Send(Out(0, "r:0", frame), run).ok());
  const auto messages = bus_.Topic(topic_);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].value, TestFrame(7).encoded);
}

TEST_F(BusDispatcherTest, HeadersDecodeToTheFramesIdentityAndRoute) {
  BusDispatcher dispatcher(Addressing(), publisher_);
  FrameRun run(Lossless("job-9"), dispatcher, sink_);
  const SourceFrame frame = TestFrame(3);
  Outgoing out = Out(3, "job-9:3", frame);
  out.deadline_ms = 1'700'000'002'123;
  ASSERT_TRUE(dispatcher.Send(out, run).ok());

  const auto messages = bus_.Topic(topic_);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].key, "cam1");
  auto meta = protocol::DecodeFrameHeaders(messages[0].headers);
  ASSERT_TRUE(meta.has_value()) << meta.error().ToString();
  EXPECT_EQ(meta->frame_id, "job-9:3");
  EXPECT_EQ(meta->correlation_id, "job-9:3");
  EXPECT_EQ(meta->stream_id, "cam1");
  EXPECT_EQ(meta->sequence, 3);
  EXPECT_EQ(meta->capture_ms, 1'700'000'000'123);
  EXPECT_EQ(meta->deadline_ms, 1'700'000'002'123);
  EXPECT_EQ(meta->model, kModel);
  EXPECT_EQ(meta->reply_to, kReplies);
  EXPECT_EQ(meta->annotated_to, "kadr.annotated.g1");
  EXPECT_EQ(meta->source, "dock.mp4");
  EXPECT_EQ(meta->kind, protocol::kind::kVideo);
  EXPECT_FALSE(meta->draw);
  ASSERT_TRUE(meta->options.confidence.has_value());
  EXPECT_FLOAT_EQ(*meta->options.confidence, 0.25f);
  ASSERT_TRUE(meta->options.iou.has_value());
  EXPECT_FLOAT_EQ(*meta->options.iou, 0.5f);
  EXPECT_EQ(meta->options.classes, (std::vector<int>{0, 2}));
}

TEST_F(BusDispatcherTest, StreamIdDefaultsToTheFrameIdAndLosslessFramesHaveNoDeadline) {
  BusDispatchOptions options;
  options.model = kModel;
  options.reply_to = kReplies;
  options.kind = protocol::kind::kImage;
  BusDispatcher dispatcher(options, publisher_);
  FrameRun run(Lossless("up1"), dispatcher, sink_);
  const SourceFrame frame = TestFrame(0);
  ASSERT_TRUE(dispatcher.Send(Out(0, "up1", frame), run).ok());
  const auto messages = bus_.Topic(topic_);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].key, "up1");
  auto meta = protocol::DecodeFrameHeaders(messages[0].headers);
  ASSERT_TRUE(meta.has_value()) << meta.error().ToString();
  EXPECT_EQ(meta->stream_id, "up1");
  EXPECT_FALSE(meta->deadline_ms.has_value());
  EXPECT_TRUE(meta->draw);
  EXPECT_EQ(meta->kind, protocol::kind::kImage);
  EXPECT_FALSE(meta->options.confidence.has_value());
}

TEST_F(BusDispatcherTest, AFrameThatDoesNotEncodeIsNotSent) {
  BusDispatcher dispatcher(Addressing(), publisher_);
  FrameRun run(Lossless(), dispatcher, sink_);
  const SourceFrame empty;
  EXPECT_FALSE(dispatcher.Send(Out(0, "r:0", empty), run).ok());
  EXPECT_EQ(bus_.Size(topic_), 0u);
}

TEST_F(BusDispatcherTest, DeliveryFailureReachesTheRunAsASendFailure) {
  BusDispatcher dispatcher(Addressing(), publisher_);
  publisher_.FailNext(1, UnavailableError("broker down"));
  std::vector<SourceFrame> frames;
  frames.push_back(TestFrame(0));
  frames.push_back(TestFrame(1));
  FramesSource source(std::move(frames));
  FrameRun run(Lossless(), dispatcher, sink_);
  Router router;
  router.Add(run);
  AsyncRun async(run, source);

  ASSERT_TRUE(sink_.WaitForCount(1));
  const Released failed = sink_.frames()[0];
  EXPECT_EQ(failed.index, 0);
  EXPECT_EQ(failed.dropped, DropReason::kError);
  EXPECT_EQ(failed.error, UnavailableError("broker down"));

  ASSERT_TRUE(Eventually([&] { return bus_.Size(topic_) == 1; })) << "frame 1 was not sent";
  auto meta = protocol::DecodeFrameHeaders(bus_.Topic(topic_)[0].headers);
  ASSERT_TRUE(meta.has_value());
  EXPECT_EQ(meta->frame_id, "r:1");
  bus::InboundMessage answer;
  const std::string json = protocol::FrameResultToJson(OkResult("r:1"));
  answer.message = {kReplies, "cam1", {json.begin(), json.end()}, {}};
  answer.message.headers.Set(header::kCorrelationId, "r:1");
  EXPECT_TRUE(router.Route(answer, 5));
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
  ASSERT_EQ(sink_.count(), 2u);
  EXPECT_TRUE(sink_.frames()[1].result.has_value());
  EXPECT_EQ(run.stats().dropped_error, 1u);
  router.Remove(run);
}

TEST_F(BusDispatcherTest, DeliveryFailureFailsTheRunWithFailOnSendError) {
  BusDispatcher dispatcher(Addressing(), publisher_);
  publisher_.FailNext(1, UnavailableError("broker down"));
  std::vector<SourceFrame> frames;
  frames.push_back(TestFrame(0));
  FramesSource source(std::move(frames));
  RunOptions options = Lossless();
  options.fail_on_send_error = true;
  FrameRun run(options, dispatcher, sink_);
  AsyncRun async(run, source);
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value()) << "the run did not fail";
  EXPECT_EQ(*outcome, UnavailableError("broker down"));
}

TEST_F(BusDispatcherTest, PublisherRejectionDropsTheFrame) {
  BusDispatcher dispatcher(Addressing(), publisher_);
  publisher_.max_message_bytes = 3;
  std::vector<SourceFrame> frames;
  frames.push_back(TestFrame(0));
  FramesSource source(std::move(frames));
  FrameRun run(Lossless(), dispatcher, sink_);
  AsyncRun async(run, source);
  const auto outcome = async.Wait();
  ASSERT_TRUE(outcome.has_value());
  EXPECT_TRUE(outcome->ok()) << outcome->ToString();
  ASSERT_EQ(sink_.count(), 1u);
  EXPECT_EQ(sink_.frames()[0].dropped, DropReason::kError);
  EXPECT_EQ(sink_.frames()[0].error.code(), StatusCode::kTooLarge);
}

// ---------------------------------------------------------------------------------------------
// Router

bus::InboundMessage ResultMessage(const protocol::FrameResult& r, bool correlation_header) {
  bus::InboundMessage in;
  const std::string json = protocol::FrameResultToJson(r);
  in.message = {kReplies, r.stream_id, {json.begin(), json.end()}, {}};
  in.message.headers.Set(header::kContentType, "application/json");
  if (correlation_header) in.message.headers.Set(header::kCorrelationId, r.correlation_id);
  in.token = {kReplies, 0, 17};
  return in;
}

bus::InboundMessage ImageMessage(const std::string& id, std::vector<std::uint8_t> jpeg) {
  bus::InboundMessage in;
  in.message = {kReplies, "cam1", std::move(jpeg), {}};
  in.message.headers.Set(header::kContentType, "image/jpeg");
  in.message.headers.Set(header::kCorrelationId, id);
  return in;
}

// A run whose frames wait for answers, on a thread of its own.
struct HeldRun {
  explicit HeldRun(RunOptions options, int frames = 1)
      : dispatcher(FakeDispatcher::Mode::kHold),
        source(frames),
        run(std::move(options), dispatcher, sink),
        async(run, source) {}
  FakeDispatcher dispatcher;
  RecordingSink sink;
  testing::CountingSource source;
  FrameRun run;
  AsyncRun async;
};

TEST(RouterTest, RoutesResultsToTheirRunAmongSeveral) {
  HeldRun a(Lossless("a"));
  HeldRun b(Lossless("b"));
  HeldRun ab(Lossless("a.b"));
  Router router;
  router.Add(a.run);
  router.Add(b.run);
  router.Add(ab.run);
  EXPECT_EQ(router.size(), 3u);
  ASSERT_TRUE(a.dispatcher.WaitForPending(1));
  ASSERT_TRUE(b.dispatcher.WaitForPending(1));
  ASSERT_TRUE(ab.dispatcher.WaitForPending(1));

  // By the correlation header.
  EXPECT_TRUE(router.Route(ResultMessage(OkResult("b:0"), true), 100));
  ASSERT_TRUE(b.sink.WaitForCount(1));
  EXPECT_EQ(b.sink.frames()[0].id, "b:0");
  EXPECT_EQ(b.sink.frames()[0].answered_ms, 100);
  // By the JSON's correlation id, without a header.
  protocol::FrameResult for_a = OkResult("a:0");
  for_a.frame_id = "worker-local-id";
  EXPECT_TRUE(router.Route(ResultMessage(for_a, false), 101));
  ASSERT_TRUE(a.sink.WaitForCount(1));
  ASSERT_TRUE(a.sink.frames()[0].result.has_value());
  EXPECT_EQ(a.sink.frames()[0].result->result.detections.size(), 1u);
  EXPECT_EQ(a.run.stats().answered, 1u);
  EXPECT_EQ(ab.run.stats().answered, 0u);
  EXPECT_EQ(b.run.stats().answered, 1u);

  EXPECT_TRUE(router.Route(ResultMessage(OkResult("a.b:0"), true), 102));
  ASSERT_TRUE(ab.sink.WaitForCount(1));
  for (HeldRun* h : {&a, &b, &ab}) {
    const auto outcome = h->async.Wait();
    ASSERT_TRUE(outcome.has_value()) << h->run.id();
    EXPECT_TRUE(outcome->ok()) << outcome->ToString();
    EXPECT_EQ(h->sink.count(), 1u) << h->run.id();
  }
}

TEST(RouterTest, RoutesAnnotatedImagesToTheirRun) {
  RunOptions options = Lossless("a");
  options.want_image = true;
  options.image_topic = kReplies;
  HeldRun a(options);
  HeldRun b(Lossless("b"));
  Router router;
  router.Add(a.run);
  router.Add(b.run);
  ASSERT_TRUE(a.dispatcher.WaitForPending(1));

  const std::vector<std::uint8_t> jpeg = {0xFF, 0xD8, 0x01, 0x02, 0xFF, 0xD9};
  EXPECT_TRUE(router.Route(ImageMessage("a:0", jpeg), 7));
  EXPECT_TRUE(router.Route(ResultMessage(OkResult("a:0", kReplies), true), 8));
  ASSERT_TRUE(a.sink.WaitForCount(1));
  EXPECT_EQ(a.sink.frames()[0].image, jpeg);
  ASSERT_TRUE(a.sink.frames()[0].result.has_value());
  EXPECT_EQ(a.sink.frames()[0].result->annotated_topic, kReplies);
  EXPECT_EQ(b.sink.count(), 0u);
}

TEST(RouterTest, RoutesBareIds) {
  RunOptions options = Lossless("upload-1");
  options.bare_id = true;
  HeldRun up(options);
  HeldRun other(Lossless("upload-2"));
  Router router;
  router.Add(up.run);
  router.Add(other.run);
  ASSERT_TRUE(up.dispatcher.WaitForPending(1));
  EXPECT_TRUE(router.Route(ResultMessage(OkResult("upload-1"), true), 1));
  ASSERT_TRUE(up.sink.WaitForCount(1));
  EXPECT_EQ(up.sink.frames()[0].id, "upload-1");
  EXPECT_EQ(other.run.stats().answered, 0u);
}

TEST(RouterTest, UnknownIdsAreNotRouted) {
  HeldRun a(Lossless("a"));
  Router router;
  router.Add(a.run);
  ASSERT_TRUE(a.dispatcher.WaitForPending(1));
  EXPECT_FALSE(router.Route(ResultMessage(OkResult("zzz:0"), true), 1));
  EXPECT_FALSE(router.Route(ResultMessage(OkResult("zzz"), false), 1));
  EXPECT_FALSE(router.Route(ResultMessage(OkResult("ab:0"), true), 1));
  EXPECT_FALSE(router.Route(ImageMessage("zzz:0", {0xFF, 0xD8}), 1));
  bus::InboundMessage nameless;
  nameless.message.value = {'{', 'x'};
  EXPECT_FALSE(router.Route(nameless, 1));
  EXPECT_EQ(a.run.stats().answered, 0u);
  // Known run, frame not in flight: routed (true) and ignored by the run.
  EXPECT_TRUE(router.Route(ResultMessage(OkResult("a:5"), true), 1));
  EXPECT_EQ(a.run.stats().answered, 0u);
}

TEST(RouterTest, UnreadableResultOfAKnownRunArrivesAsAnErrorResult) {
  HeldRun a(Lossless("a"));
  Router router;
  router.Add(a.run);
  ASSERT_TRUE(a.dispatcher.WaitForPending(1));
  bus::InboundMessage in;
  const std::string garbage = "{\"frame\": ";
  in.message = {kReplies, "cam1", {garbage.begin(), garbage.end()}, {}};
  in.message.headers.Set(header::kContentType, "application/json");
  in.message.headers.Set(header::kCorrelationId, "a:0");
  EXPECT_TRUE(router.Route(in, 9));
  ASSERT_TRUE(a.sink.WaitForCount(1));
  const Released r = a.sink.frames()[0];
  ASSERT_TRUE(r.result.has_value());
  EXPECT_EQ(r.result->status, protocol::FrameStatus::kError);
  EXPECT_EQ(r.result->error.code(), StatusCode::kInternal);
  EXPECT_NE(r.result->error.message().find("unreadable"), std::string::npos)
      << r.result->error.message();
  EXPECT_EQ(r.result->correlation_id, "a:0");
}

TEST(RouterTest, NothingIsRoutedAfterRemove) {
  HeldRun a(Lossless("a"));
  Router router;
  router.Add(a.run);
  ASSERT_TRUE(a.dispatcher.WaitForPending(1));
  router.Remove(a.run);
  EXPECT_EQ(router.size(), 0u);
  EXPECT_FALSE(router.Route(ResultMessage(OkResult("a:0"), true), 1));
  EXPECT_FALSE(router.Route(ImageMessage("a:0", {0xFF, 0xD8}), 1));
  EXPECT_EQ(a.run.stats().answered, 0u);
}

TEST(RouterTest, AddReplacesARunOfTheSameIdAndRemoveLeavesTheReplacement) {
  FakeDispatcher dispatcher;
  RecordingSink sink;
  FrameRun first(Lossless("a"), dispatcher, sink);
  FrameRun second(Lossless("a"), dispatcher, sink);
  Router router;
  router.Add(first);
  router.Add(second);
  EXPECT_EQ(router.size(), 1u);
  router.Remove(first);  // not the run routed to: stays
  EXPECT_EQ(router.size(), 1u);
  EXPECT_TRUE(router.Route(ResultMessage(OkResult("a:0"), true), 1));
  router.Remove(second);
  EXPECT_EQ(router.size(), 0u);
}

}  // namespace
}  // namespace kadr::engine
