// Live streams end to end: `kadr up` as a child process, an RTSP server (GStreamer's, via
// tests/support/rtsp_server.py) as another, and the stream API over real HTTP. The server is
// killed mid-stream and started again on the same port: the stream must notice, reconnect by
// itself and report the gap. Also: the API's errors for bad sources, credentials that never
// show, streams that come back after a restart of `kadr up`, and the stream-source policy
// (issue 16: no file, device or host the operator did not allow).
//
// Model: the built-in `null` (no detections), so the test measures the camera, not a network.
#include <sys/wait.h>
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
#include "support/wait.h"

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
    std::filesystem::create_directories(dir_ / "media");
  }
  void TearDown() override {
    if (HasFailure() && up_)
      std::cerr << "---- kadr up log (tail) ----\n" << up_->LogTail() << "\n";
    StopRtsp();
    if (up_) up_->Stop(30s);
    std::filesystem::remove_all(dir_);
  }

  // The stream sources the tests allow: files in <dir>/media, /dev/video99, 127.0.0.1.
  std::vector<std::string> AllowedSources() const {
    return {"--source-dir", (dir_ / "media").string(), "--source-device",
            "/dev/video99", "--source-host",           "127.0.0.1"};
  }

  // Starts `kadr up` on the test's data dir; the HTTP port is read from its first line.
  void StartUp(int run) { StartUp(run, AllowedSources()); }
  void StartUp(int run, const std::vector<std::string>& sources) {
    up_log_ = dir_ / ("up" + std::to_string(run) + ".log");
    std::vector<std::string> argv = {KADR_BINARY,
                                     "--models-dir",
                                     (dir_ / "models").string(),
                                     "up",
                                     "--http-port",
                                     "0",
                                     "--models",
                                     "null",
                                     "--data-dir",
                                     (dir_ / "data").string(),
                                     "--instance-id",
                                     "camera-it",
                                     "--stall-timeout-ms",
                                     "2000",
                                     "--open-timeout-ms",
                                     "8000",
                                     "--probe-timeout-ms",
                                     "8000"};
    argv.insert(argv.end(), sources.begin(), sources.end());
    up_ = std::make_unique<ChildProcess>(argv, up_log_);
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
  const auto text = dir_ / "media" / "notes.txt";
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
  // The unreachable source's reason is in the log, not in the answer (no port scanner).
  auto r = c.Post("/api/v1/streams", json{{"source", RtspUrl(closed)}}.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body.find("refused"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("no video stream answered (the server log has the reason)"),
            std::string::npos)
      << r->body;
  EXPECT_NE(up_->Log().find("refused"), std::string::npos) << up_->LogTail();
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

// Runs a command to its end (at most 60 s); true when it exited 0.
bool RunToEnd(const std::vector<std::string>& argv, const std::filesystem::path& log) {
  ChildProcess child(argv, log);
  if (!child.started()) return false;
  for (int i = 0; i < 600 && child.Running(); ++i) std::this_thread::sleep_for(100ms);
  return !child.Running() && WIFEXITED(child.wait_status()) &&
         WEXITSTATUS(child.wait_status()) == 0;
}

// Regression (issue 16, "stream sources"): POST /api/v1/streams read any file (a .txt copy of
// /etc/passwd came back as a readable frame through FFmpeg's tty demuxer), any device and any
// host (loopback admin pages, cloud metadata), and its errors mapped the host's files and
// ports. Every attack against a real `kadr up`, first with the default host rule, then with
// --source-host 127.0.0.1; after each run of attacks the service still serves a real stream.
TEST_F(CameraStreamTest, StreamSourcesCannotReadOrScanTheHost) {
  for (const char* tool : {"/usr/bin/ffmpeg", kPython}) {
    if (!std::filesystem::exists(tool)) GTEST_SKIP() << tool << " is not installed";
  }
  const auto media = dir_ / "media";
  ASSERT_TRUE(RunToEnd(
      {"/usr/bin/ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
       "-frames:v", "30", "-c:v", "mjpeg", (media / "clip.avi").string()},
      dir_ / "ffmpeg.log"));
  {
    std::ofstream inside(media / "passwd.txt");
    std::ofstream outside(dir_ / "passwd.txt");
    for (int i = 0; i < 64; ++i) {
      const std::string line = "user" + std::to_string(i) + ":x:1000:1000:Secret:/home/u:/bin/sh\n";
      inside << line;
      outside << line;
    }
  }
  std::filesystem::create_symlink("/etc/passwd", media / "escape.mp4");
  std::filesystem::create_directory_symlink("/etc", media / "etc");
  const int text_port = testing::UnusedLoopbackPort();
  ChildProcess text_server(
      {kPython, std::string(KADR_SOURCE_DIR) + "/tests/support/hostile_http_server.py",
       std::to_string(text_port)},
      dir_ / "text_server.log");
  ASSERT_TRUE(text_server.WaitForLog("ready", 10s).has_value()) << text_server.Log();
  const std::string text_host = "127.0.0.1:" + std::to_string(text_port);

  struct Case {
    std::string source;
    int status;
    std::string code;
    std::string message_part;
    bool unprobed_too = true;  // refused without the probe as well (no name to resolve)
  };
  // Posts every case (probed, and unprobed when refused before any I/O) and checks the
  // answer; the service must stay up.
  auto attack = [&](const std::vector<Case>& cases) {
    auto c = Client();
    for (const Case& k : cases) {
      for (const bool probe : {true, false}) {
        const bool before_io = k.code == "permission_denied" || k.code == "invalid_argument";
        if (!probe && !(before_io && k.unprobed_too)) continue;  // created unprobed
        const json body = {{"source", k.source}, {"model", "null"}, {"probe", probe}};
        auto r = c.Post("/api/v1/streams", body.dump(), "application/json");
        ASSERT_TRUE(r) << k.source;
        EXPECT_EQ(r->status, k.status) << k.source << " -> " << r->body;
        const json e = json::parse(r->body, nullptr, false);
        ASSERT_TRUE(e.is_object() && e.contains("error")) << r->body;
        EXPECT_EQ(e["error"]["code"], k.code) << k.source << " -> " << r->body;
        EXPECT_NE(e["error"]["message"].get<std::string>().find(k.message_part), std::string::npos)
            << k.source << " -> " << r->body;
        EXPECT_EQ(r->body.find("user1:x"), std::string::npos) << r->body;
        EXPECT_EQ(r->body.find("root:"), std::string::npos) << r->body;
      }
    }
  };
  const std::string outside = "is outside the allowed source directories";
  const std::string devices = "device sources are off";
  const std::string not_allowed = "which network sources may not reach";
  const std::string generic = "no video stream answered (the server log has the reason)";
  const std::vector<Case> everywhere = {
      {(dir_ / "passwd.txt").string(), 403, "permission_denied", outside},
      {(dir_ / "no-such.txt").string(), 403, "permission_denied", outside},
      {"file:///etc/passwd", 403, "permission_denied", outside},
      {(media / ".." / "passwd.txt").string(), 403, "permission_denied", outside},
      {(media / "escape.mp4").string(), 403, "permission_denied",
       (media / "escape.mp4").string() + " " + outside},
      {(media / "etc" / "passwd").string(), 403, "permission_denied", outside},
      {"/dev/zero", 403, "permission_denied", devices},
      {"/dev/video9", 403, "permission_denied", devices},
      {"http://169.254.169.254/latest/meta-data", 403, "permission_denied", "169.254.169.254"},
      {"http://[fd00:ec2::254]/latest/meta-data", 403, "permission_denied", "fd00:ec2::254"},
      {"concat:/etc/passwd|/etc/hosts", 400, "invalid_argument", "not a source kadr reads"},
      {"data:text/plain;base64,cm9vdA==", 400, "invalid_argument", "not a source kadr reads"},
      {"subfile,,start,0,end,0,,:/etc/passwd", 400, "invalid_argument", "not a source"},
      {"tcp://127.0.0.1:22", 400, "invalid_argument", "unsupported scheme"},
      {"ftp://127.0.0.1/x.mp4", 400, "invalid_argument", "unsupported scheme"},
      // Inside the allowed directory a text file is still no video (tty is off).
      {(media / "passwd.txt").string(), 415, "not_a_video", "not a video"},
      {(media / "none.mp4").string(), 400, "no_such_file", "no such file"},
  };
  auto still_serves = [&](std::size_t streams) {
    auto c = Client();
    auto health = c.Get("/healthz");
    ASSERT_TRUE(health);
    EXPECT_EQ(health->status, 200);
    auto list = c.Get("/api/v1/streams");
    ASSERT_TRUE(list);
    const json all = json::parse(list->body)["streams"];
    ASSERT_EQ(all.size(), streams) << list->body;
    const std::string id = all[0]["id"];
    EXPECT_TRUE(testing::WaitUntil([&] { return Stat(id, "frames_done") >= 3; }, 30s))
        << Stream(id).dump() << "\n"
        << up_->LogTail();
  };

  // 1. The default host rule: loopback, unspecified and link-local hosts are refused.
  ASSERT_NO_FATAL_FAILURE(StartUp(1, {"--source-dir", media.string()}));
  attack(everywhere);
  attack({{"http://" + text_host + "/x?x=.txt", 403, "permission_denied", not_allowed},
          {"http://localhost:" + std::to_string(text_port) + "/x?x=.txt", 403, "permission_denied",
           "'localhost' resolves to a loopback address", false},
          {"http://[::ffff:127.0.0.1]:" + std::to_string(text_port) + "/", 403, "permission_denied",
           not_allowed},
          {"rtsp://0.0.0.0:9092/x", 403, "permission_denied", not_allowed}});
  EXPECT_EQ(text_server.Log().find("GET"), std::string::npos) << "a refused host was reached";
  auto c = Client();
  auto created = c.Post("/api/v1/streams",
                        json{{"source", (media / "clip.avi").string()}, {"model", "null"}}.dump(),
                        "application/json");
  ASSERT_TRUE(created);
  ASSERT_EQ(created->status, 201) << created->body;
  still_serves(1);
  ASSERT_EQ(up_->Stop(30s), 0) << up_->LogTail();

  // 2. --source-host 127.0.0.1: that host is reached, but what it answers must be a video, and
  // why it was not stays in the log. Other loopback addresses are still refused.
  ASSERT_NO_FATAL_FAILURE(
      StartUp(2, {"--source-dir", media.string(), "--source-host", "127.0.0.1"}));
  attack(everywhere);
  const int closed = testing::UnusedLoopbackPort();
  attack({{"http://" + text_host + "/x?x=.txt", 502, "source_unreachable", generic},
          {"http://" + text_host + "/latest/meta-data", 502, "source_unreachable", generic},
          {"http://127.0.0.1:" + std::to_string(closed) + "/", 502, "source_unreachable", generic},
          {"http://127.0.0.2:" + std::to_string(text_port) + "/", 403, "permission_denied",
           "not among the allowed source hosts"},
          {"http://[::1]:" + std::to_string(text_port) + "/", 403, "permission_denied",
           "not among the allowed source hosts"}});
  EXPECT_NE(text_server.Log().find("GET /x?x=.txt"), std::string::npos) << text_server.Log();
  EXPECT_NE(up_->Log().find("refused"), std::string::npos) << up_->LogTail();
  still_serves(1);  // the stream of run 1, restored
}

}  // namespace
}  // namespace kadr
