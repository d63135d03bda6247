#include "camera/stream_runner.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <utility>

#include <spdlog/spdlog.h>

#include "capture/opencv_frame_source.h"
#include "common/clock.h"
#include "imaging/decode.h"

namespace kadr::camera {
namespace {

using SteadyTime = std::chrono::steady_clock::time_point;

// A lossless stream's frame without a result this long after it was sent is a deadline drop
// (as a video job's frame: its default frame timeout).
constexpr std::chrono::milliseconds kLosslessResultTimeout{60000};
constexpr int kLosslessSendAttempts = 3;

constexpr StreamState kAllStates[] = {StreamState::kConnecting, StreamState::kRunning,
                                      StreamState::kReconnecting, StreamState::kFinished,
                                      StreamState::kFailed};

constexpr char kFramesName[] = "kadr_camera_frames_total";
constexpr char kFramesHelp[] =
    "Frames of live streams: captured (read from the source), published, done (result in).";
constexpr char kDroppedName[] = "kadr_camera_frames_dropped_total";
constexpr char kDroppedHelp[] =
    "Frames of live streams dropped, by reason: backpressure, deadline, error.";

// Retrying cannot fix these: the source is not a video, or the spec is invalid.
bool IsPermanent(const Status& s) {
  return s.code() == StatusCode::kUnsupported || s.code() == StatusCode::kInvalidArgument ||
         s.code() == StatusCode::kPermissionDenied;
}

double Percentile(std::vector<double> v, double p) {
  const std::size_t k = std::min(
      v.size() - 1, static_cast<std::size_t>(std::ceil(p * static_cast<double>(v.size())) - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

// Events per second over the last `window`, since `since` at the earliest.
double Rate(const std::deque<SteadyTime>& events, SteadyTime now, std::chrono::milliseconds window,
            SteadyTime since) {
  const auto from = now - window;
  std::size_t n = 0;
  for (auto it = events.rbegin(); it != events.rend() && *it >= from; ++it) ++n;
  const double span = std::min(std::chrono::duration<double>(window).count(),
                               std::chrono::duration<double>(now - since).count());
  return span > 0.2 ? static_cast<double>(n) / span : 0.0;
}

void Trim(std::deque<SteadyTime>& events, SteadyTime now, std::chrono::milliseconds window) {
  while (!events.empty() && events.front() < now - window) events.pop_front();
}

}  // namespace

std::string_view StreamStateName(StreamState state) {
  switch (state) {
    case StreamState::kConnecting:
      return "connecting";
    case StreamState::kRunning:
      return "running";
    case StreamState::kReconnecting:
      return "reconnecting";
    case StreamState::kFinished:
      return "finished";
    case StreamState::kFailed:
      return "failed";
  }
  return "failed";
}

Backoff::Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max, double jitter,
                 std::uint64_t seed)
    : initial_(initial), max_(max), jitter_(jitter), rng_(seed) {}

std::chrono::milliseconds Backoff::Next() {
  const double base = std::min(static_cast<double>(initial_.count()) * std::pow(2.0, attempt_),
                               static_cast<double>(max_.count()));
  if (attempt_ < 62) ++attempt_;
  std::uniform_real_distribution<double> factor(1.0 - jitter_, 1.0 + jitter_);
  const double ms = std::min(base * factor(rng_), static_cast<double>(max_.count()));
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::max(0.0, ms)));
}

SourceFactory OpenCvSourceFactory() {
  return [](const StreamSpec& spec, const capture::SourceOptions& options) {
    return capture::MakeOpenCvFrameSource(spec.source, options);
  };
}

// ---------------------------------------------------------------------------------------------
// Stats: what happened to the stream's frames. The engine's sink (every frame that leaves the
// run) and a wrapper of its dispatcher (every frame published); the reader reports captures,
// reconnects and gaps. Thread-safe.

class StreamRunner::Stats final : public engine::Sink, public engine::Dispatcher {
 public:
  Stats(const StreamSpec& spec, const RunnerOptions& options, MetricsRegistry& metrics,
        std::function<void(const Status&)> record_error)
      : options_(options),
        record_error_(std::move(record_error)),
        captured_total_(metrics.GetCounter(kFramesName, kFramesHelp,
                                           {{"stream", spec.id}, {"outcome", "captured"}})),
        published_total_(metrics.GetCounter(kFramesName, kFramesHelp,
                                            {{"stream", spec.id}, {"outcome", "published"}})),
        done_total_(metrics.GetCounter(kFramesName, kFramesHelp,
                                       {{"stream", spec.id}, {"outcome", "done"}})),
        dropped_backpressure_total_(metrics.GetCounter(
            kDroppedName, kDroppedHelp, {{"stream", spec.id}, {"reason", "backpressure"}})),
        dropped_deadline_total_(metrics.GetCounter(kDroppedName, kDroppedHelp,
                                                   {{"stream", spec.id}, {"reason", "deadline"}})),
        dropped_error_total_(metrics.GetCounter(kDroppedName, kDroppedHelp,
                                                {{"stream", spec.id}, {"reason", "error"}})),
        reconnects_total_(metrics.GetCounter("kadr_camera_reconnects_total",
                                             "Reopen attempts of live sources after a loss.",
                                             {{"stream", spec.id}})),
        latency_seconds_(metrics.GetHistogram(
            "kadr_camera_latency_seconds",
            "Glass-to-glass latency of live frames: result received minus capture time.",
            kLatencySecondsBuckets, {{"stream", spec.id}})) {}

