// Video jobs end to end (issue 5 "Proof"): `kadr up` as a child process with the real
// yolox_nano worker, videos posted over HTTP, the annotated MP4 and per-frame results read
// back; and `kadr detect` on a video. Needs KADR_TEST_DATA (cars.mp4, vtest.avi, yolox_nano).
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "support/child_process.h"
#include "support/kadr_up.h"
#include "support/test_data.h"
#include "video/video.h"

namespace kadr {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::ChildProcess;
namespace fs = std::filesystem;

constexpr auto kStartTimeout = 90s;
// cars.mp4 (268 frames) runs at ~25 frames/s in a release build; ASan is a few times slower.
constexpr auto kJobTimeout = 240s;

std::string ReadAll(const fs::path& path) {
  const auto bytes = testing::ReadFileBytes(path);
  return {bytes.begin(), bytes.end()};
}

double Iou(const json& a, const json& b) {
  const double ax = a["x"], ay = a["y"], aw = a["width"], ah = a["height"];
  const double bx = b["x"], by = b["y"], bw = b["width"], bh = b["height"];
  const double iw = std::max(0.0, std::min(ax + aw, bx + bw) - std::max(ax, bx));
  const double ih = std::max(0.0, std::min(ay + ah, by + bh) - std::max(ay, by));
  const double inter = iw * ih;
  const double uni = aw * ah + bw * bh - inter;
  return uni > 0 ? inter / uni : 0.0;
}

class VideoJobTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (testing::TestDataDir().empty()) return;
    dir_ = new fs::path(fs::temp_directory_path() / ("kadr_video_job_" + std::to_string(getpid())));
    fs::remove_all(*dir_);
    fs::create_directories(*dir_);
    up_ =
        new ChildProcess({KADR_BINARY, "--models-dir", (testing::TestDataDir() / "models").string(),
                          "up", "--http-port", "0", "--models", "yolox_nano", "--data-dir",
                          (*dir_ / "data").string(), "--instance-id", "video-it"},
                         *dir_ / "up.log");
    port_ = testing::WaitForHttpPort(*up_, kStartTimeout);
  }

  static void TearDownTestSuite() {
    if (up_ != nullptr) {
      const int code = up_->Stop(30s);
      EXPECT_EQ(code, 0) << "kadr up did not exit cleanly; log:\n" << up_->Log();
      delete up_;
      up_ = nullptr;
    }
    if (dir_ != nullptr) {
      fs::remove_all(*dir_);
      delete dir_;
      dir_ = nullptr;
    }
  }

  void SetUp() override {
    KADR_REQUIRE_TEST_DATA();
    ASSERT_GT(port_, 0) << "kadr up did not start; log:\n" << up_->Log();
    ASSERT_TRUE(testing::WaitReady(port_, kStartTimeout)) << up_->Log();
  }

  static httplib::Client Client() { return testing::LoopbackClient(port_, 60s); }

  static std::string Submit(const std::string& body, const std::string& type = "video/mp4") {
    auto c = Client();
    auto r = c.Post("/api/v1/jobs?model=yolox_nano", body, type);
    EXPECT_TRUE(r);
    if (!r) return {};
    EXPECT_EQ(r->status, 202) << r->body;
    return json::parse(r->body, nullptr, false).value("id", "");
  }

  static json Job(const std::string& id) {
    auto c = Client();
    auto r = c.Get("/api/v1/jobs/" + id);
    return r ? json::parse(r->body, nullptr, false) : json();
  }

  static json WaitForState(const std::string& id, const std::string& state,
                           std::chrono::milliseconds timeout = kJobTimeout) {
    json job;
    EXPECT_TRUE(testing::WaitUntil(
        [&] {
          job = Job(id);
          const std::string s = job.value("state", "");
          return s == state || s == "failed" || s == "done" || s == "cancelled";
        },
        timeout))
        << job.dump();
    EXPECT_EQ(job.value("state", ""), state) << job.dump();
    return job;
  }

  static inline fs::path* dir_ = nullptr;
  static inline ChildProcess* up_ = nullptr;
  static inline int port_ = 0;
};

