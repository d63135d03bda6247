// GatewayService: kadr's REST front door (docs/api.md). It checks an uploaded image, converts
// it to the wire format (an RGB JPEG), publishes it as one frame to the model's frame topic,
// and answers with the worker's result, which comes back on the gateway's own reply topic.
//
//   HTTP upload -> params, probe, convert -> publish kadr.frames.<model> -> (worker)
//        <- 200 result / 202 job <- match by correlation id <- kadr.replies.<instance>
//
// Jobs: one per upload, id "j" + 24 hex digits. The gateway keeps recent jobs in memory
// (bounded by count and by bytes of results and annotated images); older ones are looked up in
// the optional HistoryStore (the viewer's, which records every result it consumes from Kafka).
// The gateway never writes to the history.
//
// Videos (MP4, MOV, MKV, AVI, sniffed) posted to /api/v1/jobs become video jobs, decoded and
// published frame by frame and reassembled into an annotated MP4 (detail/video_jobs.h).
//
// Workers announce themselves on kadr.workers (protocol/heartbeat.h). A model is known when it
// is configured locally or some worker ever announced it (else 404), and available when at
// least one of its workers is alive (else 503).
//
// Ownership: the publisher, both subscribers, the metrics registry and the history store are
// borrowed and must outlive the service; the HTTP server whose routes point at the service
// must be stopped before the service is destroyed.
// Thread-safety: route handlers run concurrently on the HTTP server's threads; Run() runs on
// one thread of its own and is the only user of the two subscribers. Delivery callbacks may
// arrive on a transport thread, also after destruction (they are then ignored).
// Lifecycle: construct -> RegisterRoutes() -> (start the HTTP server) -> Run(stop) until stop is
// requested. After Run returns, waiting requests have been answered 503 and new uploads get
// 503 "shutting down"; read-only routes keep working.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "bus/bus.h"
#include "common/metrics.h"
#include "common/status.h"
#include "imaging/decode.h"
#include "viewer/history_store.h"

namespace kadr::http {
class HttpServer;
}  // namespace kadr::http

namespace kadr::gateway {

// A model from the local registry, as the gateway shows it in GET /api/v1/models. Fields left
// empty (0 sizes, no labels, no family) are filled in from the workers' announcements.
struct ConfiguredModel {
  std::string name;             // registry name
  std::string family;           // "yolox", "yolov8", "people-hog", ...
  std::string state = "ready";  // "ready", "not_loaded" or "failed"
  std::optional<Status> error;  // why it failed, when state == "failed"
  int input_width = 0;          // network input, pixels; 0 for size-agnostic models
  int input_height = 0;
  std::vector<std::string> labels;  // class id -> name; resolves `classes=person,car`
  std::string task = "detect";      // "detect" or "segment"
};

struct GatewayOptions {
  // Topic the workers answer on: results and annotated images of this gateway's frames
  // ("kadr.replies.<instance>"). Must be a valid topic name and be what `replies` reads.
  std::string reply_topic;
  // Unfinished jobs (sync and async) at most; beyond it uploads get 429 (Retry-After: 1).
  std::size_t max_in_flight = 64;
  // Deadline of a request without `timeout_ms`, and the largest `timeout_ms` accepted.
  std::chrono::milliseconds default_timeout{30000};
  std::chrono::milliseconds max_timeout{300000};
  // Model used when a request names none; empty: the first configured model, else the first
  // (by name) with a live worker.
  std::string default_model;
  // Recent jobs kept in memory; beyond it the oldest finished ones are dropped.
  std::size_t max_jobs_kept = 1000;
  // Bytes of results and annotated images kept in memory; beyond it the oldest finished jobs
  // are dropped.
  std::uint64_t max_job_bytes = std::uint64_t{256} << 20;
  // Largest uploaded image, bytes (413 beyond); `limits` bound its pixels and sides.
  std::size_t max_image_bytes = std::size_t{32} << 20;
  imaging::DecodeLimits limits;
  // JPEG quality for uploads that must be converted (not baseline YCbCr JPEG, or rotated).
  int jpeg_quality = 92;
  // Video jobs (docs/api.md "Video jobs"): the folder for uploads, annotated MP4s and
  // per-frame results; empty: video uploads are refused (415).
  std::string video_dir;
  // Largest uploaded video, bytes (413 beyond).
  std::size_t max_video_bytes = std::size_t{512} << 20;
  // Frames of one video job in flight (published, result not yet written), 1..256.
  std::size_t video_window = 16;
  // Video jobs decoded at once; later ones wait queued (at most max_queued_video_jobs, 429
  // beyond).
  std::size_t max_video_jobs = 2;
  std::size_t max_queued_video_jobs = 16;
  // Finished video jobs kept (records, MP4s and results on disk); the oldest go first.
  std::size_t max_videos_kept = 100;
  // A video frame's result must arrive within this of its publication (or the request's
  // timeout_ms), else the job fails.
  std::chrono::milliseconds video_frame_timeout{60000};
  // How often Run() asks broker_check; its last answer is cached for /readyz and uploads.
  std::chrono::milliseconds broker_check_interval{2000};
  // Longest wait of one subscriber poll in Run(); bounds how late a stop is noticed.
  std::chrono::milliseconds poll_timeout{10};
  // Unix milliseconds, for job times, frame deadlines and heartbeat liveness; the system
  // clock when unset. Waiting for results uses the steady clock, whatever this returns.
  std::function<std::int64_t()> now_ms;
};

class GatewayService {
 public:
  // `configured`: the models of the local registry (known by name even while no worker is
  // alive, so they get 503 rather than 404). `broker_check` returns OK when the broker answers;
  // it is called from Run()'s thread every broker_check_interval. `history`: optional; finished
  // jobs no longer in memory are read from it.
  GatewayService(GatewayOptions options, bus::FramePublisher& publisher,
                 bus::FrameSubscriber& replies, bus::FrameSubscriber& workers,
                 std::vector<ConfiguredModel> configured, std::function<Status()> broker_check,
                 MetricsRegistry& metrics, viewer::HistoryStore* history = nullptr);
  ~GatewayService();
  GatewayService(const GatewayService&) = delete;
  GatewayService& operator=(const GatewayService&) = delete;

  // kInvalidArgument naming the bad field: invalid reply_topic, max_in_flight or
  // max_jobs_kept 0, non-positive timeouts or default_timeout over max_timeout, jpeg_quality
  // outside 1..100, non-positive intervals.
  static Status ValidateOptions(const GatewayOptions& options);

  // Adds the routes of docs/api.md except GET /api/v1/jobs (the list), .../thumbnail and
  // /api/v1/openapi.json (served by the viewer and the web UI): POST /api/v1/detect,
  // POST /api/v1/jobs, GET /api/v1/jobs/:id, .../result, .../image, GET /api/v1/models,
  // /healthz, /readyz and /metrics; for video jobs also DELETE /api/v1/jobs/:id and
  // GET .../video. Creates video_dir (when set) and removes what a crash left there.
  // Errors: ValidateOptions's, the server's (already started), kUnavailable (video_dir).
  Status RegisterRoutes(http::HttpServer& server);

  // Polls the replies and the worker announcements, checks the broker and expires deadlines
  // until `stop` is requested; then answers every waiting request 503 "shutting down", closes
  // both subscribers and returns OK. Errors: ValidateOptions's (nothing is run then).
  Status Run(const std::stop_token& stop);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kadr::gateway
