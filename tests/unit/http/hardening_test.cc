// The attacks of issue 16 on the HTTP surface, each against a real server over loopback:
// every one must fail with a precise status while the server goes on serving others.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>

#include "http/server.h"

namespace kadr::http {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

int Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void Send(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

// Reads until the peer closes or `timeout` passes.
std::string ReadAll(int fd, milliseconds timeout = milliseconds(5000)) {
  std::string out;
  const auto until = Clock::now() + timeout;
  while (Clock::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

// Sends `request` on a new connection and returns all that comes back.
std::string Exchange(int port, const std::string& request,
                     milliseconds timeout = milliseconds(5000)) {
  const int fd = Connect(port);
  if (fd < 0) return {};
  Send(fd, request);
  std::string out = ReadAll(fd, timeout);
  ::close(fd);
  return out;
}

int StatusOf(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12) return -1;
  return std::atoi(response.substr(9, 3).c_str());
}

std::string Get(const std::string& path, const std::string& extra = {}) {
  return "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + extra + "\r\n";
}

class HardeningTest : public ::testing::Test {
 protected:
  void Start(HttpServerOptions options = {},
             const std::function<void(HttpServer&)>& more = nullptr) {
    options.port = 0;
    auto server = HttpServer::Create(options);
    ASSERT_TRUE(server) << server.status().ToString();
    server_ = std::move(*server);
    ASSERT_TRUE(server_
                    ->Route("GET", "/data",
                            [](const HttpRequest& r) {
                              return HttpResponse::Json(R"({"secure":)" +
                                                        std::string(r.secure ? "true" : "false") +
                                                        R"(,"principal":")" + r.principal + "\"}");
                            })
                    .ok());
    ASSERT_TRUE(server_
                    ->Route("GET", "/healthz",
                            [](const HttpRequest&) { return HttpResponse::Json(R"({"ok":1})"); },
                            {.access = Access::kPublic, .served_when_busy = true})
                    .ok());
    ASSERT_TRUE(server_
                    ->Route("POST", "/json",
                            [](const HttpRequest& r) {
                              return HttpResponse::Json(std::to_string(r.body.size()));
                            },
                            {.access = Access::kAdmin, .content_types = {"application/json"}})
                    .ok());
    ASSERT_TRUE(server_
                    ->Route("POST", "/upload",
                            [](const HttpRequest& r) {
                              return HttpResponse::Json(std::to_string(r.body.size()) + "," +
                                                        std::to_string(r.files.size()));
                            },
                            {.access = Access::kOperate, .max_body_bytes = 1 << 20})
                    .ok());
    if (more) more(*server_);
    ASSERT_TRUE(server_->Start().ok());
    port_ = server_->port();
  }

  // The server still answers an ordinary request.
  void ExpectStillServing() {
    EXPECT_EQ(StatusOf(Exchange(port_, Get("/data"))), 200) << "the server stopped serving";
  }

  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
};

TEST_F(HardeningTest, ALongRequestLineGets414) {
  Start();
  const std::string response = Exchange(port_, Get("/data?" + std::string(9000, 'a')));
  EXPECT_EQ(StatusOf(response), 414) << response.substr(0, 200);
  EXPECT_NE(response.find(R"("code":"too_large")"), std::string::npos);
  ExpectStillServing();
}

TEST_F(HardeningTest, ManyHeadersOrALongHeaderGet431) {
  Start();
  std::string many;
  for (int i = 0; i < 100; ++i) many += "X-H" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(StatusOf(Exchange(port_, Get("/data", many))), 431);
  EXPECT_EQ(StatusOf(Exchange(port_, Get("/data", "X-Big: " + std::string(40000, 'b') + "\r\n"))),
            431);
  // An endless header line is cut off at the limit, not read to its end.
  const int fd = Connect(port_);
  Send(fd, "GET /data HTTP/1.1\r\nX-Endless: ");
  for (int i = 0; i < 64; ++i) Send(fd, std::string(1024, 'e'));
  EXPECT_EQ(StatusOf(ReadAll(fd)), 431);
  ::close(fd);
  ExpectStillServing();
}

TEST_F(HardeningTest, MethodsNoRouteCanHaveGet501BeforeTheirBody) {
  Start();
  // The HTTP/2 preface reached httplib's unlimited body reader.
  const std::string pri = Exchange(port_, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
  EXPECT_EQ(StatusOf(pri), 501) << pri.substr(0, 200);
  EXPECT_NE(pri.find(R"("code":"unsupported")"), std::string::npos);
  EXPECT_EQ(StatusOf(Exchange(port_, "TRACE /data HTTP/1.1\r\nHost: x\r\n\r\n")), 501);
  EXPECT_EQ(StatusOf(Exchange(port_, "CONNECT example.com:443 HTTP/1.1\r\n\r\n")), 501);
  EXPECT_EQ(StatusOf(Exchange(port_, std::string(100, 'G') + " / HTTP/1.1\r\n\r\n")), 501);
  ExpectStillServing();
}

TEST_F(HardeningTest, ABodyOverTheRoutesLimitGets413BeforeItIsSent) {
  Start();
  // Only the head is sent: the answer must not wait for the 100 MB it announces.
  const auto start = Clock::now();
  const std::string response =
      Exchange(port_,
               "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
               "Content-Length: 100000000\r\n\r\n",
               milliseconds(3000));
  EXPECT_EQ(StatusOf(response), 413) << response.substr(0, 200);
  EXPECT_LT(Clock::now() - start, milliseconds(2500));
  // JSON routes take 64 KiB by default.
  const std::string json = Exchange(port_,
                                    "POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                    "application/json\r\nContent-Length: 70000\r\n\r\n" +
                                        std::string(70000, ' '));
  EXPECT_EQ(StatusOf(json), 413);
  // A GET's body is never read: it is answered, then the connection closes rather than read
  // the body as the next request.
  const std::string get = Exchange(port_,
                                   "GET /data HTTP/1.1\r\nHost: x\r\nContent-Length: 24"
                                   "\r\n\r\nGET /data HTTP/1.1\r\n\r\n");
  EXPECT_EQ(StatusOf(get), 200);
  EXPECT_NE(get.find("Connection: close"), std::string::npos) << get;
  EXPECT_EQ(get.find("HTTP/1.1", 5), std::string::npos) << "the body was served as a request";
  ExpectStillServing();
}

TEST_F(HardeningTest, MultipartPartsAreCountedEmptyOnesToo) {
  Start();
  std::string body;
  for (int i = 0; i < 1000; ++i)
    body += "--B\r\nContent-Disposition: form-data; name=p\r\n\r\n\r\n";
  body += "--B--\r\n";
  const std::string head =
      "POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
      "Content-Type: multipart/form-data; boundary=B\r\nContent-Length: ";
  const std::string response =
      Exchange(port_, head + std::to_string(body.size()) + "\r\n\r\n" + body);
  EXPECT_EQ(StatusOf(response), 413) << response.substr(0, 300);
  EXPECT_NE(response.find("more than 16 parts"), std::string::npos);
  // An 8 KB part-header line costs nothing (httplib's regex took ~0.7 s of CPU for each).
  std::string slow;
  for (int i = 0; i < 15; ++i) {
    slow += "--B\r\nContent-Disposition: form-data; name=\"p\"; filename=\"" +
            std::string(8000, 'x') + "\"\r\n\r\nv\r\n";
  }
  slow += "--B--\r\n";
  const auto start = Clock::now();
  const std::string ok = Exchange(port_, head + std::to_string(slow.size()) + "\r\n\r\n" + slow);
  EXPECT_EQ(StatusOf(ok), 200) << ok.substr(0, 300);
  EXPECT_NE(ok.find("\r\n\r\n0,15"), std::string::npos) << ok;
  EXPECT_LT(Clock::now() - start, milliseconds(2000));
  ExpectStillServing();
}

TEST_F(HardeningTest, SlowClientsCannotHoldEveryThreadAndHealthStillAnswers) {
  HttpServerOptions options;
  options.threads = 2;
  options.header_timeout = std::chrono::seconds(2);
  options.shed_timeout = milliseconds(500);
  Start(options);
  // Two clients that trickle their headers hold both threads.
  std::vector<int> slow;
  for (int i = 0; i < 2; ++i) {
    slow.push_back(Connect(port_));
    Send(slow.back(), "GET /data HTTP/1.1\r\nHost: x\r\n");
  }
  std::this_thread::sleep_for(milliseconds(300));
  auto start = Clock::now();
  const std::string health = Exchange(port_, Get("/healthz"), milliseconds(3000));
  EXPECT_EQ(StatusOf(health), 200) << health.substr(0, 200);
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
  start = Clock::now();
  const std::string busy = Exchange(port_, Get("/data"), milliseconds(3000));
  EXPECT_EQ(StatusOf(busy), 503) << busy.substr(0, 200);
  EXPECT_NE(busy.find("Retry-After: 1"), std::string::npos);
  EXPECT_LT(Clock::now() - start, milliseconds(1500));
  // The slow ones run out of time with 408.
  for (int fd : slow) {
    Send(fd, "X-More: 1\r\n");
    const std::string timeout = ReadAll(fd, milliseconds(4000));
    EXPECT_EQ(StatusOf(timeout), 408) << timeout.substr(0, 200);
    ::close(fd);
  }
  ExpectStillServing();
}

TEST_F(HardeningTest, ABodyTrickledSlowerThanTheMinimumRateGets408) {
  HttpServerOptions options;
  options.header_timeout = std::chrono::seconds(1);
  Start(options);
  const int fd = Connect(port_);
  const auto start = Clock::now();
  Send(fd,
       "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
       "Content-Length: 500000\r\n\r\nabc");
  std::string response;
  while (Clock::now() - start < milliseconds(6000)) {
    Send(fd, "z");  // one byte every 200 ms
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 200) > 0) {
      response = ReadAll(fd, milliseconds(1000));
      break;
    }
  }
  ::close(fd);
  EXPECT_EQ(StatusOf(response), 408) << response.substr(0, 200);
  EXPECT_LT(Clock::now() - start, milliseconds(4000));
  ExpectStillServing();
}

TEST_F(HardeningTest, AStaticFileIgnoresARangeOfManyRanges) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("kadr_static_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "app.js") << std::string(10000, 'j');
  Start({}, [&](HttpServer& s) { ASSERT_TRUE(s.ServeStatic("/static", dir.string()).ok()); });
  std::string ranges = "Range: bytes=0-";
  for (int i = 0; i < 2000; ++i) ranges += ",0-";
  const std::string response = Exchange(port_, Get("/static/app.js", ranges + "\r\n"));
  EXPECT_EQ(StatusOf(response), 200) << response.substr(0, 400);
  EXPECT_LT(response.size(), 11000u);
  // One range is still honoured.
  EXPECT_EQ(StatusOf(Exchange(port_, Get("/static/app.js", "Range: bytes=0-9\r\n"))), 206);
  std::filesystem::remove_all(dir);
}

TEST_F(HardeningTest, AForeignHostHeaderGets421) {
  HttpServerOptions options;
  options.allowed_hosts = {"localhost", "127.0.0.1", "::1"};
  Start(options);
  const auto with_host = [&](const std::string& host) {
    return StatusOf(
        Exchange(port_, "GET /data HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n"));
  };
  EXPECT_EQ(with_host("rebind.attacker.example:8080"), 421);
  EXPECT_EQ(with_host("localhost.attacker.example"), 421);
  EXPECT_EQ(with_host("localhost:" + std::to_string(port_)), 200);
  EXPECT_EQ(with_host("LOCALHOST"), 200);
  EXPECT_EQ(with_host("127.0.0.1:1"), 200);
  EXPECT_EQ(with_host("[::1]:80"), 200);
}

TEST_F(HardeningTest, CrossSiteWritesAreRefused) {
  Start();
  const std::string host = "127.0.0.1:" + std::to_string(port_);
  const auto post = [&](const std::string& type, const std::string& extra) {
    const std::string body = "{}";
    return StatusOf(Exchange(port_, "POST /json HTTP/1.1\r\nHost: " + host +
                                        "\r\nConnection: close\r\nContent-Type: " + type +
                                        "\r\nContent-Length: 2\r\n" + extra + "\r\n" + body));
  };
  EXPECT_EQ(post("application/json", "Origin: http://evil.example\r\n"), 403);
  EXPECT_EQ(post("application/json", "Origin: null\r\n"), 403);
  EXPECT_EQ(post("application/json", "Origin: http://127.0.0.1:1\r\n"), 403);
  EXPECT_EQ(post("application/json", "Sec-Fetch-Site: cross-site\r\n"), 403);
  EXPECT_EQ(post("application/json", "Sec-Fetch-Site: same-site\r\n"), 403);
  // What an HTML form can send without a preflight never reaches a JSON route.
  EXPECT_EQ(post("text/plain", ""), 415);
  EXPECT_EQ(post("application/x-www-form-urlencoded", ""), 415);
  EXPECT_EQ(post("application/json", "Origin: http://" + host + "\r\n"), 200);
  EXPECT_EQ(post("application/json; charset=utf-8", "Sec-Fetch-Site: same-origin\r\n"), 200);
  EXPECT_EQ(post("application/json", ""), 200);  // curl, scripts
}

TEST_F(HardeningTest, TheAuthorizerSeesEachRoutesAccessBeforeTheBodyIsRead) {
  HttpServerOptions options;
  std::vector<Access> seen;
  std::mutex mu;
  options.authorizer = [&](HttpRequest& request, Access access) -> std::optional<HttpResponse> {
    std::lock_guard lock(mu);
    seen.push_back(access);
    if (access == Access::kPublic) return std::nullopt;
    if (request.Header("Authorization") != "Bearer good") {
      return HttpResponse::Error(UnauthenticatedError("a token is needed"));
    }
    request.principal = "alice";
    return std::nullopt;
  };
  Start(options);
  EXPECT_EQ(StatusOf(Exchange(port_, Get("/data"))), 401);
  const std::string ok = Exchange(port_, Get("/data", "Authorization: Bearer good\r\n"));
  EXPECT_EQ(StatusOf(ok), 200);
  EXPECT_NE(ok.find(R"("principal":"alice")"), std::string::npos) << ok;
  EXPECT_EQ(StatusOf(Exchange(port_, Get("/healthz"))), 200);
  // Refused before the announced 50 MB are sent.
  const auto start = Clock::now();
  EXPECT_EQ(StatusOf(Exchange(port_,
                              "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                              "Content-Length: 50000000\r\n\r\n",
                              milliseconds(3000))),
            401);
  EXPECT_LT(Clock::now() - start, milliseconds(2500));
  std::lock_guard lock(mu);
  EXPECT_EQ(seen,
            (std::vector<Access>{Access::kRead, Access::kRead, Access::kPublic, Access::kOperate}));
}

TEST_F(HardeningTest, ASpooledBodyReachesTheHandlerFromDiskAndLeavesNoFile) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("kadr_spool_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  Start({}, [&](HttpServer& s) {
    ASSERT_TRUE(s.Route("POST", "/spooled",
                        [](const HttpRequest& r) {
                          std::string parts;
                          for (const auto& f : r.files) {
                            parts += f.name + "=" + std::to_string(f.Content().size()) + ";";
                          }
                          const std::string_view body = r.Body();
                          const bool all_b = body.find_first_not_of('b') == std::string_view::npos;
                          return HttpResponse::Json(
                              "{\"spooled\":" + std::string(r.spool ? "true" : "false") +
                              ",\"body\":" + std::to_string(body.size()) + ",\"all_b\":" +
                              (all_b ? "true" : "false") + ",\"parts\":\"" + parts + "\"}");
                        },
                        {.max_body_bytes = 16 << 20, .spool_dir = dir.string()})
                    .ok());
    ASSERT_TRUE(s.Route("POST", "/nowhere",
                        [](const HttpRequest&) { return HttpResponse::Json("{}"); },
                        {.max_body_bytes = 1 << 20, .spool_dir = (dir / "missing").string()})
                    .ok());
  });
  httplib::Client client("127.0.0.1", port_);
  auto raw = client.Post("/spooled", std::string(5 << 20, 'b'), "application/octet-stream");
  ASSERT_TRUE(raw);
  EXPECT_EQ(raw->status, 200);
  EXPECT_EQ(raw->body, R"({"spooled":true,"body":5242880,"all_b":true,"parts":""})");
  httplib::MultipartFormDataItems items = {{"video", std::string(3 << 20, 'v'), "a.mp4", ""},
                                           {"model", "m", "", ""}};
  auto multipart = client.Post("/spooled", items);
  ASSERT_TRUE(multipart);
  EXPECT_EQ(multipart->status, 200);
  EXPECT_NE(multipart->body.find(R"("parts":"video=3145728;model=1;")"), std::string::npos)
      << multipart->body;
  // Over the limit: 413, as in memory.
  auto big = client.Post("/spooled", std::string(17 << 20, 'b'), "application/octet-stream");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  // The unnamed files are gone with their requests; an unwritable folder is a 503.
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  auto nowhere = client.Post("/nowhere", "x", "application/octet-stream");
  ASSERT_TRUE(nowhere);
  EXPECT_EQ(nowhere->status, 503);
  std::filesystem::remove_all(dir);
}

