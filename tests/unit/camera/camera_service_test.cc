#include "camera/camera_service.h"

#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/videoio.hpp>

#include "bus/fake_bus.h"
#include "fakes.h"
#include "support/test_data.h"

namespace kadr::camera {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::FakeWorker;
using testing::ScriptedSources;
using testing::SourceScript;
using testing::WaitFor;

Status OnlyModelM(std::string_view model) {
  if (model == "m") return Status::Ok();
  return NotFoundError("unknown model '" + std::string(model) + "'");
}

class CameraServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = kadr::testing::MakeTempDir(); }

  // An HTTP server on a free port serving `service`'s routes; nullptr when it cannot start.
  static std::unique_ptr<http::HttpServer> Serve(CameraService& service) {
    auto server = http::HttpServer::Create({.port = 0});
    if (!server || !service.RegisterRoutes(**server).ok() || !(*server)->Start().ok()) {
      return nullptr;
    }
    return std::move(*server);
  }

  // Sources allowed: files in the test's folder, /dev/video99, 127.0.0.1 (and names).
  capture::SourcePolicyOptions Allowed() const {
    return {.dirs = {dir_.string()}, .devices = {"/dev/video99"}, .hosts = {"127.0.0.1"}};
  }

  std::unique_ptr<CameraService> Make(SourceFactory factory) {
    return Make(std::move(factory), Allowed());
  }
  std::unique_ptr<CameraService> Make(SourceFactory factory, capture::SourcePolicyOptions sources) {
    CameraOptions o;
    o.data_dir = dir_;
    o.sources = std::move(sources);
    o.default_model = "m";
    o.runner.initial_backoff = 10ms;
    o.runner.max_backoff = 20ms;
    o.probe_timeout = 1000ms;
    auto s = CameraService::Create(o, publisher_, subscriber_, nullptr, metrics_, OnlyModelM,
                                   std::move(factory));
    EXPECT_TRUE(s.has_value()) << s.error().ToString();
    return s.has_value() ? std::move(*s) : nullptr;
  }

  std::filesystem::path dir_;
  bus::FakeBus bus_;
  bus::FakePublisher publisher_{bus_};
  bus::FakeSubscriber subscriber_{bus_, "kadr.live.results"};
  MetricsRegistry metrics_;
};