TEST_F(VideoJobTest, CarsVideoBecomesAnAnnotatedMp4WithStableTracks) {
  const fs::path source = testing::MediaPath("cars.mp4");
  auto in = video::VideoFileReader::Open(source.string());
  ASSERT_TRUE(in.has_value()) << in.error().ToString();
  const std::string id = Submit(ReadAll(source));
  ASSERT_FALSE(id.empty());

  // Progress moves while it runs.
  bool saw_progress = false;
  json job;
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        job = Job(id);
        const auto done = job["progress"].value("frames_done", 0);
        if (job["state"] == "running" && done > 0 && done < in->frame_count()) {
          saw_progress = true;
          EXPECT_GT(job["progress"]["fps"].get<double>(), 0);
          EXPECT_TRUE(job["progress"]["eta_ms"].is_number()) << job.dump();
        }
        return job["state"] != "queued" && job["state"] != "running";
      },
      kJobTimeout))
      << job.dump();
  ASSERT_EQ(job["state"], "done") << job.dump();
  EXPECT_TRUE(saw_progress);
  EXPECT_EQ(job["kind"], "video");
  EXPECT_EQ(job["progress"]["frames_done"], in->frame_count());
  EXPECT_EQ(job["progress"]["frames_failed"], 0);

  auto c = Client();
  auto mp4 = c.Get("/api/v1/jobs/" + id + "/video");
  ASSERT_TRUE(mp4);
  ASSERT_EQ(mp4->status, 200) << mp4->body.substr(0, 300);
  EXPECT_EQ(mp4->get_header_value("Content-Type"), "video/mp4");
  const fs::path out = *dir_ / (id + ".mp4");
  std::ofstream(out, std::ios::binary) << mp4->body;
  auto annotated = video::VideoFileReader::Open(out.string());
  ASSERT_TRUE(annotated.has_value()) << annotated.error().ToString();
  EXPECT_NEAR(annotated->fps(), in->fps(), 0.01);
  EXPECT_EQ(annotated->width(), in->width());
  EXPECT_EQ(annotated->height(), in->height());
  std::int64_t frames = 0;
  cv::Mat frame;
  while (true) {
    auto more = annotated->Read(frame);
    ASSERT_TRUE(more.has_value());
    if (!*more) break;
    ++frames;
  }
  EXPECT_EQ(frames, in->frame_count());

  // A byte range of the video (players seek with these).
  auto range = c.Get("/api/v1/jobs/" + id + "/video", {{"Range", "bytes=0-99"}});
  ASSERT_TRUE(range);
  EXPECT_EQ(range->status, 206);
  EXPECT_EQ(range->body, mp4->body.substr(0, 100));
  // ...also ranges that do not start at 0 (a browser fetches the MP4's index at the end this
  // way), each with exactly one Content-Range.
  const std::size_t size = mp4->body.size();
  auto tail = c.Get("/api/v1/jobs/" + id + "/video",
                    {{"Range", "bytes=" + std::to_string(size - 1000) + "-"}});
  ASSERT_TRUE(tail);
  EXPECT_EQ(tail->status, 206);
  EXPECT_EQ(tail->body, mp4->body.substr(size - 1000));
  EXPECT_EQ(tail->get_header_value_count("Content-Range"), 1u);
  EXPECT_EQ(tail->get_header_value("Content-Range"), "bytes " + std::to_string(size - 1000) + "-" +
                                                         std::to_string(size - 1) + "/" +
                                                         std::to_string(size));

  auto result = c.Get("/api/v1/jobs/" + id + "/result");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200);
  const json r = json::parse(result->body);
  ASSERT_EQ(static_cast<std::int64_t>(r["frames"].size()), in->frame_count());
  // Tracks keep their id from frame to frame: the same id on overlapping boxes.
  int continued = 0;
  int tracked = 0;
  for (std::size_t k = 0; k + 1 < r["frames"].size(); ++k) {
    const json& a = r["frames"][k];
    const json& b = r["frames"][k + 1];
    ASSERT_EQ(a["index"], k);
    ASSERT_EQ(a["status"], "ok") << a.dump();
    std::map<std::int64_t, json> boxes;
    for (const json& d : a["detections"]) {
      if (d.contains("track_id")) {
        boxes[d["track_id"].get<std::int64_t>()] = d["box"];
        ++tracked;
      }
    }
    for (const json& d : b["detections"]) {
      if (!d.contains("track_id")) continue;
      const auto it = boxes.find(d["track_id"].get<std::int64_t>());
      if (it != boxes.end() && Iou(it->second, d["box"]) > 0.5) ++continued;
    }
  }
  EXPECT_GT(tracked, 0);
  // cars.mp4 has several cars in view throughout: most frames continue some track.
  EXPECT_GT(continued, static_cast<int>(in->frame_count()));
}

