// CameraService: the long-running producers of one camera service instance — its live
// streams (their HTTP API, runners and persistence) and, given a video folder, the video jobs
// it takes (camera/video_jobs.h) — and the reader of their answers. Every producer is a run of
// the frame engine; one engine::Router hands each answer to its run.
//
//   POST/GET/DELETE /api/v1/streams  ->  StreamStore (SQLite) + one StreamRunner per stream
//   kadr.video.jobs (requests subscriber, shared group)  ->  VideoJobs
//   kadr.live.results + kadr.video.replies.<camera id> (results subscriber)  ->  Router
//       ->  the stream's or video job's run; cancel requests there  ->  VideoJobs
//   kadr.workers (same subscriber): frames a worker says the broker deleted unread
//       ->  Router::OnDeletedUnread (sent again)
//
// Create() restores the persisted streams and starts their runners, and resumes the video
// jobs this camera had taken. Run() polls until stopped, then stops every runner and video job
// and closes the subscribers. Results of streams this instance does not own (another
// camera's, or deleted ones) are acknowledged and ignored.
//
// Errors of the API (docs/api.md "Streams"): 400 invalid field (invalid_argument, names the
// field) or no_such_device / no_such_file; 403 permission_denied (a source the operator's
// policy refuses: CameraOptions::sources, capture::SourcePolicy); 404 unknown model (via the
// injected check) or unknown_stream; 415 not_a_video; 502 source_unreachable (a network
// source that cannot be opened within the probe timeout: one message whatever the reason, so
// that answers do not map the network; the reason is logged); 429 too many streams. Every
// message and every stream JSON has its credentials redacted (capture::RedactUrl).
//
// Metrics: kadr_camera_frames_total{stream,outcome}, kadr_camera_frames_dropped_total{stream,
// reason}, kadr_camera_reconnects_total{stream}, kadr_camera_stream_state{stream,state},
// kadr_camera_latency_seconds{stream} (StreamRunner) and kadr_camera_streams (gauge).
//
// Threading: Run() / PollOnce() from one thread; the HTTP handlers run on the server's
// threads; everything else is thread-safe. Ownership: the publisher, subscriber and metrics
// registry are borrowed and must outlive the service; the service must outlive any HttpServer
// it registered routes on (stop the server first).
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "bus/bus.h"
#include "camera/detail/model_inputs.h"
#include "camera/detail/stream_store.h"
#include "camera/stream_runner.h"
#include "camera/video_jobs.h"
#include "capture/source_policy.h"
#include "common/metrics.h"
#include "common/status.h"
#include "http/server.h"

namespace kadr::camera {

// OK when frames of `model` would be consumed; kNotFound ("unknown model 'x'") otherwise.
using ModelCheck = std::function<Status(std::string_view model)>;

struct CameraOptions {
  // Where streams.db lives.
  std::filesystem::path data_dir = "kadr-data";
  // Model used when a request names none (empty: "model" is required).
  std::string default_model;
  // Most streams at once; more is 429.
  std::size_t max_streams = 64;
  // The POST's one-off open of the source (unless "probe": false).
  std::chrono::milliseconds probe_timeout{5000};
  // What sources streams may use (--source-dir, --source-device, --source-host): checked on
  // every POST (with or without the probe) and at every (re)connect, restored streams
  // included. The default allows no file, no device, and no loopback, link-local or
  // metadata host. Create() validates it and sets runner.source_policy from it.
  capture::SourcePolicyOptions sources;
  // Every runner's options (timeouts, backoff, topics, clock).
  RunnerOptions runner;
  // Results taken per poll, and the longest wait of one poll (also the stop-check interval).
  std::size_t max_batch = 64;
  std::chrono::milliseconds poll_timeout{100};
  // Video jobs: taken from kadr.video.jobs when `video.dir` is set (and a requests
  // subscriber is given), answered on video.reply_topic (which the results subscriber must
  // read too).
  VideoJobsOptions video;
};

class CameraService {
 public:
  // Opens <data_dir>/streams.db and starts a runner for every stream in it; with a video
  // folder and a `requests` subscriber (of kadr.video.jobs), resumes this camera's video jobs
  // and takes new ones. `factory` builds sources (OpenCvSourceFactory() in production; fakes
  // in tests).
  // Errors: kInvalidArgument (options.sources: SourcePolicy::Create), the store's
  // (kUnavailable, kInternal, kFailedPrecondition), VideoJobs::Init's.
  static Result<std::unique_ptr<CameraService>> Create(CameraOptions options,
                                                       bus::FramePublisher& publisher,
                                                       bus::FrameSubscriber& results,
                                                       bus::FrameSubscriber* requests,
                                                       MetricsRegistry& metrics, ModelCheck check,
                                                       SourceFactory factory);
  ~CameraService();
  CameraService(const CameraService&) = delete;
  CameraService& operator=(const CameraService&) = delete;