  void SetDispatcher(engine::Dispatcher& dispatcher) { dispatcher_ = &dispatcher; }

  Status Send(const engine::Outgoing& frame, engine::FrameRun& run) override {
    Status s = dispatcher_->Send(frame, run);
    if (s.ok()) published_total_.Increment();
    return s;
  }

  Status Release(engine::Released frame) override {
    if (frame.dropped) {
      Drop(*frame.dropped);
      if (*frame.dropped == engine::DropReason::kError && !frame.error.ok()) {
        record_error_(frame.error.WithContext("publishing a frame"));
      }
      return Status::Ok();
    }
    const protocol::FrameResult& result = *frame.result;
    std::optional<Status> worker_error;
    {
      std::lock_guard lock(mu_);
      stats_.last_result_ms = frame.answered_ms;
    }
    switch (result.status) {
      case protocol::FrameStatus::kOk: {
        const auto now = std::chrono::steady_clock::now();
        const double latency = static_cast<double>(frame.answered_ms - frame.capture_ms);
        {
          std::lock_guard lock(mu_);
          ++stats_.frames_done;
          done_times_.push_back(now);
          Trim(done_times_, now, options_.fps_window);
          latencies_.push_back(latency);
          while (latencies_.size() > options_.latency_samples) latencies_.pop_front();
        }
        done_total_.Increment();
        latency_seconds_.Observe(latency / 1000.0);
        break;
      }
      case protocol::FrameStatus::kSkipped:
        Drop(engine::DropReason::kDeadline);
        break;
      case protocol::FrameStatus::kError:
        Drop(engine::DropReason::kError);
        if (!result.error.ok()) record_error_(result.error.WithContext("worker"));
        break;
    }
    return Status::Ok();
  }

  void Captured(SteadyTime now) {
    captured_total_.Increment();
    std::lock_guard lock(mu_);
    ++stats_.frames_captured;
    captured_times_.push_back(now);
    Trim(captured_times_, now, options_.fps_window);
  }
  void Reconnecting() {
    reconnects_total_.Increment();
    std::lock_guard lock(mu_);
    ++stats_.reconnects;
  }
  void Gap(std::int64_t gap_ms) {
    std::lock_guard lock(mu_);
    stats_.last_gap_ms = gap_ms;
  }
  void Error(const Status& redacted, std::int64_t at_ms) {
    std::lock_guard lock(mu_);
    stats_.last_error = redacted;
    stats_.last_error_ms = at_ms;
  }
  void Started() {
    std::lock_guard lock(mu_);
    since_ = std::chrono::steady_clock::now();
  }

  // The stream's figures; `run` adds what the engine counts (published, in flight).
  StreamStats Snapshot(const engine::RunStats& run) const {
    std::lock_guard lock(mu_);
    StreamStats s = stats_;
    s.frames_published = run.sent;
    s.in_flight = run.in_flight;
    // The engine counts a replaced frame at once; its release to this sink comes later (or
    // never, when the run stops first).
    s.dropped_backpressure = run.dropped_backpressure;
    const auto now = std::chrono::steady_clock::now();
    s.input_fps = Rate(captured_times_, now, options_.fps_window, since_);
    s.output_fps = Rate(done_times_, now, options_.fps_window, since_);
    if (!latencies_.empty()) {
      const std::vector<double> v(latencies_.begin(), latencies_.end());
      s.latency_p50_ms = Percentile(v, 0.50);
      s.latency_p95_ms = Percentile(v, 0.95);
    }
    return s;
  }

