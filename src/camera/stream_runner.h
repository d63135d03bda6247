// A stream of the camera service: StreamSpec (what a user asked for, and its parsing), then
// StreamRunner (one live stream on the frame engine).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core/mat.hpp>

#include "bus/bus.h"
#include "capture/frame_source.h"
#include "common/metrics.h"
#include "common/status.h"
#include "engine/bus_dispatch.h"
#include "engine/frame_run.h"
#include "protocol/frame.h"

namespace kadr::camera {

// ---------------------------------------------------------------------------------------------
// StreamSpec: what a user asked for when adding a stream (docs/api.md "Streams"), its JSON
// request parser and validator, and the storage form the StreamStore keeps.
//
// The spec holds the source as given, credentials included (the capture needs them); every
// form that leaves the process (API responses, logs) uses capture::RedactUrl(source).
// Pure functions and plain values; thread-compatible.

enum class StreamMode {
  kLive,      // bounded latency: frames that cannot be sent in time are dropped (counted)
  kLossless,  // every frame is sent: the reader waits for the pipeline (files)
};
std::string_view StreamModeName(StreamMode mode);  // "live", "lossless"

struct StreamSpec {
  std::string id;      // "s" + 16 hex digits; assigned by the service
  std::string name;    // display name; default: the redacted source
  std::string source;  // as given (credentials included): never print it, see RedactUrl
  std::string model;
  std::optional<double> fps;  // target frame rate (decimation); unset: the source's own
  StreamMode mode = StreamMode::kLive;
  bool loop = false;     // files: start again at the end
  int max_width = 1280;  // frames larger than this are scaled down (aspect kept)
  int max_height = 1280;
  int window = 2;               // frames in flight (published, no result yet), 1..16
  int max_latency_ms = 2000;    // deadline of a frame after its capture
  std::optional<float> conf;    // confidence threshold sent with each frame
  std::int64_t created_ms = 0;  // Unix ms
};

// A POST /api/v1/streams body taken apart.
struct StreamRequest {
  StreamSpec spec;    // id and created_ms unset
  bool probe = true;  // open the source once before creating the stream
};

// Parses and validates a request body. `default_model` is used when "model" is absent (an
// empty default makes "model" required). Unknown fields are rejected, so typos do not pass
// silently. kInvalidArgument naming the field: "fps must be a number in (0, 1000]".
Result<StreamRequest> ParseStreamRequest(std::string_view body, std::string_view default_model);

// The spec as stored (all fields, credentials included) and back. kInvalidArgument for a
// record that does not parse or validate.
std::string SpecToStorageJson(const StreamSpec& spec);
// The spec as the API shows it: credentials in the source redacted, unset fps / conf null.
nlohmann::json SpecToPublicJson(const StreamSpec& spec);
Result<StreamSpec> SpecFromStorageJson(std::string_view json);

// What the stream API says about a source that did not open (the POST's probe, a stream's
// last_error). A network source's failures (refused, unknown host, no answer, not a video
// stream, ...) all become one kUnavailable "cannot open the source <url>: no video stream
// answered (the server log has the reason)", so that answers do not map the hosts and ports
// behind the camera; log the precise error. kPermissionDenied and kInvalidArgument, and the
// errors of files and devices (which the policy limits to the operator's), stay as they are.
// Credentials redacted.
Status PublicSourceError(const Status& error, std::string_view source);

// ---------------------------------------------------------------------------------------------
// StreamRunner: one live stream on the frame engine (engine/frame_run.h), from its source to
// the frames topic of its model, with bounded latency (docs/adr/0004 "Bounded latency in live
// mode").
//
//   source: open -> read at the source's pace -> decimate to the target fps -> scale down to
//           max size                         (engine::Source, with reconnection, below)
//   engine: live (one-slot mailbox, deadlines) or lossless (the reader waits for the window)
//           -> RGB JPEG -> kadr.frames.<model> (engine::BusDispatcher)
//   OnResult(): a result from kadr.live.results frees its window slot
//
// Drop policy (the engine's). Live mode: a frame that replaces an unsent frame in the mailbox
// drops the old one (reason "backpressure"); a result the worker skipped past its deadline is
// a drop ("deadline"), as is an in-flight frame whose result has not come max_latency_ms after
// its capture (it is forgotten so that a lost result cannot wedge the window); an error result
// or a failed publish is a drop ("error"). Lossless mode: the source is read only when the
// window has room, so nothing is dropped by backpressure; frames carry no deadline, and one
// without a result 60 s after it was sent is a "deadline" drop.
// Files are read at their own frame rate in live mode (as a camera would deliver them) and
// as fast as the window allows in lossless mode.
//
// Loss and reconnection: a failed open, a read error or a stall (no frame for stall_timeout)
// closes the source and reopens a new one after a backoff (Backoff: initial 0.5 s doubling
// to 30 s, +-20 % jitter). last_gap_ms is the time without frames: from the last frame before
// the loss to the first frame after it. Sources that cannot work by retrying (a file that is not a
// video, an invalid source) end in state failed; a file that is not looped ends in state finished
// once its last result is in.
//
// Threading: Start() and Stop() from one owner thread; OnResult() and Snapshot() from any
// thread. Ownership: the publisher and metrics registry are borrowed and must outlive the
// runner. Stop() waits for the run's threads, which may be inside one blocking Read()
// (bounded by the source's read timeout).

enum class StreamState { kConnecting, kRunning, kReconnecting, kFinished, kFailed };
std::string_view StreamStateName(StreamState state);  // "connecting", ...

// Exponential backoff with jitter: attempt n (from 0) waits min(initial * 2^n, max), times a
// uniform factor in [1 - jitter, 1 + jitter], and never more than max. Not thread-safe.
class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max, double jitter,
          std::uint64_t seed);
  std::chrono::milliseconds Next();
  void Reset() { attempt_ = 0; }
  int attempt() const { return attempt_; }

 private:
  std::chrono::milliseconds initial_, max_;
  double jitter_;
  int attempt_ = 0;
  std::mt19937_64 rng_;
};

