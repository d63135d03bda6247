// The cluster fault test: a 3-node Apache Kafka cluster (KRaft, replication factor 3,
// min.insync.replicas 2; support/apache_kafka.h), `kadr up --brokers <cluster>` serving the
// generated `tiny` model, a lossless stream of a video file and a video job running through
// it, and the broker that leads the frames topic's partitions killed with SIGKILL mid-run.
// Nothing may be lost: the stream finishes with every captured frame answered, the video job
// with every frame done and none failed. Results must keep flowing after the leader election;
// the time from the kill until both answer frames again is printed ("recovery_ms").
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include "support/apache_kafka.h"
#include "support/child_process.h"
#include "support/kadr_up.h"
#include "support/shell.h"
#include "support/test_data.h"
#include "support/wait.h"

namespace kadr {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kVideoFrames = 240;

// An MJPEG AVI of moving bright and dark bars, `frames` long at 25 fps.
bool WriteVideo(const std::filesystem::path& path, int frames) {
  cv::VideoWriter out(path.string(), cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 25,
                      cv::Size(320, 240));
  if (!out.isOpened()) return false;
  for (int i = 0; i < frames; ++i) {
    cv::Mat img(240, 320, CV_8UC3, cv::Scalar::all((i / 10) % 2 == 0 ? 230 : 20));
    cv::rectangle(img, cv::Rect((i * 3) % 280, 60, 40, 120), cv::Scalar(0, 128, 255), -1);
    out.write(img);
  }
  return true;
}

json Parse(const httplib::Result& r) { return r ? json::parse(r->body, nullptr, false) : json(); }

TEST(KafkaClusterTest, KillingThePartitionLeaderLosesNoFrameOfAStreamOrAVideoJob) {
  if (const std::string why = testing::ApacheKafka::Unavailable(); !why.empty()) {
    GTEST_SKIP() << why;
  }
  const auto dir = testing::MakeTempDir();
  std::filesystem::create_directories(dir / "models");
  std::filesystem::copy_file(KADR_TINY_ONNX, dir / "models" / "tiny.onnx");
  const auto video = dir / "bars.avi";
  ASSERT_TRUE(WriteVideo(video, kVideoFrames));

  std::string error;
  auto kafka = testing::ApacheKafka::Start({.dir = dir, .nodes = 3}, &error);
  ASSERT_NE(kafka, nullptr) << error;
  const std::string brokers = kafka->bootstrap();
  const auto topics = testing::Shell(std::string(KADR_BINARY) + " --log-level warn topics " +
                                     "--models tiny --partitions 4 --brokers " + brokers + " 2>&1");
  ASSERT_EQ(topics.exit_code, 0) << topics.out;
  const auto described =
      testing::Shell("timeout 10 kcat -L -b " + brokers + " -t kadr.frames.tiny");
  ASSERT_NE(described.out.find("replicas: "), std::string::npos) << described.out;

  testing::ChildProcess up({KADR_BINARY, "--models-dir", (dir / "models").string(), "up",
                            "--brokers", brokers, "--models", "tiny", "--http-port", "0",
                            "--data-dir", (dir / "data").string(), "--source-dir", dir.string()},
                           dir / "up.log");
  const int port = testing::WaitForHttpPort(up, 120s);
  ASSERT_GT(port, 0) << up.LogTail();
  ASSERT_TRUE(testing::WaitReady(port, 120s)) << up.LogTail();
  auto c = testing::LoopbackClient(port);
  c.set_read_timeout(60s);

  // A lossless stream (every frame answered, none dropped) at 20 fps, and a video job.
  const json spec = {{"source", video.string()},
                     {"model", "tiny"},
                     {"mode", "lossless"},
                     {"fps", 20},
                     {"window", 4}};
  auto created = c.Post("/api/v1/streams", spec.dump(), "application/json");
  ASSERT_TRUE(created);
  ASSERT_EQ(created->status, 201) << created->body;
  const std::string stream = Parse(created)["id"];
  std::ifstream in(video, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  auto job_r = c.Post("/api/v1/jobs?model=tiny", bytes, "video/x-msvideo");
  ASSERT_TRUE(job_r);
  ASSERT_EQ(job_r->status, 202) << job_r->body;
  const std::string job = Parse(job_r)["id"];

  auto stream_done = [&] {
    return Parse(c.Get("/api/v1/streams/" + stream))["stats"].value("frames_done", 0);
  };
  auto job_done = [&] {
    return Parse(c.Get("/api/v1/jobs/" + job))["progress"].value("frames_done", 0);
  };
  ASSERT_TRUE(testing::WaitUntil([&] { return stream_done() >= 20 && job_done() >= 20; }, 120s))
      << "stream " << stream_done() << ", job " << job_done() << "\n"
      << up.LogTail();

  // The broker that leads most of the frames topic's partitions.
  std::map<int, int> leads;
  for (int p = 0; p < 4; ++p) {
    if (auto l = kafka->Leader("kadr.frames.tiny", p)) ++leads[*l];
  }
  ASSERT_FALSE(leads.empty());
  int victim = leads.begin()->first;
  for (const auto& [node, n] : leads) {
    if (n > leads[victim]) victim = node;
  }
  const int stream_before = stream_done();
  const int job_before = job_done();
  kafka->Kill(victim);
  const auto killed = Clock::now();
  // Recovered: frames published after the kill are answered, more than the window in flight
  // at the kill (the stream's 4; the job's pipeline is shorter than 8) could account for.
  ASSERT_TRUE(testing::WaitUntil(
      [&] { return stream_done() >= stream_before + 8 && job_done() >= job_before + 8; }, 120s,
      20ms))
      << "no result after the leader (node " << victim << ") was killed\n"
      << up.LogTail();
  const auto recovery_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed).count();
  std::cout << "killed node " << victim << " (leader of " << leads[victim]
            << " of 4 frames partitions); recovery_ms=" << recovery_ms << "\n";
  std::optional<int> new_leader;
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        new_leader = kafka->Leader("kadr.frames.tiny", 0);
        return new_leader && *new_leader != victim;
      },
      60s));

  // Both finish with nothing lost.
  json s;
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        s = Parse(c.Get("/api/v1/streams/" + stream));
        return s.value("state", "") == "finished" || s.value("state", "") == "failed";
      },
      300s))
      << s.dump() << "\n"
      << up.LogTail();
  EXPECT_EQ(s["state"], "finished") << s.dump();
  // Decimated from 25 to 20 fps: 4 of every 5 frames read are published; each one answered.
  EXPECT_EQ(s["stats"]["frames_captured"], kVideoFrames) << s.dump();
  EXPECT_EQ(s["stats"]["frames_published"], kVideoFrames * 4 / 5) << s.dump();
  EXPECT_EQ(s["stats"]["frames_done"], s["stats"]["frames_published"]) << s.dump();
  EXPECT_EQ(s["stats"]["dropped_frames"], 0) << s.dump();
  json j;
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        j = Parse(c.Get("/api/v1/jobs/" + job));
        return j.value("state", "") != "queued" && j.value("state", "") != "running";
      },
      300s))
      << j.dump();
  EXPECT_EQ(j["state"], "done") << j.dump();
  EXPECT_EQ(j["progress"]["frames_done"], kVideoFrames) << j.dump();
  EXPECT_EQ(j["progress"]["frames_failed"], 0) << j.dump();
  std::cout << "stream frames_done=" << s["stats"]["frames_done"]
            << " job frames_done=" << j["progress"]["frames_done"] << "\n";

  EXPECT_EQ(up.Stop(60s), 0) << up.LogTail();
  if (!::testing::Test::HasFailure()) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kadr
