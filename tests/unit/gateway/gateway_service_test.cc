#include "gateway/gateway_service.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "bus/fake_bus.h"
#include "http/server.h"
#include "jobs/job_store.h"
#include "jobs/recorder.h"
#include "protocol/frame.h"
#include "support/test_data.h"

namespace kadr::gateway {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr char kReplyTopic[] = "kadr.replies.test";
constexpr char kModel[] = "m";

std::vector<std::uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string Str(const std::vector<std::uint8_t>& v) { return {v.begin(), v.end()}; }

// A colourful test picture, so encoders have something to encode.
cv::Mat Picture(int width, int height) {
  cv::Mat img(height, width, CV_8UC3);
  cv::randu(img, cv::Scalar::all(0), cv::Scalar::all(255));
  return img;
}

std::string Encode(const cv::Mat& img, const std::string& ext,
                   const std::vector<int>& params = {}) {
  std::vector<std::uint8_t> out;
  EXPECT_TRUE(cv::imencode(ext, img, out, params));
  return Str(out);
}

// `jpeg` with an EXIF APP1 segment saying `orientation` inserted after SOI.
std::string WithExifOrientation(const std::string& jpeg, int orientation) {
  const std::string tiff = std::string("MM\0*\0\0\0\x08", 8) + std::string("\0\x01", 2) +
                           std::string("\x01\x12\0\x03\0\0\0\x01\0", 9) +
                           static_cast<char>(orientation) + std::string("\0\0\0\0\0\0", 6);
  const std::string payload = std::string("Exif\0\0", 6) + tiff;
  const std::size_t length = payload.size() + 2;
  std::string app1 = "\xFF\xE1";
  app1 += static_cast<char>(length >> 8);
  app1 += static_cast<char>(length & 0xFF);
  return jpeg.substr(0, 2) + app1 + payload + jpeg.substr(2);
}

cv::Mat Decode(const std::vector<std::uint8_t>& bytes) {
  return cv::imdecode(bytes, cv::IMREAD_COLOR);
}

// Answers frames of one model from the fake bus the way a worker does: the annotated image
// first, then the result, both on the frame's reply topics.
class FakeWorker {
 public:
  enum class Mode { kOk, kSkip, kError, kSilent, kHold, kResultFirst };

  FakeWorker(bus::FakeBus& bus, std::string model) : bus_(bus), model_(std::move(model)) {
    thread_ = std::jthread([this](const std::stop_token& stop) { Loop(stop); });
  }

  std::atomic<Mode> mode{Mode::kOk};
  std::atomic<bool> release{false};  // kHold: answer now
  std::atomic<int> frames{0};
  const std::string annotated = Encode(Picture(16, 12), ".jpg");

 private:
  void Loop(const std::stop_token& stop) {
    bus::FakeSubscriber sub(bus_, protocol::FramesTopic(model_));
    bus::FakePublisher pub(bus_);
    while (!stop.stop_requested()) {
      for (const auto& in : sub.Poll(8, 5ms, 0ms)) {
        ++frames;
        auto meta = protocol::DecodeFrameHeaders(in.message.headers);
        if (!meta) continue;
        Answer(*meta, pub, stop);
      }
    }
  }

  void Answer(const protocol::FrameMeta& m, bus::FakePublisher& pub, const std::stop_token& stop) {
    const Mode now = mode.load();
    if (now == Mode::kSilent) return;
    if (now == Mode::kHold) {
      while (!release.load() && !stop.stop_requested()) std::this_thread::sleep_for(1ms);
    }
    protocol::FrameResult r;
    r.frame_id = m.frame_id;
    r.stream_id = m.stream_id;
    r.correlation_id = m.correlation_id;
    r.capture_ms = m.capture_ms;
    r.result.model = m.model;
    if (now == Mode::kSkip) {
      r.status = protocol::FrameStatus::kSkipped;
      r.error = DeadlineExceededError("deadline passed 5 ms before processing");
    } else if (now == Mode::kError) {
      r.status = protocol::FrameStatus::kError;
      r.error = InvalidArgumentError("corrupt JPEG data");
    } else {
      r.result.image_width = 64;
      r.result.image_height = 48;
      protocol::Detection d;
      d.class_id = 1;
      d.label = "car";
      d.score = 0.9f;
      d.box = {1, 2, 30, 20};
      r.result.detections = {d};
      r.result.timings_ms = {{"decode", 1.0}, {"inference", 2.0}, {"total", 4.0}};
      if (m.draw) r.annotated_topic = m.annotated_to;
    }
    bus::Message image{m.annotated_to, m.stream_id, Bytes(annotated), {}};
    image.headers.Set(protocol::header::kFrameId, m.frame_id);
    image.headers.Set(protocol::header::kCorrelationId, m.correlation_id);
    image.headers.Set(protocol::header::kContentType, "image/jpeg");
    bus::Message result{m.reply_to, m.stream_id, Bytes(protocol::FrameResultToJson(r)), {}};
    result.headers.Set(protocol::header::kFrameId, m.frame_id);
    result.headers.Set(protocol::header::kCorrelationId, m.correlation_id);
    result.headers.Set(protocol::header::kContentType, "application/json");
    const bool with_image = !r.annotated_topic.empty();
    if (now == Mode::kResultFirst) {
      (void)pub.Publish(std::move(result), nullptr);
      std::this_thread::sleep_for(100ms);
      if (with_image) (void)pub.Publish(std::move(image), nullptr);
      return;
    }
    if (with_image) (void)pub.Publish(std::move(image), nullptr);
    (void)pub.Publish(std::move(result), nullptr);
  }

