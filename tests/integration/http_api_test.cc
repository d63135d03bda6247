// The REST API end to end over real HTTP on loopback: `kadr up` as a child process (embedded
// broker, a worker per model, viewer, gateway), a second `kadr gateway` process on the same
// broker, and plain HTTP clients. Every endpoint of docs/api.md and every error status.
//
// Models: the repo's generated `tiny` ONNX model (white image -> "bright", black -> "dark")
// and the built-in `null`; with KADR_TEST_DATA also the real `yolox_nano` on bus.jpg.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "kafka/kafka_bus.h"
#include "protocol/frame.h"
#include "support/child_process.h"
#include "support/kadr_up.h"
#include "support/test_data.h"

namespace kadr {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::ChildProcess;

constexpr auto kStartTimeout = 90s;

std::string Bytes(const std::vector<std::uint8_t>& v) { return {v.begin(), v.end()}; }

std::string Encode(const cv::Mat& img, const std::string& ext) {
  std::vector<std::uint8_t> out;
  cv::imencode(ext, img, out);
  return Bytes(out);
}

std::string WhitePng() { return Encode(cv::Mat(64, 64, CV_8UC3, cv::Scalar::all(255)), ".png"); }
std::string BlackJpeg() { return Encode(cv::Mat(64, 48, CV_8UC3, cv::Scalar::all(0)), ".jpg"); }

json Parse(const httplib::Result& r) {
  if (!r) return json();
  return json::parse(r->body, nullptr, false);
}

std::string ErrorCode(const httplib::Result& r) {
  const json j = Parse(r);
  if (!j.is_object() || !j.contains("error")) return "<no error body: " + (r ? r->body : "") + ">";
  return j["error"].value("code", "");
}

// One kadr process serving HTTP, with its URL read from its first line.
struct Service {
  std::unique_ptr<ChildProcess> process;
  int port = 0;
  std::string broker;  // embedded broker bootstrap (kadr up only)

  static std::unique_ptr<Service> Start(const std::vector<std::string>& args,
                                        const std::filesystem::path& log) {
    auto s = std::make_unique<Service>();
    s->process = std::make_unique<ChildProcess>(args, log);
    s->port = testing::WaitForHttpPort(*s->process, kStartTimeout);
    if (s->port == 0) {
      ADD_FAILURE() << "kadr did not start; its log:\n" << s->process->Log();
      return nullptr;
    }
    if (auto b = s->process->WaitForLog(R"(kadr: embedded Kafka broker on (\S+))", 1s)) {
      s->broker = *b;
    }
    return s;
  }

  httplib::Client Client() const { return testing::LoopbackClient(port); }

