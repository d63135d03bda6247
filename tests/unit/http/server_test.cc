#include "http/server.h"

#include <sys/socket.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "support/test_data.h"

namespace kadr::http {
namespace {

using nlohmann::json;

class HttpServerTest : public ::testing::Test {
 protected:
  // Creates, routes (via `setup`) and starts a server on a free loopback port.
  void StartServer(const std::function<void(HttpServer&)>& setup, HttpServerOptions options = {}) {
    options.port = 0;
    options.threads = 2;
    auto created = HttpServer::Create(options);
    ASSERT_TRUE(created.has_value()) << created.error().ToString();
    server_ = std::move(created).value();
    setup(*server_);
    ASSERT_TRUE(server_->Start().ok());
    ASSERT_GT(server_->port(), 0);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(std::chrono::seconds(5));
  }

  static json ErrorOf(const httplib::Result& r) {
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
    return json::parse(r->body)["error"];
  }

  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(HttpServerTest, RoutePassesPathParamsQueryAndHeaders) {
  StartServer([](HttpServer& s) {
    ASSERT_TRUE(s.Route("GET", "/api/v1/models/:model/jobs/:id", [](const HttpRequest& req) {
                   json j = {{"model", req.path_params.at("model")},
                             {"id", req.path_params.at("id")},
                             {"limit", req.Query("limit").value_or("none")},
                             {"tags", req.query_params.count("tag")},
                             {"trace", req.Header("x-TRACE-id").value_or("none")},
                             {"path", req.path}};
                   return HttpResponse::Json(j.dump());
                 }).ok());
  });
  auto r =
      client_->Get("/api/v1/models/yolo.v8/jobs/42?limit=5&tag=a&tag=b", {{"X-Trace-Id", "t1"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(json::parse(r->body), json({{"model", "yolo.v8"},
                                        {"id", "42"},
                                        {"limit", "5"},
                                        {"tags", 2},
                                        {"trace", "t1"},
                                        {"path", "/api/v1/models/yolo.v8/jobs/42"}}));
  // A parameter matches one whole segment only.
  auto deeper = client_->Get("/api/v1/models/yolo/jobs/42/extra");
  ASSERT_TRUE(deeper);
  EXPECT_EQ(deeper->status, 404);
}

// Every response, routed, an error or a 404, carries the security headers: no content-type
// sniffing, never framed by another site, no Referer.
TEST_F(HttpServerTest, EveryResponseCarriesTheSecurityHeaders) {
  StartServer([](HttpServer& s) {
    ASSERT_TRUE(
        s.Route("GET", "/ok", [](const HttpRequest&) { return HttpResponse::Json("{}"); }).ok());
    ASSERT_TRUE(s.Route("GET", "/fails", [](const HttpRequest&) {
                   return HttpResponse::Error(InvalidArgumentError("no"));
                 }).ok());
  });
  for (const char* path : {"/ok", "/fails", "/nowhere"}) {
    auto r = client_->Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->get_header_value("X-Content-Type-Options"), "nosniff") << path;
    EXPECT_EQ(r->get_header_value("X-Frame-Options"), "DENY") << path;
    EXPECT_EQ(r->get_header_value("Content-Security-Policy"), "frame-ancestors 'none'") << path;
    EXPECT_EQ(r->get_header_value("Referrer-Policy"), "no-referrer") << path;
  }
}

// The Range bomb: httplib applies a request's Range to any answer, one copy per range. Only
// GET handlers see Range (and own it); a POST's answer is whole, once.
TEST_F(HttpServerTest, RangeOnAPostIsIgnoredSoNoRangeBombCopiesTheAnswer) {
  const std::string answer(10000, 'x');
  StartServer([&](HttpServer& s) {
    ASSERT_TRUE(s.Route("POST", "/detect", [&](const HttpRequest&) {
                   HttpResponse r;
                   r.content_type = "image/jpeg";
                   r.body = answer;
                   return r;
                 }).ok());
  });
  std::string ranges = "bytes=0-";
  for (int i = 0; i < 2700; ++i) ranges += ",0-";
  auto r = client_->Post("/detect", {{"Range", ranges}}, "body", "image/jpeg");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body.size(), answer.size());
  EXPECT_FALSE(r->has_header("Content-Range"));
  auto unknown = client_->Post("/nowhere", {{"Range", ranges}}, "body", "text/plain");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  EXPECT_LT(unknown->body.size(), 1000u);
}

TEST_F(HttpServerTest, LiteralSegmentsAreNotRegexes) {
  StartServer([](HttpServer& s) {
    ASSERT_TRUE(s.Route("GET", "/v1.0/x", [](const HttpRequest&) {
                   return HttpResponse::Json("{}");
                 }).ok());
  });
  EXPECT_EQ(client_->Get("/v1.0/x")->status, 200);
  EXPECT_EQ(client_->Get("/v1a0/x")->status, 404);
}

TEST_F(HttpServerTest, PostBodyAndCustomResponse) {
  StartServer([](HttpServer& s) {
    ASSERT_TRUE(s.Route("POST", "/echo", [](const HttpRequest& req) {
                   HttpResponse r;
                   r.status = 201;
                   r.content_type = "text/plain";
                   r.body = req.method + ":" + req.body;
                   r.headers.emplace("X-Kadr", "yes");
                   return r;
                 }).ok());
  });
  auto r = client_->Post("/echo", "hello", "application/octet-stream");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->body, "POST:hello");
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/plain");
  EXPECT_EQ(r->get_header_value("X-Kadr"), "yes");

  auto empty = client_->Post("/echo");
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->status, 201);
  EXPECT_EQ(empty->body, "POST:");
}

TEST_F(HttpServerTest, ParsesMultipartUpload) {
  std::mutex mu;
  std::vector<MultipartFile> seen;
  StartServer([&](HttpServer& s) {
    ASSERT_TRUE(s.Route("POST", "/upload", [&](const HttpRequest& req) {
                   std::lock_guard lock(mu);
                   seen = req.files;
                   const MultipartFile* image = req.File("image");
                   return HttpResponse::Json(std::to_string(image ? image->content.size() : 0));
                 }).ok());
  });
  // Binary content, including CRLF and something that looks like a boundary.
  std::string jpeg("\xff\xd8\x00\x01\r\n--x\xff\xd9", 10);
  httplib::MultipartFormDataItems items = {
      {"image", jpeg, "cat.jpg", "image/jpeg"},
      {"model", "yolo", "", ""},
  };
  auto r = client_->Post("/upload", items);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->body, std::to_string(jpeg.size()));
  std::lock_guard lock(mu);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].name, "image");
  EXPECT_EQ(seen[0].filename, "cat.jpg");
  EXPECT_EQ(seen[0].content_type, "image/jpeg");
  EXPECT_EQ(seen[0].content, jpeg);
  EXPECT_EQ(seen[1].name, "model");
  EXPECT_EQ(seen[1].filename, "");
  EXPECT_EQ(seen[1].content, "yolo");
}

