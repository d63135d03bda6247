// Access control end to end (issue 16): `kadr up --auth on` over HTTPS (a self-signed
// certificate made here) with a data dir in a temp dir, and the `kadr token` commands as
// separate processes sharing its token file. For every mutating route (POST detect, POST jobs,
// POST streams, DELETE jobs/{id}, DELETE streams/{id}) and the history (GET jobs, GET
// jobs/{id}): no token -> 401, viewer -> 403 on the mutating routes and 200 on the history,
// operator -> 403 on streams and deletes, admin -> allowed. Also: the first admin token printed
// once works and only its hash is in the 0600 file; a revoked token gets 401 at its next
// request; eleven wrong tokens get 429; a login over TLS sets a Secure session cookie that
// reads the history.
//
// Model: the built-in `null` (no files); the stream reads a small AVI written here.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "support/child_process.h"
#include "support/wait.h"

namespace kadr {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;
using testing::ChildProcess;

constexpr char kTokenPattern[] = "kadr_[0-9a-f]{12}_[0-9a-f]{64}";

// A self-signed certificate for 127.0.0.1 and localhost (P-256), written as PEM files.
bool WriteSelfSignedCert(const fs::path& cert, const fs::path& key) {
  EVP_PKEY* pkey = EVP_EC_gen("P-256");
  X509* x = X509_new();
  if (pkey == nullptr || x == nullptr) return false;
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
  X509_set_pubkey(x, pkey);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  X509_EXTENSION* san =
      X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
  bool ok = san != nullptr && X509_add_ext(x, san, -1) == 1 && X509_sign(x, pkey, EVP_sha256()) > 0;
  X509_EXTENSION_free(san);
  FILE* c = ok ? std::fopen(cert.c_str(), "w") : nullptr;
  ok = c != nullptr && PEM_write_X509(c, x) == 1;
  if (c != nullptr) std::fclose(c);
  FILE* k = ok ? std::fopen(key.c_str(), "w") : nullptr;
  ok = k != nullptr && PEM_write_PrivateKey(k, pkey, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  if (k != nullptr) std::fclose(k);
  X509_free(x);
  EVP_PKEY_free(pkey);
  return ok;
}

std::string WhitePng() {
  std::vector<std::uint8_t> out;
  cv::imencode(".png", cv::Mat(64, 64, CV_8UC3, cv::Scalar::all(255)), out);
  return {out.begin(), out.end()};
}

mode_t Mode(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class AccessControlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("kadr_access_it_" + std::to_string(getpid())));
    fs::remove_all(*dir_);
    fs::create_directories(*dir_ / "models");
    fs::create_directories(*dir_ / "media");
    ASSERT_TRUE(WriteSelfSignedCert(*dir_ / "cert.pem", *dir_ / "key.pem"));
    {
      cv::VideoWriter w((*dir_ / "media" / "clip.avi").string(),
                        cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 10, cv::Size(160, 120));
      ASSERT_TRUE(w.isOpened());
      for (int i = 0; i < 30; ++i) w.write(cv::Mat(120, 160, CV_8UC3, cv::Scalar::all(i * 8)));
    }
    up_ = new ChildProcess({KADR_BINARY,
                            "--models-dir",
                            (*dir_ / "models").string(),
                            "up",
                            "--http-port",
                            "0",
                            "--models",
                            "null",
                            "--data-dir",
                            (*dir_ / "data").string(),
                            "--instance-id",
                            "access-it",
                            "--auth",
                            "on",
                            "--tls-cert",
                            (*dir_ / "cert.pem").string(),
                            "--tls-key",
                            (*dir_ / "key.pem").string(),
                            "--source-dir",
                            (*dir_ / "media").string()},
                           *dir_ / "up.log");
    if (auto p = up_->WaitForLog(R"(kadr: web UI and API on https://127\.0\.0\.1:(\d+)/)", 90s)) {
      port_ = std::stoi(*p);
    }
    if (auto t =
            up_->WaitForLog(std::string("kadr: first admin token: (") + kTokenPattern + ")", 1s)) {
      admin_ = new std::string(*t);
    }
  }