  // Waits until GET /readyz answers 200.
  bool WaitReady() const { return testing::WaitReady(port, kStartTimeout); }
};

class HttpApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                     ("kadr_http_api_" + std::to_string(getpid())));
    std::filesystem::remove_all(*dir_);
    std::filesystem::create_directories(*dir_ / "models");
    std::filesystem::copy_file(KADR_TINY_ONNX, *dir_ / "models" / "tiny.onnx");
    models_dir_ = new std::string((*dir_ / "models").string());
    std::string models = "tiny,null";
    if (!testing::TestDataDir().empty()) {
      *models_dir_ += ":" + (testing::TestDataDir() / "models").string();
      models += ",yolox_nano";
    }
    up_ = Service::Start({KADR_BINARY, "--models-dir", *models_dir_, "up", "--http-port", "0",
                          "--models", models, "--data-dir", (*dir_ / "data").string(),
                          "--instance-id", "it-a", "--max-body-mb", "2"},
                         *dir_ / "up.log")
              .release();
  }

  static void TearDownTestSuite() {
    if (up_ != nullptr) {
      const int code = up_->process->Stop(30s);
      EXPECT_EQ(code, 0) << "kadr up did not exit cleanly on SIGTERM; log:\n"
                         << up_->process->Log();
    }
    delete up_;
    std::filesystem::remove_all(*dir_);
    delete dir_;
    delete models_dir_;
  }

  void SetUp() override {
    ASSERT_NE(up_, nullptr) << "kadr up failed to start";
    ASSERT_TRUE(up_->WaitReady()) << "kadr up never became ready; log:\n" << up_->process->Log();
  }
  void TearDown() override {
    if (HasFailure() && up_ != nullptr) {
      std::cerr << "---- kadr up log (tail) ----\n" << up_->process->LogTail() << "\n";
    }
  }

  // A heartbeat for a model with a "worker" that never answers, valid for a minute.
  static void AnnounceGhostWorker(const std::string& model) {
    kafka::KafkaOptions o;
    o.brokers = up_->broker;
    auto p = kafka::KafkaPublisher::Create(o);
    ASSERT_TRUE(p.has_value()) << p.error().ToString();
    protocol::WorkerHeartbeat hb;
    hb.worker_id = "ghost-worker";
    hb.model = model;
    hb.ts_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    hb.interval_ms = 60000;
    const std::string text = protocol::WorkerHeartbeatToJson(hb);
    bus::Message m{
        std::string(protocol::kWorkersTopic), hb.worker_id, {text.begin(), text.end()}, {}};
    std::atomic<bool> ok{false};
    ASSERT_TRUE((*p)->Publish(m, [&](const Status& s, const bus::AckToken&) { ok = s.ok(); }).ok());
    ASSERT_TRUE((*p)->Flush(30s).ok());
    ASSERT_TRUE(ok.load());
  }

  // kadr up's peak resident memory (VmHWM), MiB; -1 when it cannot be read.
  static double PeakRssMib() {
    std::ifstream in("/proc/" + std::to_string(up_->process->pid()) + "/status");
    const std::string status((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
    const auto at = status.find("VmHWM:");
    return at == std::string::npos ? -1.0 : std::atof(status.c_str() + at + 6) / 1024.0;
  }

  static std::filesystem::path* dir_;
  static std::string* models_dir_;
  static Service* up_;
};

std::filesystem::path* HttpApiTest::dir_ = nullptr;
std::string* HttpApiTest::models_dir_ = nullptr;
Service* HttpApiTest::up_ = nullptr;

TEST_F(HttpApiTest, HealthReadinessMetricsAndTheDocumentsAreServed) {
  auto c = up_->Client();
  auto health = c.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(Parse(health).value("status", ""), "ok");

  auto ready = c.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200) << ready->body;
  EXPECT_NE(ready->body.find("tiny"), std::string::npos) << ready->body;

  // Traffic first, so the per-model series exist.
  ASSERT_EQ(c.Post("/api/v1/detect?model=tiny", WhitePng(), "image/png")->status, 200);
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->get_header_value("Content-Type").find("text/plain"), std::string::npos);
  for (const char* series : {"kadr_http_requests_total",
                             "kadr_http_request_duration_seconds_bucket", "kadr_gateway_in_flight",
                             "kadr_model_workers", "kadr_worker_frames_total", "kadr_broker_up"}) {
    EXPECT_NE(metrics->body.find(series), std::string::npos) << series << "\n" << metrics->body;
  }

  auto openapi = c.Get("/api/v1/openapi.json");
  ASSERT_TRUE(openapi);
  EXPECT_EQ(openapi->status, 200);
  const json doc = Parse(openapi);
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc.value("openapi", "").substr(0, 2), "3.");
  EXPECT_TRUE(doc["paths"].contains("/api/v1/detect"));

  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->get_header_value("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(page->body.find("kadr"), std::string::npos);
}

TEST_F(HttpApiTest, ModelsListsTheServedModelsAsAvailable) {
  auto c = up_->Client();
  auto r = c.Get("/api/v1/models");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = Parse(r);
  bool tiny = false;
  for (const auto& m : j["models"]) {
    if (m["name"] == "tiny") {
      tiny = true;
      EXPECT_TRUE(m["available"].get<bool>());
      EXPECT_GE(m["workers"].get<int>(), 1);
      EXPECT_EQ(m["labels"], json({"bright", "dark"}));
    }
  }
  EXPECT_TRUE(tiny) << r->body;
}