TEST_F(HttpServerTest, OversizedMultipartUploadGets413Json) {
  HttpServerOptions options;
  options.max_body_bytes = 1024;
  StartServer(
      [](HttpServer& s) {
        ASSERT_TRUE(
            s.Route("POST", "/upload", [](const HttpRequest&) { return HttpResponse{}; }).ok());
      },
      options);
  httplib::MultipartFormDataItems items = {
      {"image", std::string(4096, 'x'), "a.jpg", "image/jpeg"}};
  auto r = client_->Post("/upload", items);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(ErrorOf(r)["code"], "too_large");
}

TEST_F(HttpServerTest, UnknownRouteGets404Json) {
  StartServer([](HttpServer& s) {
    ASSERT_TRUE(s.Route("GET", "/known", [](const HttpRequest&) { return HttpResponse{}; }).ok());
  });
  auto get = client_->Get("/nope");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 404);
  json error = ErrorOf(get);
  EXPECT_EQ(error["code"], "not_found");
  EXPECT_EQ(error["message"], "no route for GET /nope");

  auto post = client_->Post("/known", "x", "text/plain");  // known path, wrong method
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 404);
  EXPECT_EQ(ErrorOf(post)["code"], "not_found");
}

TEST_F(HttpServerTest, OversizedBodyGets413Json) {
  HttpServerOptions options;
  options.max_body_bytes = 1024;
  int calls = 0;
  StartServer(
      [&calls](HttpServer& s) {
        ASSERT_TRUE(s.Route("POST", "/upload", [&calls](const HttpRequest& req) {
                       ++calls;
                       return HttpResponse::Json(std::to_string(req.body.size()));
                     }).ok());
      },
      options);
  auto ok = client_->Post("/upload", std::string(1024, 'a'), "application/octet-stream");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->body, "1024");

  auto big = client_->Post("/upload", std::string(1025, 'a'), "application/octet-stream");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  json error = ErrorOf(big);
  EXPECT_EQ(error["code"], "too_large");
  EXPECT_EQ(error["message"], "request body exceeds 1024 bytes");

  auto unknown = client_->Post("/elsewhere", std::string(4096, 'a'), "application/octet-stream");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 413);
  EXPECT_EQ(calls, 1);
}