TEST_F(HardeningTest, ATrustedProxyForwardsItsClientsAddressAndNoOneElseDoes) {
  const auto who = [](HttpServer& s) {
    ASSERT_TRUE(s.Route("GET", "/who", [](const HttpRequest& r) {
                   return HttpResponse::Json(R"({"client":")" + r.remote_addr + R"(","peer":")" +
                                             r.peer_addr + "\"}");
                 }).ok());
  };
  const auto body = [&](const std::string& xff) {
    const std::string r = Exchange(port_, Get("/who", "X-Forwarded-For: " + xff + "\r\n"));
    return r.substr(r.find("\r\n\r\n") + 4);
  };
  HttpServerOptions options;
  options.trusted_proxies = {"127.0.0.1", "10.0.0.0/8"};
  Start(options, who);
  EXPECT_EQ(body("203.0.113.7"), R"({"client":"203.0.113.7","peer":"127.0.0.1"})");
  // The rightmost address that is not a trusted proxy: what a client wrote left of it is not
  // believed.
  EXPECT_EQ(body("6.6.6.6, 203.0.113.7, 10.1.2.3"),
            R"({"client":"203.0.113.7","peer":"127.0.0.1"})");
  EXPECT_EQ(body("not-an-address"), R"({"client":"127.0.0.1","peer":"127.0.0.1"})");
  server_->Stop();
  // Without trust the header changes nothing.
  Start({}, who);
  EXPECT_EQ(body("203.0.113.7"), R"({"client":"127.0.0.1","peer":"127.0.0.1"})");
  HttpServerOptions bad;
  bad.trusted_proxies = {"10.0.0.0/33"};
  EXPECT_EQ(HttpServer::Create(bad).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(HardeningTest, TlsServesHttpsAndTellsHandlersTheRequestIsSecure) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("kadr_tls_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string cert = (dir / "cert.pem").string();
  const std::string key = (dir / "key.pem").string();
  const std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-keyout " +
      key + " -out " + cert + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "openssl could not make a test certificate";
  HttpServerOptions options;
  options.tls_cert_file = cert;
  options.tls_key_file = key;
  Start(options);
  httplib::SSLClient client("127.0.0.1", port_);
  client.enable_server_certificate_verification(false);
  auto r = client.Get("/data");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find(R"("secure":true)"), std::string::npos) << r->body;
  EXPECT_EQ(r->get_header_value("Strict-Transport-Security"), "max-age=31536000");
  // Plain HTTP on the TLS port gets no HTTP answer.
  EXPECT_EQ(StatusOf(Exchange(port_, Get("/data"), milliseconds(2000))), -1);
  auto again = client.Get("/data");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
  // A key that does not match, or a missing file, is refused at creation.
  HttpServerOptions bad;
  bad.tls_cert_file = cert;
  bad.tls_key_file = (dir / "missing.pem").string();
  auto server = HttpServer::Create(bad);
  ASSERT_FALSE(server);
  EXPECT_EQ(server.status().code(), StatusCode::kInvalidArgument);
  bad.tls_key_file.clear();
  EXPECT_FALSE(HttpServer::Create(bad));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kadr::http
