#include "camera/camera_service.h"

#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

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

  std::unique_ptr<CameraService> Make(SourceFactory factory) {
    CameraOptions o;
    o.data_dir = dir_;
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
  http::HttpServerOptions ho;
  ho.port = 0;
  auto server = http::HttpServer::Create(ho);
  ASSERT_TRUE(server.has_value());
  ASSERT_TRUE(service->RegisterRoutes(**server).ok());
  ASSERT_TRUE((*server)->Start().ok());
  httplib::Client client("127.0.0.1", (*server)->port());
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
  EXPECT_NE(j["stats"]["last_error"]["message"].get<std::string>().find("refused"),
            std::string::npos)
      << j.dump();
  EXPECT_EQ(j.dump().find("hunter2"), std::string::npos);
  (*server)->Stop();
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
  http::HttpServerOptions ho;
  ho.port = 0;
  auto server = http::HttpServer::Create(ho);
  ASSERT_TRUE(server.has_value());
  ASSERT_TRUE(service->RegisterRoutes(**server).ok());
  ASSERT_TRUE((*server)->Start().ok());
  httplib::Client c("127.0.0.1", (*server)->port());

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
  (*server)->Stop();
  service->StopAll();
}

}  // namespace
}  // namespace kadr::camera
