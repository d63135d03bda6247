// SourcePolicy: what stream sources the operator allows (issue 16, "stream sources"). Every
// attack of the issue that the policy answers without opening anything: files outside the
// allowed directories (also through `..` and symlinks, with no file-existence oracle),
// devices, loopback / link-local / metadata hosts in every notation, and the allow-lists.
#include "capture/source_policy.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "support/test_data.h"

namespace kadr::capture {
namespace {

namespace fs = std::filesystem;

std::shared_ptr<const SourcePolicy> Policy(const SourcePolicyOptions& o) {
  auto p = SourcePolicy::Create(o);
  EXPECT_TRUE(p.has_value()) << p.error().ToString();
  return p.has_value() ? *p : std::make_shared<const SourcePolicy>();
}

// Parses and checks `source`; the status of the check (or of the parse).
Result<SourceLocation> CheckSource(const SourcePolicy& policy, const std::string& source) {
  ASSIGN_OR_RETURN(SourceLocation location, ParseSource(source));
  return policy.Check(location);
}

Status CheckError(const SourcePolicy& policy, const std::string& source) {
  auto r = CheckSource(policy, source);
  return r.has_value() ? Status::Ok() : r.error();
}

class SourcePolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = kadr::testing::MakeTempDir();
    allowed_ = root_ / "media";
    fs::create_directories(allowed_ / "sub");
    std::ofstream(allowed_ / "clip.mp4") << "x";
    std::ofstream(root_ / "secret.txt") << "secret";
    fs::create_directories(root_ / "media2");
    std::ofstream(root_ / "media2" / "clip.mp4") << "x";
  }

  fs::path root_;
  fs::path allowed_;
};

TEST_F(SourcePolicyTest, FilesAndDevicesAreOffByDefault) {
  const SourcePolicy policy;
  for (const std::string& source :
       {(allowed_ / "clip.mp4").string(), std::string("/etc/passwd"),
        std::string("/no/such/file.mp4"), std::string("file:///etc/passwd")}) {
    const Status s = CheckError(policy, source);
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << source;
    EXPECT_EQ(s.message(),
              "file sources are off: the operator allows directories with --source-dir")
        << source;
  }
  for (const std::string source : {"/dev/video0", "/dev/zero", "/dev/video9"}) {
    const Status s = CheckError(policy, source);
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << source;
    EXPECT_EQ(s.message(),
              "device sources are off: the operator allows devices with --source-device");
  }
}