TEST_F(CameraServiceTest, RoutesResultsToTheirStreamAndReportsStats) {
  ScriptedSources sources({SourceScript{}});
  auto service = Make(sources.Factory());
  auto created =
      service->AddStream(R"({"source":"rtsp://admin:hunter2@cam:8554/x","name":"dock"})");
  ASSERT_TRUE(created.has_value()) << created.error().ToString();
  const json stream = json::parse(*created);
  const std::string id = stream["id"];
  EXPECT_EQ(stream["source"], "rtsp://***@cam:8554/x");
  EXPECT_EQ(created->find("hunter2"), std::string::npos);
  EXPECT_EQ(stream["links"]["live"], "/api/v1/streams/" + id + "/live");

  FakeWorker worker(bus_, protocol::FramesTopic("m"), 2ms, nullptr);
  ASSERT_TRUE(WaitFor([&] {
    service->PollOnce(10ms);
    return service->Snapshot(id)->stats.frames_done >= 5;
  }));
  worker.Stop();
  const json again = json::parse(*service->StreamJson(id));
  EXPECT_EQ(again["state"], "running");
  EXPECT_GE(again["stats"]["frames_done"].get<int>(), 5);
  EXPECT_FALSE(again["stats"]["latency_ms"]["p50"].is_null());
  EXPECT_FALSE(again["stats"]["last_result_ms"].is_null());
  // Results are acknowledged, whether a stream of this camera's or not.
  bus_.Append(bus::Message{"kadr.live.results", "other", {'{', '}'}, {}});
  service->PollOnce(10ms);
  EXPECT_FALSE(subscriber_.acked().empty());
  service->StopAll();
}

TEST_F(CameraServiceTest, RejectsBadRequestsWithPreciseErrors) {
  auto service = Make(OpenCvSourceFactory());
  auto server = Serve(*service);
  ASSERT_NE(server, nullptr);
  httplib::Client client("127.0.0.1", server->port());
  const auto text = dir_ / "notes.txt";
  std::ofstream(text) << "hello";
  struct Case {
    std::string body;
    int status;
    std::string code;
    StatusCode status_code;  // what C++ callers of AddStream get
    std::string message_part;
  };
  const std::vector<Case> cases = {
      {R"({"model":"m"})", 400, "invalid_argument", StatusCode::kInvalidArgument,
       "source is required"},
      {R"({"source":"/dev/video99"})", 400, "no_such_device", StatusCode::kNotFound,
       "no such device /dev/video99"},
      {R"({"source":")" + text.string() + R"("})", 415, "not_a_video", StatusCode::kUnsupported,
       "not a video"},
      {R"({"source":")" + (dir_ / "none.mp4").string() + R"("})", 400, "no_such_file",
       StatusCode::kNotFound, "no such file"},
      {R"({"source":"rtsp://h/x","model":"nope"})", 404, "not_found", StatusCode::kNotFound,
       "unknown model 'nope'"},
      {R"({"source":"rtsp://u:hunter2@127.0.0.1:1/x"})", 502, "source_unreachable",
       StatusCode::kUnavailable, "127.0.0.1:1"},
  };
  for (const Case& c : cases) {
    auto r = client.Post("/api/v1/streams", c.body, "application/json");
    ASSERT_TRUE(r) << c.body;
    EXPECT_EQ(r->status, c.status) << c.body << ": " << r->body;
    const json e = json::parse(r->body)["error"];
    EXPECT_EQ(e["code"], c.code) << c.body << ": " << r->body;
    const std::string message = e["message"];
    EXPECT_NE(message.find(c.message_part), std::string::npos) << message;
    EXPECT_EQ(message.find("hunter2"), std::string::npos) << message;
    auto direct = service->AddStream(c.body);
    ASSERT_FALSE(direct.has_value()) << c.body;
    EXPECT_EQ(direct.error().code(), c.status_code) << direct.error().ToString();
    EXPECT_EQ(direct.error().message().find("hunter2"), std::string::npos);
  }
  EXPECT_TRUE(service->StreamIds().empty());
  // Without the probe the unreachable stream is created, and keeps trying.
  auto r = service->AddStream(R"({"source":"rtsp://u:hunter2@127.0.0.1:1/x","probe":false})");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  const std::string id = json::parse(*r)["id"];
  ASSERT_TRUE(WaitFor([&] { return service->Snapshot(id)->stats.last_error.has_value(); }));
  const json j = json::parse(*service->StreamJson(id));
  EXPECT_EQ(j["state"], "connecting");
  // One message for every way a network source fails: no map of the hosts and ports.
  EXPECT_EQ(j["stats"]["last_error"]["code"], "unavailable") << j.dump();
  EXPECT_EQ(j["stats"]["last_error"]["message"],
            "cannot open the source rtsp://***@127.0.0.1:1/x: no video stream answered (the "
            "server log has the reason)")
      << j.dump();
  EXPECT_EQ(j.dump().find("hunter2"), std::string::npos);
  server->Stop();
  service->StopAll();
}

// A C++ caller over the limit hears kResourceExhausted, as the route answers 429.
TEST_F(CameraServiceTest, TooManyStreamsIsResourceExhausted) {
  ScriptedSources sources({SourceScript{}});
  CameraOptions o;
  o.data_dir = dir_;
  o.default_model = "m";
  o.max_streams = 1;
  auto service = CameraService::Create(o, publisher_, subscriber_, nullptr, metrics_, OnlyModelM,
                                       sources.Factory());
  ASSERT_TRUE(service.has_value());
  ASSERT_TRUE((*service)->AddStream(R"({"source":"rtsp://cam/a","probe":false})").has_value());
  auto second = (*service)->AddStream(R"({"source":"rtsp://cam/b","probe":false})");
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), StatusCode::kResourceExhausted);
  (*service)->StopAll();
}

// A deleted stream's metric series (~26 of them) leave /metrics once its runner is gone, so
// that streams created and deleted over months do not pile up series; other streams' stay.
TEST_F(CameraServiceTest, ADeletedStreamsMetricSeriesAreRemoved) {
  ScriptedSources sources({SourceScript{}, SourceScript{}});
  auto service = Make(sources.Factory());
  ASSERT_NE(service, nullptr);
  auto gone = service->AddStream(R"({"source":"rtsp://cam/a","probe":false})");
  auto kept = service->AddStream(R"({"source":"rtsp://cam/b","probe":false})");
  ASSERT_TRUE(gone.has_value() && kept.has_value());
  const std::string gone_id = json::parse(*gone)["id"];
  const std::string kept_id = json::parse(*kept)["id"];
  const auto series = [&](const std::string& id) {
    const std::string text = metrics_.RenderPrometheus();
    std::size_t n = 0;
    for (auto at = text.find("stream=\"" + id + "\""); at != std::string::npos;
         at = text.find("stream=\"" + id + "\"", at + 1)) {
      ++n;
    }
    return n;
  };
  ASSERT_GT(series(gone_id), 5u);
  const std::size_t kept_series = series(kept_id);
  std::jthread run([&](const std::stop_token& stop) { (void)service->Run(stop); });
  ASSERT_TRUE(service->RemoveStream(gone_id).ok());
  EXPECT_TRUE(WaitFor([&] { return series(gone_id) == 0; })) << metrics_.RenderPrometheus();
  EXPECT_EQ(series(kept_id), kept_series);
  run.request_stop();
}

TEST_F(CameraServiceTest, StreamsComeBackAfterARestart) {
  ScriptedSources sources({SourceScript{}});
  std::string id;
  {
    auto service = Make(sources.Factory());
    auto r = service->AddStream(R"({"source":"rtsp://u:p@cam/x","fps":5,"name":"gate"})");
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    id = json::parse(*r)["id"];
    auto other = service->AddStream(R"({"source":"rtsp://cam/y"})");
    ASSERT_TRUE(other.has_value());
    ASSERT_TRUE(service->RemoveStream(json::parse(*other)["id"]).ok());
    EXPECT_EQ(service->RemoveStream("sunknown").code(), StatusCode::kNotFound);
  }
  auto service = Make(sources.Factory());
  ASSERT_EQ(service->StreamIds(), std::vector<std::string>{id});
  const json j = json::parse(*service->StreamJson(id));
  EXPECT_EQ(j["name"], "gate");
  EXPECT_EQ(j["fps"], 5.0);
  EXPECT_EQ(j["source"], "rtsp://***@cam/x");
  ASSERT_TRUE(WaitFor([&] { return service->Snapshot(id)->stats.frames_captured > 0; }));
  service->StopAll();
}

TEST_F(CameraServiceTest, HttpRoutesFollowTheContract) {
  ScriptedSources sources({SourceScript{}});
  auto service = Make(sources.Factory());
  auto server = Serve(*service);
  ASSERT_NE(server, nullptr);
  httplib::Client c("127.0.0.1", server->port());

  auto created = c.Post("/api/v1/streams", R"({"source":"rtsp://u:pw@cam/x"})", "application/json");
  ASSERT_TRUE(created);
  EXPECT_EQ(created->status, 201) << created->body;
  const std::string id = json::parse(created->body)["id"];
  EXPECT_EQ(created->get_header_value("Location"), "/api/v1/streams/" + id);

  auto list = c.Get("/api/v1/streams");
  ASSERT_TRUE(list);
  EXPECT_EQ(list->status, 200);
  EXPECT_EQ(json::parse(list->body)["streams"].size(), 1u);

  auto bad = c.Post("/api/v1/streams", R"({"source":"rtsp://h/x","fps":-1})", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(json::parse(bad->body)["error"]["code"], "invalid_argument");

  auto missing = c.Get("/api/v1/streams/snope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(json::parse(missing->body)["error"]["code"], "unknown_stream");

  auto del = c.Delete("/api/v1/streams/" + id);
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 204);
  auto gone = c.Delete("/api/v1/streams/" + id);
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->status, 404);
  EXPECT_EQ(json::parse(c.Get("/api/v1/streams")->body)["streams"].size(), 0u);
  server->Stop();
  service->StopAll();
}

// An MJPEG AVI of `frames` frames, 64x48.
void WriteVideo(const std::filesystem::path& path, int frames) {
  cv::VideoWriter w(path.string(), cv::CAP_FFMPEG, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'),
                    10.0, cv::Size(64, 48));
  ASSERT_TRUE(w.isOpened());
  for (int i = 0; i < frames; ++i) w.write(cv::Mat(48, 64, CV_8UC3, cv::Scalar::all(20.0 * i)));
}

// Regression (issue 16, "stream sources"): POST /api/v1/streams read any file (a .txt copy of
// /etc/passwd came back as a frame through FFmpeg's tty demuxer), any device, any host, and
// its errors mapped the host's files and ports. Each attack is refused with its precise
// status, with or without the probe, and the service keeps serving.
TEST_F(CameraServiceTest, SourcesOutsideTheOperatorsPolicyAreRefused) {
  const auto media = dir_ / "media";
  std::filesystem::create_directories(media);
  {
    std::ofstream secret(dir_ / "secret.txt");
    std::ofstream inside(media / "passwd.txt");
    for (int i = 0; i < 64; ++i) {
      secret << "user" << i << ":x:" << 1000 + i << ":" << 1000 + i << ":Secret:/home/u:/bin/sh\n";
      inside << "user" << i << ":x:" << 1000 + i << ":" << 1000 + i << ":Secret:/home/u:/bin/sh\n";
    }
  }
  std::filesystem::create_symlink("/etc/passwd", media / "passwd.mp4");
  std::filesystem::create_symlink(dir_ / "secret.txt", media / "secret.mp4");
  WriteVideo(media / "clip.avi", 5);
  auto service = Make(OpenCvSourceFactory(), {.dirs = {media.string()}});
  ASSERT_NE(service, nullptr);
  auto server = Serve(*service);
  ASSERT_NE(server, nullptr);
  httplib::Client client("127.0.0.1", server->port());

  const std::string outside = " is outside the allowed source directories (--source-dir)";
  struct Case {
    std::string source;
    int status;
    std::string code;
    std::string message;  // exact
  };
  const std::vector<Case> cases = {
      // Files outside the allowed directory: one answer whether they exist or not.
      {(dir_ / "secret.txt").string(), 403, "permission_denied",
       (dir_ / "secret.txt").string() + outside},
      {(dir_ / "none.txt").string(), 403, "permission_denied",
       (dir_ / "none.txt").string() + outside},
      {"/etc/passwd", 403, "permission_denied", "/etc/passwd" + outside},
      {"file:///etc/passwd", 403, "permission_denied", "/etc/passwd" + outside},
      {(media / ".." / "secret.txt").string(), 403, "permission_denied",
       (media / ".." / "secret.txt").string() + outside},
      {(media / "passwd.mp4").string(), 403, "permission_denied",
       (media / "passwd.mp4").string() + outside},
      {(media / "secret.mp4").string(), 403, "permission_denied",
       (media / "secret.mp4").string() + outside},
      // Devices: none allowed.
      {"/dev/zero", 403, "permission_denied",
       "device sources are off: the operator allows devices with --source-device"},
      {"/dev/video9", 403, "permission_denied",
       "device sources are off: the operator allows devices with --source-device"},
      // Loopback, unspecified, link-local and metadata hosts.
      {"http://127.0.0.1:1/admin", 403, "permission_denied",
       "source host '127.0.0.1' is a loopback address, which network sources may not reach "
       "(the operator allows hosts with --source-host)"},
      {"http://[::ffff:127.0.0.1]:8080/", 403, "permission_denied",
       "source host '::ffff:127.0.0.1' is a loopback address, which network sources may not "
       "reach (the operator allows hosts with --source-host)"},
      {"http://169.254.169.254/latest/meta-data", 403, "permission_denied",
       "source host '169.254.169.254' is a link-local (cloud metadata) address, which network "
       "sources may not reach (the operator allows hosts with --source-host)"},
      {"http://0.0.0.0:9092/", 403, "permission_denied",
       "source host '0.0.0.0' is an unspecified address, which network sources may not reach "
       "(the operator allows hosts with --source-host)"},
  };
  for (const Case& c : cases) {
    for (const bool probe : {true, false}) {
      const json body = {{"source", c.source}, {"probe", probe}};
      auto r = client.Post("/api/v1/streams", body.dump(), "application/json");
      ASSERT_TRUE(r) << c.source;
      EXPECT_EQ(r->status, c.status) << c.source << ": " << r->body;
      const json e = json::parse(r->body)["error"];
      EXPECT_EQ(e["code"], c.code) << c.source << ": " << r->body;
      EXPECT_EQ(e["message"], c.message) << c.source;
      auto direct = service->AddStream(body.dump());
      ASSERT_FALSE(direct.has_value()) << c.source;
      EXPECT_EQ(direct.error().code(), StatusCode::kPermissionDenied);
    }
  }
  // FFmpeg's protocols and other schemes are not sources at all.
  for (const std::string source : {"concat:/etc/passwd|/etc/hosts", "data:text/plain,x",
                                   "subfile,,start,0,end,0,,:/etc/passwd", "pipe:0",
                                   "tcp://127.0.0.1:22", "udp://127.0.0.1:53", "ftp://h/x.mp4"}) {
    auto r = client.Post("/api/v1/streams", json{{"source", source}}.dump(), "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << source << ": " << r->body;
    EXPECT_EQ(json::parse(r->body)["error"]["code"], "invalid_argument") << r->body;
  }
  // Inside the allowed directory a text file is still no video: FFmpeg's tty demuxer is off.
  auto text =
      client.Post("/api/v1/streams", json{{"source", (media / "passwd.txt").string()}}.dump(),
                  "application/json");
  ASSERT_TRUE(text);
  EXPECT_EQ(text->status, 415) << text->body;
  EXPECT_EQ(json::parse(text->body)["error"]["code"], "not_a_video") << text->body;
  EXPECT_EQ(text->body.find("user1:x"), std::string::npos);
  auto missing =
      client.Post("/api/v1/streams", json{{"source", (media / "none.mp4").string()}}.dump(),
                  "application/json");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 400) << missing->body;
  EXPECT_EQ(json::parse(missing->body)["error"]["code"], "no_such_file");

  // Nothing was created, and a stream the policy allows still works.
  EXPECT_TRUE(service->StreamIds().empty());
  auto ok = client.Post("/api/v1/streams", json{{"source", (media / "clip.avi").string()}}.dump(),
                        "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 201) << ok->body;
  auto list = client.Get("/api/v1/streams");
  ASSERT_TRUE(list);
  EXPECT_EQ(json::parse(list->body)["streams"].size(), 1u);
  server->Stop();
  service->StopAll();
}

// A stream stored while the policy allowed it is checked again when the service restarts
// with a narrower one: it fails for good, and says why.
TEST_F(CameraServiceTest, RestoredStreamsAreCheckedAgainstThePolicy) {
  const auto media = dir_ / "media";
  std::filesystem::create_directories(media);
  WriteVideo(dir_ / "clip.avi", 5);
  std::string id;
  {
    auto service = Make(OpenCvSourceFactory(), {.dirs = {dir_.string()}});
    ASSERT_NE(service, nullptr);
    auto r = service->AddStream(json{{"source", (dir_ / "clip.avi").string()}}.dump());
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    id = json::parse(*r)["id"];
    service->StopAll();
  }
  auto service = Make(OpenCvSourceFactory(), {.dirs = {media.string()}});
  ASSERT_NE(service, nullptr);
  ASSERT_TRUE(WaitFor([&] { return service->Snapshot(id)->state == StreamState::kFailed; }));
  const json j = json::parse(*service->StreamJson(id));
  EXPECT_EQ(j["stats"]["last_error"]["code"], "permission_denied") << j.dump();
  service->StopAll();
}

TEST_F(CameraServiceTest, AnInvalidSourcePolicyIsAStartupError) {
  CameraOptions o;
  o.data_dir = dir_;
  o.sources.dirs = {(dir_ / "no-such-dir").string()};
  auto s = CameraService::Create(o, publisher_, subscriber_, nullptr, metrics_, OnlyModelM,
                                 OpenCvSourceFactory());
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.error().message().find("--source-dir"), std::string::npos);
}

}  // namespace
}  // namespace kadr::camera
