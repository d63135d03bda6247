// Streaming responses (HttpResponse::Stream): chunks reach the client as they are written,
// a client that leaves is noticed, and Stop() ends open streams instead of hanging on them.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>

#include "http/server.h"

namespace kadr::http {
namespace {

using namespace std::chrono_literals;

// A flag that tests wait on, with a generous bound so that a bug fails instead of hanging.
class Event {
 public:
  void Set() {
    std::lock_guard lock(mu_);
    set_ = true;
    cv_.notify_all();
  }
  bool WaitFor(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [this] { return set_; });
  }
  bool IsSet() {
    std::lock_guard lock(mu_);
    return set_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool set_ = false;
};

class HttpStreamTest : public ::testing::Test {
 protected:
  void StartServer(const std::function<void(HttpServer&)>& setup) {
    auto created = HttpServer::Create({.port = 0, .threads = 4});
    ASSERT_TRUE(created.has_value()) << created.error().ToString();
    server_ = std::move(created).value();
    setup(*server_);
    ASSERT_TRUE(server_->Start().ok());
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(5s);
  }

  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(HttpStreamTest, StreamedBodyArrivesChunkedWithTheContentTypeAndHeaders) {
  StartServer([](HttpServer& s) {
    ASSERT_TRUE(s.Route("GET", "/s", [](const HttpRequest&) {
                   auto r = HttpResponse::Stream("text/plain", [](StreamWriter& out) {
                     for (int i = 0; i < 3; ++i) {
                       if (!out.Write("part" + std::to_string(i) + ";")) return;
                     }
                     EXPECT_TRUE(out.Write(""));  // an empty write is not the end
                     EXPECT_TRUE(out.Alive());
                     (void)out.Write("end");
                   });
                   r.headers.emplace("Cache-Control", "no-store");
                   return r;
                 }).ok());
  });
  auto r = client_->Get("/s");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "part0;part1;part2;end");
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/plain");
  EXPECT_EQ(r->get_header_value("Transfer-Encoding"), "chunked");
  EXPECT_EQ(r->get_header_value("Cache-Control"), "no-store");
  EXPECT_FALSE(r->has_header("Content-Length"));
  // The connection is reusable after a stream that ended.
  EXPECT_EQ(client_->Get("/s")->body, "part0;part1;part2;end");
}

TEST_F(HttpStreamTest, ChunksReachTheClientBeforeTheStreamEnds) {
  Event first_read, release;
  StartServer([&](HttpServer& s) {
    ASSERT_TRUE(s.Route("GET", "/s", [&](const HttpRequest&) {
                   return HttpResponse::Stream("text/event-stream", [&](StreamWriter& out) {
                     (void)out.Write("data: one\n\n");
                     // The client must see "one" while this stream is still open.
                     EXPECT_TRUE(release.WaitFor(5s));
                     (void)out.Write("data: two\n\n");
                   });
                 }).ok());
  });
  std::string received;
  // Browsers send Accept-Encoding: an event stream must not be compressed (and so buffered).
  httplib::Headers headers = {{"Accept-Encoding", "gzip, deflate, br"}};
  client_->set_decompress(false);
  std::string encoding = "unset";
  auto r = client_->Get(
      "/s", headers,
      [&](const httplib::Response& res) {
        encoding = res.get_header_value("Content-Encoding");
        return true;
      },
      [&](const char* data, std::size_t n) {
        received.append(data, n);
        if (received == "data: one\n\n") {
          first_read.Set();
          release.Set();
        }
        return true;
      });
  ASSERT_TRUE(r);
  EXPECT_TRUE(first_read.IsSet());
  EXPECT_EQ(received, "data: one\n\ndata: two\n\n");
  EXPECT_EQ(encoding, "");
}

TEST_F(HttpStreamTest, AClientThatLeavesIsSeenByAliveAndFreesTheThread) {
  Event left;
  StartServer([&](HttpServer& s) {
    ASSERT_TRUE(s.Route("GET", "/s", [&](const HttpRequest&) {
                   return HttpResponse::Stream("text/plain", [&](StreamWriter& out) {
                     (void)out.Write("hello");
                     // Nothing more to send: only Alive() can tell that the client left.
                     while (out.Alive()) std::this_thread::sleep_for(10ms);
                     left.Set();
                   });
                 }).ok());
  });
  auto r = client_->Get(
      "/s", [](const char*, std::size_t) { return false; });  // reads "hello", then hangs up
  EXPECT_FALSE(r);
  EXPECT_TRUE(left.WaitFor(5s));
}

TEST_F(HttpStreamTest, StopEndsAnOpenStreamPromptly) {
  Event streaming, ended;
  StartServer([&](HttpServer& s) {
    ASSERT_TRUE(s.Route("GET", "/s", [&](const HttpRequest&) {
                   return HttpResponse::Stream("text/plain", [&](StreamWriter& out) {
                     (void)out.Write("open");
                     streaming.Set();
                     // A wait with no end of its own: only the stop token ends it.
                     std::mutex mu;
                     std::condition_variable_any cv;
                     std::unique_lock lock(mu);
                     const std::stop_token stop = out.StopToken();
                     cv.wait(lock, stop, [] { return false; });
                     EXPECT_FALSE(out.Alive());
                     EXPECT_FALSE(out.Write("late"));
                     ended.Set();
                   });
                 }).ok());
  });
  std::string received;
  std::thread reader([&] {
    (void)client_->Get("/s", [&](const char* data, std::size_t n) {
      received.append(data, n);
      return true;
    });
  });
  ASSERT_TRUE(streaming.WaitFor(5s));
  const auto start = std::chrono::steady_clock::now();
  server_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  EXPECT_TRUE(ended.IsSet());
  reader.join();
  EXPECT_EQ(received, "open");
}

TEST_F(HttpStreamTest, HeadAnswersWithoutRunningTheStreamAndReleasesIt) {
  auto resource = std::make_shared<int>(1);
  std::atomic<bool> ran{false};
  StartServer([&](HttpServer& s) {
    ASSERT_TRUE(s.Route("GET", "/s", [&](const HttpRequest&) {
                   return HttpResponse::Stream("text/plain",
                                               [&ran, held = resource](StreamWriter& out) {
                                                 ran = true;
                                                 (void)out.Write("x");
                                               });
                 }).ok());
  });
  auto r = client_->Head("/s");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_FALSE(ran.load());
  // The response, and the callback with what it captured, are gone once it is answered.
  for (int i = 0; i < 200 && resource.use_count() > 1; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(resource.use_count(), 1);
  ASSERT_TRUE(client_->Get("/s"));
  EXPECT_TRUE(ran.load());
}

TEST_F(HttpStreamTest, AThrowingStreamEndsItsResponseAndTheServerKeepsServing) {
  StartServer([](HttpServer& s) {
    ASSERT_TRUE(s.Route("GET", "/s", [](const HttpRequest&) {
                   return HttpResponse::Stream("text/plain", [](StreamWriter& out) {
                     (void)out.Write("before");
                     throw std::runtime_error("boom");
                   });
                 }).ok());
    ASSERT_TRUE(
        s.Route("GET", "/ok", [](const HttpRequest&) { return HttpResponse::Json("{}"); }).ok());
  });
  auto r = client_->Get("/s");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "before");
  auto ok = client_->Get("/ok");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

}  // namespace
}  // namespace kadr::http