  bus::FakeBus& bus_;
  std::string model_;
  std::jthread thread_;
};

bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout = 3s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

std::vector<ConfiguredModel> DefaultModels() {
  ConfiguredModel m;
  m.name = kModel;
  m.family = "yolox";
  m.state = "ready";
  m.input_width = 416;
  m.input_height = 416;
  m.labels = {"person", "car", "bus"};
  ConfiguredModel broken;
  broken.name = "broken";
  broken.family = "yolov8";
  broken.state = "failed";
  broken.error = NotFoundError("model file missing");
  return {m, broken};
}

class GatewayServiceTest : public ::testing::Test {
 protected:
  GatewayOptions Options() {
    GatewayOptions o;
    o.reply_topic = kReplyTopic;
    o.broker_check_interval = 5ms;
    o.poll_timeout = 2ms;
    o.default_timeout = 3000ms;
    o.now_ms = [this] { return now_.load(); };
    return o;
  }

  // Starts the service and its HTTP server; `announce` makes a live worker of model "m" known.
  void Start(GatewayOptions options, bool announce = true,
             std::vector<ConfiguredModel> models = DefaultModels()) {
    worker_ = std::make_unique<FakeWorker>(bus_, kModel);
    auto service = GatewayService::Create(
        std::move(options), publisher_, replies_, workers_, std::move(models),
        [this]() -> Status {
          return broker_ok_ ? Status::Ok() : UnavailableError("broker not answering");
        },
        metrics_);
    ASSERT_TRUE(service.has_value()) << service.error().ToString();
    service_ = std::move(service).value();
    // The job reads are the recorder's: it materialises the gateway's snapshots and the
    // workers' answers into the store the job routes read.
    jobs::RecorderOptions ro;
    ro.poll_timeout = 2ms;
    ro.now_ms = [this] { return now_.load(); };
    recorder_ = std::make_unique<jobs::Recorder>(ro, store_, recorder_in_, metrics_);
    http::HttpServerOptions http_options;
    http_options.port = 0;
    http_options.threads = 8;
    auto server = http::HttpServer::Create(http_options);
    ASSERT_TRUE(server.has_value());
    server_ = std::move(server).value();
    ASSERT_TRUE(service_->RegisterRoutes(*server_).ok());
    jobs::JobRoutesOptions jo;
    jo.now_ms = [this] { return now_.load(); };
    ASSERT_TRUE(jobs::RegisterJobRoutes(*server_, jo, store_, *recorder_, publisher_).ok());
    ASSERT_TRUE(server_->Start().ok());
    run_ = std::jthread([this](const std::stop_token& stop) { run_status_ = service_->Run(stop); });
    record_ = std::jthread([this](const std::stop_token& stop) { (void)recorder_->Run(stop); });
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(10s);
    if (announce) Announce(kModel);
  }
  void Start() { Start(Options()); }

  void TearDown() override {
    if (server_) server_->Stop();
    run_ = {};  // requests stop and joins
    record_ = {};
    worker_.reset();
  }

  // Publishes a heartbeat and waits until the gateway has taken it in.
  void Announce(const std::string& model, const std::string& worker = "w1",
                const std::string& state = "running", std::vector<std::string> labels = {},
                std::vector<bus::Loss> losses = {}) {
    protocol::WorkerHeartbeat hb;
    hb.worker_id = worker;
    hb.model = model;
    hb.ts_ms = now_;
    hb.state = state;
    hb.family = "remote-family";
    hb.input_width = 320;
    hb.input_height = 240;
    hb.labels = std::move(labels);
    hb.processed = 7;
    hb.skipped = 2;
    hb.failed = 1;
    for (const auto& l : losses) hb.lost += static_cast<std::uint64_t>(l.count());
    hb.losses = std::move(losses);
    const auto offset = static_cast<std::int64_t>(bus_.Size(std::string(protocol::kWorkersTopic)));
    bus_.Append({std::string(protocol::kWorkersTopic),
                 worker,
                 Bytes(protocol::WorkerHeartbeatToJson(hb)),
                 {}});
    ASSERT_TRUE(WaitFor([&] { return workers_.acked().count(offset) > 0; }));
  }

  httplib::Result Post(const std::string& path, const std::string& body,
                       const std::string& content_type = "image/jpeg",
                       const httplib::Headers& headers = {}) {
    return client_->Post(path, headers, body, content_type);
  }

