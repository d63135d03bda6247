// Nothing lost under load (docs/adr/0009-admission-by-bytes.md): `kadr up` on its embedded
// broker, which keeps 5 MiB per partition and deletes the oldest beyond, consumed or not,
// takes bursts of large photos over real HTTP. Every request is answered 200 with detections,
// or 429 with Retry-After when the gateway is full; none times out, no frame is deleted
// before a worker reads it, and a client that floods does not starve another one.
//
// Model: the repo's generated `tiny` ONNX model (bright / dark), so that the broker's bytes,
// not the model, are what the test loads.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>

#include "support/child_process.h"
#include "support/kadr_up.h"
#include "support/test_data.h"

namespace kadr {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::ChildProcess;

constexpr auto kStartTimeout = 90s;

// A bright `width` x `height` JPEG: `noise` (0..255) of grain over light grey compresses
// badly, as phone photos of real scenes do.
std::string BrightPhoto(int width, int height, int noise, int quality) {
  cv::Mat img(height, width, CV_8UC3, cv::Scalar::all(200));
  cv::Mat grain(height, width, CV_8UC3);
  cv::randu(grain, cv::Scalar::all(0), cv::Scalar::all(noise));
  img += grain;
  std::vector<std::uint8_t> out;
  cv::imencode(".jpg", img, out, {cv::IMWRITE_JPEG_QUALITY, quality});
  return {out.begin(), out.end()};
}

struct Answer {
  int status = 0;  // 0: no answer
  std::string body;
  std::string retry_after;
};

// POST /api/v1/detect from source address `from` (127.0.0.x: loopback answers them all), with
// a plain socket: the gateway tells clients apart by address.
Answer PostFrom(const std::string& from, int port, const std::string& image) {
  Answer a;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return a;
  timeval tv{120, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in local{};
  local.sin_family = AF_INET;
  inet_pton(AF_INET, from.c_str(), &local.sin_addr);
  sockaddr_in remote{};
  remote.sin_family = AF_INET;
  remote.sin_port = htons(static_cast<std::uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&remote), sizeof(remote)) != 0) {
    close(fd);
    return a;
  }
  std::string request =
      "POST /api/v1/detect?model=tiny HTTP/1.1\r\nHost: 127.0.0.1\r\n"
      "Content-Type: image/jpeg\r\nConnection: close\r\nContent-Length: " +
      std::to_string(image.size()) + "\r\n\r\n" + image;
  // A server may answer before it has read the whole body (and close): read what it said.
  std::string error;
  for (std::size_t sent = 0; sent < request.size();) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      error = std::string("send: ") + std::strerror(errno);
      break;
    }
    sent += static_cast<std::size_t>(n);
  }
  std::string response;
  char buffer[65536];
  ssize_t n = 0;
  while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) response.append(buffer, n);
  if (n < 0) error += std::string(" recv: ") + std::strerror(errno);
  close(fd);
  if (response.rfind("HTTP/1.1 ", 0) != 0) {
    a.body = "no HTTP answer (" + error + "): " + response.substr(0, 200);
    return a;
  }
  a.status = std::stoi(response.substr(9, 3));
  const auto end = response.find("\r\n\r\n");
  const std::string head = response.substr(0, end);
  if (end != std::string::npos) a.body = response.substr(end + 4);
  const auto retry = head.find("Retry-After: ");
  if (retry != std::string::npos) {
    a.retry_after = head.substr(retry + 13, head.find("\r\n", retry) - retry - 13);
  }
  return a;
}

class AdmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kadr_admission_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ / "models");
    std::filesystem::copy_file(KADR_TINY_ONNX, dir_ / "models" / "tiny.onnx");
  }
  void TearDown() override {
    if (up_) {
      if (HasFailure()) std::cerr << "---- kadr up log (tail) ----\n" << up_->LogTail() << "\n";
      EXPECT_EQ(up_->Stop(30s), 0) << "kadr up did not exit cleanly";
    }
    std::filesystem::remove_all(dir_);
  }

  void StartUp(const std::vector<std::string>& extra, const std::string& models = "tiny",
               const std::filesystem::path& models_dir = {}) {
    std::vector<std::string> args = {
        KADR_BINARY,
        "--models-dir",
        models_dir.empty() ? (dir_ / "models").string() : models_dir.string(),
        "up",
        "--http-port",
        "0",
        "--models",
        models,
        "--data-dir",
        (dir_ / "data").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    up_ = std::make_unique<ChildProcess>(args, dir_ / "up.log");
    port_ = testing::WaitForHttpPort(*up_, kStartTimeout);
    ASSERT_NE(port_, 0) << up_->Log();
    ASSERT_TRUE(testing::WaitReady(port_, kStartTimeout)) << up_->Log();
  }

  // `count` requests of `image` at once from `from`; their answers.
  std::vector<Answer> Burst(const std::string& from, int count, const std::string& image) {
    std::vector<std::future<Answer>> pending;
    for (int i = 0; i < count; ++i) {
      pending.push_back(
          std::async(std::launch::async, [&, from] { return PostFrom(from, port_, image); }));
    }
    std::vector<Answer> out;
    for (auto& p : pending) out.push_back(p.get());
    return out;
  }

  // Every answer is 200 with the bright detection, or 429 with Retry-After; returns the 200s.
  static int ExpectAnsweredOrTooMany(const std::vector<Answer>& answers, int width) {
    int ok = 0;
    for (const Answer& a : answers) {
      if (a.status == 429) {
        EXPECT_FALSE(a.retry_after.empty()) << "429 without Retry-After: " << a.body;
        continue;
      }
      EXPECT_EQ(a.status, 200) << a.body;
      if (a.status != 200) continue;
      ++ok;
      const json j = json::parse(a.body, nullptr, false);
      EXPECT_TRUE(j.is_object()) << a.body;
      if (!j.is_object()) continue;
      EXPECT_EQ(j["image"]["width"], width) << "results are in the upload's pixels";
      EXPECT_EQ(j["detections"].size(), 1u) << a.body;
      if (j["detections"].size() != 1u) continue;
      EXPECT_EQ(j["detections"][0]["label"], "bright");
    }
    return ok;
  }

  // The symptom of a frame deleted before it was read: the worker's consumer finds its
  // offset gone (librdkafka: "Offset out of range").
  void ExpectNoFrameDeleted() const {
    const std::string log = up_->Log();
    EXPECT_EQ(log.find("out of range"), std::string::npos) << up_->LogTail();
    EXPECT_EQ(log.find("offset reset"), std::string::npos) << up_->LogTail();
  }

  std::filesystem::path dir_;
  std::unique_ptr<ChildProcess> up_;
  int port_ = 0;
};

TEST_F(AdmissionTest, ABurstOfFullSizePhotosManyTimesTheBrokersLimitIsAnsweredWithoutLoss) {
  // Frames travel at full size: the byte budget alone keeps them on the broker.
  StartUp({"--max-frame-side", "0", "--max-in-flight", "16"});
  const std::string photo = BrightPhoto(2400, 1800, 90, 92);
  ASSERT_GT(photo.size(), 1'000'000u) << "the test photo should be over 1 MB";
  ASSERT_LT(photo.size(), 2'400'000u) << "and fit in one message of the embedded broker";
  constexpr int kRequests = 24;  // ~30-50 MB in all, onto 4 partitions of 5 MiB each
  const auto answers = Burst("127.0.0.1", kRequests, photo);
  const int ok = ExpectAnsweredOrTooMany(answers, 2400);
  EXPECT_GE(ok, 12) << "the gateway's 16 slots (12 for one client) should all be answered";
  std::cout << "answered 200: " << ok << " of " << kRequests << " (the rest 429)\n";
  ExpectNoFrameDeleted();

  // A frame the embedded broker cannot keep (two such in a row and it deletes both) is
  // refused at once, saying what to do.
  const Answer huge = PostFrom("127.0.0.1", port_, BrightPhoto(4000, 3000, 60, 90));
  EXPECT_EQ(huge.status, 413) << huge.body;
  EXPECT_NE(huge.body.find("--max-frame-side"), std::string::npos) << huge.body;
}

TEST_F(AdmissionTest, TwelveMegapixelPhotosTravelScaledAndAreReportedInTheirOwnPixels) {
  StartUp({"--max-in-flight", "16"});
  const std::string photo = BrightPhoto(4000, 3000, 60, 90);
  ASSERT_GT(photo.size(), 4'000'000u) << "a phone photo's size";
  const auto answers = Burst("127.0.0.1", 12, photo);
  EXPECT_EQ(ExpectAnsweredOrTooMany(answers, 4000), 12);
  const json j = json::parse(answers[0].body, nullptr, false);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["image"]["height"], 3000);
  // tiny's one box is the middle half of the frame: 2000 px wide in the upload's pixels
  // (640 in the 1280 px frame the worker saw).
  EXPECT_NEAR(j["detections"][0]["box"]["width"].get<double>(), 2000.0, 8.0) << answers[0].body;
  EXPECT_NEAR(j["detections"][0]["box"]["x"].get<double>(), 1000.0, 8.0) << answers[0].body;
  ExpectNoFrameDeleted();
}