TEST_F(HttpApiTest, DetectAnswersWithDetectionsTimingsAndALinkToTheAnnotatedImage) {
  auto c = up_->Client();
  auto r = c.Post("/api/v1/detect?model=tiny", WhitePng(), "image/png");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = Parse(r);
  EXPECT_EQ(j["model"], "tiny");
  EXPECT_EQ(j["image"]["width"], 64);
  EXPECT_EQ(j["image"]["height"], 64);
  ASSERT_EQ(j["detections"].size(), 1u) << r->body;
  EXPECT_EQ(j["detections"][0]["label"], "bright");
  for (const char* stage : {"gateway", "queue", "decode", "inference", "draw", "total"}) {
    EXPECT_TRUE(j["timings_ms"].contains(stage)) << stage << " missing: " << r->body;
  }
  EXPECT_GE(j["timings_ms"]["total"].get<double>(), j["timings_ms"]["inference"].get<double>());

  const std::string link = j.value("annotated_image", "");
  ASSERT_FALSE(link.empty()) << r->body;
  auto image = c.Get(link);
  ASSERT_TRUE(image);
  ASSERT_EQ(image->status, 200);
  EXPECT_EQ(image->get_header_value("Content-Type"), "image/jpeg");
  const cv::Mat decoded = cv::imdecode(
      std::vector<std::uint8_t>(image->body.begin(), image->body.end()), cv::IMREAD_COLOR);
  EXPECT_EQ(decoded.cols, 64);

  // The same job is a resource: done, with its result.
  const std::string id = j["job_id"];
  auto job = c.Get("/api/v1/jobs/" + id);
  ASSERT_TRUE(job);
  ASSERT_EQ(job->status, 200) << job->body;
  EXPECT_EQ(Parse(job)["state"], "done");
  auto result = c.Get("/api/v1/jobs/" + id + "/result");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(Parse(result)["detections"][0]["label"], "bright");
}

TEST_F(HttpApiTest, AcceptImageJpegReturnsTheAnnotatedImageItself) {
  auto c = up_->Client();
  httplib::Headers h = {{"Accept", "image/jpeg"}};
  auto r = c.Post("/api/v1/detect?model=tiny", h, BlackJpeg(), "image/jpeg");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "image/jpeg");
  EXPECT_FALSE(r->get_header_value("X-Kadr-Job-Id").empty());
  const cv::Mat decoded =
      cv::imdecode(std::vector<std::uint8_t>(r->body.begin(), r->body.end()), cv::IMREAD_COLOR);
  ASSERT_FALSE(decoded.empty());
  EXPECT_EQ(decoded.cols, 48);
  EXPECT_EQ(decoded.rows, 64);
}

TEST_F(HttpApiTest, MultipartUploadWithFormFieldsWorks) {
  auto c = up_->Client();
  httplib::MultipartFormDataItems items = {
      {"image", BlackJpeg(), "black.jpg", "image/jpeg"},
      {"model", "tiny", "", ""},
      {"classes", "dark", "", ""},
  };
  auto r = c.Post("/api/v1/detect", items);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = Parse(r);
  ASSERT_EQ(j["detections"].size(), 1u) << r->body;
  EXPECT_EQ(j["detections"][0]["label"], "dark");

  // A class filter that excludes what is there leaves nothing.
  items[2].content = "bright";
  r = c.Post("/api/v1/detect", items);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_TRUE(Parse(r)["detections"].empty()) << r->body;
}

TEST_F(HttpApiTest, DrawZeroGivesResultsWithoutAnImage) {
  auto c = up_->Client();
  auto r = c.Post("/api/v1/detect?model=tiny&draw=0", WhitePng(), "image/png");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = Parse(r);
  EXPECT_FALSE(j.contains("annotated_image")) << r->body;
  auto image = c.Get("/api/v1/jobs/" + j["job_id"].get<std::string>() + "/image");
  ASSERT_TRUE(image);
  EXPECT_EQ(image->status, 404);
}

