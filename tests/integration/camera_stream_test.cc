// Live streams end to end: `kadr up` as a child process, an RTSP server (GStreamer's, via
// tests/support/rtsp_server.py) as another, and the stream API over real HTTP. The server is
// killed mid-stream and started again on the same port: the stream must notice, reconnect by
// itself and report the gap. Also: the API's errors for bad sources, credentials that never
// show, and streams that come back after a restart of `kadr up`.
//
// Model: the built-in `null` (no detections), so the test measures the camera, not a network.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "support/child_process.h"
#include "support/kadr_up.h"
#include "support/ports.h"

namespace kadr {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::ChildProcess;

constexpr char kPython[] = "/usr/bin/python3";
constexpr char kSecret[] = "hunter2secret";

bool HaveRtspServer() {
  return std::system(
             "/usr/bin/python3 -c \"import gi; gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import GstRtspServer\" >/dev/null 2>&1") == 0;
}

class CameraStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kadr_camera_stream_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ / "models");
  }
  void TearDown() override {
    if (HasFailure() && up_)
      std::cerr << "---- kadr up log (tail) ----\n" << up_->LogTail() << "\n";
    StopRtsp();
    if (up_) up_->Stop(30s);
    std::filesystem::remove_all(dir_);
  }

  // Starts `kadr up` on the test's data dir; the HTTP port is read from its first line.
  void StartUp(int run) {
    up_log_ = dir_ / ("up" + std::to_string(run) + ".log");
    up_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{KADR_BINARY, "--models-dir", (dir_ / "models").string(), "up",
                                 "--http-port", "0", "--models", "null", "--data-dir",
                                 (dir_ / "data").string(), "--instance-id", "camera-it",
                                 "--stall-timeout-ms", "2000", "--open-timeout-ms", "8000",
                                 "--probe-timeout-ms", "8000"},
        up_log_);
    port_ = testing::WaitForHttpPort(*up_, 60s);
    ASSERT_GT(port_, 0) << "kadr up did not start; log:\n" << up_->Log();
  }

  void StartRtsp() {
    rtsp_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{kPython,
                                 std::string(KADR_SOURCE_DIR) + "/tests/support/rtsp_server.py",
                                 std::to_string(rtsp_port_), "160x120", "10"},
        dir_ / "rtsp.log");
    ASSERT_TRUE(rtsp_->WaitForLog("rtsp server ready", 20s).has_value())
        << "RTSP server did not start:\n"
        << rtsp_->Log();
  }
  // Killed, not asked: a camera that loses power does not say goodbye.
  void StopRtsp() {
    if (!rtsp_) return;
    rtsp_->Kill();
    rtsp_.reset();
  }

  httplib::Client Client() const { return testing::LoopbackClient(port_, 30s); }

  json Stream(const std::string& id) {
    auto r = Client().Get("/api/v1/streams/" + id);
    if (!r || r->status != 200) return json();
    EXPECT_EQ(r->body.find(kSecret), std::string::npos) << r->body;
    return json::parse(r->body, nullptr, false);
  }
  std::int64_t Stat(const std::string& id, const std::string& name) {
    const json s = Stream(id);
    if (!s.is_object()) return -1;
    return s["stats"][name].get<std::int64_t>();
  }

  std::string RtspUrl(int port) const {
    return "rtsp://viewer:" + std::string(kSecret) + "@127.0.0.1:" + std::to_string(port) + "/cam";
  }

  std::filesystem::path dir_;
  std::filesystem::path up_log_;
  std::unique_ptr<ChildProcess> up_;
  std::unique_ptr<ChildProcess> rtsp_;
  int port_ = 0;
  int rtsp_port_ = 0;
};

