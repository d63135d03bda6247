// The viewer's live view over real HTTP on loopback: kadr-kind routing into the live hub,
// MJPEG parts, SSE events, the latest frame, the connection cap and shutdown.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "bus/fake_bus.h"
#include "jobs/recorder.h"
#include "protocol/frame.h"
#include "support/test_data.h"
#include "viewer/live_view_service.h"

namespace kadr::viewer {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
namespace header = protocol::header;

constexpr char kTopic[] = "viewer-in";

std::string Jpeg(int shade) {
  cv::Mat img(48, 64, CV_8UC3, cv::Scalar(shade, 255 - shade, 128));
  std::vector<std::uint8_t> out;
  if (!cv::imencode(".jpg", img, out)) throw std::runtime_error("imencode failed");
  return {out.begin(), out.end()};
}

std::string Png() {
  cv::Mat img(8, 8, CV_8UC3, cv::Scalar(1, 2, 3));
  std::vector<std::uint8_t> out;
  if (!cv::imencode(".png", img, out)) throw std::runtime_error("imencode failed");
  return {out.begin(), out.end()};
}

std::string ResultJson(const std::string& stream, std::int64_t seq, int detections) {
  protocol::FrameResult r;
  r.frame_id = stream + "-" + std::to_string(seq);
  r.stream_id = stream;
  r.sequence = seq;
  r.result.model = "yolox_nano";
  for (int i = 0; i < detections; ++i) {
    protocol::Detection d;
    d.label = "car";
    d.score = 0.9F;
    d.box = {1, 2, 3, 4};
    r.result.detections.push_back(d);
  }
  return protocol::FrameResultToJson(r);
}

bus::Message Message(const std::string& stream, std::int64_t seq, const std::string& kind,
                     std::string value, const std::string& content_type) {
  bus::Message m{kTopic, stream, {value.begin(), value.end()}, {}};
  m.headers.Set(header::kFrameId, stream + "-" + std::to_string(seq));
  m.headers.Set(header::kStreamId, stream);
  m.headers.Set(header::kSequence, std::to_string(seq));
  m.headers.Set(header::kContentType, content_type);
  if (!kind.empty()) m.headers.Set(header::kKind, kind);
  return m;
}

// What a streaming response delivered so far, filled by a client thread.
class Received {
 public:
  void Append(const char* data, std::size_t n) {
    std::lock_guard lock(mu_);
    bytes_.append(data, n);
    cv_.notify_all();
  }
  // Waits (bounded) until `done` holds for the bytes so far; returns whether it did.
  bool WaitUntil(const std::function<bool(const std::string&)>& done) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return done(bytes_); });
  }
  std::string bytes() {
    std::lock_guard lock(mu_);
    return bytes_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string bytes_;
};

struct MjpegPart {
  std::string headers;
  std::string jpeg;
};

// Parses the complete parts of a multipart/x-mixed-replace body with boundary kadrframe.
std::vector<MjpegPart> ParseParts(const std::string& body) {
  std::vector<MjpegPart> parts;
  const std::string delimiter = "--kadrframe\r\n";
  std::size_t pos = body.find(delimiter);
  if (pos != 0) return parts;  // the body starts with the first delimiter, no preamble
  pos += delimiter.size();
  while (true) {
    const std::size_t end_of_headers = body.find("\r\n\r\n", pos);
    if (end_of_headers == std::string::npos) break;
    MjpegPart part;
    part.headers = body.substr(pos, end_of_headers - pos);
    const std::string key = "Content-Length: ";
    const std::size_t at = part.headers.find(key);
    if (at == std::string::npos) throw std::runtime_error("part without Content-Length");
    const std::size_t length = std::stoul(part.headers.substr(at + key.size()));
    const std::size_t data = end_of_headers + 4;
    if (body.size() < data + length + 2 + delimiter.size()) break;
    part.jpeg = body.substr(data, length);
    if (body.compare(data + length, 2 + delimiter.size(), "\r\n" + delimiter) != 0) {
      throw std::runtime_error("part not followed by the delimiter");
    }
    parts.push_back(std::move(part));
    pos = data + length + 2 + delimiter.size();
  }
  return parts;
}

class LiveRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.live_check_interval = 20ms;
    options_.max_live_clients = 2;
    options_.max_live_clients_per_client = 2;  // these tests are one client
  }
  void TearDown() override {
    for (auto& t : readers_) t.join();
    if (server_) server_->Stop();
    server_.reset();
    service_.reset();
  }

  // `who` names each request's client as an authorizer would (header X-Who).
  void Start(bool who = false) {
    subscriber_ = std::make_unique<bus::FakeSubscriber>(bus_, kTopic);
    service_ = std::make_unique<LiveViewService>(options_, *subscriber_, metrics_);
    http::HttpServerOptions ho{.port = 0, .threads = 6};
    if (who) {
      ho.authorizer = [](http::HttpRequest& r, http::Access) -> std::optional<http::HttpResponse> {
        r.principal = r.Header("X-Who").value_or("");
        return std::nullopt;
      };
    }
    auto server = http::HttpServer::Create(ho);
    ASSERT_TRUE(server.has_value());
    server_ = std::move(server).value();
    ASSERT_TRUE(service_->RegisterRoutes(*server_).ok());
    ASSERT_TRUE(server_->Start().ok());
  }

  std::unique_ptr<httplib::Client> Client() {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    c->set_read_timeout(10s);
    return c;
  }

  void Publish(bus::Message m) {
    bus_.Append(std::move(m));
    while (service_->PollOnce(0ms) > 0) {
    }
  }
  void PublishLive(const std::string& stream, std::int64_t seq, int shade) {
    Publish(Message(stream, seq, "live", Jpeg(shade), "image/jpeg"));
    Publish(Message(stream, seq, "live", ResultJson(stream, seq, seq % 3), "application/json"));
  }

  // Opens `path` on its own connection in a reader thread until `keep_reading` says stop.
  std::shared_ptr<Received> Open(const std::string& path,
                                 std::function<bool(const std::string&)> keep_reading = {},
                                 const std::string& who = {}) {
    auto received = std::make_shared<Received>();
    readers_.emplace_back([this, path, received, keep_reading, who] {
      auto client = Client();
      (void)client->Get(path, {{"X-Who", who}}, [&](const char* data, std::size_t n) {
        received->Append(data, n);
        return !keep_reading || keep_reading(received->bytes());
      });
    });
    return received;
  }

  std::uint64_t LiveClients() { return service_->stats().live_clients; }
  bool WaitForLiveClients(std::uint64_t n) {
    for (int i = 0; i < 500; ++i) {
      if (LiveClients() == n) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  LiveViewOptions options_;
  bus::FakeBus bus_;
  MetricsRegistry metrics_;
  std::unique_ptr<bus::FakeSubscriber> subscriber_;
  std::unique_ptr<LiveViewService> service_;
  std::unique_ptr<http::HttpServer> server_;
  std::vector<std::thread> readers_;
};

TEST(LiveViewTopicsTest, CoverTheLiveTopicsAndTheRecorderTheRest) {
  const auto covered = [](const std::vector<std::string>& topics, std::string_view topic) {
    for (const auto& t : topics) {
      if (t == topic) return true;
      if (t.starts_with('^') && std::regex_match(std::string(topic), std::regex(t))) return true;
    }
    return false;
  };
  const std::vector<std::string> live = LiveViewTopics();
  const std::vector<std::string> recorded = jobs::RecorderTopics();
  for (std::string_view topic : {protocol::kLiveResultsTopic, protocol::kLiveAnnotatedTopic}) {
    EXPECT_TRUE(covered(live, topic)) << topic;
    EXPECT_FALSE(covered(recorded, topic)) << topic;
  }
  for (std::string_view topic :
       {protocol::kResultsTopic, protocol::kAnnotatedTopic, protocol::kJobsTopic,
        std::string_view("kadr.replies.host-8080")}) {
    EXPECT_TRUE(covered(recorded, topic)) << topic;
    EXPECT_FALSE(covered(live, topic)) << topic;
  }
  EXPECT_FALSE(covered(live, "kadr.live.results.other"));
  EXPECT_FALSE(covered(recorded, protocol::kDeadLetterTopic));
}

TEST_F(LiveRoutesTest, LiveMessagesFeedTheHub) {
  Start();
  const std::string jpeg = Jpeg(10);
  Publish(Message("s1", 4, "live", jpeg, "image/jpeg"));
  Publish(Message("s1", 4, "live", ResultJson("s1", 4, 2), "application/json"));
  const LiveViewStats stats = service_->stats();
  EXPECT_EQ(stats.live_frames, 1U);
  EXPECT_EQ(stats.live_results, 1U);
  EXPECT_EQ(stats.ignored, 0U);
  EXPECT_EQ(subscriber_->acked().size(), 2U);

  auto frame = Client()->Get("/api/v1/streams/s1/frame");
  ASSERT_TRUE(frame);
  EXPECT_EQ(frame->status, 200);
  EXPECT_EQ(frame->get_header_value("Content-Type"), "image/jpeg");
  EXPECT_EQ(frame->get_header_value("kadr-seq"), "4");
  EXPECT_EQ(frame->body, jpeg);  // the worker's bytes, not a re-encode
  auto result = service_->live_hub().Latest(LiveKind::kResult, "s1");
  ASSERT_TRUE(result);
  EXPECT_EQ(json::parse(*result->data)["detections"].size(), 2U);
}

TEST_F(LiveRoutesTest, MessagesOfOtherKindsAreAcknowledgedAndIgnored) {
  Start();
  Publish(Message("job1", 0, "video", Jpeg(10), "image/jpeg"));
  Publish(Message("job1", 0, "video", ResultJson("job1", 0, 1), "application/json"));
  EXPECT_EQ(service_->stats().ignored, 2U);
  EXPECT_EQ(subscriber_->acked().size(), 2U);
  EXPECT_EQ(service_->live_hub().stream_count(), 0U);
  // No kind (an upload): the recorder's, not the live view's.
  Publish(Message("img1", 0, "", ResultJson("img1", 0, 1), "application/json"));
  EXPECT_EQ(service_->stats().ignored, 3U);
  EXPECT_EQ(service_->live_hub().stream_count(), 0U);
}

TEST_F(LiveRoutesTest, MalformedLiveMessagesAreCountedAndDoNotBlockLaterOnes) {
  Start();
  Publish(Message("s1", 1, "live", Png(), "image/png"));  // not served as image/jpeg
  Publish(Message("s1", 1, "live", "{not json", "application/json"));
  Publish(Message("", 1, "live", Jpeg(5), "image/jpeg"));  // no stream: header, key both empty
  EXPECT_EQ(service_->stats().live_malformed, 3U);
  EXPECT_EQ(subscriber_->acked().size(), 3U);
  PublishLive("s1", 2, 40);
  EXPECT_EQ(service_->stats().live_frames, 1U);
  EXPECT_EQ(service_->stats().live_results, 1U);
}

TEST_F(LiveRoutesTest, FrameIs404UntilTheFirstOne) {
  Start();
  auto missing = Client()->Get("/api/v1/streams/s9/frame");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(json::parse(missing->body)["error"]["code"], "not_found");
  PublishLive("s9", 1, 20);
  EXPECT_EQ(Client()->Get("/api/v1/streams/s9/frame")->status, 200);
  auto too_long = Client()->Get("/api/v1/streams/" + std::string(200, 'x') + "/live");
  ASSERT_TRUE(too_long);
  EXPECT_EQ(too_long->status, 400);
}

TEST_F(LiveRoutesTest, MjpegSendsTheLatestFrameThenEachNewOneAsAPart) {
  Start();
  PublishLive("cam", 1, 10);
  PublishLive("cam", 2, 60);  // replaces frame 1 before anyone looks
  auto response_type = std::make_shared<std::string>();
  auto received = std::make_shared<Received>();
  readers_.emplace_back([this, received, response_type] {
    auto client = Client();
    (void)client->Get(
        "/api/v1/streams/cam/live",
        [&](const httplib::Response& res) {
          *response_type = res.get_header_value("Content-Type");
          return res.status == 200;
        },
        [&](const char* data, std::size_t n) {
          received->Append(data, n);
          return ParseParts(received->bytes()).size() < 3;
        });
  });
  ASSERT_TRUE(received->WaitUntil([](const std::string& b) { return ParseParts(b).size() >= 1; }));
  PublishLive("cam", 3, 110);
  ASSERT_TRUE(received->WaitUntil([](const std::string& b) { return ParseParts(b).size() >= 2; }));
  PublishLive("cam", 4, 160);
  ASSERT_TRUE(received->WaitUntil([](const std::string& b) { return ParseParts(b).size() >= 3; }));
  readers_.back().join();
  readers_.pop_back();

  EXPECT_EQ(*response_type, "multipart/x-mixed-replace; boundary=kadrframe");
  const auto parts = ParseParts(received->bytes());
  ASSERT_EQ(parts.size(), 3U);
  const int seqs[] = {2, 3, 4};
  const int shades[] = {60, 110, 160};
  for (std::size_t i = 0; i < parts.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_NE(parts[i].headers.find("Content-Type: image/jpeg"), std::string::npos);
    EXPECT_NE(parts[i].headers.find("kadr-seq: " + std::to_string(seqs[i])), std::string::npos);
    ASSERT_GE(parts[i].jpeg.size(), 2U);
    EXPECT_EQ(static_cast<unsigned char>(parts[i].jpeg[0]), 0xFF);  // JPEG SOI
    EXPECT_EQ(static_cast<unsigned char>(parts[i].jpeg[1]), 0xD8);
    EXPECT_EQ(parts[i].jpeg, Jpeg(shades[i]));
  }
  EXPECT_TRUE(WaitForLiveClients(0U));  // the client hung up: its slot is free again
}

TEST_F(LiveRoutesTest, EventsSendOneResultEventPerFrame) {
  Start();
  auto received = Open("/api/v1/streams/cam/events",
                       [](const std::string& b) { return b.find("id: 2\n") == std::string::npos; });
  // The stream opens before the first result (a stream that is still connecting).
  ASSERT_TRUE(received->WaitUntil([](const std::string& b) { return b == "retry: 2000\n\n"; }));
  PublishLive("cam", 1, 10);
  ASSERT_TRUE(received->WaitUntil(
      [](const std::string& b) { return b.find("id: 1\n") != std::string::npos; }));
  PublishLive("cam", 2, 20);
  ASSERT_TRUE(received->WaitUntil(
      [](const std::string& b) { return b.find("id: 2\n") != std::string::npos; }));
  const std::string body = received->bytes();
  const std::string first = "id: 1\nevent: result\ndata: " + ResultJson("cam", 1, 1) + "\n\n";
  EXPECT_NE(body.find(first), std::string::npos) << body;
  EXPECT_NE(body.find("id: 2\nevent: result\ndata: " + ResultJson("cam", 2, 2) + "\n\n"),
            std::string::npos)
      << body;
}

TEST_F(LiveRoutesTest, IdleEventStreamsSendKeepAliveComments) {
  options_.live_keepalive = 50ms;
  Start();
  auto received = Open("/api/v1/streams/quiet/events", [](const std::string& b) {
    return b.find(": keep-alive\n\n") == std::string::npos;
  });
  EXPECT_TRUE(received->WaitUntil(
      [](const std::string& b) { return b.find(": keep-alive\n\n") != std::string::npos; }));
}

TEST_F(LiveRoutesTest, LiveConnectionsBeyondTheCapGet503UntilOneCloses) {
  Start();  // max_live_clients = 2
  auto hold = std::make_shared<std::atomic<bool>>(true);
  Open("/api/v1/streams/a/live", [hold](const std::string&) { return hold->load(); });
  Open("/api/v1/streams/b/events", [hold](const std::string&) { return hold->load(); });
  ASSERT_TRUE(WaitForLiveClients(2U));
  for (const char* path : {"/api/v1/streams/a/live", "/api/v1/streams/c/events"}) {
    auto refused = Client()->Get(path);
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, 503) << path;
    EXPECT_EQ(json::parse(refused->body)["error"]["code"], "unavailable");
  }
  // The latest frame is one short request: not capped.
  PublishLive("a", 1, 1);
  EXPECT_EQ(Client()->Get("/api/v1/streams/a/frame")->status, 200);
  EXPECT_EQ(service_->stats().live_rejected, 2U);

  // The readers hang up on their next data: the hub's next items, and the SSE keep-alive.
  hold->store(false);
  PublishLive("a", 2, 2);
  PublishLive("b", 2, 2);
  ASSERT_TRUE(WaitForLiveClients(0U));
  auto again = Open("/api/v1/streams/a/live", [](const std::string&) { return false; });
  for (auto& t : readers_) t.join();
  readers_.clear();
  EXPECT_GE(again->bytes().size(), 2U);  // admitted, and sent the latest frame at once
}

