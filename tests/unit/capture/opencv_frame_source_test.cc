#include "capture/opencv_frame_source.h"

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/videoio.hpp>

#include "support/child_process.h"
#include "support/ports.h"
#include "support/test_data.h"

namespace kadr::capture {
namespace {

// A short MJPEG AVI whose frames have distinct brightness (10, 20, ...).
std::filesystem::path WriteVideo(const std::filesystem::path& dir, int frames) {
  const auto path = dir / "clip.avi";
  cv::VideoWriter w(path.string(), cv::CAP_FFMPEG, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'),
                    10.0, cv::Size(64, 48));
  EXPECT_TRUE(w.isOpened());
  for (int i = 0; i < frames; ++i) {
    w.write(cv::Mat(48, 64, CV_8UC3, cv::Scalar::all(10.0 * (i + 1))));
  }
  w.release();
  return path;
}

std::unique_ptr<FrameSource> Make(const std::string& source, SourceOptions o = {}) {
  auto s = MakeOpenCvFrameSource(source, o);
  EXPECT_TRUE(s.has_value()) << s.error().ToString();
  return s.has_value() ? std::move(*s) : nullptr;
}

TEST(OpenCvFrameSourceTest, MissingDeviceIsNotFound) {
  auto s = Make("/dev/video99");
  const Status st = s->Open();
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_EQ(st.message(), "no such device /dev/video99");
}

TEST(OpenCvFrameSourceTest, MissingFileIsNotFound) {
  const auto dir = testing::MakeTempDir();
  auto s = Make((dir / "nope.mp4").string());
  const Status st = s->Open();
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("no such file"), std::string::npos) << st.message();
}

TEST(OpenCvFrameSourceTest, TextFileIsNotAVideo) {
  const auto dir = testing::MakeTempDir();
  const auto path = dir / "notes.txt";
  std::ofstream(path) << "these are not the frames you are looking for\n";
  auto s = Make(path.string());
  const Status st = s->Open();
  EXPECT_EQ(st.code(), StatusCode::kUnsupported) << st.ToString();
  EXPECT_NE(st.message().find("not a video"), std::string::npos) << st.message();
}

TEST(OpenCvFrameSourceTest, FileEndsWithoutLoop) {
  const auto dir = testing::MakeTempDir();
  auto s = Make("file://" + WriteVideo(dir, 5).string());
  ASSERT_TRUE(s->Open().ok());
  EXPECT_EQ(s->info().width, 64);
  EXPECT_EQ(s->info().height, 48);
  EXPECT_NEAR(s->info().fps, 10.0, 0.01);
  EXPECT_FALSE(s->info().live);
  int frames = 0;
  while (true) {
    auto f = s->Read();
    ASSERT_TRUE(f.has_value()) << f.error().ToString();
    if (f->end_of_stream) break;
    ASSERT_EQ(f->image.type(), CV_8UC3);
    ++frames;
    ASSERT_LE(frames, 5);
  }
  EXPECT_EQ(frames, 5);
}

TEST(OpenCvFrameSourceTest, LoopedFileStartsAgainAtTheEnd) {
  const auto dir = testing::MakeTempDir();
  SourceOptions o;
  o.loop = true;
  auto s = Make(WriteVideo(dir, 5).string(), o);
  ASSERT_TRUE(s->Open().ok());
  std::vector<double> brightness;
  for (int i = 0; i < 12; ++i) {
    auto f = s->Read();
    ASSERT_TRUE(f.has_value()) << f.error().ToString();
    ASSERT_FALSE(f->end_of_stream);
    brightness.push_back(cv::mean(f->image)[0]);
  }
  // Frames 0..4, then 0..4 again, then 0, 1: the 6th frame is the first one again.
  EXPECT_NEAR(brightness[5], brightness[0], 3.0);
  EXPECT_NEAR(brightness[10], brightness[0], 3.0);
  EXPECT_GT(brightness[4], brightness[0] + 20);
}

// An HTTP MJPEG camera (multipart/x-mixed-replace JPEGs; tests/support/mjpeg_server.py
// serving frames made by ffmpeg): the source opens as a live one and delivers decoded frames
// of the served size.
TEST(OpenCvFrameSourceTest, HttpMjpegSourceDeliversLiveFrames) {
  for (const char* tool : {"/usr/bin/ffmpeg", "/usr/bin/python3"}) {
    if (!std::filesystem::exists(tool)) {
      GTEST_SKIP() << tool << " not installed (scripts/setup-debian.sh installs it)";
    }
  }
  const auto dir = testing::MakeTempDir();
  const auto frames = dir / "frames";
  std::filesystem::create_directories(frames);
  testing::ChildProcess make(
      {"/usr/bin/ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10",
       "-frames:v", "10", (frames / "f%02d.jpg").string()},
      dir / "ffmpeg.log");
  ASSERT_TRUE(make.started());
  for (int i = 0; i < 300 && make.Running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(make.Running());
  ASSERT_TRUE(WIFEXITED(make.wait_status()) && WEXITSTATUS(make.wait_status()) == 0)
      << make.LogTail();
  const int port = testing::UnusedLoopbackPort();
  testing::ChildProcess server(
      {"/usr/bin/python3", KADR_SOURCE_DIR "/tests/support/mjpeg_server.py", std::to_string(port),
       frames.string(), "10"},
      dir / "server.log");
  ASSERT_TRUE(server.started());
  ASSERT_TRUE(server.WaitForLog("ready", std::chrono::seconds(10))) << server.LogTail();
  SourceOptions o;
  o.open_timeout = std::chrono::milliseconds(3000);
  o.read_timeout = std::chrono::milliseconds(3000);
  auto s = Make("http://127.0.0.1:" + std::to_string(port) + "/cam.mjpg", o);
  const Status opened = s->Open();
  ASSERT_TRUE(opened.ok()) << opened.ToString() << "\n" << server.LogTail();
  EXPECT_TRUE(s->info().live);
  for (int i = 0; i < 3; ++i) {
    auto f = s->Read();
    ASSERT_TRUE(f.has_value()) << f.error().ToString();
    ASSERT_FALSE(f->end_of_stream);
    EXPECT_EQ(f->image.cols, 320);
    EXPECT_EQ(f->image.rows, 240);
    EXPECT_EQ(f->image.type(), CV_8UC3);
  }
}

TEST(OpenCvFrameSourceTest, UnreachableRtspFailsWithHostPortAndReason) {
  const int port = testing::UnusedLoopbackPort();
  SourceOptions o;
  o.open_timeout = std::chrono::milliseconds(2000);
  auto s = Make("rtsp://admin:hunter2@127.0.0.1:" + std::to_string(port) + "/cam", o);
  const Status st = s->Open();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("127.0.0.1:" + std::to_string(port)), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("refused"), std::string::npos) << st.message();
  EXPECT_EQ(st.message().find("hunter2"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("rtsp://***@127.0.0.1"), std::string::npos) << st.message();
}

TEST(OpenCvFrameSourceTest, UnknownHostIsReported) {
  auto s = Make("rtsp://no-such-host.invalid/cam");
  const Status st = s->Open();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("cannot resolve host 'no-such-host.invalid'"), std::string::npos)
      << st.message();
}

TEST(OpenCvFrameSourceTest, ReadBeforeOpenIsAnError) {
  auto s = Make("/tmp/whatever.mp4");
  auto f = s->Read();
  ASSERT_FALSE(f.has_value());
  EXPECT_EQ(f.error().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kadr::capture