  std::vector<bus::Message> Frames() { return bus_.Topic(protocol::FramesTopic(kModel)); }

  static json ErrorOf(const httplib::Result& r) { return json::parse(r->body).at("error"); }

  const std::string jpeg_ = Encode(Picture(64, 48), ".jpg");

  bus::FakeBus bus_;
  bus::FakePublisher publisher_{bus_};
  bus::FakeSubscriber replies_{bus_, kReplyTopic};
  bus::FakeSubscriber workers_{bus_, std::string(protocol::kWorkersTopic)};
  std::atomic<std::int64_t> now_{1'764'115'200'000};
  std::atomic<bool> broker_ok_{true};
  MetricsRegistry metrics_;
  jobs::MemoryJobStore store_;
  bus::FakeSubscriber recorder_in_{bus_, {std::string(protocol::kJobsTopic), kReplyTopic}};
  std::unique_ptr<jobs::Recorder> recorder_;
  std::jthread record_;
  std::unique_ptr<FakeWorker> worker_;
  std::unique_ptr<GatewayService> service_;
  std::unique_ptr<http::HttpServer> server_;
  Status run_status_ = InternalError("not run");
  std::jthread run_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(GatewayServiceTest, DetectAnswersWithTheWorkersResult) {
  Start();
  auto r = Post("/api/v1/detect?model=m", jpeg_);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json body = json::parse(r->body);
  const std::string id = body.at("job_id");
  EXPECT_TRUE(std::regex_match(id, std::regex("j[0-9a-f]{24}"))) << id;
  EXPECT_EQ(r->get_header_value("X-Kadr-Job-Id"), id);
  EXPECT_EQ(body["model"], "m");
  EXPECT_EQ(body["image"], json({{"width", 64}, {"height", 48}}));
  ASSERT_EQ(body["detections"].size(), 1u);
  EXPECT_EQ(body["detections"][0]["label"], "car");
  const json& t = body["timings_ms"];
  for (const char* key : {"gateway", "queue", "total", "decode", "inference"}) {
    EXPECT_TRUE(t.contains(key)) << key;
  }
  EXPECT_GE(t["total"].get<double>(), t["gateway"].get<double>());
  EXPECT_EQ(body["annotated_image"], "/api/v1/jobs/" + id + "/image");

  auto image = client_->Get("/api/v1/jobs/" + id + "/image");
  ASSERT_TRUE(image);
  EXPECT_EQ(image->status, 200);
  EXPECT_EQ(image->get_header_value("Content-Type"), "image/jpeg");
  EXPECT_EQ(image->body, worker_->annotated);

  auto job = client_->Get("/api/v1/jobs/" + id);
  ASSERT_TRUE(job);
  ASSERT_EQ(job->status, 200);
  const json j = json::parse(job->body);
  EXPECT_EQ(j["state"], "done");
  EXPECT_EQ(j["detections_count"], 1);
  EXPECT_EQ(j["progress"]["frames_done"], 1);
  // Every reply was acknowledged: the annotated image and the result.
  EXPECT_TRUE(WaitFor([&] { return replies_.acked().size() == 2; }));
}

TEST_F(GatewayServiceTest, AcceptJpegAnswersWithTheAnnotatedImage) {
  Start();
  auto r = Post("/api/v1/detect", jpeg_, "image/jpeg", {{"Accept", "image/jpeg"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "image/jpeg");
  EXPECT_EQ(r->body, worker_->annotated);
  EXPECT_TRUE(std::regex_match(r->get_header_value("X-Kadr-Job-Id"), std::regex("j[0-9a-f]{24}")));

  // Without an image to send, the answer is JSON.
  auto plain = Post("/api/v1/detect?draw=0", jpeg_, "image/jpeg", {{"Accept", "image/jpeg"}});
  ASSERT_TRUE(plain);
  ASSERT_EQ(plain->status, 200) << plain->body;
  EXPECT_EQ(plain->get_header_value("Content-Type"), "application/json");
  EXPECT_FALSE(json::parse(plain->body).contains("annotated_image"));
  EXPECT_EQ(Frames().back().headers.Get(protocol::header::kDraw), "0");
}

TEST_F(GatewayServiceTest, BaselineJpegIsPublishedUnchangedWithTheFrameHeaders) {
  Start();
  auto r = Post("/api/v1/detect?conf=0.5&iou=0.4&classes=bus,car,1&timeout_ms=2000", jpeg_,
                "image/jpeg", {{"Content-Disposition", "attachment; filename=\"a/b/cat.jpg\""}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const std::string id = json::parse(r->body).at("job_id");
  const auto frames = Frames();
  ASSERT_EQ(frames.size(), 1u);
  const bus::Message& f = frames[0];
  EXPECT_EQ(f.value, Bytes(jpeg_));
  EXPECT_EQ(f.key, id);
  auto meta = protocol::DecodeFrameHeaders(f.headers);
  ASSERT_TRUE(meta.has_value()) << meta.error().ToString();
  EXPECT_EQ(meta->frame_id, id);
  EXPECT_EQ(meta->stream_id, id);
  EXPECT_EQ(meta->correlation_id, id);
  EXPECT_EQ(meta->reply_to, kReplyTopic);
  EXPECT_EQ(meta->annotated_to, kReplyTopic);
  EXPECT_EQ(meta->model, "m");
  EXPECT_EQ(meta->source, "cat.jpg");
  EXPECT_EQ(meta->capture_ms, now_.load());
  EXPECT_EQ(meta->deadline_ms, now_.load() + 2000);
  EXPECT_FLOAT_EQ(meta->options.confidence.value_or(-1), 0.5f);
  EXPECT_FLOAT_EQ(meta->options.iou.value_or(-1), 0.4f);
  EXPECT_EQ(meta->options.classes, (std::vector<int>{1, 2}));
  EXPECT_TRUE(meta->draw);
}

TEST_F(GatewayServiceTest, OtherImagesAreConvertedToUprightJpeg) {
  Start();
  // PNG: converted, same size.
  const std::string png = Encode(Picture(64, 48), ".png");
  auto r = Post("/api/v1/detect", png, "image/png");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto frame = Frames().back().value;
  ASSERT_GE(frame.size(), 2u);
  EXPECT_EQ(frame[0], 0xFF);
  EXPECT_EQ(frame[1], 0xD8);
  cv::Mat decoded = Decode(frame);
  EXPECT_EQ(decoded.cols, 64);
  EXPECT_EQ(decoded.rows, 48);

  // A JPEG with EXIF rotation: converted, rotated upright (90 degrees: sides swap).
  r = Post("/api/v1/detect", WithExifOrientation(jpeg_, 6), "application/octet-stream");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  frame = Frames().back().value;
  EXPECT_NE(frame, Bytes(WithExifOrientation(jpeg_, 6)));
  decoded = Decode(frame);
  EXPECT_EQ(decoded.cols, 48);
  EXPECT_EQ(decoded.rows, 64);

  // Progressive and grayscale JPEGs: converted.
  const std::string progressive =
      Encode(Picture(64, 48), ".jpg", {cv::IMWRITE_JPEG_PROGRESSIVE, 1});
  r = Post("/api/v1/detect", progressive);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_NE(Frames().back().value, Bytes(progressive));
  cv::Mat gray_img(48, 64, CV_8UC1, cv::Scalar(90));
  const std::string gray = Encode(gray_img, ".jpg");
  r = Post("/api/v1/detect", gray);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_NE(Frames().back().value, Bytes(gray));
  EXPECT_EQ(Decode(Frames().back().value).channels(), 3);
}

TEST_F(GatewayServiceTest, MultipartUploadWithFormFields) {
  Start();
  httplib::MultipartFormDataItems items = {
      {"file", jpeg_, "C:\\photos\\bus.jpg", "image/jpeg"},
      {"model", "m", "", ""},
      {"classes", "person", "", ""},
      {"draw", "0", "", ""},
  };
  auto r = client_->Post("/api/v1/detect", items);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto meta = protocol::DecodeFrameHeaders(Frames().back().headers);
  ASSERT_TRUE(meta.has_value());
  EXPECT_EQ(meta->source, "bus.jpg");
  EXPECT_EQ(meta->options.classes, std::vector<int>{0});
  EXPECT_FALSE(meta->draw);

  httplib::MultipartFormDataItems no_image = {{"model", "m", "", ""}};
  r = client_->Post("/api/v1/detect", no_image);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(ErrorOf(r)["code"], "invalid_argument");
}

TEST_F(GatewayServiceTest, BadRequestsAre400) {
  Start();
  const std::string corrupt = "\xFF\xD8\xFF\xE0 this is not a jpeg at all";
  const std::string truncated = jpeg_.substr(0, jpeg_.size() / 2);
  for (const auto& [query, body] : std::vector<std::pair<std::string, std::string>>{
           {"", corrupt},
           {"", truncated},
           {"", ""},
           {"?conf=1.5", jpeg_},
           {"?conf=abc", jpeg_},
           {"?iou=-0.1", jpeg_},
           {"?classes=zebra", jpeg_},
           {"?classes=7", jpeg_},
           {"?timeout_ms=0", jpeg_},
           {"?timeout_ms=300001", jpeg_},
           {"?draw=maybe", jpeg_},
       }) {
    auto r = Post("/api/v1/detect" + query, body);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << query << " " << r->body;
    EXPECT_EQ(ErrorOf(r)["code"], "invalid_argument") << query;
  }
  EXPECT_TRUE(Frames().empty());
  EXPECT_EQ(worker_->frames, 0);
}

TEST_F(GatewayServiceTest, UnknownModelAndJobAre404) {
  Start();
  auto r = Post("/api/v1/detect?model=yolo9000", jpeg_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(ErrorOf(r)["code"], "not_found");
  EXPECT_EQ(ErrorOf(r)["message"], "unknown model 'yolo9000'; available: m, broken");

  for (const char* path :
       {"/api/v1/jobs/j0123456789abcdef01234567", "/api/v1/jobs/j0123456789abcdef01234567/result",
        "/api/v1/jobs/j0123456789abcdef01234567/image", "/api/v1/jobs/a.b"}) {
    auto job = client_->Get(path);
    ASSERT_TRUE(job);
    EXPECT_EQ(job->status, 404) << path;
    EXPECT_EQ(ErrorOf(job)["code"], "not_found") << path;
  }
}

TEST_F(GatewayServiceTest, OversizedImagesAre413) {
  GatewayOptions options = Options();
  options.limits.max_pixels = 1000;  // 64x48 is 3072
  Start(options);
  auto r = Post("/api/v1/detect", jpeg_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(ErrorOf(r)["code"], "too_large");
  EXPECT_TRUE(Frames().empty());
}

TEST_F(GatewayServiceTest, UploadsOverTheByteLimitAre413) {
  GatewayOptions options = Options();
  options.max_image_bytes = 100;
  Start(options);
  auto r = Post("/api/v1/detect", jpeg_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(ErrorOf(r)["code"], "too_large");
}

TEST_F(GatewayServiceTest, NonImagesAre415) {
  Start();
  auto text = Post("/api/v1/detect", "hello", "text/plain");
  ASSERT_TRUE(text);
  EXPECT_EQ(text->status, 415);
  EXPECT_EQ(ErrorOf(text)["code"], "unsupported");

  auto gif =
      Post("/api/v1/detect", std::string("GIF89a\x01\x00\x01\x00\x00\x00\x00", 13), "image/gif");
  ASSERT_TRUE(gif);
  EXPECT_EQ(gif->status, 415);
  EXPECT_EQ(ErrorOf(gif)["code"], "unsupported");
  EXPECT_TRUE(Frames().empty());
}

TEST_F(GatewayServiceTest, InFlightBoundAnswers429) {
  GatewayOptions options = Options();
  options.max_in_flight = 2;
  Start(options);
  worker_->mode = FakeWorker::Mode::kSilent;
  for (int i = 0; i < 2; ++i) {
    auto r = Post("/api/v1/jobs", jpeg_);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
  }
  for (const char* path : {"/api/v1/jobs", "/api/v1/detect"}) {
    auto r = Post(path, jpeg_);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 429) << path;
    EXPECT_EQ(ErrorOf(r)["code"], "resource_exhausted");
    EXPECT_EQ(r->get_header_value("Retry-After"), "1");
  }
  EXPECT_EQ(Frames().size(), 2u);
}

TEST_F(GatewayServiceTest, ModelWithoutLiveWorkerIs503) {
  Start(Options(), /*announce=*/false);
  auto r = Post("/api/v1/detect", jpeg_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(ErrorOf(r)["code"], "unavailable");
  EXPECT_EQ(r->get_header_value("Retry-After"), "2");
  // The failed model is configured too: known, so 503 rather than 404.
  r = Post("/api/v1/detect?model=broken", jpeg_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_TRUE(Frames().empty());
}

TEST_F(GatewayServiceTest, HeartbeatsExpireAndStoppingWorkersLeave) {
  Start();
  ASSERT_EQ(Post("/api/v1/detect", jpeg_)->status, 200);

  now_ += 60'000;  // three intervals missed and more
  auto r = Post("/api/v1/detect", jpeg_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  auto models = json::parse(client_->Get("/api/v1/models")->body);
  EXPECT_EQ(models["models"][0]["available"], false);
  EXPECT_EQ(models["models"][0]["workers"], 0);

  Announce(kModel);  // alive again
  ASSERT_EQ(Post("/api/v1/detect", jpeg_)->status, 200);
  Announce(kModel, "w1", "stopping");
  EXPECT_EQ(Post("/api/v1/detect", jpeg_)->status, 503);
}

TEST_F(GatewayServiceTest, BrokerDownIs503) {
  Start();
  broker_ok_ = false;
  ASSERT_TRUE(WaitFor([&] { return client_->Get("/readyz")->status == 503; }));
  auto r = Post("/api/v1/detect", jpeg_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(ErrorOf(r)["code"], "unavailable");
  EXPECT_NE(ErrorOf(r)["message"].get<std::string>().find("broker"), std::string::npos);
  EXPECT_TRUE(Frames().empty());
}

TEST_F(GatewayServiceTest, PublishFailureIs503) {
  Start();
  // The job's snapshot and its frame, sent three times.
  publisher_.FailNext(4, UnavailableError("all brokers down"));
  auto r = Post("/api/v1/detect", jpeg_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(ErrorOf(r)["code"], "unavailable");
  const std::string id = r->get_header_value("X-Kadr-Job-Id");
  // The job store follows the gateway's answer as soon as the recorder has read the failure.
  json job;
  EXPECT_TRUE(WaitFor([&] {
    job = json::parse(client_->Get("/api/v1/jobs/" + id)->body);
    return job["state"] == "failed";
  })) << job.dump();
  EXPECT_EQ(job["error"]["code"], "unavailable");

  // A frame the publisher refuses outright (over its size limit) is 413.
  publisher_.max_message_bytes = 100;
  r = Post("/api/v1/detect", jpeg_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
}

TEST_F(GatewayServiceTest, NoResultBeforeTheDeadlineIs504) {
  Start();
  worker_->mode = FakeWorker::Mode::kSilent;
  const auto start = std::chrono::steady_clock::now();
  auto r = Post("/api/v1/detect?timeout_ms=150", jpeg_);
  ASSERT_TRUE(r);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
  EXPECT_EQ(r->status, 504);
  EXPECT_EQ(ErrorOf(r)["code"], "deadline_exceeded");
  const std::string id = r->get_header_value("X-Kadr-Job-Id");
  // The job store follows the gateway's answer as soon as the recorder has read the failure.
  json job;
  EXPECT_TRUE(WaitFor([&] {
    job = json::parse(client_->Get("/api/v1/jobs/" + id)->body);
    return job["state"] == "failed";
  })) << job.dump();
  EXPECT_EQ(job["error"]["code"], "deadline_exceeded");

  // Async jobs expire too, from Run's loop.
  auto async = Post("/api/v1/jobs?timeout_ms=50", jpeg_);
  ASSERT_EQ(async->status, 202);
  const std::string async_id = json::parse(async->body)["id"];
  EXPECT_TRUE(WaitFor([&] {
    return json::parse(client_->Get("/api/v1/jobs/" + async_id)->body)["state"] == "failed";
  }));
  EXPECT_EQ(client_->Get("/api/v1/jobs/" + async_id + "/result")->status, 504);
}

TEST_F(GatewayServiceTest, SkippedFrameIs504AndWorkerErrorKeepsItsCode) {
  Start();
  worker_->mode = FakeWorker::Mode::kSkip;
  auto r = Post("/api/v1/detect", jpeg_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504);
  EXPECT_EQ(ErrorOf(r)["code"], "deadline_exceeded");
  EXPECT_EQ(ErrorOf(r)["message"], "deadline passed 5 ms before processing");

  worker_->mode = FakeWorker::Mode::kError;
  r = Post("/api/v1/detect", jpeg_);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(ErrorOf(r)["message"], "corrupt JPEG data");
}

TEST_F(GatewayServiceTest, ResultWaitsForItsAnnotatedImage) {
  Start();
  worker_->mode = FakeWorker::Mode::kResultFirst;
  auto r = Post("/api/v1/detect", jpeg_, "image/jpeg", {{"Accept", "image/jpeg"}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->body, worker_->annotated);
}

TEST_F(GatewayServiceTest, AsyncJobGoesFromQueuedToDone) {
  Start();
  worker_->mode = FakeWorker::Mode::kHold;
  auto r = Post("/api/v1/jobs?model=m", jpeg_);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const json job = json::parse(r->body);
  const std::string id = job["id"];
  EXPECT_EQ(r->get_header_value("Location"), "/api/v1/jobs/" + id);
  EXPECT_EQ(job["state"], "queued");
  EXPECT_EQ(job["kind"], "image");
  EXPECT_EQ(job["model"], "m");

  EXPECT_EQ(json::parse(client_->Get("/api/v1/jobs/" + id)->body)["state"], "queued");
  auto pending = client_->Get("/api/v1/jobs/" + id + "/result");
  ASSERT_TRUE(pending);
  EXPECT_EQ(pending->status, 202);
  EXPECT_EQ(json::parse(pending->body)["state"], "queued");
  EXPECT_EQ(client_->Get("/api/v1/jobs/" + id + "/image")->status, 404);

  worker_->release = true;
  ASSERT_TRUE(WaitFor(
      [&] { return json::parse(client_->Get("/api/v1/jobs/" + id)->body)["state"] == "done"; }));
  const json done = json::parse(client_->Get("/api/v1/jobs/" + id)->body);
  EXPECT_EQ(done["links"]["image"], "/api/v1/jobs/" + id + "/image");
  auto result = client_->Get("/api/v1/jobs/" + id + "/result");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200);
  const json body = json::parse(result->body);
  EXPECT_EQ(body["job_id"], id);
  EXPECT_EQ(body["detections"].size(), 1u);
  EXPECT_TRUE(body["timings_ms"].contains("queue"));
  auto image = client_->Get("/api/v1/jobs/" + id + "/image");
  ASSERT_TRUE(image);
  EXPECT_EQ(image->status, 200);
  EXPECT_EQ(image->body, worker_->annotated);
}

TEST_F(GatewayServiceTest, DuplicateAndUnknownRepliesAreIgnoredAndAcked) {
  Start();
  auto r = Post("/api/v1/detect", jpeg_);
  ASSERT_EQ(r->status, 200);
  const std::string id = json::parse(r->body)["job_id"];
  // A redelivered result with another outcome, one for a job nobody knows, and junk.
  protocol::FrameResult dup;
  dup.frame_id = id;
  dup.correlation_id = id;
  dup.status = protocol::FrameStatus::kError;
  dup.error = InternalError("late duplicate");
  protocol::FrameResult stranger = dup;
  stranger.frame_id = stranger.correlation_id = "jffffffffffffffffffffffff";
  const std::size_t before = bus_.Size(kReplyTopic);
  bus_.Append({kReplyTopic, id, Bytes(protocol::FrameResultToJson(dup)), {}});
  bus_.Append({kReplyTopic, "x", Bytes(protocol::FrameResultToJson(stranger)), {}});
  bus_.Append({kReplyTopic, "x", Bytes("{not json"), {}});
  ASSERT_TRUE(WaitFor([&] { return replies_.acked().size() == before + 3; }));
  EXPECT_EQ(json::parse(client_->Get("/api/v1/jobs/" + id)->body)["state"], "done");
}

TEST_F(GatewayServiceTest, ReadyzFollowsBrokerAndWorkers) {
  Start(Options(), /*announce=*/false);
  ASSERT_TRUE(WaitFor([&] {
    const json b = json::parse(client_->Get("/readyz")->body);
    return b["broker"]["ok"] == true;
  }));
  auto r = client_->Get("/readyz");
  EXPECT_EQ(r->status, 503);  // no worker for "m" yet
  json body = json::parse(r->body);
  EXPECT_EQ(body["status"], "not_ready");
  EXPECT_EQ(body["models"][0], json({{"name", "m"},
                                     {"state", "ready"},
                                     {"workers", 0},
                                     {"required", true},
                                     {"frames_lost", 0},
                                     {"losing_frames", false}}));
  EXPECT_EQ(body["models"][1]["required"], false);  // "broken" failed to load

  Announce(kModel);
  r = client_->Get("/readyz");
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["models"][0]["workers"], 1);

  broker_ok_ = false;
  ASSERT_TRUE(WaitFor([&] { return client_->Get("/readyz")->status == 503; }));
  body = json::parse(client_->Get("/readyz")->body);
  EXPECT_EQ(body["broker"]["ok"], false);

  EXPECT_EQ(client_->Get("/healthz")->status, 200);
}

// A worker announces frames the broker deleted before it read them: the request whose frame
// was among them is sent again (three sends in all), then answers 503 with an error that
// says so, long before its timeout; /readyz and the metrics say frames are being lost.
TEST_F(GatewayServiceTest, AFrameDeletedBeforeAWorkerReadItIsSentAgainThenAnswers503) {
  GatewayOptions options = Options();
  options.default_timeout = 60s;
  Start(options);
  worker_->mode = FakeWorker::Mode::kSilent;
  const std::string frames_topic = protocol::FramesTopic(kModel);
  auto request = std::async(std::launch::async, [&] {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(60s);
    return c.Post("/api/v1/detect", jpeg_, "image/jpeg");
  });
  const auto started = std::chrono::steady_clock::now();
  for (std::size_t sends = 1; sends <= 3; ++sends) {
    ASSERT_TRUE(WaitFor([&] { return bus_.Size(frames_topic) == sends; })) << sends;
    // Every send so far is gone (the fake bus has one partition; offsets 0..sends-1).
    Announce(kModel, "w1", "running", {},
             {bus::Loss{frames_topic, 0, 0, static_cast<std::int64_t>(sends)}});
  }
  const auto r = request.get();
  ASSERT_TRUE(r);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 30s) << "not the request's timeout";
  EXPECT_EQ(r->status, 503) << r->body;
  const json error = json::parse(r->body)["error"];
  EXPECT_EQ(error["code"], "unavailable");
  EXPECT_NE(error["message"].get<std::string>().find(
                "the broker deleted the frame before a worker read it (kadr.frames.m partition 0, "
                "offsets 0..2)"),
            std::string::npos)
      << r->body;
  EXPECT_EQ(bus_.Size(frames_topic), 3u) << "three sends in all";

  const auto ready = client_->Get("/readyz");
  EXPECT_EQ(ready->status, 503) << ready->body;
  const json body = json::parse(ready->body);
  EXPECT_EQ(body["losing_frames"]["models"], json({"m"}));
  EXPECT_EQ(body["models"][0]["frames_lost"], 3);
  EXPECT_EQ(body["models"][0]["losing_frames"], true);
  const std::string metrics = client_->Get("/metrics")->body;
  EXPECT_NE(metrics.find(R"(kadr_worker_frames_total{model="m",outcome="lost",worker="w1"} 3)"),
            std::string::npos)
      << metrics;

  now_ += 31000;  // past the loss window, with a fresh announcement that reports no loss
  Announce(kModel);
  EXPECT_EQ(client_->Get("/readyz")->status, 200);
}

TEST_F(GatewayServiceTest, ModelsMergeConfiguredAndAnnounced) {
  Start();
  Announce("remote", "w9", "running", {"cat", "dog"});
  auto r = client_->Get("/api/v1/models");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const json body = json::parse(r->body);
  EXPECT_EQ(body["default"], "m");
  ASSERT_EQ(body["models"].size(), 3u);
  const json& m = body["models"][0];
  EXPECT_EQ(m["name"], "m");
  EXPECT_EQ(m["state"], "ready");
  EXPECT_EQ(m["available"], true);
  EXPECT_EQ(m["workers"], 1);
  EXPECT_EQ(m["input"], json({{"width", 416}, {"height", 416}}));
  EXPECT_EQ(m["labels"], json({"person", "car", "bus"}));
  EXPECT_EQ(m["family"], "yolox");
  const json& broken = body["models"][1];
  EXPECT_EQ(broken["state"], "failed");
  EXPECT_EQ(broken["available"], false);
  EXPECT_EQ(broken["error"]["code"], "not_found");
  const json& remote = body["models"][2];
  EXPECT_EQ(remote["name"], "remote");
  EXPECT_EQ(remote["state"], "remote");
  EXPECT_EQ(remote["available"], true);
  EXPECT_EQ(remote["family"], "remote-family");
  EXPECT_EQ(remote["labels"], json({"cat", "dog"}));
  EXPECT_EQ(remote["input"], json({{"width", 320}, {"height", 240}}));

  // A model known only from announcements is served, its labels resolve class names.
  auto bad = Post("/api/v1/detect?model=remote&classes=person", jpeg_);
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  auto job = Post("/api/v1/jobs?model=remote&classes=dog", jpeg_);
  ASSERT_TRUE(job);
  EXPECT_EQ(job->status, 202);
  const auto frames = bus_.Topic(protocol::FramesTopic("remote"));
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].headers.Get(protocol::header::kClasses), "1");
}

TEST_F(GatewayServiceTest, MetricsExposeRequestsJobsWorkersAndBroker) {
  Start();
  ASSERT_EQ(Post("/api/v1/detect", jpeg_)->status, 200);
  ASSERT_EQ(Post("/api/v1/detect?conf=7", jpeg_)->status, 400);
  ASSERT_TRUE(WaitFor([&] { return client_->Get("/readyz")->status == 200; }));
  auto r = client_->Get("/metrics");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_NE(r->get_header_value("Content-Type").find("text/plain"), std::string::npos);
  const std::string& text = r->body;
  for (const char* series : {
           R"(kadr_http_requests_total{code="200",method="POST",route="/api/v1/detect"} 1)",
           R"(kadr_http_requests_total{code="400",method="POST",route="/api/v1/detect"} 1)",
           R"(kadr_http_request_duration_seconds_count{route="/api/v1/detect"} 2)",
           R"(kadr_gateway_in_flight{model="m"} 0)",
           "kadr_gateway_in_flight_limit 64",
           R"(kadr_gateway_jobs_total{model="m",outcome="done"} 1)",
           R"(kadr_model_workers{model="m"} 1)",
           R"(kadr_model_workers{model="broken"} 0)",
           R"(kadr_worker_frames_total{model="m",outcome="processed",worker="w1"} 7)",
           R"(kadr_worker_frames_total{model="m",outcome="skipped",worker="w1"} 2)",
           "kadr_broker_up 1",
       }) {
    EXPECT_NE(text.find(series), std::string::npos) << series << "\n" << text;
  }
}

TEST_F(GatewayServiceTest, StoppingAnswersWaitingRequests503) {
  Start();
  worker_->mode = FakeWorker::Mode::kSilent;
  int status = 0;
  std::string body;
  std::thread request([&] {
    auto r = Post("/api/v1/detect?timeout_ms=10000", jpeg_);
    if (!r) return;
    status = r->status;
    body = r->body;
  });
  ASSERT_TRUE(WaitFor([&] { return worker_->frames.load() == 1; }));
  run_.request_stop();
  request.join();
  EXPECT_EQ(status, 503);
  EXPECT_EQ(json::parse(body)["error"]["message"], "the gateway is shutting down");
  run_.join();
  EXPECT_TRUE(run_status_.ok());
  EXPECT_TRUE(replies_.closed());
  // New uploads are refused; reading still works.
  EXPECT_EQ(Post("/api/v1/detect", jpeg_)->status, 503);
  EXPECT_EQ(client_->Get("/healthz")->status, 200);
}

TEST(GatewayOptionsTest, ValidatesOptions) {
  GatewayOptions o;
  EXPECT_EQ(GatewayService::ValidateOptions(o).code(), StatusCode::kInvalidArgument);
  o.reply_topic = "kadr.replies.a";
  EXPECT_TRUE(GatewayService::ValidateOptions(o).ok());
  o.reply_topic = "bad topic";
  EXPECT_FALSE(GatewayService::ValidateOptions(o).ok());
  o.reply_topic = "kadr.replies.a";
  o.max_in_flight = 0;
  EXPECT_FALSE(GatewayService::ValidateOptions(o).ok());
  o.max_in_flight = 1;
  o.default_timeout = 400'000ms;
  EXPECT_FALSE(GatewayService::ValidateOptions(o).ok());
}

}  // namespace
}  // namespace kadr::gateway
