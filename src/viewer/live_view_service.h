// LiveViewService: the live view of streams (docs/api.md "Live view"). It consumes the live
// streams' annotated frames and results (kadr.live.annotated, kadr.live.results: messages of
// kadr-kind `live`), keeps the latest of each per stream in its LiveHub (never in the job
// history: that is jobs::Recorder's), and serves them:
//
//   GET /api/v1/streams/:id/live     multipart/x-mixed-replace; boundary=kadrframe: each part
//                                    one annotated JPEG as the worker made it, latest-wins;
//                                    starts with the latest frame and waits (200, open) for a
//                                    stream with none yet
//   GET /api/v1/streams/:id/events   text/event-stream: "event: result" with the result JSON
//                                    per frame, latest-wins; ": keep-alive" lines
//   GET /api/v1/streams/:id/frame    the latest annotated JPEG; 404 until there is one
//
// live and events: 503 past max_live_clients. 400 for an id over max_stream_id_bytes.
// Messages of another kind are acknowledged and counted as ignored; malformed ones (an image
// that is not a JPEG, a result that does not parse) are logged, counted and dropped.
//
// Metrics: kadr_viewer_live_messages_total{kind="frame"|"result",outcome="accepted"|
// "malformed"}, kadr_viewer_ignored_messages_total, kadr_viewer_live_clients (open live
// connections) and kadr_viewer_live_rejected_total (503 past max_live_clients).
//
// Threading: Run() (or PollOnce()) from one thread. The HTTP handlers run on the server's
// threads and only read the (thread-safe) LiveHub; each open live connection holds one server
// thread until its client leaves or the server stops. stats() from any thread.
// Ownership: the subscriber and metrics registry are borrowed and must outlive the service;
// the service must outlive any HttpServer it registered routes on (stop the server first).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <stop_token>
#include <string>
#include <vector>

#include "bus/bus.h"
#include "common/metrics.h"
#include "common/status.h"
#include "http/server.h"
#include "viewer/live_hub.h"

namespace kadr::viewer {

struct LiveViewOptions {
  // Messages taken per poll.
  std::size_t max_batch = 64;
  // Longest wait of one poll for the first message; also the stop-check interval.
  std::chrono::milliseconds poll_timeout{100};
  // The live streams' latest frames and results (bounds, idle expiry).
  LiveHubOptions live;
  // Open live connections (MJPEG and SSE together); more get 503. Each holds a server thread.
  std::size_t max_live_clients = 16;
  // Of those, at most this many for one client (its token's name when the request is
  // authenticated, else its address); more get 429. 0: half of max_live_clients (at least 1),
  // so that one client cannot take every live connection.
  std::size_t max_live_clients_per_client = 0;
  // An idle live connection sends something this often: SSE a comment line, MJPEG the latest
  // frame again, so that proxies keep it open and a client that left is noticed.
  std::chrono::milliseconds live_keepalive{10000};
  // How often a live connection waiting for the next frame checks that its client is still
  // there (and so how long a client that left holds its thread).
  std::chrono::milliseconds live_check_interval{1000};
};

struct LiveViewStats {
  std::uint64_t live_frames = 0;     // live frames taken into the hub
  std::uint64_t live_results = 0;    // live results taken into the hub
  std::uint64_t live_malformed = 0;  // live messages dropped as malformed
  std::uint64_t ignored = 0;         // messages of another kind, acknowledged and ignored
  std::uint64_t live_clients = 0;    // live connections open now
  std::uint64_t live_rejected = 0;   // live connections refused (503)
};

// The topics (patterns, starting with '^') the live view's subscriber reads.
std::vector<std::string> LiveViewTopics();

// The MJPEG part boundary of GET /api/v1/streams/:id/live.
inline constexpr char kMjpegBoundary[] = "kadrframe";

class LiveViewService {
 public:
  LiveViewService(LiveViewOptions options, bus::FrameSubscriber& subscriber,
                  MetricsRegistry& metrics);
  LiveViewService(const LiveViewService&) = delete;
  LiveViewService& operator=(const LiveViewService&) = delete;

  // Consumes live messages until `stop` is requested, then closes the subscriber.
  Status Run(const std::stop_token& stop);
  // One step of Run(): polls one batch (waiting up to `timeout`) and takes every message in
  // it. Returns the number of messages taken.
  std::size_t PollOnce(std::chrono::milliseconds timeout);

  // Installs the routes above on `server`, which must not be started. Returns the server's
  // Route() error (kFailedPrecondition once it has started).
  Status RegisterRoutes(http::HttpServer& server);

  LiveViewStats stats() const;

  // The live hub, for tests and for callers that feed it directly.
  LiveHub& live_hub() { return live_; }

 private:
  void Handle(const bus::InboundMessage& in);
  // kInvalidArgument for a malformed live message.
  Status PutLive(const bus::InboundMessage& in, bool image);
  http::HttpResponse LiveStream(const http::HttpRequest& req, LiveKind kind);
  http::HttpResponse LiveFrame(const http::HttpRequest& req);
  void WriteMjpeg(const std::string& stream, http::StreamWriter& out);
  void WriteEvents(const std::string& stream, http::StreamWriter& out);

  const LiveViewOptions options_;
  bus::FrameSubscriber& subscriber_;

  Counter& live_frames_;
  Counter& live_results_;
  Counter& live_frames_malformed_;
  Counter& live_results_malformed_;
  Counter& ignored_;
  Gauge& live_clients_gauge_;
  Counter& live_rejected_;

  LiveHub live_;
  std::atomic<std::size_t> live_clients_{0};
  std::mutex per_client_mu_;
  std::map<std::string, std::size_t, std::less<>> per_client_;  // open live connections
};

}  // namespace kadr::viewer
