// ViewerService: records what the workers produce in the history, and serves the history
// over HTTP.
//
//   consume results + annotated images -> HistoryStore (rows, images, thumbnails) -> ack
//
// It reads one bus::FrameSubscriber which, in production, is subscribed to kadr.results,
// kadr.annotated and the gateways' reply topics (^kadr\.replies\..*). Each message is told
// apart by its content-type header (application/json: a frame result; image/*: an annotated
// image), else by its first bytes. A message's job is its stream: header kadr-stream-id, else
// the message key (else, for a result, its frame.stream / frame.id), used as the job id when
// viewer::IsValidJobId accepts it, else made into one by JobIdForStream.
//
// Order does not matter: the worker publishes a frame's annotated image before its result,
// and both may arrive in either order (different topics). An image whose job is unknown
// creates it in state "running"; the result then fills in every field but the image.
// Redelivered messages rewrite the same rows and files, so duplicates are harmless.
// Every message is acknowledged once handled: stored, or found malformed (logged at warn,
// counted, and dropped so that one bad message never blocks the stream), or failed to store
// after `store_attempts` tries (logged at error, counted, dropped: the history is a record
// for people, not a queue). Retention (HistoryStore::Enforce) runs every
// `enforce_every_records` stored records and every `enforce_interval`.
//
// Messages are routed by their kadr-kind header (docs/protocol.md): `live` (a frame of a live
// stream; its result and annotated image) goes to the LiveHub only, never to the history;
// `video` (a frame of a video job, assembled by the gateway) is acknowledged, counted and
// otherwise ignored; absent or anything else is recorded in the history as above. The live
// hub serves GET /api/v1/streams/:id/live (MJPEG), .../events (SSE) and .../frame.
//
// Metrics: kadr_viewer_records_total{kind="result"|"image",outcome="stored"|"malformed"|
// "failed"}, kadr_viewer_live_messages_total{kind="frame"|"result",outcome="accepted"|
// "malformed"}, kadr_viewer_ignored_messages_total{kind="video"}, kadr_viewer_live_clients
// (open live connections) and kadr_viewer_live_rejected_total (503 past max_live_clients).
//
// Threading: Run() (or PollOnce()) from one thread. The HTTP handlers that RegisterRoutes
// installs run on the server's threads and only read the (thread-safe) HistoryStore and
// LiveHub; each open live connection holds one server thread until its client leaves or the
// server stops. stats() from any thread.
// Ownership: the store, subscriber and metrics registry are borrowed and must outlive the
// service; the service must outlive any HttpServer it registered routes on (stop the server
// first).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "bus/bus.h"
#include "common/metrics.h"
#include "common/status.h"
#include "http/server.h"
#include "viewer/history_store.h"
#include "viewer/live_hub.h"

namespace kadr::viewer {

struct ViewerOptions {
  // Messages taken per poll.
  std::size_t max_batch = 64;
  // Longest wait of one poll for the first message; also the stop-check interval.
  std::chrono::milliseconds poll_timeout{100};
  // Retention runs after this many stored records (results and images)...
  std::size_t enforce_every_records = 100;
  // ...and at least this often while messages arrive or not (measured with now_ms).
  std::chrono::milliseconds enforce_interval{30000};
  // Thumbnails are scaled down (never up) to this many pixels on their long side.
  int thumbnail_max_side = 240;
  // JPEG quality of thumbnails, 1..100.
  int thumbnail_quality = 80;
  // Tries per message when the store fails with kUnavailable (busy database, full disk).
  int store_attempts = 3;
  // Wait between those tries.
  std::chrono::milliseconds store_retry_backoff{50};
  // Unix ms; the system clock when unset. Stamps updated_ms, and created_ms when a result
  // carries no capture time.
  std::function<std::int64_t()> now_ms;
  // The live streams' latest frames and results (bounds, idle expiry).
  LiveHubOptions live;
  // Open live connections (MJPEG and SSE together); more get 503. Each holds a server thread.
  std::size_t max_live_clients = 16;
  // An idle live connection sends something this often: SSE a comment line, MJPEG the latest
  // frame again, so that proxies keep it open and a client that left is noticed.
  std::chrono::milliseconds live_keepalive{10000};
  // How often a live connection waiting for the next frame checks that its client is still
  // there (and so how long a client that left holds its thread).
  std::chrono::milliseconds live_check_interval{1000};
};

struct ViewerStats {
  std::uint64_t results_stored = 0;
  std::uint64_t results_malformed = 0;
  std::uint64_t results_failed = 0;
  std::uint64_t images_stored = 0;
  std::uint64_t images_malformed = 0;
  std::uint64_t images_failed = 0;
  std::uint64_t live_frames = 0;     // live frames taken into the hub
  std::uint64_t live_results = 0;    // live results taken into the hub
  std::uint64_t live_malformed = 0;  // live messages dropped as malformed
  std::uint64_t video_ignored = 0;   // video-job messages acknowledged and ignored
  std::uint64_t live_clients = 0;    // live connections open now
  std::uint64_t live_rejected = 0;   // live connections refused (503)
};

// The topics (and patterns, starting with '^') the viewer's subscriber reads: the results,
// annotated images and gateway reply topics for the history, and the live streams' results
// and annotated images for the live view.
std::vector<std::string> ViewerTopics();

// The MJPEG part boundary of GET /api/v1/streams/:id/live.
inline constexpr char kMjpegBoundary[] = "kadrframe";

// The job id for a stream id: `stream_id` itself when IsValidJobId accepts it; otherwise its
// allowed characters (others replaced by '_', at most 47 of them) followed by '-' and 16 hex
// digits of a hash of the whole stream id, so that distinct streams keep distinct jobs.
// Empty for an empty stream id.
std::string JobIdForStream(std::string_view stream_id);

// Whether a message on a results/reply topic is an annotated image rather than a JSON result:
// by its content-type header, else (a producer that sets none) by sniffing the bytes. Shared
// with the gateway, which reads the same mix on its reply topic.
bool IsImageMessage(const bus::Message& m);

class ViewerService {
 public:
  ViewerService(ViewerOptions options, HistoryStore& store, bus::FrameSubscriber& subscriber,
                MetricsRegistry& metrics);
  ViewerService(const ViewerService&) = delete;
  ViewerService& operator=(const ViewerService&) = delete;