 private:
  void Drop(engine::DropReason reason) {
    std::lock_guard lock(mu_);
    switch (reason) {
      case engine::DropReason::kBackpressure:
        ++stats_.dropped_backpressure;
        dropped_backpressure_total_.Increment();
        break;
      case engine::DropReason::kDeadline:
        ++stats_.dropped_deadline;
        dropped_deadline_total_.Increment();
        break;
      case engine::DropReason::kError:
        ++stats_.dropped_error;
        dropped_error_total_.Increment();
        break;
    }
  }

  const RunnerOptions& options_;
  const std::function<void(const Status&)> record_error_;
  engine::Dispatcher* dispatcher_ = nullptr;

  mutable std::mutex mu_;
  StreamStats stats_;
  std::deque<SteadyTime> captured_times_;
  std::deque<SteadyTime> done_times_;
  std::deque<double> latencies_;
  SteadyTime since_ = std::chrono::steady_clock::now();

  Counter& captured_total_;
  Counter& published_total_;
  Counter& done_total_;
  Counter& dropped_backpressure_total_;
  Counter& dropped_deadline_total_;
  Counter& dropped_error_total_;
  Counter& reconnects_total_;
  Histogram& latency_seconds_;
};

// ---------------------------------------------------------------------------------------------
// Reader: the stream's source for the engine. Opens the capture source (again after a loss,
// with backoff), paces files in live mode, decimates to the target fps and scales frames
// down. Read() is called by one thread at a time.

class StreamRunner::Reader final : public engine::Source {
 public:
  Reader(StreamRunner& runner, Stats& stats)
      : runner_(runner),
        stats_(stats),
        backoff_(runner.options_.initial_backoff, runner.options_.max_backoff,
                 runner.options_.backoff_jitter, Seed()) {}

  ~Reader() override {
    if (source_) source_->Close();
  }

  Result<std::optional<engine::SourceFrame>> Read(const std::stop_token& stop) override {
    const StreamSpec& spec = runner_.spec_;
    const RunnerOptions& options = runner_.options_;
    while (!stop.stop_requested()) {
      if (!source_) {
        if (ended_) return std::optional<engine::SourceFrame>();
        if (Status s = Connect(stop); !s.ok()) return s;
        continue;
      }
      if (pace_) {
        const auto now = std::chrono::steady_clock::now();
        if (next_read_ > now &&
            !SleepFor(std::chrono::ceil<std::chrono::milliseconds>(next_read_ - now), stop)) {
          break;
        }
        next_read_ +=
            std::chrono::duration_cast<std::chrono::steady_clock::duration>(frame_interval_);
        if (next_read_ < now - frame_interval_) next_read_ = now;
      }
      auto frame = source_->Read();
      const auto now = std::chrono::steady_clock::now();
      if (!frame) {
        if (Status s = Lost(frame.error(), stop); !s.ok()) return s;
        continue;
      }
      if (frame->end_of_stream) {
        source_->Close();
        source_.reset();
        ended_ = true;
        spdlog::info("camera: stream source ended stream={}", spec.id);
        return std::optional<engine::SourceFrame>();
      }
      if (frame->image.empty()) {
        if (now - last_frame_ > options.stall_timeout) {
          const Status stalled =
              UnavailableError("stalled: no frame from " + capture::RedactUrl(spec.source) +
                               " for " + std::to_string(options.stall_timeout.count()) + " ms");
          if (Status s = Lost(stalled, stop); !s.ok()) return s;
        }
        continue;
      }
      last_frame_ = now;
      const std::int64_t capture_ms = runner_.NowMs();
      last_capture_ms_ = capture_ms;
      stats_.Captured(now);
      if (lost_) {
        stats_.Gap(capture_ms - lost_at_);
        lost_ = false;
      }
      if (!got_frame_) {
        got_frame_ = true;
        backoff_.Reset();
      }
      // Decimation on media time: frame index for files, arrival time for live sources.
      const double t = live_ ? std::chrono::duration<double>(now - opened_at_).count()
                             : static_cast<double>(index_) / source_fps_;
      ++index_;
      if (period_ > 0) {
        if (t + tolerance_ < next_due_) continue;
        next_due_ = std::max(next_due_ + period_, t);
      }
      engine::SourceFrame out;
      out.image = Scaled(frame->image);
      out.capture_ms = capture_ms;
      return std::optional<engine::SourceFrame>(std::move(out));
    }
    return std::optional<engine::SourceFrame>();
  }

 private:
  static std::uint64_t Seed() {
    std::random_device seed;
    return (static_cast<std::uint64_t>(seed()) << 32) ^ seed();
  }

