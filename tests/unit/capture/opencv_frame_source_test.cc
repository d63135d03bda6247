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

std::shared_ptr<const SourcePolicy> Allow(const SourcePolicyOptions& o) {
  auto p = SourcePolicy::Create(o);
  EXPECT_TRUE(p.has_value()) << p.error().ToString();
  return p.has_value() ? *p : nullptr;
}

// Sources that the policy allows: files in `dir`, /dev/video99, loopback hosts.
SourceOptions Allowing(const std::filesystem::path& dir = {}) {
  SourceOptions o;
  SourcePolicyOptions p{.devices = {"/dev/video99"}, .hosts = {"127.0.0.1", "::1"}};
  if (!dir.empty()) p.dirs = {dir.string()};
  o.policy = Allow(p);
  return o;
}

std::unique_ptr<FrameSource> Make(const std::string& source, SourceOptions o) {
  auto s = MakeOpenCvFrameSource(source, o);
  EXPECT_TRUE(s.has_value()) << s.error().ToString();
  return s.has_value() ? std::move(*s) : nullptr;
}

bool Have(const char* tool) { return std::filesystem::exists(tool); }

// Runs a command to its end (at most 30 s); true when it exited 0.
bool RunToEnd(const std::vector<std::string>& argv, const std::filesystem::path& log) {
  testing::ChildProcess child(argv, log);
  if (!child.started()) return false;
  for (int i = 0; i < 300 && child.Running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return !child.Running() && WIFEXITED(child.wait_status()) &&
         WEXITSTATUS(child.wait_status()) == 0;
}

// An HTTP MJPEG camera (tests/support/mjpeg_server.py serving 320x240 frames made by ffmpeg)
// on a free loopback port; nullptr (with a failure) when it did not start.
std::unique_ptr<testing::ChildProcess> StartMjpegServer(const std::filesystem::path& dir,
                                                        int port) {
  const auto frames = dir / "frames";
  std::filesystem::create_directories(frames);
  EXPECT_TRUE(
      RunToEnd({"/usr/bin/ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i",
                "testsrc=size=320x240:rate=10", "-frames:v", "10", (frames / "f%02d.jpg").string()},
               dir / "ffmpeg.log"));
  auto server = std::make_unique<testing::ChildProcess>(
      std::vector<std::string>{"/usr/bin/python3", KADR_SOURCE_DIR "/tests/support/mjpeg_server.py",
                               std::to_string(port), frames.string(), "10"},
      dir / "server.log");
  EXPECT_TRUE(server->WaitForLog("ready", std::chrono::seconds(10))) << server->LogTail();
  return server;
}

// tests/support/hostile_http_server.py: a text page at any path, /redirect to `redirect`.
std::unique_ptr<testing::ChildProcess> StartHostileServer(const std::filesystem::path& dir,
                                                          int port,
                                                          const std::string& redirect = "") {
  auto server = std::make_unique<testing::ChildProcess>(
      std::vector<std::string>{"/usr/bin/python3",
                               KADR_SOURCE_DIR "/tests/support/hostile_http_server.py",
                               std::to_string(port), redirect},
      dir / ("hostile" + std::to_string(port) + ".log"));
  EXPECT_TRUE(server->WaitForLog("ready", std::chrono::seconds(10))) << server->LogTail();
  return server;
}

TEST(OpenCvFrameSourceTest, MissingDeviceIsNotFound) {
  auto s = Make("/dev/video99", Allowing());
  const Status st = s->Open();
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_EQ(st.message(), "no such device /dev/video99");
}

TEST(OpenCvFrameSourceTest, MissingFileIsNotFound) {
  const auto dir = testing::MakeTempDir();
  auto s = Make((dir / "nope.mp4").string(), Allowing(dir));
  const Status st = s->Open();
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("no such file"), std::string::npos) << st.message();
}

// Regression (issue 16): FFmpeg's tty demuxer rendered a mostly printable *.txt file as a
// video, so a text file (a copy of /etc/passwd) came back as a readable frame. The format
// allow-list leaves tty out: even inside an allowed directory a text file is not a video.
TEST(OpenCvFrameSourceTest, PrintableTextFileInAnAllowedDirIsNotAVideo) {
  const auto dir = testing::MakeTempDir();
  const auto path = dir / "passwd.txt";
  {
    std::ofstream out(path);
    for (int i = 0; i < 64; ++i) {
      out << "user" << i << ":x:" << 1000 + i << ":" << 1000 + i << ":Secret:/home/u:/bin/sh\n";
    }
  }
  auto s = Make(path.string(), Allowing(dir));
  const Status st = s->Open();
  EXPECT_EQ(st.code(), StatusCode::kUnsupported) << st.ToString();
  EXPECT_NE(st.message().find("not a video"), std::string::npos) << st.message();
}

