// GatewayService: kadr's REST front door (docs/api.md). It checks an uploaded image, converts
// it to the wire format (an RGB JPEG), publishes it as one frame to the model's frame topic,
// and answers with the worker's result, which comes back on the gateway's own reply topic.
//
//   HTTP upload -> params, probe, convert -> publish kadr.frames.<model> -> (worker)
//        <- 200 result / 202 job <- match by correlation id <- kadr.replies.<instance>
//
// Jobs (docs/adr/0008-job-model-and-events.md): one per upload, id jobs::NewJobId. The
// gateway keeps no job records: it publishes each job's snapshot to kadr.jobs (for an
// asynchronous request before answering 202), and the recorder (jobs/recorder.h) writes
// snapshots and the workers' answers to the job store, which the job routes read
// (jobs/recorder.h). So any number of gateways serve behind one load balancer, and a
// gateway that dies loses no job a worker has taken: the worker's answer still reaches the
// recorder.
//
// An image is a one-frame run of the frame engine (engine/frame_run.h): sent to
// kadr.frames.<model> with this gateway's reply topic, its answer routed back by an
// engine::Router. A synchronous request waits for it on its HTTP thread; an asynchronous one
// on a thread of its own, holding its in-flight slot until the answer or its deadline.
//
// Videos (MP4, MOV, MKV, AVI, sniffed) posted to /api/v1/jobs become video jobs: the gateway
// checks the container, saves the upload as <id>.src in video_dir (a folder the camera
// services share), and publishes the queued snapshot and a request to kadr.video.jobs; a
// camera service decodes and runs it (camera/video_jobs.h).
//
// Workers announce themselves on kadr.workers (protocol/frame.h). A model is known when it
// is configured locally or some worker ever announced it (else 404), and available when at
// least one of its workers is alive (else 503).
//
// Ownership: the publisher, both subscribers and the metrics registry are borrowed and must
// outlive the service; the HTTP server whose routes point at the service must be stopped
// before the service is destroyed.
// Thread-safety: route handlers run concurrently on the HTTP server's threads; Run() runs on
// one thread of its own and is the only user of the two subscribers. Delivery callbacks may
// arrive on a transport thread, also after destruction (they are then ignored).
// Lifecycle: Create() -> RegisterRoutes() -> (start the HTTP server) -> Run(stop) until stop
// is requested. After Run returns, waiting requests have been answered 503 and new uploads get
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

namespace kadr::http {
class HttpServer;
}  // namespace kadr::http
namespace kadr::engine {
class Admission;
}  // namespace kadr::engine

