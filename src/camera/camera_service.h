// CameraService: the live streams of one camera instance — their HTTP API, their runners,
// their persistence — and the reader of kadr.live.results that tells each runner how its
// frames fared.
//
//   POST/GET/DELETE /api/v1/streams  ->  StreamStore (SQLite) + one StreamRunner per stream
//   kadr.live.results (FrameSubscriber)  ->  routed by stream id  ->  StreamRunner::OnResult
//
// Create() restores the persisted streams and starts their runners. Run() polls results until
// stopped, then stops every runner and closes the subscriber. Results of streams this
// instance does not own (another camera's, or deleted ones) are acknowledged and ignored.
//
// Errors of the API (docs/api.md "Streams"): 400 invalid field (invalid_argument, names the
// field) or no_such_device / no_such_file; 404 unknown model (via the injected check) or
// unknown_stream; 415 not_a_video; 502 source_unreachable (a network source that cannot be
// opened within the probe timeout); 429 too many streams. Every message and every stream JSON
// has its credentials redacted (capture::RedactUrl).
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
#include "camera/stream_runner.h"
#include "camera/stream_spec.h"
#include "camera/stream_store.h"
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
  // Every runner's options (timeouts, backoff, topics, clock).
  RunnerOptions runner;
  // Results taken per poll, and the longest wait of one poll (also the stop-check interval).
  std::size_t max_batch = 64;
  std::chrono::milliseconds poll_timeout{100};
};

// An API error: HTTP status, error code and message, as the stream routes answer them.
struct ApiError {
  int http_status = 500;
  std::string code;
  std::string message;
};

class CameraService {
 public:
  // Opens <data_dir>/streams.db and starts a runner for every stream in it.
  // `factory` builds sources (OpenCvSourceFactory() in production; fakes in tests).
  // Errors: the store's (kUnavailable, kInternal, kFailedPrecondition).
  static Result<std::unique_ptr<CameraService>> Create(CameraOptions options,
                                                       bus::FramePublisher& publisher,
                                                       bus::FrameSubscriber& results,
                                                       MetricsRegistry& metrics, ModelCheck check,
                                                       SourceFactory factory);
  ~CameraService();
  CameraService(const CameraService&) = delete;
  CameraService& operator=(const CameraService&) = delete;

  // Routes results until `stop`, then stops the runners and closes the subscriber (its
  // status is returned).
  Status Run(const std::stop_token& stop);
  // One step of Run(): polls one batch and routes it. Returns the number of messages taken.
  std::size_t PollOnce(std::chrono::milliseconds timeout);
  // Stops every runner (waits for their threads). Idempotent; Run() does it on stop.
  void StopAll();

  // Installs POST /api/v1/streams, GET /api/v1/streams, GET and DELETE /api/v1/streams/:id.
  // Returns the server's Route() error (kFailedPrecondition once it has started).
  Status RegisterRoutes(http::HttpServer& server);

  // The API's operations, for the routes and for tests. Add validates, probes (unless the
  // request says not to), persists and starts; it returns the stream JSON.
  Result<std::string> AddStream(std::string_view body, ApiError* error);
  std::string ListStreamsJson() const;
  // The stream JSON, or nullopt for an unknown id.
  std::optional<std::string> StreamJson(const std::string& id) const;
  // kNotFound for an unknown id.
  Status RemoveStream(const std::string& id);
  // A stream's state and stats (nullopt for an unknown id).
  std::optional<StreamSnapshot> Snapshot(const std::string& id) const;
  std::vector<std::string> StreamIds() const;

 private:
  CameraService(CameraOptions options, bus::FramePublisher& publisher,
                bus::FrameSubscriber& results, MetricsRegistry& metrics, ModelCheck check,
                SourceFactory factory, std::unique_ptr<StreamStore> store);
  void StartRunnerLocked(const StreamSpec& spec);
  void ReapRetired();
  ApiError ProbeError(const Status& s, const capture::SourceLocation& location) const;
  std::string StreamToJsonLocked(const StreamRunner& runner) const;

  const CameraOptions options_;
  bus::FramePublisher& publisher_;
  bus::FrameSubscriber& results_;
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