  static void TearDownTestSuite() {
    if (up_ != nullptr) {
      EXPECT_EQ(up_->Stop(30s), 0) << "kadr up did not exit cleanly; log:\n" << up_->LogTail();
    }
    delete up_;
    delete admin_;
    fs::remove_all(*dir_);
    delete dir_;
  }

  void SetUp() override {
    ASSERT_GT(port_, 0) << "kadr up did not start over https; log:\n" << up_->Log();
    ASSERT_NE(admin_, nullptr) << "no first admin token printed; log:\n" << up_->Log();
    auto c = Client();
    ASSERT_TRUE(WaitUntil(
        [&] {
          auto r = c.Get("/readyz");  // public
          return r && r->status == 200;
        },
        90s))
        << "kadr up never became ready; log:\n"
        << up_->LogTail();
  }

  void TearDown() override {
    if (HasFailure()) std::cerr << "---- kadr up log (tail) ----\n" << up_->LogTail() << "\n";
  }

  static bool WaitUntil(const std::function<bool()>& f, std::chrono::milliseconds timeout) {
    return testing::WaitUntil(f, timeout);
  }

  // An HTTPS client that trusts only the test's certificate (and checks the name).
  static httplib::Client Client() {
    httplib::Client c("https://127.0.0.1:" + std::to_string(port_));
    c.set_ca_cert_path((*dir_ / "cert.pem").c_str());
    c.enable_server_certificate_verification(true);
    c.set_connection_timeout(5s);
    c.set_read_timeout(60s);
    return c;
  }

  static httplib::Headers As(const std::string& token) {
    if (token.empty()) return {};
    return {{"Authorization", "Bearer " + token}};
  }