TEST_F(HttpApiTest, BadInputGetsThePreciseStatusAndCode) {
  auto c = up_->Client();
  const std::string corrupt = "\xFF\xD8\xFF\xE0 definitely not a jpeg";
  struct Case {
    std::string name, path, body, content_type;
    int status;
    std::string code;
  };
  // Over the 2 MiB body limit this server runs with.
  const std::string huge(3u << 20, 'x');
  // A valid PNG header claiming a side over 16384 pixels.
  const std::string wide = Encode(cv::Mat(1, 16400, CV_8UC3, cv::Scalar::all(0)), ".png");
  const std::vector<Case> cases = {
      {"corrupt jpeg", "/api/v1/detect?model=tiny", corrupt, "image/jpeg", 400, "invalid_argument"},
      {"empty body", "/api/v1/detect?model=tiny", "", "image/jpeg", 400, "invalid_argument"},
      {"conf outside 0..1", "/api/v1/detect?model=tiny&conf=2", WhitePng(), "image/png", 400,
       "invalid_argument"},
      {"timeout not a number", "/api/v1/detect?model=tiny&timeout_ms=soon", WhitePng(), "image/png",
       400, "invalid_argument"},
      {"unknown class name", "/api/v1/detect?model=tiny&classes=giraffe", WhitePng(), "image/png",
       400, "invalid_argument"},
      {"unknown model", "/api/v1/detect?model=yolo9000", WhitePng(), "image/png", 404, "not_found"},
      {"body over the limit", "/api/v1/detect?model=tiny", huge, "image/png", 413, "too_large"},
      {"side over 16384", "/api/v1/detect?model=tiny", wide, "image/png", 413, "too_large"},
      {"not an image type", "/api/v1/detect?model=tiny", "hello", "text/plain", 415, "unsupported"},
      {"bytes of no known format", "/api/v1/detect?model=tiny", "GIF89a not supported here",
       "application/octet-stream", 415, "unsupported"},
      {"async, unknown model", "/api/v1/jobs?model=yolo9000", WhitePng(), "image/png", 404,
       "not_found"},
  };
  for (const auto& k : cases) {
    auto r = c.Post(k.path, k.body, k.content_type);
    ASSERT_TRUE(r) << k.name << ": no response";
    EXPECT_EQ(r->status, k.status) << k.name << ": " << r->body;
    EXPECT_EQ(ErrorCode(r), k.code) << k.name;
    EXPECT_FALSE(Parse(r)["error"].value("message", "").empty()) << k.name;
  }
  for (const std::string path :
       {"/api/v1/jobs/j000000000000000000000000", "/api/v1/jobs/j000000000000000000000000/result",
        "/api/v1/jobs/j000000000000000000000000/image", "/api/v1/nothing-here"}) {
    auto r = c.Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 404) << path << ": " << r->body;
    EXPECT_EQ(ErrorCode(r), "not_found") << path;
  }
  // The service is unharmed: the next good request is answered.
  auto ok = c.Post("/api/v1/detect?model=tiny", WhitePng(), "image/png");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
}

TEST_F(HttpApiTest, AsyncJobIsAcceptedAtOnceThenDoneWithResultImageAndHistory) {
  auto c = up_->Client();
  auto r = c.Post("/api/v1/jobs?model=tiny", WhitePng(), "image/png");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const json job = Parse(r);
  const std::string id = job.value("id", "");
  ASSERT_FALSE(id.empty()) << r->body;
  EXPECT_EQ(r->get_header_value("Location"), "/api/v1/jobs/" + id);
  EXPECT_TRUE(job["state"] == "queued" || job["state"] == "running" || job["state"] == "done")
      << r->body;

  json status;
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        auto s = c.Get("/api/v1/jobs/" + id);
        status = Parse(s);
        return s && s->status == 200 && status.value("state", "") == "done";
      },
      30s))
      << status.dump();
  EXPECT_EQ(status["progress"]["frames_done"], 1);
  EXPECT_EQ(status["progress"]["frames_total"], 1);

  auto result = c.Get("/api/v1/jobs/" + id + "/result");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  EXPECT_EQ(Parse(result)["detections"][0]["label"], "bright");
  auto image = c.Get("/api/v1/jobs/" + id + "/image");
  ASSERT_TRUE(image);
  EXPECT_EQ(image->status, 200);
  EXPECT_EQ(image->get_header_value("Content-Type"), "image/jpeg");

  // The viewer records it: listed in the history, with a thumbnail.
  json list;
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        auto l = c.Get("/api/v1/jobs?limit=100");
        list = Parse(l);
        if (!l || l->status != 200) return false;
        for (const auto& j : list["jobs"]) {
          if (j["id"] == id && j.contains("links") && j["links"].contains("thumbnail")) {
            return true;
          }
        }
        return false;
      },
      30s))
      << list.dump();
  EXPECT_GE(list["total"].get<int>(), 1);
  auto thumb = c.Get("/api/v1/jobs/" + id + "/thumbnail");
  ASSERT_TRUE(thumb);
  EXPECT_EQ(thumb->status, 200);
  EXPECT_EQ(thumb->get_header_value("Content-Type"), "image/jpeg");
}