// draw=0: per-frame results only. No MP4 is written (its encoder costs more CPU per frame than
// the forward pass), the job says so, and its video route answers 404 naming the reason.
TEST_F(VideoJobTest, AResultsOnlyJobWritesNoVideo) {
  const fs::path source = testing::MediaPath("cars.mp4");
  auto in = video::VideoFileReader::Open(source.string());
  ASSERT_TRUE(in.has_value()) << in.error().ToString();
  auto c = Client();
  auto posted = c.Post("/api/v1/jobs?model=yolox_nano&draw=0", ReadAll(source), "video/mp4");
  ASSERT_TRUE(posted);
  ASSERT_EQ(posted->status, 202) << posted->body;
  const json accepted = json::parse(posted->body);
  const std::string id = accepted.value("id", "");
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(accepted.value("annotated", true), false) << accepted.dump();
  EXPECT_FALSE(accepted["links"].contains("video")) << accepted.dump();

  const json job = WaitForState(id, "done");
  EXPECT_EQ(job.value("annotated", true), false) << job.dump();
  EXPECT_FALSE(job["links"].contains("video")) << job.dump();
  EXPECT_TRUE(job["links"].contains("result")) << job.dump();
  EXPECT_EQ(job["progress"]["frames_done"], in->frame_count());

  auto video = c.Get("/api/v1/jobs/" + id + "/video");
  ASSERT_TRUE(video);
  EXPECT_EQ(video->status, 404) << video->body;
  EXPECT_NE(video->body.find("draw=0"), std::string::npos) << video->body;

  auto result = c.Get("/api/v1/jobs/" + id + "/result");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200);
  const json r = json::parse(result->body);
  ASSERT_EQ(static_cast<std::int64_t>(r["frames"].size()), in->frame_count());
  std::size_t detections = 0;
  for (const json& f : r["frames"]) {
    ASSERT_EQ(f["status"], "ok") << f.dump();
    for (const json& d : f["detections"]) {
      ++detections;
      // In the video's own pixels.
      EXPECT_LE(d["box"]["x"].get<double>() + d["box"]["width"].get<double>(), in->width() + 1.0);
      EXPECT_LE(d["box"]["y"].get<double>() + d["box"]["height"].get<double>(), in->height() + 1.0);
    }
  }
  EXPECT_GT(detections, static_cast<std::size_t>(in->frame_count()));  // several cars a frame

  // Nothing was encoded: no MP4 of this job anywhere in the data folder.
  for (const auto& entry : fs::recursive_directory_iterator(*dir_ / "data")) {
    const std::string name = entry.path().filename().string();
    EXPECT_FALSE(name.starts_with(id) && name.ends_with(".mp4")) << entry.path();
  }
}

