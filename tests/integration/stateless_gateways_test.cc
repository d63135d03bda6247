// Stateless gateways (docs/adr/0008-job-model-and-events.md): two `kadr up` processes on one
// broker (`kadr broker`), each with a gateway, a viewer with a job store of its own, a worker
// and a camera service, and one video folder between them, as two replicas behind a load
// balancer. A job taken by either is followed, fetched and cancelled on the other, and a
// gateway killed while its jobs run loses none of them: the workers' answers still reach the
// other's job store.
#include <signal.h>

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
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include "support/child_process.h"
#include "support/kadr_up.h"
#include "support/shell.h"
#include "support/test_data.h"
#include "support/wait.h"

namespace kadr {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;

json Parse(const httplib::Result& r) { return r ? json::parse(r->body, nullptr, false) : json(); }

// An MJPEG AVI of `frames` frames at 25 fps, bright and dark in turns.
std::string WriteVideo(const fs::path& path, int frames) {
  cv::VideoWriter out(path.string(), cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 25,
                      cv::Size(160, 120));
  EXPECT_TRUE(out.isOpened());
  for (int i = 0; i < frames; ++i) {
    cv::Mat img(120, 160, CV_8UC3, cv::Scalar::all((i / 5) % 2 == 0 ? 230 : 20));
    cv::rectangle(img, cv::Rect((i * 3) % 120, 30, 30, 60), cv::Scalar(0, 128, 255), -1);
    out.write(img);
  }
  out.release();
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

std::string WhiteJpeg() {
  std::vector<std::uint8_t> out;
  cv::imencode(".jpg", cv::Mat(64, 64, CV_8UC3, cv::Scalar::all(255)), out);
  return {out.begin(), out.end()};
}

// One `kadr up --brokers` replica.
struct Stack {
  std::unique_ptr<testing::ChildProcess> process;
  int port = 0;
  httplib::Client Client() const { return testing::LoopbackClient(port); }
};

class StatelessGatewaysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(models_);
    fs::copy_file(KADR_TINY_ONNX, models_ / "tiny.onnx");
    broker_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{KADR_BINARY, "broker", "--port", "0"}, dir_ / "broker.log");
    const auto bootstrap = broker_->WaitForLog(R"(bootstrap: (\S+))", 30s);
    ASSERT_TRUE(bootstrap.has_value()) << broker_->Log();
    brokers_ = *bootstrap;
    const auto topics =
        testing::Shell(std::string(KADR_BINARY) + " --log-level warn topics " +
                       "--models tiny --partitions 2 --brokers " + brokers_ + " 2>&1");
    ASSERT_EQ(topics.exit_code, 0) << topics.out;
    a_ = Start("a");
    b_ = Start("b");
  }

  Stack Start(const std::string& name) {
    Stack s;
    s.process = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{KADR_BINARY, "--models-dir", models_.string(), "up", "--brokers",
                                 brokers_, "--models", "tiny", "--http-port", "0", "--instance-id",
                                 "stack-" + name, "--data-dir", (dir_ / name).string(),
                                 "--video-dir", (dir_ / "videos").string()},
        dir_ / (name + ".log"));
    s.port = testing::WaitForHttpPort(*s.process, 120s);
    EXPECT_GT(s.port, 0) << s.process->LogTail();
    EXPECT_TRUE(testing::WaitReady(s.port, 120s)) << s.process->LogTail();
    return s;
  }

  json Job(const Stack& s, const std::string& id) {
    auto c = s.Client();
    return Parse(c.Get("/api/v1/jobs/" + id));
  }

  json WaitForState(const Stack& s, const std::string& id, const std::string& state,
                    std::chrono::seconds timeout = 60s) {
    json job;
    EXPECT_TRUE(testing::WaitUntil(
        [&] {
          job = Job(s, id);
          return job.value("state", "") == state;
        },
        timeout))
        << job.dump() << "\n"
        << s.process->LogTail();
    return job;
  }

  void VideoJobOnEither();
  void ImageJobOnEither();
  void KilledGatewayLosesNone();

  fs::path dir_ = testing::MakeTempDir();
  fs::path models_ = dir_ / "models";
  std::unique_ptr<testing::ChildProcess> broker_;
  std::string brokers_;
  Stack a_, b_;
};

// The replicas take a while to start (two `kadr up`, a broker): one test runs the three
// cases on them, in this order (the last one kills A).
TEST_F(StatelessGatewaysTest, EitherReplicaAnswersForTheOthersJobsAndAKilledGatewayLosesNone) {
  ASSERT_GT(a_.port, 0);
  ASSERT_GT(b_.port, 0);
  {
    SCOPED_TRACE("a video job taken by A is followed, fetched and cancelled on B");
    VideoJobOnEither();
  }
  {
    SCOPED_TRACE("an image job taken by A is read on B");
    ImageJobOnEither();
  }
  {
    SCOPED_TRACE("A killed while its jobs run loses none of them");
    KilledGatewayLosesNone();
  }
}