// A Transfer-Encoding: chunked upload of `total` bytes (no length: httplib does not bound it).
httplib::ContentProviderWithoutLength Chunked(std::size_t total) {
  return [total, sent = std::size_t{0}](std::size_t, httplib::DataSink& sink) mutable {
    if (sent >= total) {
      sink.done();
      return true;
    }
    std::string chunk(512, 'b');
    sent += chunk.size();
    return sink.write(chunk.data(), chunk.size());
  };
}

TEST_F(HttpServerTest, OversizedChunkedBodyGets413Json) {
  HttpServerOptions options;
  options.max_body_bytes = 1024;
  StartServer(
      [](HttpServer& s) {
        ASSERT_TRUE(s.Route("PUT", "/upload", [](const HttpRequest& req) {
                       return HttpResponse::Json(std::to_string(req.body.size()));
                     }).ok());
      },
      options);
  auto fits = client_->Put("/upload", Chunked(1024), "application/octet-stream");
  ASSERT_TRUE(fits) << httplib::to_string(fits.error());
  EXPECT_EQ(fits->status, 200);
  EXPECT_EQ(fits->body, "1024");
  // Over the limit but within what the server drains, so the client reads the 413.
  auto over = client_->Put("/upload", Chunked(1536), "application/octet-stream");
  ASSERT_TRUE(over) << httplib::to_string(over.error());
  EXPECT_EQ(over->status, 413);
  EXPECT_EQ(ErrorOf(over)["code"], "too_large");
}

TEST_F(HttpServerTest, RegressionEndlessChunkedUploadIsCutOffAndServerKeepsServing) {
  HttpServerOptions options;
  options.max_body_bytes = 1024;
  StartServer(
      [](HttpServer& s) {
        ASSERT_TRUE(s.Route("PUT", "/upload", [](const HttpRequest&) {
                       return HttpResponse::Json("{}");
                     }).ok());
      },
      options);
  // The server stops reading at twice the limit and closes; the client sees a 413 or a
  // failed send, depending on timing.
  auto flood = client_->Put("/upload", Chunked(std::size_t{64} << 20), "application/octet-stream");
  if (flood) {
    EXPECT_EQ(flood->status, 413);
  }
  auto next = client_->Put("/upload", "{}", "application/json");
  ASSERT_TRUE(next);
  EXPECT_EQ(next->status, 200);
}

TEST_F(HttpServerTest, ThrowingHandlerGets500JsonAndServerKeepsServing) {
  StartServer([](HttpServer& s) {
    ASSERT_TRUE(s.Route("GET", "/throw", [](const HttpRequest&) -> HttpResponse {
                   throw std::runtime_error("secret detail");
                 }).ok());
    ASSERT_TRUE(
        s.Route("GET", "/throw-int", [](const HttpRequest&) -> HttpResponse { throw 7; }).ok());
    ASSERT_TRUE(s.Route("GET", "/ok", [](const HttpRequest&) {
                   return HttpResponse::Json(R"({"ok":true})");
                 }).ok());
  });
  for (const char* path : {"/throw", "/throw-int"}) {
    auto r = client_->Get(path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 500);
    json error = ErrorOf(r);
    EXPECT_EQ(error["code"], "internal");
    EXPECT_EQ(error["message"], "internal error");  // exception text is logged, not sent
  }
  auto next = client_->Get("/ok");
  ASSERT_TRUE(next);
  EXPECT_EQ(next->status, 200);
}

TEST_F(HttpServerTest, HandlerErrorsUseTheStatusTable) {
  StartServer([](HttpServer& s) {
    ASSERT_TRUE(s.Route("GET", "/busy", [](const HttpRequest&) {
                   return HttpResponse::Error(ResourceExhaustedError("queue full"));
                 }).ok());
    ASSERT_TRUE(s.Route("DELETE", "/gone", [](const HttpRequest&) {
                   HttpResponse r;
                   r.status = 503;  // no body: the server fills in the JSON error
                   return r;
                 }).ok());
  });
  auto busy = client_->Get("/busy");
  ASSERT_TRUE(busy);
  EXPECT_EQ(busy->status, 429);
  EXPECT_EQ(ErrorOf(busy), json({{"code", "resource_exhausted"}, {"message", "queue full"}}));
  auto gone = client_->Delete("/gone");
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->status, 503);
  EXPECT_EQ(ErrorOf(gone)["code"], "unavailable");
}