TEST_F(VideoJobTest, NotAVideoIs415AndATruncatedMp4Is400) {
  auto c = Client();
  auto text = c.Post("/api/v1/jobs", "this is a text file, not a video\n", "video/mp4");
  ASSERT_TRUE(text);
  EXPECT_EQ(text->status, 415) << text->body;
  EXPECT_NE(text->body.find("neither an image"), std::string::npos) << text->body;

  const std::string cars = ReadAll(testing::MediaPath("cars.mp4"));
  auto truncated = c.Post("/api/v1/jobs", cars.substr(0, 300 * 1024), "video/mp4");
  ASSERT_TRUE(truncated);
  EXPECT_EQ(truncated->status, 400) << truncated->body;
  EXPECT_NE(truncated->body.find("truncated"), std::string::npos) << truncated->body;

  // Nothing else is disturbed: the next upload is served as usual.
  auto image = c.Post("/api/v1/detect?model=yolox_nano", ReadAll(testing::MediaPath("bus.jpg")),
                      "image/jpeg");
  ASSERT_TRUE(image);
  EXPECT_EQ(image->status, 200) << image->body;
}

TEST_F(VideoJobTest, CancelStopsARunningJobAndImagesStillWork) {
  const std::string id = Submit(ReadAll(testing::MediaPath("vtest.avi")), "video/x-msvideo");
  ASSERT_FALSE(id.empty());
  json job;
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        job = Job(id);
        const std::string state = job.value("state", "");
        return job["progress"].value("frames_done", 0) >= 3 ||
               (state != "running" && state != "queued");
      },
      kJobTimeout));
  ASSERT_EQ(job["state"], "running") << job.dump();
  auto c = Client();
  auto cancelled = c.Delete("/api/v1/jobs/" + id);
  ASSERT_TRUE(cancelled);
  ASSERT_EQ(cancelled->status, 200) << cancelled->body;
  EXPECT_EQ(json::parse(cancelled->body)["state"], "cancelled");
  const json after = WaitForState(id, "cancelled", 30s);
  EXPECT_LT(after["progress"]["frames_done"].get<int>(), 795);
  auto video = c.Get("/api/v1/jobs/" + id + "/video");
  ASSERT_TRUE(video);
  EXPECT_EQ(video->status, 409);

  const std::string bus = ReadAll(testing::MediaPath("bus.jpg"));
  auto image = c.Post("/api/v1/detect?model=yolox_nano", bus, "image/jpeg");
  ASSERT_TRUE(image);
  ASSERT_EQ(image->status, 200) << image->body;
  EXPECT_FALSE(json::parse(image->body)["detections"].empty());
}

TEST(DetectVideoTest, DetectWritesAnAnnotatedMp4AndShowsProgress) {
  KADR_REQUIRE_TEST_DATA();
  const fs::path dir = testing::MakeTempDir();
  // A short clip of cars.mp4, at a third of its size.
  const fs::path clip = dir / "clip.mp4";
  {
    auto in = video::VideoFileReader::Open(testing::MediaPath("cars.mp4").string());
    ASSERT_TRUE(in.has_value());
    auto out =
        video::Mp4Writer::Open(clip.string(), in->fps(), {in->width() / 3, in->height() / 3});
    ASSERT_TRUE(out.has_value());
    cv::Mat frame;
    for (int i = 0; i < 15 && *in->Read(frame); ++i) ASSERT_TRUE(out->Write(frame).ok());
    ASSERT_TRUE(out->Close().ok());
  }
  const fs::path annotated = dir / "annotated.mp4";
  ChildProcess detect({KADR_BINARY, "--models-dir", (testing::TestDataDir() / "models").string(),
                       "detect", "-m", "yolox_nano", "--output", annotated.string(), clip.string()},
                      dir / "detect.log");
  ASSERT_TRUE(testing::WaitUntil([&] { return !detect.Running(); }, 120s)) << detect.Log();
  EXPECT_EQ(detect.Stop(0ms), 0) << detect.Log();
  const std::string log = detect.Log();
  EXPECT_NE(log.find("15/15 frames"), std::string::npos) << log;
  EXPECT_NE(log.find("annotated video: " + annotated.string()), std::string::npos) << log;
  auto reader = video::VideoFileReader::Open(annotated.string());
  ASSERT_TRUE(reader.has_value()) << reader.error().ToString();
  EXPECT_EQ(reader->frame_count(), 15);
  EXPECT_NEAR(reader->fps(), 30.0, 0.01);
}

}  // namespace
}  // namespace kadr