TEST(OpenCvFrameSourceTest, FileEndsWithoutLoop) {
  const auto dir = testing::MakeTempDir();
  auto s = Make("file://" + WriteVideo(dir, 5).string(), Allowing(dir));
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
  SourceOptions o = Allowing(dir);
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
    if (!Have(tool)) GTEST_SKIP() << tool << " not installed (scripts/setup-debian.sh installs it)";
  }
  const auto dir = testing::MakeTempDir();
  const int port = testing::UnusedLoopbackPort();
  auto server = StartMjpegServer(dir, port);
  ASSERT_FALSE(HasFailure());
  SourceOptions o = Allowing();
  o.open_timeout = std::chrono::milliseconds(3000);
  o.read_timeout = std::chrono::milliseconds(3000);
  auto s = Make("http://127.0.0.1:" + std::to_string(port) + "/cam.mjpg", o);
  const Status opened = s->Open();
  ASSERT_TRUE(opened.ok()) << opened.ToString() << "\n" << server->LogTail();
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
  SourceOptions o = Allowing();
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
  auto s = Make("rtsp://no-such-host.invalid/cam", SourceOptions{});
  const Status st = s->Open();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("cannot resolve host 'no-such-host.invalid'"), std::string::npos)
      << st.message();
}

TEST(OpenCvFrameSourceTest, ReadBeforeOpenIsAnError) {
  const auto dir = testing::MakeTempDir();
  auto s = Make((dir / "whatever.mp4").string(), Allowing(dir));
  auto f = s->Read();
  ASSERT_FALSE(f.has_value());
  EXPECT_EQ(f.error().code(), StatusCode::kFailedPrecondition);
}

// Every container and stream kind kadr reads still opens under the FFmpeg allow-lists
// (InstallFfmpegAllowLists): H.264 in MP4, MOV and MKV, VP8 in WebM, MJPEG in AVI, MPEG-2 in
// MPEG-TS (the HTTP MJPEG camera above, and RTSP in tests/integration/camera_stream_test.cc).
TEST(OpenCvFrameSourceTest, EveryContainerKadrReadsOpensUnderTheAllowLists) {
  if (!Have("/usr/bin/ffmpeg")) GTEST_SKIP() << "ffmpeg not installed";
  const auto dir = testing::MakeTempDir();
  const std::vector<std::pair<std::string, std::vector<std::string>>> kinds = {
      {"clip.mp4", {"-c:v", "libx264", "-pix_fmt", "yuv420p"}},
      {"clip.mov", {"-c:v", "libx264", "-pix_fmt", "yuv420p"}},
      {"clip.mkv", {"-c:v", "libx264", "-pix_fmt", "yuv420p"}},
      {"clip.webm", {"-c:v", "libvpx"}},
      {"clip.avi", {"-c:v", "mjpeg"}},
      {"clip.ts", {"-c:v", "mpeg2video"}},
  };
  for (const auto& [name, codec] : kinds) {
    std::vector<std::string> argv = {
        "/usr/bin/ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10",
        "-frames:v",       "5"};
    argv.insert(argv.end(), codec.begin(), codec.end());
    argv.push_back((dir / name).string());
    ASSERT_TRUE(RunToEnd(argv, dir / (name + ".log"))) << name;
    auto s = Make((dir / name).string(), Allowing(dir));
    const Status opened = s->Open();
    ASSERT_TRUE(opened.ok()) << name << ": " << opened.ToString();
    EXPECT_EQ(s->info().width, 64) << name;
    auto f = s->Read();
    ASSERT_TRUE(f.has_value()) << name;
    EXPECT_FALSE(f->image.empty()) << name;
  }
}

// Regression (issue 16): an HTTP answer that is text (an admin page, a metadata service) came
// back as a video frame when the URL ended in ".txt" (FFmpeg's tty demuxer). The host is
// allowed here; the format allow-list refuses the text.
TEST(OpenCvFrameSourceTest, HttpTextAnswerIsNotAVideoEvenNamedTxt) {
  if (!Have("/usr/bin/python3")) GTEST_SKIP() << "python3 not installed";
  const auto dir = testing::MakeTempDir();
  const int port = testing::UnusedLoopbackPort();
  auto server = StartHostileServer(dir, port);
  ASSERT_FALSE(HasFailure());
  for (const std::string path : {"/x?x=.txt", "/notes.txt", "/latest/meta-data"}) {
    SourceOptions o = Allowing();
    o.open_timeout = std::chrono::milliseconds(3000);
    auto s = Make("http://127.0.0.1:" + std::to_string(port) + path, o);
    const Status opened = s->Open();
    EXPECT_FALSE(opened.ok()) << path;
    EXPECT_EQ(opened.code(), StatusCode::kUnavailable) << path << ": " << opened.ToString();
  }
  EXPECT_NE(server->Log().find("GET /x?x=.txt"), std::string::npos) << server->Log();
}