TEST_F(HttpServerTest, ServesStaticFiles) {
  std::filesystem::path dir = kadr::testing::MakeTempDir();
  std::ofstream(dir / "index.html") << "<h1>kadr</h1>";
  std::filesystem::create_directory(dir / "js");
  std::ofstream(dir / "js" / "app.js") << "let x = 1;";
  StartServer([&dir](HttpServer& s) {
    ASSERT_TRUE(s.ServeStatic("/ui", dir.string()).ok());
    EXPECT_EQ(s.ServeStatic("/x", (dir / "missing").string()).code(), StatusCode::kNotFound);
    EXPECT_EQ(s.ServeStatic("x", dir.string()).code(), StatusCode::kInvalidArgument);
  });
  auto page = client_->Get("/ui/index.html");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->body, "<h1>kadr</h1>");
  EXPECT_EQ(page->get_header_value("Content-Type"), "text/html");
  auto index = client_->Get("/ui/");
  ASSERT_TRUE(index);
  EXPECT_EQ(index->body, "<h1>kadr</h1>");
  auto js = client_->Get("/ui/js/app.js");
  ASSERT_TRUE(js);
  EXPECT_EQ(js->body, "let x = 1;");
  auto missing = client_->Get("/ui/nope.css");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(ErrorOf(missing)["code"], "not_found");
  auto escape = client_->Get("/ui/../server_test.cc");
  ASSERT_TRUE(escape);
  EXPECT_NE(escape->status, 200);
  std::filesystem::remove_all(dir);
}

TEST_F(HttpServerTest, StopIsPromptAndIdempotent) {
  StartServer([](HttpServer& s) {
    ASSERT_TRUE(s.Route("GET", "/ok", [](const HttpRequest&) { return HttpResponse{}; }).ok());
  });
  ASSERT_EQ(client_->Get("/ok")->status, 200);
  auto start = std::chrono::steady_clock::now();
  server_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  server_->Stop();
  client_->set_connection_timeout(std::chrono::seconds(1));
  EXPECT_FALSE(client_->Get("/ok"));  // nothing listens any more
  EXPECT_EQ(server_->Start().code(), StatusCode::kFailedPrecondition);
  server_.reset();  // the destructor's Stop() is a no-op now
}

TEST_F(HttpServerTest, StopRightAfterStartReturns) {
  for (int i = 0; i < 20; ++i) {
    auto server = HttpServer::Create({.port = 0, .threads = 1});
    ASSERT_TRUE(server.has_value());
    ASSERT_TRUE((*server)->Start().ok());
    (*server)->Stop();
  }
}

TEST_F(HttpServerTest, RoutesAreFixedOnceStarted) {
  StartServer([](HttpServer&) {});
  EXPECT_EQ(
      server_->Route("GET", "/late", [](const HttpRequest&) { return HttpResponse{}; }).code(),
      StatusCode::kFailedPrecondition);
  EXPECT_EQ(server_->Start().code(), StatusCode::kFailedPrecondition);
}

TEST(HttpServerRouteTest, RejectsBadRoutes) {
  auto server = HttpServer::Create({.port = 0});
  ASSERT_TRUE(server.has_value());
  Handler h = [](const HttpRequest&) { return HttpResponse{}; };
  EXPECT_EQ((*server)->Route("GET", "no-slash", h).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*server)->Route("GET", "/a/:", h).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*server)->Route("GET", "/a/:1x", h).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*server)->Route("GET", "/a/:id/b/:id", h).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*server)->Route("BREW", "/coffee", h).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*server)->Route("GET", "/a", nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE((*server)->Route("GET", "/", h).ok());
}

TEST(HttpServerCreateTest, RejectsBadOptions) {
  EXPECT_EQ(HttpServer::Create({.port = 70000}).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HttpServer::Create({.port = 0, .threads = 0}).error().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(HttpServer::Create({.port = 0, .max_body_bytes = 0}).error().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(HttpServer::Create({.host = "", .port = 0}).error().code(),
            StatusCode::kInvalidArgument);
}

TEST(HttpServerCreateTest, BusyPortIsUnavailable) {
  auto first = HttpServer::Create({.port = 0});
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE((*first)->Start().ok());
  auto second = HttpServer::Create({.port = (*first)->port()});
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ((*second)->Start().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace kadr::http