namespace kadr::gateway {

// Room for the multipart framing (boundaries, part headers, form fields) around an upload: a
// route's body limit is the upload's limit plus this.
inline constexpr std::size_t kUploadFramingBytes = 64 * 1024;

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
  // Of those, one client (one remote address) holds at most this many, so that others are
  // still served while it floods (429 beyond).
  std::size_t max_in_flight_per_client = 48;
  // Admission by bytes on the broker, shared with the other producers of this process
  // (engine/bus_dispatch.h): an image waits there for room until its deadline. Unset: the
  // gateway makes its own with the default budget.
  std::shared_ptr<engine::Admission> admission;
  // Images larger than this on their long side travel scaled down to it: detections are
  // still reported in the upload's pixels, the annotated image is at the frame's size (docs/
  // adr/0009-admission-by-bytes.md). 0: no limit.
  int max_frame_side = 1280;
  // How long an asynchronous upload waits for the broker to take its job's snapshot (503
  // beyond).
  std::chrono::milliseconds snapshot_timeout{5000};
  // Deadline of a request without `timeout_ms`, and the largest `timeout_ms` accepted.
  std::chrono::milliseconds default_timeout{30000};
  std::chrono::milliseconds max_timeout{300000};
  // Model used when a request names none; empty: the first configured model, else the first
  // (by name) with a live worker.
  std::string default_model;
  // Largest uploaded image, bytes (413 beyond); `limits` bound its pixels and sides.
  std::size_t max_image_bytes = std::size_t{32} << 20;
  imaging::DecodeLimits limits;
  // JPEG quality for uploads that must be converted (not baseline YCbCr JPEG, or rotated).
  int jpeg_quality = 92;
  // Video jobs (docs/api.md "Video jobs"): the folder shared with the camera services, where
  // uploads wait for them; empty: video uploads are refused (415).
  std::string video_dir;
  // Largest uploaded video, bytes (413 beyond).
  std::size_t max_video_bytes = std::size_t{512} << 20;
  // What a video's container may state (413 beyond), checked before its job is queued: frame
  // size, frames and duration (a count or duration the container does not state is checked
  // by the camera service as it reads the frames).
  std::int64_t max_video_pixels = std::int64_t{4096} * 4096;
  int max_video_side = 8192;
  std::int64_t max_video_frames = 108000;
  double max_video_seconds = 3600;
  // The video folder's files (uploads, annotated videos, results) at most this many bytes
  // with a new upload (507 beyond); 0: no quota.
  std::uint64_t max_video_dir_bytes = std::uint64_t{20} << 30;
  // A queued video job no camera service has taken within this fails (the recorder's
  // deadline sweep): no camera service runs, or none shares the video folder.
  std::chrono::milliseconds video_claim_timeout{60000};
  // How often Run() asks broker_check; its last answer is cached for /readyz and uploads.
  std::chrono::milliseconds broker_check_interval{2000};
  // /readyz answers 503 ("losing_frames") while a worker has announced frames of a model
  // deleted by the broker before they were read within this long (0: never; the losses
  // still show in its body).
  std::chrono::milliseconds loss_window{30000};
  // Longest wait of one subscriber poll in Run(); bounds how late a stop is noticed.
  std::chrono::milliseconds poll_timeout{10};
  // Unix milliseconds, for job times and heartbeat liveness; the system clock when unset.
  // Waiting for results uses the system clock, whatever this returns.
  std::function<std::int64_t()> now_ms;
};

class GatewayService {
 public:
  // `configured`: the models of the local registry (known by name even while no worker is
  // alive, so they get 503 rather than 404). `broker_check` returns OK when the broker answers;
  // it is called from Run()'s thread every broker_check_interval. Creates video_dir (when
  // set). Errors: ValidateOptions's, kUnavailable (video_dir).
  static Result<std::unique_ptr<GatewayService>> Create(
      GatewayOptions options, bus::FramePublisher& publisher, bus::FrameSubscriber& replies,
      bus::FrameSubscriber& workers, std::vector<ConfiguredModel> configured,
      std::function<Status()> broker_check, MetricsRegistry& metrics);
  ~GatewayService();
  GatewayService(const GatewayService&) = delete;
  GatewayService& operator=(const GatewayService&) = delete;

  // kInvalidArgument naming the bad field: invalid reply_topic, max_in_flight 0 (or per
  // client 0), max_frame_side negative or under 32,
  // non-positive timeouts or default_timeout over max_timeout, jpeg_quality outside 1..100,
  // non-positive intervals.
  static Status ValidateOptions(const GatewayOptions& options);

  // Adds POST /api/v1/detect, POST /api/v1/jobs, GET /api/v1/models, /healthz, /readyz and
  // /metrics (docs/api.md), with their access levels (detect and jobs: operate, bodies up to
  // max_image_bytes / the larger of it and max_video_bytes, plus kUploadFramingBytes; models
  // and metrics: read; health: public, served when busy). The job routes are the job store's
  // (jobs/recorder.h); the OpenAPI document is the web UI's. Errors: the server's (already
  // started).
  Status RegisterRoutes(http::HttpServer& server);

  // Polls the replies and the worker announcements and checks the broker until `stop` is
  // requested; then answers every waiting request 503 "shutting down", closes both
  // subscribers and returns OK.
  Status Run(const std::stop_token& stop);

 private:
  class Impl;
  explicit GatewayService(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kadr::gateway