TEST_F(SourcePolicyTest, FilesOnlyInsideTheAllowedDirectoriesWithNoExistenceOracle) {
  const auto policy = Policy({.dirs = {allowed_.string()}});
  auto inside = CheckSource(*policy, (allowed_ / "clip.mp4").string());
  ASSERT_TRUE(inside.has_value()) << inside.error().ToString();
  EXPECT_EQ(inside->uri, (fs::canonical(allowed_) / "clip.mp4").string());
  // A missing file inside is the operator's business: allowed here, "no such file" later.
  EXPECT_TRUE(CheckSource(*policy, (allowed_ / "sub" / "none.mp4").string()).has_value());
  EXPECT_TRUE(CheckSource(*policy, "file://" + (allowed_ / "clip.mp4").string()).has_value());

  // Outside: one message whether the path exists or not.
  for (const std::string& outside :
       {(root_ / "secret.txt").string(), (root_ / "no-such.txt").string(),
        std::string("/etc/passwd"), std::string("/etc/no-such-file"),
        (root_ / "media2" / "clip.mp4").string(),  // a sibling that shares the prefix
        (root_ / "no-such-dir" / "x.mp4").string()}) {
    const Status s = CheckError(*policy, outside);
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << outside;
    EXPECT_EQ(s.message(), outside + " is outside the allowed source directories (--source-dir)");
  }
  const Status url = CheckError(*policy, "file:///etc/passwd");
  EXPECT_EQ(url.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(url.message(), "/etc/passwd is outside the allowed source directories (--source-dir)");
}

TEST_F(SourcePolicyTest, DotDotCannotLeaveAnAllowedDirectory) {
  const auto policy = Policy({.dirs = {allowed_.string()}});
  for (const std::string& escape : {(allowed_ / ".." / "secret.txt").string(),
                                    (allowed_ / "sub" / ".." / ".." / "secret.txt").string(),
                                    (allowed_ / "no-such" / ".." / ".." / "secret.txt").string(),
                                    allowed_.string() + "/../../../../../../etc/passwd",
                                    "file://" + allowed_.string() + "/../secret.txt"}) {
    const Status s = CheckError(*policy, escape);
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << escape;
    EXPECT_NE(s.message().find("is outside the allowed source directories"), std::string::npos)
        << s.message();
  }
  // `..` that stays inside is fine, and resolved.
  auto inside = CheckSource(*policy, (allowed_ / "sub" / ".." / "clip.mp4").string());
  ASSERT_TRUE(inside.has_value());
  EXPECT_EQ(inside->uri, (fs::canonical(allowed_) / "clip.mp4").string());
}

TEST_F(SourcePolicyTest, SymlinksCannotLeaveAnAllowedDirectoryNorShowWhereTheyPoint) {
  fs::create_symlink("/etc/passwd", allowed_ / "passwd.mp4");
  fs::create_symlink(root_ / "secret.txt", allowed_ / "secret.mp4");
  fs::create_directory_symlink("/etc", allowed_ / "etc");
  fs::create_symlink("/dev/zero", allowed_ / "zero.mp4");
  const auto policy = Policy({.dirs = {allowed_.string()}});
  for (const fs::path& link :
       {allowed_ / "passwd.mp4", allowed_ / "secret.mp4", allowed_ / "etc" / "passwd",
        allowed_ / "etc" / "no-such", allowed_ / "zero.mp4"}) {
    const Status s = CheckError(*policy, link.string());
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << link;
    EXPECT_EQ(s.message(),
              link.string() + " is outside the allowed source directories (--source-dir)");
  }
  // A link that stays inside is opened at its target.
  fs::create_symlink(allowed_ / "clip.mp4", allowed_ / "sub" / "alias.mp4");
  auto alias = CheckSource(*policy, (allowed_ / "sub" / "alias.mp4").string());
  ASSERT_TRUE(alias.has_value());
  EXPECT_EQ(alias->uri, (fs::canonical(allowed_) / "clip.mp4").string());
  EXPECT_EQ(alias->redacted, (allowed_ / "sub" / "alias.mp4").string());
}

TEST_F(SourcePolicyTest, AnAllowedDirectoryThatIsASymlinkIsItsTarget) {
  fs::create_directory_symlink(allowed_, root_ / "media-link");
  const auto policy = Policy({.dirs = {(root_ / "media-link").string()}});
  EXPECT_TRUE(CheckSource(*policy, (allowed_ / "clip.mp4").string()).has_value());
  EXPECT_TRUE(CheckSource(*policy, (root_ / "media-link" / "clip.mp4").string()).has_value());
  EXPECT_FALSE(CheckSource(*policy, (root_ / "secret.txt").string()).has_value());
}

TEST_F(SourcePolicyTest, DevicesOnlyTheAllowedOnes) {
  const auto policy = Policy({.devices = {"/dev/video0"}});
  auto ok = CheckSource(*policy, "/dev/video0");
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->uri, "/dev/video0");
  for (const std::string source :
       {"/dev/video9", "/dev/zero", "/dev/../etc/passwd", "/dev/video0/../sda", "/dev/mem"}) {
    const Status s = CheckError(*policy, source);
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << source;
    EXPECT_EQ(s.message(), source + " is not an allowed device (--source-device)");
  }
}