TEST_F(LiveRoutesTest, OneClientGetsAtMostItsShareOfLiveConnections) {
  options_.max_live_clients = 4;
  options_.max_live_clients_per_client = 0;  // half: 2
  Start(/*who=*/true);
  auto hold = std::make_shared<std::atomic<bool>>(true);
  auto keep = [hold](const std::string&) { return hold->load(); };
  Open("/api/v1/streams/a/live", keep, "mallory");
  Open("/api/v1/streams/b/events", keep, "mallory");
  ASSERT_TRUE(WaitForLiveClients(2U));
  auto refused = Client()->Get("/api/v1/streams/c/live", {{"X-Who", "mallory"}});
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 429);
  EXPECT_EQ(json::parse(refused->body)["error"]["code"], "resource_exhausted");
  EXPECT_EQ(refused->get_header_value("Retry-After"), "5");
  // Another client still gets in, up to the global cap.
  Open("/api/v1/streams/a/live", keep, "alice");
  Open("/api/v1/streams/a/events", keep, "alice");
  ASSERT_TRUE(WaitForLiveClients(4U));
  hold->store(false);
  PublishLive("a", 1, 1);
  PublishLive("b", 1, 1);
  ASSERT_TRUE(WaitForLiveClients(0U));
  // Freed: mallory may open again.
  auto again = Open(
      "/api/v1/streams/a/live", [](const std::string&) { return false; }, "mallory");
  for (auto& t : readers_) t.join();
  readers_.clear();
  EXPECT_GE(again->bytes().size(), 2U);
}

TEST_F(LiveRoutesTest, StopWithLiveClientsConnectedReturnsPromptly) {
  options_.max_live_clients = 3;
  options_.max_live_clients_per_client = 3;
  Start();
  PublishLive("cam", 1, 10);
  auto mjpeg = Open("/api/v1/streams/cam/live");
  auto events = Open("/api/v1/streams/cam/events");
  auto waiting = Open("/api/v1/streams/nothing-yet/live");
  ASSERT_TRUE(WaitForLiveClients(3));
  ASSERT_TRUE(mjpeg->WaitUntil([](const std::string& b) { return ParseParts(b).size() == 1; }));
  ASSERT_TRUE(events->WaitUntil(
      [](const std::string& b) { return b.find("event: result") != std::string::npos; }));
  const auto start = std::chrono::steady_clock::now();
  server_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  for (auto& t : readers_) t.join();  // every client saw its response end
  readers_.clear();
  EXPECT_EQ(LiveClients(), 0U);
  EXPECT_TRUE(waiting->bytes().empty());
}

}  // namespace
}  // namespace kadr::viewer