void StatelessGatewaysTest::VideoJobOnEither() {
  const std::string clip = WriteVideo(dir_ / "clip.avi", 40);
  auto ca = a_.Client();
  auto submitted = ca.Post("/api/v1/jobs?model=tiny", clip, "video/x-msvideo");
  ASSERT_TRUE(submitted);
  ASSERT_EQ(submitted->status, 202) << submitted->body;
  const std::string id = Parse(submitted)["id"];

  // Followed on B, which never saw the upload: its store has it from the job events.
  const json done = WaitForState(b_, id, "done");
  EXPECT_EQ(done["kind"], "video");
  EXPECT_EQ(done["progress"]["frames_done"], 40);
  auto cb = b_.Client();
  auto result = cb.Get("/api/v1/jobs/" + id + "/result");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  EXPECT_EQ(Parse(result)["frames"].size(), 40u);
  auto video = cb.Get("/api/v1/jobs/" + id + "/video");
  ASSERT_TRUE(video);
  EXPECT_EQ(video->status, 200);
  EXPECT_EQ(video->get_header_value("Content-Type"), "video/mp4");
  EXPECT_GT(video->body.size(), 1000u);
  // A's store follows the same events.
  WaitForState(a_, id, "done");

  // A long one, cancelled on B while it runs (wherever it runs).
  const std::string longer = WriteVideo(dir_ / "long.avi", 1500);
  auto second = ca.Post("/api/v1/jobs?model=tiny", longer, "video/x-msvideo");
  ASSERT_TRUE(second);
  ASSERT_EQ(second->status, 202) << second->body;
  const std::string running = Parse(second)["id"];
  ASSERT_TRUE(testing::WaitUntil(
      [&] { return Job(b_, running)["progress"].value("frames_done", 0) >= 5; }, 60s))
      << Job(b_, running).dump();
  auto cancelled = cb.Delete("/api/v1/jobs/" + running);
  ASSERT_TRUE(cancelled);
  EXPECT_TRUE(cancelled->status == 200 || cancelled->status == 202) << cancelled->body;
  const json after = WaitForState(a_, running, "cancelled", 30s);
  EXPECT_LT(after["progress"]["frames_done"].get<int>(), 1500);
  EXPECT_EQ(WaitForState(b_, running, "cancelled", 30s)["state"], "cancelled");
}

void StatelessGatewaysTest::ImageJobOnEither() {
  auto ca = a_.Client();
  auto r = ca.Post("/api/v1/jobs?model=tiny", WhiteJpeg(), "image/jpeg");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202) << r->body;
  const std::string id = Parse(r)["id"];
  WaitForState(b_, id, "done");
  auto cb = b_.Client();
  auto result = cb.Get("/api/v1/jobs/" + id + "/result");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  EXPECT_EQ(Parse(result)["detections"][0]["label"], "bright");
  auto image = cb.Get("/api/v1/jobs/" + id + "/image");
  ASSERT_TRUE(image);
  EXPECT_EQ(image->status, 200);
  EXPECT_EQ(image->get_header_value("Content-Type"), "image/jpeg");
  // A bad id is the same 404 everywhere.
  for (const Stack* s : {&a_, &b_}) {
    auto c = s->Client();
    for (const char* bad : {"j000000000000000000000000", "a.b"}) {
      auto missing = c.Get(std::string("/api/v1/jobs/") + bad);
      ASSERT_TRUE(missing);
      EXPECT_EQ(missing->status, 404) << bad;
    }
  }
}

void StatelessGatewaysTest::KilledGatewayLosesNone() {
  // Model "slow" has one worker of its own, which the test holds (SIGSTOP) while A takes
  // jobs for it, so that they are still running when A is killed.
  fs::copy_file(models_ / "tiny.onnx", models_ / "slow.onnx");
  testing::ChildProcess worker({KADR_BINARY, "--models-dir", models_.string(), "worker", "--model",
                                "slow", "--brokers", brokers_},
                               dir_ / "worker-slow.log");
  auto ca = a_.Client();
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        for (const auto& m : Parse(ca.Get("/api/v1/models")).value("models", json::array())) {
          if (m["name"] == "slow" && m.value("available", false)) return true;
        }
        return false;
      },
      60s))
      << worker.LogTail();
  ASSERT_EQ(kill(worker.pid(), SIGSTOP), 0);
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    auto r = ca.Post("/api/v1/jobs?model=slow&timeout_ms=120000", WhiteJpeg(), "image/jpeg");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
    ids.push_back(Parse(r)["id"]);
  }
  // Queued in B's store too (their snapshots were on the broker before the 202s), and not
  // answered: the worker is held.
  for (const std::string& id : ids) EXPECT_EQ(WaitForState(b_, id, "queued")["state"], "queued");
  std::this_thread::sleep_for(1s);  // the frames' deliveries (A's producer lingers a little)
  a_.process->Kill();
  ASSERT_EQ(kill(worker.pid(), SIGCONT), 0);
  // The worker answers onto A's reply topic; B's recorder reads it: every job is done.
  for (const std::string& id : ids) {
    EXPECT_EQ(WaitForState(b_, id, "done", 60s)["state"], "done") << id << "\n" << worker.LogTail();
  }
}

}  // namespace
}  // namespace kadr