TEST_F(SourcePolicyTest, CreateRefusesWhatItCannotEnforce) {
  EXPECT_EQ(SourcePolicy::Create({.dirs = {(root_ / "none").string()}}).error().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(SourcePolicy::Create({.dirs = {(allowed_ / "clip.mp4").string()}}).error().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(SourcePolicy::Create({.dirs = {""}}).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SourcePolicy::Create({.devices = {"video0"}}).error().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(SourcePolicy::Create({.devices = {"/etc/passwd"}}).error().code(),
            StatusCode::kInvalidArgument);
  for (const std::string bad : {"a b", "10.0.0.0/33", "10.0.0.0/x", "::1/129", "x/8", ""}) {
    auto p = SourcePolicy::Create({.hosts = {bad}});
    ASSERT_FALSE(p.has_value()) << bad;
    EXPECT_EQ(p.error().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(SourcePolicyHostTest, DefaultRefusesLoopbackUnspecifiedLinkLocalAndMetadata) {
  const SourcePolicy policy;
  for (const std::string address :
       {"127.0.0.1", "127.5.6.7", "0.0.0.0", "0.1.2.3", "169.254.169.254", "169.254.0.1",
        "100.100.100.200", "::1", "::", "fe80::1", "fe80::1%eth0", "febf::1", "fd00:ec2::254",
        "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:0.0.0.0", "::127.0.0.1",
        "::ffff:7f00:1"}) {
    const Status s = policy.CheckAddress(address, address);
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << address;
    EXPECT_NE(s.message().find("which network sources may not reach"), std::string::npos)
        << s.message();
  }
  for (const std::string address : {"10.0.0.5", "192.168.1.20", "172.16.0.1", "8.8.8.8",
                                    "100.64.0.1", "2001:db8::1", "fd00::1", "fec0::1"}) {
    EXPECT_TRUE(policy.CheckAddress(address, address).ok()) << address;
  }
  const Status named = policy.CheckAddress("evil.example", "127.0.0.1");
  EXPECT_EQ(named.message(),
            "source host 'evil.example' resolves to a loopback address, which network sources "
            "may not reach (the operator allows hosts with --source-host)");
  EXPECT_EQ(policy.CheckAddress("x", "not-an-address").code(), StatusCode::kInvalidArgument);
}

TEST(SourcePolicyHostTest, AddressLiteralsInEveryNotationAreRefusedBeforeAnyConnection) {
  const SourcePolicy policy;
  for (const std::string url :
       {"http://127.0.0.1:8080/", "http://127.1/", "http://2130706433/", "http://0x7f.1/",
        "http://0177.0.0.1/", "rtsp://[::1]:554/x", "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/", "http://0.0.0.0:9092/", "http://0/",
        "http://169.254.169.254/latest/meta-data", "https://169.254.169.254/",
        "http://[fd00:ec2::254]/latest/meta-data", "http://[fe80::1]/",
        "rtsp://user:pw@127.0.0.1/cam"}) {
    const Status s = CheckError(policy, url);
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << url << ": " << s.ToString();
    EXPECT_EQ(s.message().find("pw"), std::string::npos) << s.message();
  }
  // Names are checked when resolved; private LAN addresses stay allowed.
  for (const std::string url : {"rtsp://cam.example/x", "http://10.0.0.5/mjpg",
                                "rtsp://192.168.1.64:554/Streaming/Channels/101"}) {
    EXPECT_TRUE(CheckSource(policy, url).has_value()) << url;
  }
}

TEST(SourcePolicyHostTest, AnAllowListAllowsOnlyItsHostsLoopbackIncluded) {
  const auto policy = Policy({.hosts = {"127.0.0.1", "10.1.0.0/16", "Cam.Local", "fd00::/8",
                                        "[::1]", "::ffff:192.168.0.0/112"}});
  EXPECT_TRUE(policy->CheckAddress("127.0.0.1", "127.0.0.1").ok());
  EXPECT_TRUE(policy->CheckAddress("x", "::ffff:127.0.0.1").ok());
  EXPECT_TRUE(policy->CheckAddress("::1", "::1").ok());
  EXPECT_TRUE(policy->CheckAddress("x", "10.1.200.3").ok());
  EXPECT_TRUE(policy->CheckAddress("x", "fd12::7").ok());
  EXPECT_TRUE(policy->CheckAddress("x", "192.168.3.4").ok());
  // A listed name may resolve anywhere, loopback and metadata included.
  EXPECT_TRUE(policy->AllowsHostName("cam.local."));
  EXPECT_TRUE(policy->CheckAddress("CAM.local", "169.254.169.254").ok());
  for (const std::string address : {"127.0.0.2", "10.2.0.1", "8.8.8.8", "169.254.169.254",
                                    "fe80::1", "2001:db8::1", "192.169.0.1"}) {
    const Status s = policy->CheckAddress(address, address);
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << address;
    EXPECT_EQ(s.message(), "source host '" + address +
                               "' is not among the allowed source hosts (--source-host)");
  }
  EXPECT_TRUE(CheckSource(*policy, "http://127.0.0.1:1/x").has_value());
  EXPECT_TRUE(CheckSource(*policy, "rtsp://cam.local/x").has_value());
  EXPECT_EQ(CheckError(*policy, "http://169.254.169.254/").code(), StatusCode::kPermissionDenied);
  // Other names are checked when resolved (they may land in 10.1/16)...
  EXPECT_TRUE(CheckSource(*policy, "rtsp://other.example/x").has_value());
  // ...unless the list has no address at all.
  const auto names_only = Policy({.hosts = {"cam.local"}});
  EXPECT_EQ(CheckError(*names_only, "rtsp://other.example/x").code(),
            StatusCode::kPermissionDenied);
  EXPECT_TRUE(CheckSource(*names_only, "rtsp://cam.local/x").has_value());
}

TEST(FfmpegAllowListsTest, InstalledOnceWithTheAllowListsAndTcpForRtsp) {
  const std::string& value = InstallFfmpegAllowLists();
  EXPECT_EQ(&value, &InstallFfmpegAllowLists());
  const char* env = std::getenv("OPENCV_FFMPEG_CAPTURE_OPTIONS");
  ASSERT_NE(env, nullptr);
  EXPECT_EQ(value, env);
  EXPECT_NE(value.find("protocol_whitelist;file,http,https,tcp,tls,httpproxy"), std::string::npos);
  EXPECT_NE(value.find("format_whitelist;mov,mp4,matroska,webm,avi,mjpeg,mpjpeg,rtsp"),
            std::string::npos);
  EXPECT_NE(value.find("rtsp_transport;tcp"), std::string::npos);
  EXPECT_NE(value.find("max_redirects;0"), std::string::npos);
  for (const char* absent : {"tty", "image2", "concat", "hls", "data", "pipe", "subfile", "udp"}) {
    EXPECT_EQ(value.find(absent), std::string::npos) << absent;
  }
}

}  // namespace
}  // namespace kadr::capture