// Builds the (not yet opened) source for a spec; the runner calls it for every (re)connect.
using SourceFactory = std::function<Result<std::unique_ptr<capture::FrameSource>>(
    const StreamSpec& spec, const capture::SourceOptions& options)>;

// The factory of production: capture::MakeOpenCvFrameSource (which applies the options'
// policy).
SourceFactory OpenCvSourceFactory();

struct RunnerOptions {
  // What sources may be opened, at every (re)connect (CameraService::Create sets it from
  // CameraOptions::sources). Unset: the default policy (no files, no devices, no loopback,
  // link-local or metadata hosts).
  std::shared_ptr<const capture::SourcePolicy> source_policy;
  // Open timeout of a network source.
  std::chrono::milliseconds open_timeout{5000};
  // No frame for this long counts as a lost source (also the read timeout of the source).
  std::chrono::milliseconds stall_timeout{5000};
  // Reconnect backoff: first wait, cap, and relative jitter.
  std::chrono::milliseconds initial_backoff{500};
  std::chrono::milliseconds max_backoff{30000};
  double backoff_jitter = 0.2;
  // Where workers send the results and annotated JPEGs of live frames.
  std::string results_topic = std::string(protocol::kLiveResultsTopic);
  std::string annotated_topic = std::string(protocol::kLiveAnnotatedTopic);
  // JPEG quality of published frames, 1..100.
  int jpeg_quality = 85;
  // Room on the broker for the frames, shared with the process's other producers (live
  // frames take it or are dropped, "backpressure"; lossless ones wait). Unset: none.
  std::shared_ptr<engine::Admission> admission;
  // Results kept for the latency percentiles; window of the fps figures.
  std::size_t latency_samples = 200;
  std::chrono::milliseconds fps_window{5000};
  // Unix ms (capture time, deadlines); the system clock when unset.
  std::function<std::int64_t()> now_ms;
};

struct StreamStats {
  std::uint64_t frames_captured = 0;   // read from the source
  std::uint64_t frames_published = 0;  // handed to the bus
  std::uint64_t frames_done = 0;       // ok results received
  std::uint64_t dropped_backpressure = 0;
  std::uint64_t dropped_deadline = 0;
  std::uint64_t dropped_error = 0;
  double input_fps = 0;          // frames read per second over the fps window
  double output_fps = 0;         // ok results per second over the fps window
  std::uint64_t reconnects = 0;  // reopen attempts after a loss
  std::optional<std::int64_t> last_gap_ms;
  std::optional<Status> last_error;  // message redacted
  std::int64_t last_error_ms = 0;
  std::optional<double> latency_p50_ms;  // result received - capture, last latency_samples
  std::optional<double> latency_p95_ms;
  std::optional<std::int64_t> last_result_ms;
  std::size_t in_flight = 0;  // published frames without a result now
  std::uint64_t dropped() const { return dropped_backpressure + dropped_deadline + dropped_error; }
};

struct StreamSnapshot {
  StreamState state = StreamState::kConnecting;
  StreamStats stats;
};

class StreamRunner {
 public:
  StreamRunner(StreamSpec spec, RunnerOptions options, SourceFactory factory,
               bus::FramePublisher& publisher, MetricsRegistry& metrics);
  ~StreamRunner();
  StreamRunner(const StreamRunner&) = delete;
  StreamRunner& operator=(const StreamRunner&) = delete;

  // Starts the capture and publish threads. Once.
  void Start();
  // Asks the threads to stop; returns at once.
  void RequestStop();
  // RequestStop() and waits for the threads. Idempotent.
  void Stop();
  // Whether both threads have ended (after Stop, or a finished / failed stream).
  bool Stopped() const;

  // A result for one of this stream's frames, received at `received_ms` (Unix ms). Results
  // of frames not in flight (late, duplicated, from an earlier run) are ignored.
  void OnResult(const protocol::FrameResult& result, std::int64_t received_ms);
  // The engine run of the stream, for an engine::Router (its id: "<stream id>.<start ms>").
  engine::FrameRun& run() { return *run_; }

  const StreamSpec& spec() const { return spec_; }
  StreamSnapshot Snapshot() const;

 private:
  class Reader;  // the engine::Source: capture, reconnection, pacing, decimation, scaling
  class Stats;   // the engine::Sink and Dispatcher wrapper: counts, latency, fps, metrics

  void RunLoop(const std::stop_token& stop);
  void SetState(StreamState state);
  // Logs `error` and records `shown` (what the API shows; `error` when not given).
  void RecordError(const Status& error, const std::optional<Status>& shown = std::nullopt);
  std::int64_t NowMs() const;

  const StreamSpec spec_;
  const RunnerOptions options_;
  const SourceFactory factory_;

  std::unique_ptr<Stats> stats_;
  std::unique_ptr<Reader> reader_;
  std::unique_ptr<engine::BusDispatcher> bus_;
  std::unique_ptr<engine::FrameRun> run_;

  mutable std::mutex mu_;  // guards state_ and the error fields of Stats
  StreamState state_ = StreamState::kConnecting;
  bool done_ = false;  // the run's thread has ended
  std::vector<Gauge*> state_gauges_;

  std::jthread thread_;
};

}  // namespace kadr::camera
