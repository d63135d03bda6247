#include <string>

#include <gtest/gtest.h>

#include "capture/frame_source.h"

namespace kadr::capture {
namespace {

TEST(RedactUrlTest, ReplacesUserAndPassword) {
  EXPECT_EQ(RedactUrl("rtsp://admin:hunter2@10.0.0.5:554/stream1"),
            "rtsp://***@10.0.0.5:554/stream1");
  EXPECT_EQ(RedactUrl("http://user@cam.local/video.mjpg"), "http://***@cam.local/video.mjpg");
}

TEST(RedactUrlTest, LeavesUrlsWithoutCredentialsAndPlainTextAlone) {
  EXPECT_EQ(RedactUrl("rtsp://10.0.0.5/stream1"), "rtsp://10.0.0.5/stream1");
  EXPECT_EQ(RedactUrl("/dev/video0"), "/dev/video0");
  EXPECT_EQ(RedactUrl("/data/clip@2x.mp4"), "/data/clip@2x.mp4");
  EXPECT_EQ(RedactUrl(""), "");
}

TEST(RedactUrlTest, PasswordsWithReservedCharactersNeverLeak) {
  // '@', '/', ':' and '?' in an unescaped password: everything up to the last '@' goes.
  for (const std::string url :
       {"rtsp://user:p@ss@host:8554/cam", "rtsp://user:pa/ss@host:8554/cam",
        "rtsp://user:a:b:c@host/cam", "rtsp://user:pa?ss@host/cam", "RTSP://user:s3cr3t@HOST/x"}) {
    const std::string r = RedactUrl(url);
    EXPECT_EQ(r.find("ss@"), std::string::npos) << r;
    EXPECT_EQ(r.find("s3cr3t"), std::string::npos) << r;
    EXPECT_EQ(r.find("user"), std::string::npos) << r;
    EXPECT_NE(r.find("***@"), std::string::npos) << r;
  }
  EXPECT_EQ(RedactUrl("rtsp://user:p@ss@host:8554/cam"), "rtsp://***@host:8554/cam");
}

TEST(RedactUrlTest, RedactsSecretQueryParameters) {
  EXPECT_EQ(RedactUrl("http://cam/video.cgi?user=admin&password=hunter2&res=hd"),
            "http://cam/video.cgi?user=admin&password=***&res=hd");
  EXPECT_EQ(RedactUrl("https://h/s?access_token=abc#frag"), "https://h/s?access_token=***#frag");
}

TEST(RedactUrlTest, RedactsEveryUrlInsideText) {
  EXPECT_EQ(RedactUrl("cannot open 'rtsp://a:b@h1/x' or \"http://c:d@h2/y\": refused"),
            "cannot open 'rtsp://***@h1/x' or \"http://***@h2/y\": refused");
  EXPECT_EQ(RedactUrl("rtsp://a:b@h1/x rtsp://c:d@h2/y"), "rtsp://***@h1/x rtsp://***@h2/y");
}

TEST(ParseSourceTest, ClassifiesSources) {
  auto dev = ParseSource("/dev/video0");
  ASSERT_TRUE(dev.has_value());
  EXPECT_EQ(dev->kind, SourceKind::kDevice);

  auto file = ParseSource("file:///tmp/a.mp4");
  ASSERT_TRUE(file.has_value());
  EXPECT_EQ(file->kind, SourceKind::kFile);
  EXPECT_EQ(file->uri, "/tmp/a.mp4");
  auto path = ParseSource("/tmp/a.mp4");
  ASSERT_TRUE(path.has_value());
  EXPECT_EQ(path->kind, SourceKind::kFile);

  auto rtsp = ParseSource("rtsp://u:p@cam.local:8554/live");
  ASSERT_TRUE(rtsp.has_value());
  EXPECT_EQ(rtsp->kind, SourceKind::kRtsp);
  EXPECT_EQ(rtsp->host, "cam.local");
  EXPECT_EQ(rtsp->port, 8554);
  EXPECT_EQ(rtsp->uri, "rtsp://u:p@cam.local:8554/live");
  EXPECT_EQ(rtsp->redacted, "rtsp://***@cam.local:8554/live");

  auto http = ParseSource("http://[::1]/mjpeg");
  ASSERT_TRUE(http.has_value());
  EXPECT_EQ(http->kind, SourceKind::kHttp);
  EXPECT_EQ(http->host, "::1");
  EXPECT_EQ(http->port, 80);
  EXPECT_EQ(ParseSource("rtsp://h/x")->port, 554);
  EXPECT_EQ(ParseSource("https://h/x")->port, 443);
}

TEST(ParseSourceTest, RejectsWhatItCannotRead) {
  for (const std::string bad : {"", "video.mp4", "udp://239.0.0.1:1234", "rtsp:///path",
                                "rtsp://host:99999/x", "rtsp://host:abc/x", "file://otherhost/x"}) {
    auto r = ParseSource(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument) << bad;
  }
  // The message names the problem and keeps credentials out.
  auto r = ParseSource("rtsp://admin:hunter2@host:0/x");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("bad port"), std::string::npos) << r.error().message();
  EXPECT_EQ(r.error().message().find("hunter2"), std::string::npos) << r.error().message();
}

// Regression (issue 16): FFmpeg's own protocols read files and sockets of the host; only
// rtsp, rtsps, http, https, file paths and devices are sources (the protocol allow-list of
// InstallFfmpegAllowLists is the second wall).
TEST(ParseSourceTest, RefusesFfmpegProtocolsAndOtherSchemes) {
  for (const std::string bad : {"concat:/etc/passwd|/etc/hosts",
                                "concatf:/tmp/list.txt",
                                "data:text/plain,hello",
                                "subfile,,start,0,end,0,,:/etc/passwd",
                                "pipe:0",
                                "fd:3",
                                "tcp://127.0.0.1:22",
                                "udp://127.0.0.1:53",
                                "ftp://ftp.example/x.mp4",
                                "gopher://h/x",
                                "unix:///run/x.sock",
                                "hls+http://h/x.m3u8",
                                "crypto:/etc/passwd",
                                "cache:http://h/x",
                                "async:/etc/passwd",
                                "sftp://h/x",
                                "srt://h:1",
                                "rtmp://h/live",
                                "file:/etc/passwd",
                                "FILE:///x"}) {
    auto r = ParseSource(bad);
    if (bad == "FILE:///x") {  // a file:// URL in capitals is a file, for the policy to judge
      ASSERT_TRUE(r.has_value());
      EXPECT_EQ(r->kind, SourceKind::kFile);
      continue;
    }
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace kadr::capture
