// Helpers for the tests that drive a whole `kadr` process over HTTP (`kadr up`, `kadr gateway`)
// started as a ChildProcess: read the port it listens on from the line it prints, make an HTTP
// client for it on loopback, wait for GET /readyz. Header-only, for the integration tests
// (they link cpp-httplib). Not thread-safe where ChildProcess is not.
#pragma once

#include <chrono>
#include <string>

#include <httplib.h>

#include "support/child_process.h"
#include "support/wait.h"

namespace kadr::testing {

// The line a kadr process prints once its HTTP server listens ("web UI and API" for `kadr up`
// and `kadr gateway`, "web UI and history" for a lone viewer); group 1 is the port.
inline constexpr char kHttpReadyLine[] =
    R"(kadr: web UI and (?:API|history) on http://127\.0\.0\.1:(\d+)/)";

// The port `process` listens on, read from its log; 0 when it exits or `timeout` passes first
// (its Log() then says why).
inline int WaitForHttpPort(ChildProcess& process, std::chrono::milliseconds timeout) {
  const auto port = process.WaitForLog(kHttpReadyLine, timeout);
  return port ? std::stoi(*port) : 0;
}

// A client for http://127.0.0.1:`port`: connects within 5 s, reads and writes within `timeout`.
inline httplib::Client LoopbackClient(int port,
                                      std::chrono::seconds timeout = std::chrono::seconds(60)) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(std::chrono::seconds(5));
  c.set_read_timeout(timeout);
  c.set_write_timeout(timeout);
  return c;
}

// Waits until GET /readyz on `port` answers 200 (the models it serves have workers).
inline bool WaitReady(int port, std::chrono::milliseconds timeout) {
  auto c = LoopbackClient(port);
  return WaitUntil(
      [&] {
        auto r = c.Get("/readyz");
        return r && r->status == 200;
      },
      timeout);
}

}  // namespace kadr::testing