// The HTTP attacks of issue 16 against a real `kadr up`: each is refused with a precise status
// before it costs memory (the peak RSS grows by less than 100 MiB over all of them), and the
// service goes on answering.
TEST_F(HttpApiTest, HttpAttacksAreRefusedWithBoundedMemory) {
  // Sends `head` (and `body`) on its own connection; the status of the answer.
  const auto exchange = [](const std::string& head, const std::string& body = {}) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(up_->port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd);
      return -1;
    }
    const std::string out = head + body;
    (void)::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[64] = {};
    const ssize_t n = ::recv(fd, buf, sizeof(buf) - 1, 0);
    ::close(fd);
    return n >= 12 ? std::atoi(buf + 9) : -1;
  };
  const double before = PeakRssMib();
  ASSERT_GT(before, 0);
  std::vector<std::uint8_t> jpeg;
  ASSERT_TRUE(cv::imencode(".jpg", cv::Mat(480, 640, CV_8UC3, cv::Scalar(30, 90, 200)), jpeg));
  const std::string image(jpeg.begin(), jpeg.end());
  auto c = up_->Client();
  // The Range bomb: 2,700 ranges on an upload whose answer is the annotated JPEG.
  std::string ranges = "bytes=0-";
  for (int i = 0; i < 2700; ++i) ranges += ",0-";
  auto bomb = c.Post("/api/v1/detect?model=tiny", {{"Accept", "image/jpeg"}, {"Range", ranges}},
                     image, "image/jpeg");
  ASSERT_TRUE(bomb);
  EXPECT_EQ(bomb->status, 200);
  EXPECT_LT(bomb->body.size(), 2 * image.size() + 100000) << "the answer was copied per range";
  // A 400 MB stream request (JSON routes take 64 KiB), announced and refused before its body.
  EXPECT_EQ(exchange("POST /api/v1/streams HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     "application/json\r\nContent-Length: 400000000\r\n\r\n"),
            413);
  // A form post at the JSON route (CSRF without a preflight): 415.
  EXPECT_EQ(exchange("POST /api/v1/streams HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     "text/plain\r\nContent-Length: 2\r\n\r\n",
                     "{}"),
            415);
  // A rebinding page's Host: 421.
  EXPECT_EQ(exchange("GET /api/v1/jobs HTTP/1.1\r\nHost: attacker.example\r\n\r\n"), 421);
  // 20,000 empty multipart parts.
  std::string parts;
  for (int i = 0; i < 20000; ++i)
    parts += "--B\r\nContent-Disposition: form-data; name=p\r\n\r\n\r\n";
  parts += "--B--\r\n";
  EXPECT_EQ(exchange("POST /api/v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     "multipart/form-data; boundary=B\r\nContent-Length: " +
                         std::to_string(parts.size()) + "\r\n\r\n",
                     parts),
            413);
  // The HTTP/2 preface, an endless header, too many headers.
  EXPECT_EQ(exchange("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 501);
  EXPECT_EQ(exchange("GET /healthz HTTP/1.1\r\nX-A: " + std::string(100000, 'a')), 431);
  std::string headers;
  for (int i = 0; i < 200; ++i) headers += "X-" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(exchange("GET /healthz HTTP/1.1\r\n" + headers + "\r\n"), 431);
  // Served as before, with memory to spare.
  auto ok = c.Post("/api/v1/detect?model=tiny", image, "image/jpeg");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  EXPECT_LT(PeakRssMib() - before, 100.0) << "peak RSS grew from " << before << " MiB";
}

// The mask bomb (issue 16): a result of a few KB whose detections each declare a 49 MP mask
// (two RLE runs) used to make every reader allocate ~2 GB per message. Dozens of them on
// every topic kadr up reads results from (the recorder's kadr.results, the gateway's reply
// topic, the camera's kadr.live.results) are refused as malformed within the per-result
// mask budget: the peak memory stays bounded and everyone is served as before.
TEST_F(HttpApiTest, MaskBombsOnTheResultTopicsAreRefusedWithBoundedMemory) {
  const double before = PeakRssMib();
  ASSERT_GT(before, 0);

  protocol::FrameResult r;
  r.status = protocol::FrameStatus::kOk;
  r.result.model = "tiny";
  r.result.image_width = 16384;
  r.result.image_height = 3000;
  protocol::Detection d;
  d.label = "bomb";
  d.box = {0, 0, 7000, 7000};
  r.result.detections.assign(40, d);
  kafka::KafkaOptions o;
  o.brokers = up_->broker;
  auto p = kafka::KafkaPublisher::Create(o);
  ASSERT_TRUE(p.has_value()) << p.error().ToString();
  constexpr int kPerTopic = 8;
  std::atomic<int> delivered{0};
  const std::vector<std::string> topics = {std::string(protocol::kResultsTopic),
                                           "kadr.replies.it-a",
                                           std::string(protocol::kLiveResultsTopic)};
  for (const auto& topic : topics) {
    for (int i = 0; i < kPerTopic; ++i) {
      r.frame_id = r.correlation_id = "bomb-" + std::to_string(i);
      nlohmann::json j = nlohmann::json::parse(protocol::FrameResultToJson(r));
      for (auto& det : j["detections"]) {
        det["mask"] = {{"x", 0},
                       {"y", 0},
                       {"width", 7000},
                       {"height", 7000},
                       {"rle", nlohmann::json::array({0, 49'000'000})}};
      }
      const std::string text = j.dump();
      ASSERT_LT(text.size(), 16'000u) << "a small message";
      bus::Message m{topic, r.frame_id, {text.begin(), text.end()}, {}};
      m.headers.Set(protocol::header::kContentType, "application/json");
      ASSERT_TRUE((*p)->Publish(m,
                                [&](const Status& s, const bus::AckToken&) {
                                  if (s.ok()) ++delivered;
                                })
                      .ok());
    }
  }
  ASSERT_TRUE((*p)->Flush(30s).ok());
  ASSERT_EQ(delivered.load(), kPerTopic * static_cast<int>(topics.size()));

  auto c = up_->Client();
  const auto count = [&](const std::string& series) {
    auto m = c.Get("/metrics");
    if (!m) return -1.0;
    const auto at = m->body.find(series + " ");
    return at == std::string::npos ? 0.0 : std::atof(m->body.c_str() + at + series.size() + 1);
  };
  EXPECT_TRUE(testing::WaitUntil(
      [&] {
        return count(R"(kadr_jobs_records_total{kind="any",outcome="malformed"})") >=
                   2 * kPerTopic &&
               count(R"(kadr_camera_results_total{outcome="malformed"})") >= kPerTopic;
      },
      60s))
      << "the recorder and the camera refuse them as malformed";
  EXPECT_TRUE(up_->process->Running());
  EXPECT_EQ(c.Get("/healthz")->status, 200);
  std::vector<std::uint8_t> jpeg;
  ASSERT_TRUE(cv::imencode(".jpg", cv::Mat(48, 64, CV_8UC3, cv::Scalar::all(255)), jpeg));
  const std::string white(jpeg.begin(), jpeg.end());
  auto detect = c.Post("/api/v1/detect?model=tiny", white, "image/jpeg");
  ASSERT_TRUE(detect);
  EXPECT_EQ(detect->status, 200) << detect->body;
  const double after = PeakRssMib();
  std::cout << "peak RSS before " << before << " MiB, after " << after << " MiB\n";
  // Unbounded, each reader would have taken ~2 GB per message; bounded, 100 MB at most.
  EXPECT_LT(after - before, 1500.0) << "peak RSS grew from " << before << " to " << after;
}

// The services' data is the operator's alone (docs/security.md): every file kadr up writes
// (the job store, annotated images, thumbnails) is 0600 and every folder 0700.
// Found by schemathesis (fuzz/): a job whose own timeout_ms passed before its frame was
// delivered answered 503 "cannot publish the frame", as if the broker were down, where
// /detect answers the same deadline 504.
TEST_F(HttpApiTest, AJobWhoseOwnTimeoutPassesIsADeadlineNotAnOutage) {
  std::vector<std::uint8_t> jpeg;
  ASSERT_TRUE(cv::imencode(".jpg", cv::Mat(48, 64, CV_8UC3, cv::Scalar::all(255)), jpeg));
  auto c = up_->Client();
  for (int i = 0; i < 5; ++i) {
    auto r = c.Post("/api/v1/jobs?model=tiny&timeout_ms=1", std::string(jpeg.begin(), jpeg.end()),
                    "image/jpeg");
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->status == 202 || r->status == 504) << r->status << " " << r->body;
    if (r->status == 504) {
      EXPECT_EQ(nlohmann::json::parse(r->body)["error"]["code"], "deadline_exceeded");
    }
  }
  // The gateway still serves a request with time to spare.
  auto ok =
      c.Post("/api/v1/detect?model=tiny", std::string(jpeg.begin(), jpeg.end()), "image/jpeg");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
}

TEST_F(HttpApiTest, DataFilesAreOwnerOnly) {
  std::vector<std::uint8_t> jpeg;
  ASSERT_TRUE(cv::imencode(".jpg", cv::Mat(48, 64, CV_8UC3, cv::Scalar::all(255)), jpeg));
  auto c = up_->Client();
  auto r = c.Post("/api/v1/detect?model=tiny", std::string(jpeg.begin(), jpeg.end()), "image/jpeg");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const std::string id = nlohmann::json::parse(r->body)["job_id"];
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        auto image = c.Get("/api/v1/jobs/" + id + "/image");
        return image && image->status == 200;
      },
      30s));
  namespace fs = std::filesystem;
  const fs::path data = *dir_ / "data";
  int files = 0;
  const auto owner_only = [](const fs::path& p) {
    const auto perms = fs::status(p).permissions();
    return (perms & (fs::perms::group_all | fs::perms::others_all)) == fs::perms::none;
  };
  EXPECT_TRUE(owner_only(data)) << data;
  for (const auto& entry : fs::recursive_directory_iterator(data)) {
    EXPECT_TRUE(owner_only(entry.path())) << entry.path();
    if (entry.is_regular_file()) ++files;
  }
  EXPECT_GE(files, 2) << "the store and an image at least";
}

