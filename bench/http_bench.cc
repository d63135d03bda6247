// http_bench: what kadr's hardened HTTP server (ADR 0013) costs next to a plain cpp-httplib
// server, in one run on one machine.
//
// Both serve the same two routes on loopback: GET /small (a 40-byte JSON answer) and
// POST /echo (answers the size of a --body-kb body, as an upload would). --clients
// keep-alive clients (cpp-httplib) call each for --seconds; the bench prints requests/s and
// the p50/p99 latency per server and route, and the ratio kadr / plain. Clients and servers
// share the machine's cores, so run it on an otherwise idle machine.
//
// A plain program (not Google Benchmark); results belong in docs/performance.md.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <httplib.h>

#include "bench_stats.h"
#include "http/server.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Outcome {
  double per_second = 0;
  std::vector<double> latencies_ms;
  int errors = 0;
};

Outcome Drive(int port, bool post, const std::string& body, int clients, double seconds) {
  std::vector<std::thread> threads;
  std::vector<Outcome> parts(static_cast<std::size_t>(clients));
  const auto until = Clock::now() + std::chrono::duration<double>(seconds);
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      httplib::Client client("127.0.0.1", port);
      client.set_keep_alive(true);
      Outcome& out = parts[static_cast<std::size_t>(c)];
      while (Clock::now() < until) {
        const auto start = Clock::now();
        auto r =
            post ? client.Post("/echo", body, "application/octet-stream") : client.Get("/small");
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
        if (!r || r->status != 200) {
          ++out.errors;
          continue;
        }
        out.latencies_ms.push_back(ms);
      }
    });
  }
  for (auto& t : threads) t.join();
  Outcome total;
  for (auto& p : parts) {
    total.latencies_ms.insert(total.latencies_ms.end(), p.latencies_ms.begin(),
                              p.latencies_ms.end());
    total.errors += p.errors;
  }
  total.per_second = static_cast<double>(total.latencies_ms.size()) / seconds;
  return total;
}

void Print(const char* server, const char* route, Outcome& o) {
  std::sort(o.latencies_ms.begin(), o.latencies_ms.end());
  std::printf("%-6s %-6s %9.0f req/s  p50 %7.3f ms  p99 %7.3f ms  errors %d\n", server, route,
              o.per_second, kadr::bench::Percentile(o.latencies_ms, 50),
              kadr::bench::Percentile(o.latencies_ms, 99), o.errors);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kadr's HTTP server next to a plain cpp-httplib server"};
  int clients = 4;
  double seconds = 5;
  int body_kb = 256;
  app.add_option("--clients", clients, "keep-alive client threads")->check(CLI::Range(1, 64));
  app.add_option("--seconds", seconds, "seconds per server and route")->check(CLI::Range(1, 600));
  app.add_option("--body-kb", body_kb, "POST body size, KiB")->check(CLI::Range(1, 32768));
  CLI11_PARSE(app, argc, argv);
  const std::string body(static_cast<std::size_t>(body_kb) * 1024, 'b');

  // Plain cpp-httplib, configured as kadr's server was before ADR 0013.
  httplib::Server plain;
  plain.new_task_queue = [] { return new httplib::ThreadPool(8); };
  plain.set_tcp_nodelay(true);
  plain.set_payload_max_length(64 << 20);
  plain.Get("/small", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok","padding":"0123456789"})", "application/json");
  });
  plain.Post("/echo", [](const httplib::Request& req, httplib::Response& res) {
    res.set_content(std::to_string(req.body.size()), "application/json");
  });
  const int plain_port = plain.bind_to_any_port("127.0.0.1");
  std::thread plain_thread([&] { plain.listen_after_bind(); });

  kadr::http::HttpServerOptions options;
  options.port = 0;
  options.threads = 8;
  options.max_body_bytes = 64 << 20;
  auto server = kadr::http::HttpServer::Create(options);
  if (!server) return 1;
  (void)(*server)->Route("GET", "/small", [](const kadr::http::HttpRequest&) {
    return kadr::http::HttpResponse::Json(R"({"status":"ok","padding":"0123456789"})");
  });
  (void)(*server)->Route("POST", "/echo",
                         [](const kadr::http::HttpRequest& req) {
                           return kadr::http::HttpResponse::Json(std::to_string(req.body.size()));
                         },
                         {.max_body_bytes = 64 << 20});
  if (!(*server)->Start().ok()) return 1;

  std::printf("clients %d, %.0f s per run, POST body %d KiB\n", clients, seconds, body_kb);
  Outcome plain_get = Drive(plain_port, false, body, clients, seconds);
  Outcome kadr_get = Drive((*server)->port(), false, body, clients, seconds);
  Outcome plain_post = Drive(plain_port, true, body, clients, seconds);
  Outcome kadr_post = Drive((*server)->port(), true, body, clients, seconds);
  Print("plain", "GET", plain_get);
  Print("kadr", "GET", kadr_get);
  Print("plain", "POST", plain_post);
  Print("kadr", "POST", kadr_post);
  std::printf("ratio kadr/plain req/s: GET %.2f  POST %.2f\n",
              kadr_get.per_second / plain_get.per_second,
              kadr_post.per_second / plain_post.per_second);
  (*server)->Stop();
  plain.stop();
  plain_thread.join();
  return 0;
}