  // Routes results and takes video jobs until `stop`, then stops the runners and video jobs
  // and closes the subscribers (the results subscriber's status is returned).
  Status Run(const std::stop_token& stop);
  // One step of Run(): polls one batch of results (waiting up to `timeout`) and routes it,
  // and takes what waits on kadr.video.jobs. Returns the number of messages taken.
  std::size_t PollOnce(std::chrono::milliseconds timeout);
  // Stops every runner and video job (waits for their threads). Idempotent; Run() does it on
  // stop.
  void StopAll();

  // Installs POST /api/v1/streams, GET /api/v1/streams, GET and DELETE /api/v1/streams/:id.
  // Returns the server's Route() error (kFailedPrecondition once it has started).
  Status RegisterRoutes(http::HttpServer& server);

  // The API's operations, for the routes and for tests. Add validates, probes (unless the
  // request says not to), persists and starts; it returns the stream JSON. Errors:
  // kInvalidArgument (a field, named), kPermissionDenied (a source the policy refuses),
  // kNotFound (unknown model; no such device or file), kUnsupported (a file that is not a
  // video), kResourceExhausted (max_streams), kUnavailable (a source that cannot be reached),
  // the store's. The routes answer them with the finer codes of docs/api.md (no_such_device,
  // no_such_file, not_a_video, source_unreachable).
  Result<std::string> AddStream(std::string_view body);
  std::string ListStreamsJson() const;
  // The stream JSON, or nullopt for an unknown id.
  std::optional<std::string> StreamJson(const std::string& id) const;
  // kNotFound for an unknown id.
  Status RemoveStream(const std::string& id);
  // A stream's state and stats (nullopt for an unknown id).
  std::optional<StreamSnapshot> Snapshot(const std::string& id) const;
  std::vector<std::string> StreamIds() const;

 private:
  struct ApiError;  // an error with the stream routes' HTTP status and code

  CameraService(CameraOptions options, bus::FramePublisher& publisher,
                bus::FrameSubscriber& results, bus::FrameSubscriber* requests,
                MetricsRegistry& metrics, ModelCheck check, SourceFactory factory,
                std::unique_ptr<StreamStore> store);
  Result<std::string> Add(std::string_view body, ApiError* error);
  void StartRunnerLocked(const StreamSpec& spec);
  void ReapRetired();
  void Route(const bus::InboundMessage& in, std::int64_t received_ms);
  std::string StreamToJsonLocked(const StreamRunner& runner) const;

  const CameraOptions options_;
  bus::FramePublisher& publisher_;
  bus::FrameSubscriber& results_;
  bus::FrameSubscriber* const requests_;
  engine::Router router_;
  detail::ModelInputs model_inputs_;  // from kadr.workers; read by video_ (declared after)
  std::unique_ptr<VideoJobs> video_;  // with a video folder and a requests subscriber
  MetricsRegistry& metrics_;
  const ModelCheck check_;
  const SourceFactory factory_;
  const std::unique_ptr<StreamStore> store_;
  Gauge& streams_gauge_;
  Counter& results_ignored_;
  Counter& results_malformed_;

  mutable std::mutex mu_;
  std::vector<std::string> order_;  // stream ids in creation order
  std::map<std::string, std::unique_ptr<StreamRunner>> runners_;
  std::vector<std::unique_ptr<StreamRunner>> retired_;  // deleted, stopping
};

}  // namespace kadr::camera