  // Opens a new capture source; on failure waits out the backoff. An error only for a
  // failure that retrying cannot fix (the stream then fails).
  Status Connect(const std::stop_token& stop) {
    const StreamSpec& spec = runner_.spec_;
    const RunnerOptions& options = runner_.options_;
    if (ever_connected_) stats_.Reconnecting();
    capture::SourceOptions so;
    so.open_timeout = options.open_timeout;
    so.read_timeout = options.stall_timeout;
    so.loop = spec.loop;
    so.policy = options.source_policy;
    auto made = runner_.factory_(spec, so);
    Status opened = made ? (*made)->Open() : made.error();
    if (!opened.ok()) {
      runner_.RecordError(opened, PublicSourceError(opened, spec.source));
      if (IsPermanent(opened)) {
        runner_.SetState(StreamState::kFailed);
        return opened;
      }
      runner_.SetState(ever_connected_ ? StreamState::kReconnecting : StreamState::kConnecting);
      SleepFor(backoff_.Next(), stop);
      return Status::Ok();
    }
    source_ = std::move(*made);
    const capture::SourceInfo info = source_->info();
    spdlog::info("camera: source open stream={} source={} kind={} fps={:.2f} size={}x{}", spec.id,
                 capture::RedactUrl(spec.source), capture::SourceKindName(info.kind), info.fps,
                 info.width, info.height);
    ever_connected_ = true;
    runner_.SetState(StreamState::kRunning);
    live_ = info.live;
    pace_ = !info.live && spec.mode == StreamMode::kLive;
    source_fps_ = info.fps > 0 ? info.fps : 25.0;
    frame_interval_ = std::chrono::duration<double>(1.0 / source_fps_);
    // Seconds between kept frames; 0: keep every frame (no target fps, or not below the
    // source's). A plain double: GCC 12 -O3 misreads an optional here as maybe-uninitialised.
    period_ = spec.fps && (info.fps <= 0 || *spec.fps < info.fps * 0.999) ? 1.0 / *spec.fps : 0.0;
    tolerance_ = info.fps > 0 ? 0.5 / info.fps : period_ * 0.25;
    opened_at_ = std::chrono::steady_clock::now();
    next_read_ = opened_at_;
    last_frame_ = opened_at_;
    next_due_ = 0;
    index_ = 0;
    got_frame_ = false;
    return Status::Ok();
  }

  // The source failed or stalled: closes it and waits out the backoff before the next
  // Connect. An error only when retrying cannot help.
  Status Lost(const Status& why, const std::stop_token& stop) {
    source_->Close();
    source_.reset();
    runner_.RecordError(why);
    if (IsPermanent(why)) {
      runner_.SetState(StreamState::kFailed);
      return why;
    }
    // The gap runs from the last frame (a stall is noticed only stall_timeout later).
    lost_ = true;
    lost_at_ = last_capture_ms_ > 0 ? last_capture_ms_ : runner_.NowMs();
    runner_.SetState(StreamState::kReconnecting);
    SleepFor(backoff_.Next(), stop);
    return Status::Ok();
  }

  cv::Mat Scaled(const cv::Mat& image) const {
    return imaging::FitWithin(image, runner_.spec_.max_width, runner_.spec_.max_height);
  }

  // Waits up to `d` unless stop is requested; false when stopping.
  bool SleepFor(std::chrono::milliseconds d, const std::stop_token& stop) {
    std::mutex mu;
    std::condition_variable_any cv;
    std::unique_lock lock(mu);
    return !cv.wait_for(lock, stop, d, [] { return false; }) && !stop.stop_requested();
  }