TEST_F(CameraStreamTest, RtspStreamRecoversFromAServerRestartAndSurvivesAKadrRestart) {
  if (!HaveRtspServer()) GTEST_SKIP() << "GStreamer's RTSP server (python3-gi) is not installed";
  rtsp_port_ = testing::UnusedLoopbackPort();
  ASSERT_NO_FATAL_FAILURE(StartRtsp());
  ASSERT_NO_FATAL_FAILURE(StartUp(1));
  auto c = Client();

  const json body = {{"source", RtspUrl(rtsp_port_)}, {"model", "null"}, {"name", "gate"}};
  auto created = c.Post("/api/v1/streams", body.dump(), "application/json");
  ASSERT_TRUE(created);
  ASSERT_EQ(created->status, 201) << created->body;
  EXPECT_EQ(created->body.find(kSecret), std::string::npos) << created->body;
  const json stream = json::parse(created->body);
  const std::string id = stream["id"];
  EXPECT_EQ(created->get_header_value("Location"), "/api/v1/streams/" + id);
  EXPECT_EQ(stream["source"], "rtsp://***@127.0.0.1:" + std::to_string(rtsp_port_) + "/cam");

  // Frames flow: results come back and the latency is measured.
  ASSERT_TRUE(testing::WaitUntil([&] { return Stat(id, "frames_done") >= 5; }, 20s))
      << Stream(id).dump();
  json running = Stream(id);
  EXPECT_EQ(running["state"], "running");
  EXPECT_FALSE(running["stats"]["latency_ms"]["p50"].is_null()) << running.dump();
  EXPECT_GT(running["stats"]["input_fps"].get<double>(), 0.0) << running.dump();

  // The camera dies: the stream notices and says why.
  StopRtsp();
  ASSERT_TRUE(testing::WaitUntil([&] { return Stream(id)["state"] == "reconnecting"; }, 15s))
      << Stream(id).dump();
  const json lost = Stream(id);
  EXPECT_FALSE(lost["stats"]["last_error"].is_null()) << lost.dump();

  // It comes back on the same port: the stream recovers by itself.
  const std::int64_t done_before = Stat(id, "frames_done");
  std::this_thread::sleep_for(500ms);
  ASSERT_NO_FATAL_FAILURE(StartRtsp());
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        const json s = Stream(id);
        return s.is_object() && s["state"] == "running" &&
               s["stats"]["frames_done"].get<std::int64_t>() >= done_before + 5;
      },
      30s))
      << Stream(id).dump();
  const json back = Stream(id);
  EXPECT_GE(back["stats"]["reconnects"].get<int>(), 1) << back.dump();
  ASSERT_FALSE(back["stats"]["last_gap_ms"].is_null()) << back.dump();
  EXPECT_GT(back["stats"]["last_gap_ms"].get<std::int64_t>(), 0) << back.dump();

  // The stream is persisted: a new `kadr up` on the same data dir runs it again.
  ASSERT_EQ(up_->Stop(30s), 0) << "kadr up did not exit cleanly; log:\n" << up_->Log();
  EXPECT_EQ(up_->Log().find(kSecret), std::string::npos) << "credentials in the log";
  ASSERT_NO_FATAL_FAILURE(StartUp(2));
  auto list = Client().Get("/api/v1/streams");
  ASSERT_TRUE(list);
  const json streams = json::parse(list->body)["streams"];
  ASSERT_EQ(streams.size(), 1u) << list->body;
  EXPECT_EQ(streams[0]["id"], id);
  EXPECT_EQ(streams[0]["name"], "gate");
  ASSERT_TRUE(testing::WaitUntil([&] { return Stat(id, "frames_done") >= 3; }, 20s))
      << Stream(id).dump();

  auto del = Client().Delete("/api/v1/streams/" + id);
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 204);
  EXPECT_EQ(Client().Get("/api/v1/streams/" + id)->status, 404);
  EXPECT_EQ(up_->Log().find(kSecret), std::string::npos) << "credentials in the log";
}

TEST_F(CameraStreamTest, BadSourcesGetPreciseErrorsAndLeaveTheServiceAlone) {
  ASSERT_NO_FATAL_FAILURE(StartUp(1));
  auto c = Client();
  const auto text = dir_ / "notes.txt";
  std::ofstream(text) << "not a video\n";
  const int closed = testing::UnusedLoopbackPort();
  struct Case {
    json body;
    int status;
    std::string code;
    std::string message_part;
  };
  const std::vector<Case> cases = {
      {{{"source", RtspUrl(closed)}, {"model", "null"}},
       502,
       "source_unreachable",
       "127.0.0.1:" + std::to_string(closed)},
      {{{"source", "/dev/video99"}, {"model", "null"}},
       400,
       "no_such_device",
       "no such device /dev/video99"},
      {{{"source", text.string()}, {"model", "null"}}, 415, "not_a_video", "not a video"},
      {{{"source", "rtsp://127.0.0.1/cam"}, {"model", "no-such-model"}},
       404,
       "not_found",
       "no-such-model"},
      {{{"model", "null"}}, 400, "invalid_argument", "source is required"},
      {{{"source", "rtsp://127.0.0.1/cam"}, {"window", 99}}, 400, "invalid_argument", "window"},
  };
  for (const Case& k : cases) {
    auto r = c.Post("/api/v1/streams", k.body.dump(), "application/json");
    ASSERT_TRUE(r) << k.body.dump();
    EXPECT_EQ(r->status, k.status) << k.body.dump() << " -> " << r->body;
    const json e = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(e.is_object() && e.contains("error")) << r->body;
    EXPECT_EQ(e["error"]["code"], k.code) << r->body;
    EXPECT_NE(e["error"]["message"].get<std::string>().find(k.message_part), std::string::npos)
        << r->body;
    EXPECT_EQ(r->body.find(kSecret), std::string::npos) << r->body;
  }
  // The unreachable source's reason is precise.
  auto r = c.Post("/api/v1/streams", json{{"source", RtspUrl(closed)}}.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_NE(r->body.find("refused"), std::string::npos) << r->body;
  // Nothing was created, and the rest of the API is undisturbed.
  auto list = c.Get("/api/v1/streams");
  ASSERT_TRUE(list);
  EXPECT_EQ(json::parse(list->body)["streams"].size(), 0u) << list->body;
  auto health = c.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("kadr_camera_streams"), std::string::npos);
  EXPECT_EQ(up_->Log().find(kSecret), std::string::npos) << "credentials in the log";
}

}  // namespace
}  // namespace kadr