TEST_F(HttpApiTest, RealModelFindsTheBusInBusJpg) {
  KADR_REQUIRE_TEST_DATA();
  auto c = up_->Client();
  const std::string bus = Bytes(testing::ReadFileBytes(testing::MediaPath("bus.jpg")));
  auto r = c.Post("/api/v1/detect?model=yolox_nano", bus, "image/jpeg");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = Parse(r);
  bool found = false;
  for (const auto& d : j["detections"]) found = found || d["label"] == "bus";
  EXPECT_TRUE(found) << r->body;
  EXPECT_EQ(j["image"]["width"], 810);
  EXPECT_EQ(j["image"]["height"], 1080);
}

// A second gateway, as its own process, on the same broker: it gets its own replies, and it
// is where the states that need a missing or silent worker are produced.
TEST_F(HttpApiTest, SecondGatewayGetsItsOwnRepliesAndReportsMissingWorkersAndDeadlines) {
  ASSERT_FALSE(up_->broker.empty()) << "kadr up did not print its broker address";
  auto b = Service::Start(
      {KADR_BINARY, "--models-dir", *models_dir_, "gateway", "--brokers", up_->broker,
       "--http-port", "0", "--instance-id", "it-b", "--max-in-flight", "2"},
      *dir_ / "gateway-b.log");
  ASSERT_NE(b, nullptr);
  auto cb = b->Client();
  auto ca = up_->Client();

  // It learns of tiny's worker from the announcements.
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        auto m = Parse(cb.Get("/api/v1/models"));
        for (const auto& x : m.value("models", json::array())) {
          if (x["name"] == "tiny" && x.value("available", false)) return true;
        }
        return false;
      },
      30s))
      << b->process->LogTail();

  // Both gateways at once, each answered with its own job.
  std::vector<std::thread> threads;
  std::vector<std::string> failures(4);
  std::atomic<int> ok_a{0}, ok_b{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      auto c = (i % 2 == 0) ? up_->Client() : b->Client();
      const bool white = i < 2;
      auto r = c.Post("/api/v1/detect?model=tiny", white ? WhitePng() : BlackJpeg(),
                      white ? "image/png" : "image/jpeg");
      if (r && r->status == 200 &&
          Parse(r)["detections"][0]["label"] == (white ? "bright" : "dark")) {
        ++(i % 2 == 0 ? ok_a : ok_b);
      } else {
        failures[i] = r ? std::to_string(r->status) + " " + r->body : "no response";
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok_a.load(), 2);
  EXPECT_EQ(ok_b.load(), 2) << failures[1] << "\n" << failures[3] << "\n" << b->process->LogTail();

  // people-hog is configured (a built-in) but no worker serves it: 503, and not ready.
  auto none = cb.Post("/api/v1/detect?model=people-hog", WhitePng(), "image/png");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 503) << none->body;
  EXPECT_EQ(ErrorCode(none), "unavailable");
  auto ready = cb.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503) << ready->body;

  // A model whose worker announced itself but never answers.
  AnnounceGhostWorker("ghost");
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        auto m = cb.Get("/api/v1/models");
        return m && m->body.find("\"ghost\"") != std::string::npos;
      },
      30s));
  auto late = cb.Post("/api/v1/detect?model=ghost&timeout_ms=300", WhitePng(), "image/png");
  ASSERT_TRUE(late);
  EXPECT_EQ(late->status, 504) << late->body;
  EXPECT_EQ(ErrorCode(late), "deadline_exceeded");

  // Its in-flight bound is 2: the third waiting request is refused, not queued.
  for (int i = 0; i < 2; ++i) {
    auto q = cb.Post("/api/v1/jobs?model=ghost&timeout_ms=60000", WhitePng(), "image/png");
    ASSERT_TRUE(q);
    ASSERT_EQ(q->status, 202) << q->body;
  }
  auto refused = cb.Post("/api/v1/jobs?model=ghost", WhitePng(), "image/png");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 429) << refused->body;
  EXPECT_EQ(ErrorCode(refused), "resource_exhausted");
  EXPECT_FALSE(refused->get_header_value("Retry-After").empty());
  // ... while the other gateway serves on.
  auto still = ca.Post("/api/v1/detect?model=tiny", WhitePng(), "image/png");
  ASSERT_TRUE(still);
  EXPECT_EQ(still->status, 200);

  EXPECT_EQ(b->process->Stop(30s), 0) << b->process->LogTail();
}