  // `kadr token <args...>` on the server's data dir; its output (stdout and stderr).
  static std::string TokenCommand(const std::vector<std::string>& args) {
    static int n = 0;
    std::vector<std::string> argv = {KADR_BINARY, "token"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--data-dir", (*dir_ / "data").string()});
    const fs::path log = *dir_ / ("token" + std::to_string(++n) + ".log");
    ChildProcess p(argv, log);
    EXPECT_TRUE(testing::WaitUntil([&] { return !p.Running(); }, 30s)) << "kadr token hangs";
    EXPECT_TRUE(WIFEXITED(p.wait_status()) && WEXITSTATUS(p.wait_status()) == 0)
        << "kadr token " << args[0] << " failed:\n"
        << p.Log();
    return p.Log();
  }

  // A new token of `role` made by `kadr token create`.
  static std::string NewToken(const std::string& role, const std::string& name) {
    const std::string out = TokenCommand({"create", "--role", role, "--name", name});
    std::smatch m;
    const std::regex line(std::string("(^|\n)(") + kTokenPattern + ")\n");
    if (!std::regex_search(out, m, line)) {
      ADD_FAILURE() << "no token printed by `kadr token create`:\n" << out;
      return "";
    }
    return m[2];
  }

  static int Detect(const std::string& token) {
    auto r = Client().Post("/api/v1/detect?model=null", As(token), WhitePng(), "image/png");
    return r ? r->status : -1;
  }
  // POST /api/v1/jobs; the job's id when it was accepted.
  static std::pair<int, std::string> SubmitJob(const std::string& token) {
    auto r = Client().Post("/api/v1/jobs?model=null", As(token), WhitePng(), "image/png");
    if (!r) return {-1, ""};
    const json j = json::parse(r->body, nullptr, false);
    return {r->status, j.is_object() && j.contains("id") ? j["id"].get<std::string>() : ""};
  }
  static std::pair<int, std::string> CreateStream(const std::string& token) {
    const json body = {{"source", (*dir_ / "media" / "clip.avi").string()},
                       {"model", "null"},
                       {"fps", 2},
                       {"loop", true}};
    auto r = Client().Post("/api/v1/streams", As(token), body.dump(), "application/json");
    if (!r) return {-1, ""};
    const json j = json::parse(r->body, nullptr, false);
    return {r->status, j.is_object() && j.contains("id") ? j["id"].get<std::string>() : r->body};
  }
  static int Get(const std::string& path, const std::string& token) {
    auto r = Client().Get(path, As(token));
    return r ? r->status : -1;
  }
  static int Delete(const std::string& path, const std::string& token) {
    auto r = Client().Delete(path, As(token));
    return r ? r->status : -1;
  }

  static fs::path* dir_;
  static ChildProcess* up_;
  static int port_;
  static std::string* admin_;
};

fs::path* AccessControlTest::dir_ = nullptr;
ChildProcess* AccessControlTest::up_ = nullptr;
int AccessControlTest::port_ = 0;
std::string* AccessControlTest::admin_ = nullptr;

TEST_F(AccessControlTest, EveryMutatingRouteAndTheHistoryNeedTheirRole) {
  const std::string viewer = NewToken("viewer", "it-viewer");
  const std::string op = NewToken("operator", "it-operator");
  const std::string& admin = *admin_;  // the first admin token, as printed
  ASSERT_FALSE(viewer.empty());
  ASSERT_FALSE(op.empty());

  // An operator submits; the job is the history's.
  const auto [job_status, job] = SubmitJob(op);
  ASSERT_EQ(job_status, 202);
  ASSERT_FALSE(job.empty());
  EXPECT_EQ(Detect(op), 200);
  // An admin creates a stream.
  const auto [stream_status, stream] = CreateStream(admin);
  ASSERT_EQ(stream_status, 201) << stream;

  // No token: 401 everywhere but the public routes.
  EXPECT_EQ(Detect(""), 401);
  EXPECT_EQ(SubmitJob("").first, 401);
  EXPECT_EQ(CreateStream("").first, 401);
  EXPECT_EQ(Delete("/api/v1/jobs/" + job, ""), 401);
  EXPECT_EQ(Delete("/api/v1/streams/" + stream, ""), 401);
  EXPECT_EQ(Get("/api/v1/jobs", ""), 401);
  EXPECT_EQ(Get("/api/v1/jobs/" + job, ""), 401);
  auto unauthenticated = Client().Get("/api/v1/jobs");
  ASSERT_TRUE(unauthenticated);
  EXPECT_NE(unauthenticated->get_header_value("WWW-Authenticate").find("Bearer"),
            std::string::npos);
  EXPECT_NE(unauthenticated->body.find("unauthenticated"), std::string::npos);
  EXPECT_EQ(Get("/healthz", ""), 200);
  EXPECT_EQ(Get("/", ""), 200);

  // A viewer reads the history and the models, changes nothing.
  EXPECT_EQ(Get("/api/v1/jobs", viewer), 200);
  EXPECT_EQ(Get("/api/v1/jobs/" + job, viewer), 200);
  EXPECT_EQ(Get("/api/v1/models", viewer), 200);
  EXPECT_EQ(Get("/api/v1/streams", viewer), 200);
  EXPECT_EQ(Get("/metrics", viewer), 200);
  EXPECT_EQ(Detect(viewer), 403);
  EXPECT_EQ(SubmitJob(viewer).first, 403);
  EXPECT_EQ(CreateStream(viewer).first, 403);
  EXPECT_EQ(Delete("/api/v1/jobs/" + job, viewer), 403);
  EXPECT_EQ(Delete("/api/v1/streams/" + stream, viewer), 403);
  auto denied = Client().Post("/api/v1/detect?model=null", As(viewer), WhitePng(), "image/png");
  ASSERT_TRUE(denied);
  EXPECT_NE(denied->body.find("permission_denied"), std::string::npos) << denied->body;
  EXPECT_NE(denied->body.find("operator role"), std::string::npos) << denied->body;

  // An operator submits and reads, but neither manages streams nor deletes.
  EXPECT_EQ(Get("/api/v1/jobs", op), 200);
  EXPECT_EQ(Get("/api/v1/jobs/" + job, op), 200);
  EXPECT_EQ(CreateStream(op).first, 403);
  EXPECT_EQ(Delete("/api/v1/jobs/" + job, op), 403);
  EXPECT_EQ(Delete("/api/v1/streams/" + stream, op), 403);

  // An admin does all of it.
  EXPECT_EQ(Detect(admin), 200);
  EXPECT_EQ(SubmitJob(admin).first, 202);
  EXPECT_EQ(Get("/api/v1/jobs", admin), 200);
  const int cancelled = Delete("/api/v1/jobs/" + job, admin);  // a finished job: not cancelled
  EXPECT_TRUE(cancelled != 401 && cancelled != 403 && cancelled < 500) << cancelled;
  EXPECT_EQ(Delete("/api/v1/streams/" + stream, admin), 204);
}

TEST_F(AccessControlTest, TokenFileHoldsOnlyHashesOwnerOnly) {
  const fs::path file = *dir_ / "data" / "auth" / "tokens.json";
  const std::string text = ReadAll(file);
  ASSERT_FALSE(text.empty());
  const std::string secret = admin_->substr(admin_->rfind('_') + 1);
  EXPECT_EQ(text.find(secret), std::string::npos);
  EXPECT_NE(text.find(admin_->substr(5, 12)), std::string::npos);  // its id
  EXPECT_EQ(Mode(file), 0600);
  EXPECT_EQ(Mode(file.parent_path()), 0700);
  // The token is printed once: at the first start, on its own line.
  EXPECT_EQ(up_->Log().find(*admin_), up_->Log().rfind(*admin_));
  const std::string list = TokenCommand({"list"});
  EXPECT_NE(list.find("admin"), std::string::npos) << list;
  EXPECT_EQ(list.find(secret), std::string::npos) << list;
}

TEST_F(AccessControlTest, ARevokedTokenIsRefusedAtItsNextRequest) {
  const std::string token = NewToken("viewer", "soon-revoked");
  ASSERT_EQ(Get("/api/v1/jobs", token), 200);
  TokenCommand({"revoke", token.substr(5, 12)});
  EXPECT_EQ(Get("/api/v1/jobs", token), 401);  // no restart
}

TEST_F(AccessControlTest, LoginOverTlsSetsASecureSessionCookieForTheBrowser) {
  const std::string op = NewToken("operator", "browser");
  auto login = Client().Post("/api/v1/login", json{{"token", op}}.dump(), "application/json");
  ASSERT_TRUE(login);
  ASSERT_EQ(login->status, 200) << login->body;
  const std::string set = login->get_header_value("Set-Cookie");
  EXPECT_NE(set.find("; Secure"), std::string::npos) << set;
  EXPECT_NE(set.find("HttpOnly"), std::string::npos) << set;
  const httplib::Headers cookie = {{"Cookie", set.substr(0, set.find(';'))}};
  auto jobs = Client().Get("/api/v1/jobs", cookie);
  ASSERT_TRUE(jobs);
  EXPECT_EQ(jobs->status, 200);
  auto me = Client().Get("/api/v1/whoami", cookie);
  ASSERT_TRUE(me);
  EXPECT_EQ(json::parse(me->body)["role"], "operator");
  auto streams = Client().Post("/api/v1/streams", cookie, "{}", "application/json");
  ASSERT_TRUE(streams);
  EXPECT_EQ(streams->status, 403);
  // Plain HTTP on the TLS port gets nothing.
  httplib::Client plain("127.0.0.1", port_);
  plain.set_connection_timeout(5s);
  plain.set_read_timeout(5s);
  auto r = plain.Get("/healthz");
  EXPECT_TRUE(!r || r->status != 200);
}

// Last in the file: it locks this address out for a minute (each test runs its own server
// under ctest; in one process it must come last).
TEST_F(AccessControlTest, ElevenWrongTokensGet429) {
  const std::string wrong = "kadr_000000000000_" + std::string(64, '0');
  // Ten are refused with 401 (one fewer when this process's server already counted the
  // revoked token above), the eleventh with 429.
  int refused = 0;
  for (; refused < 11; ++refused) {
    if (Get("/api/v1/jobs", wrong) != 401) break;
  }
  EXPECT_GE(refused, 9);
  EXPECT_LE(refused, 10);
  auto r = Client().Get("/api/v1/jobs", As(wrong));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429);
  const std::string retry = r->get_header_value("Retry-After");
  ASSERT_FALSE(retry.empty());
  EXPECT_GT(std::stoi(retry), 0);
  EXPECT_LE(std::stoi(retry), 60);
  // Logging in is throttled too.
  auto login = Client().Post("/api/v1/login", json{{"token", *admin_}}.dump(), "application/json");
  ASSERT_TRUE(login);
  EXPECT_EQ(login->status, 429);
}

}  // namespace
}  // namespace kadr
