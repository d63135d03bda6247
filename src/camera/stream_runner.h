// StreamRunner: one live stream, from its source to the frames topic of its model, with
// bounded latency (docs/adr/0004 "Bounded latency in live mode").
//
//   capture thread:  open source -> read at the source's pace -> decimate to the target fps
//                    -> scale down to max size -> one-slot mailbox
//   publish thread:  mailbox -> (window has room) -> RGB JPEG -> FramePublisher
//   OnResult():      a result from kadr.live.results frees its window slot
//
// Drop policy. Live mode: a frame that replaces an unsent frame in the mailbox drops the old
// one (reason "backpressure"); a result the worker skipped past its deadline is a drop
// ("deadline"), as is an in-flight frame whose result has not come max_latency_ms after its
// capture (it is forgotten so that a lost result cannot wedge the window); an error result or
// a failed publish is a drop ("error"). Lossless mode: the capture thread waits for the
// mailbox instead of replacing, so nothing is dropped by backpressure.
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
// runner. Stop() waits for the capture thread, which may be inside one blocking Read()
// (bounded by the source's read timeout).
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
#include <thread>
#include <vector>

#include <opencv2/core/mat.hpp>

#include "bus/bus.h"
#include "camera/stream_spec.h"
#include "capture/frame_source.h"
#include "common/metrics.h"
#include "common/status.h"
#include "protocol/frame.h"

namespace kadr::camera {

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

// The factory of production: capture::MakeOpenCvFrameSource.
SourceFactory OpenCvSourceFactory();

struct RunnerOptions {
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

  // A result for one of this stream's frames (routed by stream id), received at
  // `received_ms` (Unix ms). Results of frames not in flight (late, duplicated, from an
  // earlier run) are ignored.
  void OnResult(const protocol::FrameResult& result, std::int64_t received_ms);

  const StreamSpec& spec() const { return spec_; }
  StreamSnapshot Snapshot() const;

 private:
  using SteadyTime = std::chrono::steady_clock::time_point;
  struct Pending {
    cv::Mat image;
    std::int64_t capture_ms = 0;
  };
  struct InFlight {
    std::int64_t capture_ms = 0;
    std::int64_t expires_ms = 0;
  };

  void CaptureLoop();
  void PublishLoop();
  // Reads from an open source until it is lost, ends or stop; returns the reason it ended.
  Status ReadLoop(capture::FrameSource& source);
  void Offer(cv::Mat image, std::int64_t capture_ms);
  void Publish(const Pending& frame);
  void OnDeliveryFailed(const std::string& frame_id, const Status& error);
  void ExpireLocked(std::int64_t now);
  void SetState(StreamState state);
  void RecordError(const Status& error);
  // Waits up to `d` unless stop is requested; false when stopping.
  bool SleepFor(std::chrono::milliseconds d);
  std::int64_t NowMs() const;
  static double Rate(const std::deque<SteadyTime>& events, SteadyTime now,
                     std::chrono::milliseconds window, SteadyTime since);

  const StreamSpec spec_;
  const RunnerOptions options_;
  const SourceFactory factory_;
  bus::FramePublisher& publisher_;
  const std::string topic_;
  const std::string frame_prefix_;  // "<stream id>.<run start ms>."

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool capture_done_ = false;
  bool publish_done_ = false;
  StreamState state_ = StreamState::kConnecting;
  std::optional<Pending> mailbox_;
  std::map<std::string, InFlight> in_flight_;
  std::int64_t next_seq_ = 0;
  StreamStats stats_;
  std::deque<SteadyTime> captured_times_;
  std::deque<SteadyTime> done_times_;
  std::deque<double> latencies_;
  SteadyTime running_since_{};

  // Metrics (series of this stream).
  Counter& captured_total_;
  Counter& published_total_;
  Counter& done_total_;
  Counter& dropped_backpressure_total_;
  Counter& dropped_deadline_total_;
  Counter& dropped_error_total_;
  Counter& reconnects_total_;
  std::vector<Gauge*> state_gauges_;
  Histogram& latency_seconds_;

  // Delivery callbacks may come from a transport thread after the runner is gone.
  struct Lifetime {
    std::mutex mu;
    bool closed = false;
  };
  std::shared_ptr<Lifetime> lifetime_ = std::make_shared<Lifetime>();

  std::thread capture_thread_;
  std::thread publish_thread_;
};

}  // namespace kadr::camera