// Regression (issue 16): an allowed HTTP source could redirect FFmpeg to any host (loopback,
// metadata). Redirects are not followed (max_redirects 0), even to an allowed camera.
TEST(OpenCvFrameSourceTest, HttpRedirectsAreNotFollowed) {
  for (const char* tool : {"/usr/bin/ffmpeg", "/usr/bin/python3"}) {
    if (!Have(tool)) GTEST_SKIP() << tool << " not installed";
  }
  const auto dir = testing::MakeTempDir();
  const int camera_port = testing::UnusedLoopbackPort();
  auto camera = StartMjpegServer(dir, camera_port);
  const int port = testing::UnusedLoopbackPort();
  const std::string camera_url = "http://127.0.0.1:" + std::to_string(camera_port) + "/cam.mjpg";
  auto hostile = StartHostileServer(dir, port, camera_url);
  ASSERT_FALSE(HasFailure());
  SourceOptions o = Allowing();
  o.open_timeout = std::chrono::milliseconds(3000);
  o.read_timeout = std::chrono::milliseconds(3000);
  auto redirected = Make("http://127.0.0.1:" + std::to_string(port) + "/redirect", o);
  EXPECT_EQ(redirected->Open().code(), StatusCode::kUnavailable);
  auto direct = Make(camera_url, o);
  EXPECT_TRUE(direct->Open().ok());
}

TEST(OpenCvFrameSourceTest, LoopbackAndMetadataHostsAreRefusedByDefaultBeforeAnyConnection) {
  for (const std::string url : {"http://127.0.0.1:1/", "rtsp://[::1]:554/x",
                                "http://169.254.169.254/latest/meta-data", "http://2130706433/"}) {
    auto s = MakeOpenCvFrameSource(url, SourceOptions{});
    ASSERT_FALSE(s.has_value()) << url;
    EXPECT_EQ(s.error().code(), StatusCode::kPermissionDenied) << s.error().ToString();
  }
}

// A name that resolves to loopback is refused once resolved, before FFmpeg or a TCP
// connection reaches it.
TEST(OpenCvFrameSourceTest, NameResolvingToLoopbackIsRefusedWhenResolved) {
  if (!Have("/usr/bin/python3")) GTEST_SKIP() << "python3 not installed";
  const auto dir = testing::MakeTempDir();
  const int port = testing::UnusedLoopbackPort();
  auto server = StartHostileServer(dir, port);
  ASSERT_FALSE(HasFailure());
  auto s = Make("http://localhost:" + std::to_string(port) + "/x?x=.txt", SourceOptions{});
  const Status opened = s->Open();
  EXPECT_EQ(opened.code(), StatusCode::kPermissionDenied) << opened.ToString();
  EXPECT_NE(opened.message().find("source host 'localhost' resolves to a loopback address"),
            std::string::npos)
      << opened.message();
  // Listed by name, the same host is reached.
  SourceOptions named;
  named.policy = Allow({.hosts = {"localhost"}});
  named.open_timeout = std::chrono::milliseconds(3000);
  auto allowed = Make("http://localhost:" + std::to_string(port) + "/y", named);
  EXPECT_EQ(allowed->Open().code(), StatusCode::kUnavailable);  // reached; text is not a video
  EXPECT_EQ(server->Log().find("GET /x"), std::string::npos) << server->Log();
  EXPECT_NE(server->Log().find("GET /y"), std::string::npos) << server->Log();
}

TEST(OpenCvFrameSourceTest, FilesAndDevicesOutsideThePolicyAreRefused) {
  const auto dir = testing::MakeTempDir();
  for (const std::string& source :
       {std::string("/etc/passwd"), std::string("file:///etc/passwd"),
        (dir / ".." / "x.mp4").string(), std::string("/dev/zero"), std::string("/dev/video9")}) {
    auto s = MakeOpenCvFrameSource(source, Allowing(dir));
    ASSERT_FALSE(s.has_value()) << source;
    EXPECT_EQ(s.error().code(), StatusCode::kPermissionDenied) << s.error().ToString();
  }
}

}  // namespace
}  // namespace kadr::capture
