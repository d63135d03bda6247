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
// Metrics: kadr_viewer_records_total{kind="result"|"image",outcome="stored"|"malformed"|
// "failed"}.
//
// Threading: Run() (or PollOnce()) from one thread. The HTTP handlers that RegisterRoutes
// installs run on the server's threads and only read the (thread-safe) HistoryStore.
// stats() from any thread.
// Ownership: the store, subscriber and metrics registry are borrowed and must outlive the
// service; the service must outlive any HttpServer it registered routes on (stop the server
// first).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stop_token>
#include <string>
#include <string_view>

#include "bus/bus.h"
#include "common/metrics.h"
#include "common/status.h"
#include "http/server.h"
#include "viewer/history_store.h"

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
};

struct ViewerStats {
  std::uint64_t results_stored = 0;
  std::uint64_t results_malformed = 0;
  std::uint64_t results_failed = 0;
  std::uint64_t images_stored = 0;
  std::uint64_t images_malformed = 0;
  std::uint64_t images_failed = 0;
};

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
  // Returns the server's Route() error (kFailedPrecondition once it has started).
  Status RegisterRoutes(http::HttpServer& server, bool job_routes);

  ViewerStats stats() const;

 private:
  void Handle(const bus::InboundMessage& in);
  // Both return kInvalidArgument for a malformed message, other codes when the store failed.
  Status StoreResult(const bus::InboundMessage& in);
  Status StoreImage(const bus::InboundMessage& in);
  // Runs `op` up to store_attempts times while it fails with kUnavailable.
  Status WithRetries(const std::function<Status()>& op) const;
  void MaybeEnforce();
  std::int64_t NowMs() const;

  http::HttpResponse ListJobs(const http::HttpRequest& req);
  http::HttpResponse GetJob(const http::HttpRequest& req);
  http::HttpResponse GetResult(const http::HttpRequest& req);
  http::HttpResponse GetImage(const http::HttpRequest& req, bool thumbnail);

  const ViewerOptions options_;
  HistoryStore& store_;
  bus::FrameSubscriber& subscriber_;

  Counter& results_stored_;
  Counter& results_malformed_;
  Counter& results_failed_;
  Counter& images_stored_;
  Counter& images_malformed_;
  Counter& images_failed_;

  // Retention bookkeeping; touched only by the polling thread.
  std::size_t stored_since_enforce_ = 0;
  std::int64_t last_enforce_ms_ = 0;
};

}  // namespace kadr::viewer