  // Records messages until `stop` is requested, then closes the subscriber (which commits
  // what was acknowledged) and returns its status.
  Status Run(const std::stop_token& stop);

  // One step of Run(): polls one batch (waiting up to `timeout` for the first message),
  // records and acknowledges every message in it, and runs retention when due. Returns the
  // number of messages taken. For tests and for callers with their own loop.
  std::size_t PollOnce(std::chrono::milliseconds timeout);

  // Installs the history's HTTP API (docs/api.md) on `server`, which must not be started:
  //   GET /api/v1/jobs?limit=50&offset=0   newest first; limit 1..500, offset >= 0, else 400
  //   GET /api/v1/jobs/:id/thumbnail       the JPEG preview; 404 when there is none
  // and, with `job_routes` (no gateway in the process answers for jobs):
  //   GET /api/v1/jobs/:id                 the job
  //   GET /api/v1/jobs/:id/result          done: the detect body; queued/running: 202 with
  //                                        the job; failed: the job's error and its status
  //   GET /api/v1/jobs/:id/image           the annotated JPEG; 404 when there is none
  // Errors are the protocol's JSON bodies: 400 for an invalid id, 404 for an unknown job.
  // Always, the live view (docs/api.md "Live view"):
  //   GET /api/v1/streams/:id/live         multipart/x-mixed-replace; boundary=kadrframe: each
  //                                        part one annotated JPEG as the worker made it,
  //                                        latest-wins; starts with the latest frame and
  //                                        waits (200, open) for a stream with none yet
  //   GET /api/v1/streams/:id/events       text/event-stream: "event: result" with the result
  //                                        JSON per frame, latest-wins; ": keep-alive" lines
  //   GET /api/v1/streams/:id/frame        the latest annotated JPEG; 404 until there is one
  // live and events: 503 past max_live_clients. 400 for an id over 128 bytes.
  // Returns the server's Route() error (kFailedPrecondition once it has started).
  Status RegisterRoutes(http::HttpServer& server, bool job_routes);

  ViewerStats stats() const;

  // The live hub, for tests and for callers that feed it directly.
  LiveHub& live_hub() { return live_; }

 private:
  void Handle(const bus::InboundMessage& in);
  // Both return kInvalidArgument for a malformed message, other codes when the store failed.
  Status StoreResult(const bus::InboundMessage& in);
  Status StoreImage(const bus::InboundMessage& in);
  // kInvalidArgument for a malformed live message.
  Status PutLive(const bus::InboundMessage& in, bool image);
  // Runs `op` up to store_attempts times while it fails with kUnavailable.
  Status WithRetries(const std::function<Status()>& op) const;
  void MaybeEnforce();
  std::int64_t NowMs() const;

  http::HttpResponse ListJobs(const http::HttpRequest& req);
  http::HttpResponse GetJob(const http::HttpRequest& req);
  http::HttpResponse GetResult(const http::HttpRequest& req);
  http::HttpResponse GetImage(const http::HttpRequest& req, bool thumbnail);
  http::HttpResponse LiveStream(const http::HttpRequest& req, LiveKind kind);
  http::HttpResponse LiveFrame(const http::HttpRequest& req);
  void WriteMjpeg(const std::string& stream, http::StreamWriter& out);
  void WriteEvents(const std::string& stream, http::StreamWriter& out);

  const ViewerOptions options_;
  HistoryStore& store_;
  bus::FrameSubscriber& subscriber_;

  Counter& results_stored_;
  Counter& results_malformed_;
  Counter& results_failed_;
  Counter& images_stored_;
  Counter& images_malformed_;
  Counter& images_failed_;
  Counter& live_frames_;
  Counter& live_results_;
  Counter& live_frames_malformed_;
  Counter& live_results_malformed_;
  Counter& video_ignored_;
  Gauge& live_clients_gauge_;
  Counter& live_rejected_;

  LiveHub live_;
  std::atomic<std::size_t> live_clients_{0};

  // Retention bookkeeping; touched only by the polling thread.
  std::size_t stored_since_enforce_ = 0;
  std::int64_t last_enforce_ms_ = 0;
};

}  // namespace kadr::viewer