  StreamRunner& runner_;
  Stats& stats_;
  Backoff backoff_;
  std::unique_ptr<capture::FrameSource> source_;
  bool ever_connected_ = false;
  bool ended_ = false;
  bool lost_ = false;
  std::int64_t lost_at_ = 0;          // Unix ms of the last frame before the loss
  std::int64_t last_capture_ms_ = 0;  // Unix ms of the latest frame
  // Of the open source.
  bool live_ = true;
  bool pace_ = false;
  double source_fps_ = 25;
  std::chrono::duration<double> frame_interval_{0.04};
  double period_ = 0;
  double tolerance_ = 0;
  SteadyTime opened_at_{};
  SteadyTime next_read_{};
  SteadyTime last_frame_{};
  double next_due_ = 0;
  std::int64_t index_ = 0;
  bool got_frame_ = false;
};

// ---------------------------------------------------------------------------------------------
// StreamRunner

StreamRunner::StreamRunner(StreamSpec spec, RunnerOptions options, SourceFactory factory,
                           bus::FramePublisher& publisher, MetricsRegistry& metrics)
    : spec_(std::move(spec)), options_(std::move(options)), factory_(std::move(factory)) {
  stats_ = std::make_unique<Stats>(spec_, options_, metrics,
                                   [this](const Status& s) { RecordError(s); });
  reader_ = std::make_unique<Reader>(*this, *stats_);
  engine::BusDispatchOptions bo;
  bo.model = spec_.model;
  bo.stream_id = spec_.id;
  bo.reply_to = options_.results_topic;
  bo.annotated_to = options_.annotated_topic;
  bo.source = spec_.name;
  bo.kind = protocol::kind::kLive;
  bo.options.confidence = spec_.conf;
  bo.draw = true;
  bo.jpeg_quality = options_.jpeg_quality;
  bo.admission = options_.admission.get();
  bo.client = "stream:" + spec_.id;
  bus_ = std::make_unique<engine::BusDispatcher>(std::move(bo), publisher);
  stats_->SetDispatcher(*bus_);
  engine::RunOptions ro;
  ro.id = spec_.id + "." + std::to_string(UnixMillis());
  ro.mode = spec_.mode == StreamMode::kLive ? engine::Mode::kLive : engine::Mode::kLossless;
  ro.window = static_cast<std::size_t>(std::max(1, spec_.window));
  ro.max_latency = std::chrono::milliseconds(std::max(1, spec_.max_latency_ms));
  ro.answer_timeout = kLosslessResultTimeout;
  // Lossless: a frame the broker loses on a fail-over is sent again; live: the next is fresher.
  ro.send_attempts = spec_.mode == StreamMode::kLossless ? kLosslessSendAttempts : 1;
  ro.now_ms = options_.now_ms;
  run_ = std::make_unique<engine::FrameRun>(std::move(ro), *stats_, *stats_);
  for (StreamState s : kAllStates) {
    state_gauges_.push_back(&metrics.GetGauge(
        "kadr_camera_stream_state", "1 for the state each live stream is in, 0 for the others.",
        {{"stream", spec_.id}, {"state", std::string(StreamStateName(s))}}));
  }
  SetState(StreamState::kConnecting);
}

StreamRunner::~StreamRunner() { Stop(); }

void StreamRunner::Start() {
  stats_->Started();
  thread_ = std::jthread([this](const std::stop_token& stop) { RunLoop(stop); });
}

void StreamRunner::RequestStop() { thread_.request_stop(); }

void StreamRunner::Stop() {
  RequestStop();
  if (thread_.joinable()) thread_.join();
  // A stopped stream is in no state any more, for the gauges.
  for (Gauge* g : state_gauges_) g->Set(0);
}

bool StreamRunner::Stopped() const {
  std::lock_guard lock(mu_);
  return done_;
}

void StreamRunner::RunLoop(const std::stop_token& stop) {
  const Status outcome = run_->Run(*reader_, stop);
  if (outcome.ok()) {
    spdlog::info("camera: stream finished stream={}", spec_.id);
    SetState(StreamState::kFinished);
  } else if (!stop.stop_requested()) {
    bool failed = false;
    {
      std::lock_guard lock(mu_);
      failed = state_ == StreamState::kFailed;
    }
    if (!failed) {  // the reader records its own failures
      RecordError(outcome);
      SetState(StreamState::kFailed);
    }
  }
  std::lock_guard lock(mu_);
  done_ = true;
}

std::int64_t StreamRunner::NowMs() const {
  return options_.now_ms ? options_.now_ms() : UnixMillis();
}

void StreamRunner::SetState(StreamState state) {
  std::lock_guard lock(mu_);
  if (state == state_ && state != StreamState::kConnecting) return;
  state_ = state;
  for (std::size_t i = 0; i < state_gauges_.size(); ++i) {
    state_gauges_[i]->Set(kAllStates[i] == state ? 1 : 0);
  }
}

void StreamRunner::RecordError(const Status& error, const std::optional<Status>& shown) {
  const Status redacted(error.code(), capture::RedactUrl(error.message()));
  spdlog::warn("camera: stream={} error=\"{}\"", spec_.id, redacted.ToString());
  const Status& api = shown ? *shown : error;
  stats_->Error(Status(api.code(), capture::RedactUrl(api.message())), NowMs());
}

void StreamRunner::OnResult(const protocol::FrameResult& result, std::int64_t received_ms) {
  run_->OnResult(result, received_ms);
}

StreamSnapshot StreamRunner::Snapshot() const {
  StreamSnapshot s;
  {
    std::lock_guard lock(mu_);
    s.state = state_;
  }
  s.stats = stats_->Snapshot(run_->stats());
  return s;
}

}  // namespace kadr::camera