TEST(HttpApiNoBrokerTest, GatewayWithoutABrokerAnswers503AndIsNotReady) {
  const auto dir = testing::MakeTempDir();
  auto g = Service::Start({KADR_BINARY, "gateway", "--brokers", "127.0.0.1:1", "--http-port", "0",
                           "--instance-id", "it-nobroker"},
                          dir / "gateway.log");
  ASSERT_NE(g, nullptr);
  auto c = g->Client();
  auto health = c.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200) << "alive even without a broker";
  auto ready = c.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503) << ready->body;
  auto r = c.Post("/api/v1/detect?model=null", WhitePng(), "image/png");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503) << r->body;
  EXPECT_EQ(ErrorCode(r), "unavailable");
  EXPECT_EQ(g->process->Stop(30s), 0) << g->process->Log();
  std::filesystem::remove_all(dir);
}

TEST(HttpApiRestartTest, HistorySurvivesARestart) {
  const auto dir = testing::MakeTempDir();
  const std::vector<std::string> args = {
      KADR_BINARY,     "up",        "--http-port", "0",
      "--models",      "null",      "--data-dir",  (dir / "data").string(),
      "--instance-id", "it-restart"};
  std::string id;
  {
    auto s = Service::Start(args, dir / "first.log");
    ASSERT_NE(s, nullptr);
    ASSERT_TRUE(s->WaitReady()) << s->process->Log();
    auto c = s->Client();
    auto r = c.Post("/api/v1/detect?model=null", WhitePng(), "image/png");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    id = Parse(r)["job_id"];
    // Recorded by the viewer before we stop.
    ASSERT_TRUE(testing::WaitUntil(
        [&] {
          auto l = c.Get("/api/v1/jobs");
          return l && l->body.find(id) != std::string::npos;
        },
        30s));
    EXPECT_EQ(s->process->Stop(30s), 0) << s->process->Log();
  }
  auto s = Service::Start(args, dir / "second.log");
  ASSERT_NE(s, nullptr);
  auto c = s->Client();
  auto job = c.Get("/api/v1/jobs/" + id);
  ASSERT_TRUE(job);
  ASSERT_EQ(job->status, 200) << job->body;
  EXPECT_EQ(Parse(job)["state"], "done");
  auto list = c.Get("/api/v1/jobs");
  ASSERT_TRUE(list);
  EXPECT_NE(list->body.find(id), std::string::npos);
  EXPECT_EQ(s->process->Stop(30s), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kadr