// Video jobs of large frames take room on the broker frame by frame like uploads do: their
// frames, many times what a partition keeps, all reach the worker and are answered. Four
// jobs at once with a model slower than the camera sends frames (yolov8n at 640), and a
// worker consumer that fetches little ahead (queued.max.messages.kbytes), so that frames wait
// on the broker: without the admission by bytes the jobs' windows (4 x 16 frames, ~40 MB)
// would overfill their partitions and frames would be deleted unread (measured: with
// KADR_FRAME_BUDGET_MB=64 this test fails).
TEST_F(AdmissionTest, VideoJobsOfLargeFramesAreAnsweredFrameByFrameWithoutLoss) {
  KADR_REQUIRE_TEST_DATA();
  StartUp({"--max-in-flight", "16", "--max-video-jobs", "4", "--kafka-property",
           "queued.max.messages.kbytes=1024"},
          "yolov8n_640_deq", testing::TestDataDir() / "models");
  // 1280x720 grain in MJPEG, so that the grain survives: the camera sends each frame as a
  // JPEG of ~0.7 MB.
  constexpr int kFrames = 24;
  constexpr int kJobs = 4;
  const auto path = dir_ / "grain.avi";
  {
    cv::VideoWriter writer(path.string(), cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 10,
                           cv::Size(1280, 720));
    ASSERT_TRUE(writer.isOpened());
    cv::Mat img(720, 1280, CV_8UC3);
    for (int i = 0; i < kFrames; ++i) {
      cv::randu(img, cv::Scalar::all(0), cv::Scalar::all(256));
      writer.write(img);
    }
  }
  std::ifstream in(path, std::ios::binary);
  const std::string video((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(video.size(), kFrames * 500'000u) << "the frames should be large";
  auto c = testing::LoopbackClient(port_, 120s);
  std::vector<std::string> ids;
  for (int j = 0; j < kJobs; ++j) {
    auto submitted = c.Post("/api/v1/jobs?model=yolov8n_640_deq", video, "video/x-msvideo");
    ASSERT_TRUE(submitted);
    ASSERT_EQ(submitted->status, 202) << submitted->body;
    ids.push_back(json::parse(submitted->body).value("id", ""));
  }
  for (const std::string& id : ids) {
    json job;
    ASSERT_TRUE(testing::WaitUntil(
        [&] {
          auto r = c.Get("/api/v1/jobs/" + id);
          job = r ? json::parse(r->body, nullptr, false) : json();
          const std::string state = job.is_object() ? job.value("state", "") : "";
          return state == "done" || state == "failed" || state == "cancelled";
        },
        300s))
        << job.dump();
    ASSERT_EQ(job["state"], "done") << job.dump();
    EXPECT_EQ(job["progress"]["frames_done"], kFrames) << job.dump();
    EXPECT_EQ(job["progress"]["frames_failed"], 0) << job.dump();
    auto result = c.Get("/api/v1/jobs/" + id + "/result");
    ASSERT_TRUE(result);
    ASSERT_EQ(result->status, 200) << result->body.substr(0, 300);
    const json r = json::parse(result->body);
    ASSERT_EQ(r["frames"].size(), static_cast<std::size_t>(kFrames));
    for (const json& f : r["frames"]) ASSERT_EQ(f["status"], "ok") << f.dump();
  }
  ExpectNoFrameDeleted();
}

TEST_F(AdmissionTest, AClientThatFloodsDoesNotStarveAnother) {
  StartUp({"--max-frame-side", "0", "--max-in-flight", "16"});
  const std::string photo = BrightPhoto(2400, 1800, 90, 92);
  // 24 clients' worth of requests from one address, each sent again as soon as it is
  // answered (429s at once): the flood takes every slot it may, all the time.
  std::atomic<bool> flooding{true};
  std::vector<Answer> flood;
  std::mutex mu;
  std::vector<std::jthread> flooders;
  for (int i = 0; i < 24; ++i) {
    flooders.emplace_back([&] {
      while (flooding) {
        Answer a = PostFrom("127.0.0.1", port_, photo);
        std::lock_guard lock(mu);
        flood.push_back(std::move(a));
      }
    });
  }
  std::this_thread::sleep_for(500ms);  // the flood holds its share first
  std::vector<Answer> other;
  for (int i = 0; i < 4; ++i) other.push_back(PostFrom("127.0.0.2", port_, photo));
  flooding = false;
  flooders.clear();  // joins
  for (const Answer& a : other) {
    EXPECT_EQ(a.status, 200) << "the second client was not served: " << a.body;
  }
  EXPECT_EQ(ExpectAnsweredOrTooMany(other, 2400), 4);
  int too_many = 0;
  for (const Answer& a : flood) too_many += a.status == 429;
  EXPECT_GT(too_many, 0) << "the flood never reached its share";
  ExpectAnsweredOrTooMany(flood, 2400);
  ExpectNoFrameDeleted();
}

}  // namespace
}  // namespace kadr
