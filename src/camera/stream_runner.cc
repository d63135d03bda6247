#include "camera/stream_runner.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>

#include "capture/opencv_frame_source.h"
#include "common/clock.h"
#include "imaging/encode.h"

namespace kadr::camera {
namespace {

// A lossless stream's frame without a result this long after its capture is a deadline drop
// (as a video job's frame: GatewayOptions::video_frame_timeout).
constexpr std::int64_t kLosslessResultTimeoutMs = 60000;

constexpr StreamState kAllStates[] = {StreamState::kConnecting, StreamState::kRunning,
                                      StreamState::kReconnecting, StreamState::kFinished,
                                      StreamState::kFailed};

// Retrying cannot fix these: the source is not a video, or the spec is invalid.
bool IsPermanent(const Status& s) {
  return s.code() == StatusCode::kUnsupported || s.code() == StatusCode::kInvalidArgument;
}

double Percentile(std::vector<double> v, double p) {
  const std::size_t k = std::min(
      v.size() - 1, static_cast<std::size_t>(std::ceil(p * static_cast<double>(v.size())) - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
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

StreamRunner::StreamRunner(StreamSpec spec, RunnerOptions options, SourceFactory factory,
                           bus::FramePublisher& publisher, MetricsRegistry& metrics)
    : spec_(std::move(spec)),
      options_(std::move(options)),
      factory_(std::move(factory)),
      publisher_(publisher),
      topic_(protocol::FramesTopic(spec_.model)),
      frame_prefix_(spec_.id + "." + std::to_string(UnixMillis()) + "."),
      captured_total_(metrics.GetCounter(
          "kadr_camera_frames_total",
          "Frames of live streams: captured (read from the source), published, done (result in).",
          {{"stream", spec_.id}, {"outcome", "captured"}})),
      published_total_(metrics.GetCounter(
          "kadr_camera_frames_total",
          "Frames of live streams: captured (read from the source), published, done (result in).",
          {{"stream", spec_.id}, {"outcome", "published"}})),
      done_total_(metrics.GetCounter(
          "kadr_camera_frames_total",
          "Frames of live streams: captured (read from the source), published, done (result in).",
          {{"stream", spec_.id}, {"outcome", "done"}})),
      dropped_backpressure_total_(metrics.GetCounter(
          "kadr_camera_frames_dropped_total",
          "Frames of live streams dropped, by reason: backpressure, deadline, error.",
          {{"stream", spec_.id}, {"reason", "backpressure"}})),
      dropped_deadline_total_(metrics.GetCounter(
          "kadr_camera_frames_dropped_total",
          "Frames of live streams dropped, by reason: backpressure, deadline, error.",
          {{"stream", spec_.id}, {"reason", "deadline"}})),
      dropped_error_total_(metrics.GetCounter(
          "kadr_camera_frames_dropped_total",
          "Frames of live streams dropped, by reason: backpressure, deadline, error.",
          {{"stream", spec_.id}, {"reason", "error"}})),
      reconnects_total_(metrics.GetCounter("kadr_camera_reconnects_total",
                                           "Reopen attempts of live sources after a loss.",
                                           {{"stream", spec_.id}})),
      latency_seconds_(metrics.GetHistogram(
          "kadr_camera_latency_seconds",
          "Glass-to-glass latency of live frames: result received minus capture time.",
          kLatencySecondsBuckets, {{"stream", spec_.id}})) {
  for (StreamState s : kAllStates) {
    state_gauges_.push_back(&metrics.GetGauge(
        "kadr_camera_stream_state", "1 for the state each live stream is in, 0 for the others.",
        {{"stream", spec_.id}, {"state", std::string(StreamStateName(s))}}));
  }
  SetState(StreamState::kConnecting);
}

StreamRunner::~StreamRunner() {
  Stop();
  std::lock_guard lock(lifetime_->mu);
  lifetime_->closed = true;
}

void StreamRunner::Start() {
  running_since_ = std::chrono::steady_clock::now();
  capture_thread_ = std::thread([this] { CaptureLoop(); });
  publish_thread_ = std::thread([this] { PublishLoop(); });
}

void StreamRunner::RequestStop() {
  std::lock_guard lock(mu_);
  stop_ = true;
  cv_.notify_all();
}

void StreamRunner::Stop() {
  RequestStop();
  if (capture_thread_.joinable()) capture_thread_.join();
  if (publish_thread_.joinable()) publish_thread_.join();
  // A stopped stream is in no state any more, for the gauges.
  for (Gauge* g : state_gauges_) g->Set(0);
}

bool StreamRunner::Stopped() const {
  std::lock_guard lock(mu_);
  return capture_done_ && publish_done_;
}

std::int64_t StreamRunner::NowMs() const {
  return options_.now_ms ? options_.now_ms() : UnixMillis();
}

bool StreamRunner::SleepFor(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, d, [&] { return stop_; });
  return !stop_;
}

void StreamRunner::SetState(StreamState state) {
  std::lock_guard lock(mu_);
  if (state == state_ && state != StreamState::kConnecting) return;
  state_ = state;
  for (std::size_t i = 0; i < state_gauges_.size(); ++i) {
    state_gauges_[i]->Set(kAllStates[i] == state ? 1 : 0);
  }
}

void StreamRunner::RecordError(const Status& error) {
  const Status redacted(error.code(), capture::RedactUrl(error.message()));
  spdlog::warn("camera: stream={} error=\"{}\"", spec_.id, redacted.ToString());
  std::lock_guard lock(mu_);
  stats_.last_error = redacted;
  stats_.last_error_ms = NowMs();
}

void StreamRunner::CaptureLoop() {
  std::random_device seed;
  Backoff backoff(options_.initial_backoff, options_.max_backoff, options_.backoff_jitter,
                  (static_cast<std::uint64_t>(seed()) << 32) ^ seed());
  bool ever_connected = false;
  bool lost = false;
  std::int64_t lost_at = 0;          // Unix ms of the last frame before the loss
  std::int64_t last_capture_ms = 0;  // Unix ms of the latest frame
  StreamState end_state = StreamState::kFailed;
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stop_) break;
    }
    if (ever_connected) {
      std::lock_guard lock(mu_);
      ++stats_.reconnects;
      reconnects_total_.Increment();
    }
    capture::SourceOptions so;
    so.open_timeout = options_.open_timeout;
    so.read_timeout = options_.stall_timeout;
    so.loop = spec_.loop;
    auto made = factory_(spec_, so);
    Status opened = made ? (*made)->Open() : made.error();
    if (!opened.ok()) {
      RecordError(opened);
      if (IsPermanent(opened)) {
        end_state = StreamState::kFailed;
        SetState(StreamState::kFailed);
        break;
      }
      SetState(ever_connected ? StreamState::kReconnecting : StreamState::kConnecting);
      if (!SleepFor(backoff.Next())) break;
      continue;
    }
    capture::FrameSource& source = **made;
    const capture::SourceInfo info = source.info();
    spdlog::info("camera: source open stream={} source={} kind={} fps={:.2f} size={}x{}", spec_.id,
                 capture::RedactUrl(spec_.source), capture::SourceKindName(info.kind), info.fps,
                 info.width, info.height);
    ever_connected = true;
    SetState(StreamState::kRunning);

    // Read until the source is lost, ends, or stop.
    const bool pace = !info.live && spec_.mode == StreamMode::kLive;
    const double source_fps = info.fps > 0 ? info.fps : 25.0;
    const auto frame_interval = std::chrono::duration<double>(1.0 / source_fps);
    // Seconds between kept frames; 0: keep every frame (no target fps, or not below the
    // source's). A plain double: GCC 12 -O3 misreads an optional here as maybe-uninitialised.
    const double period =
        spec_.fps && (info.fps <= 0 || *spec_.fps < info.fps * 0.999) ? 1.0 / *spec_.fps : 0.0;
    const double tolerance = info.fps > 0 ? 0.5 / info.fps : period * 0.25;
    const auto opened_at = std::chrono::steady_clock::now();
    auto next_read = opened_at;
    auto last_frame = opened_at;
    double next_due = 0;
    std::int64_t index = 0;
    bool got_frame = false;
    Status ended = Status::Ok();
    bool end_of_file = false;
    while (true) {
      {
        std::lock_guard lock(mu_);
        if (stop_) break;
      }
      if (pace) {
        const auto now = std::chrono::steady_clock::now();
        if (next_read > now) {
          if (!SleepFor(std::chrono::ceil<std::chrono::milliseconds>(next_read - now))) break;
        }
        next_read +=
            std::chrono::duration_cast<std::chrono::steady_clock::duration>(frame_interval);
        if (next_read < now - frame_interval) next_read = now;
      }
      auto frame = source.Read();
      const auto now = std::chrono::steady_clock::now();
      if (!frame) {
        ended = frame.error();
        break;
      }
      if (frame->end_of_stream) {
        end_of_file = true;
        break;
      }
      if (frame->image.empty()) {
        if (now - last_frame > options_.stall_timeout) {
          ended =
              UnavailableError("stalled: no frame from " + capture::RedactUrl(spec_.source) +
                               " for " + std::to_string(options_.stall_timeout.count()) + " ms");
          break;
        }
        continue;
      }
      last_frame = now;
      const std::int64_t capture_ms = NowMs();
      last_capture_ms = capture_ms;
      {
        std::lock_guard lock(mu_);
        ++stats_.frames_captured;
        captured_times_.push_back(now);
        while (!captured_times_.empty() && captured_times_.front() < now - options_.fps_window) {
          captured_times_.pop_front();
        }
        if (lost) {
          stats_.last_gap_ms = capture_ms - lost_at;
          lost = false;
        }
      }
      captured_total_.Increment();
      if (!got_frame) {
        got_frame = true;
        backoff.Reset();
      }
      // Decimation on media time: frame index for files, arrival time for live sources.
      const double t = info.live ? std::chrono::duration<double>(now - opened_at).count()
                                 : static_cast<double>(index) / source_fps;
      ++index;
      if (period > 0) {
        if (t + tolerance < next_due) continue;
        next_due = std::max(next_due + period, t);
      }
      cv::Mat image = std::move(frame->image);
      if (image.cols > spec_.max_width || image.rows > spec_.max_height) {
        const double scale = std::min(static_cast<double>(spec_.max_width) / image.cols,
                                      static_cast<double>(spec_.max_height) / image.rows);
        cv::Mat small;
        cv::resize(image, small,
                   cv::Size(std::max(1, static_cast<int>(std::lround(image.cols * scale))),
                            std::max(1, static_cast<int>(std::lround(image.rows * scale)))),
                   0, 0, cv::INTER_AREA);
        image = small;
      }
      Offer(std::move(image), capture_ms);
    }
    source.Close();
    {
      std::lock_guard lock(mu_);
      if (stop_) break;
    }
    if (end_of_file) {
      // Once through a file: finished when its last frames are answered (or expired).
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || (!mailbox_ && in_flight_.empty()); });
      end_state = StreamState::kFinished;
      lock.unlock();
      spdlog::info("camera: stream finished stream={}", spec_.id);
      SetState(StreamState::kFinished);
      break;
    }
    RecordError(ended);
    if (IsPermanent(ended)) {
      SetState(StreamState::kFailed);
      break;
    }
    // The gap runs from the last frame (a stall is noticed only stall_timeout later).
    lost = true;
    lost_at = last_capture_ms > 0 ? last_capture_ms : NowMs();
    SetState(StreamState::kReconnecting);
    if (!SleepFor(backoff.Next())) break;
  }
  (void)end_state;
  std::lock_guard lock(mu_);
  capture_done_ = true;
  cv_.notify_all();
}

void StreamRunner::Offer(cv::Mat image, std::int64_t capture_ms) {
  std::unique_lock lock(mu_);
  if (spec_.mode == StreamMode::kLossless) {
    cv_.wait(lock, [&] { return stop_ || !mailbox_; });
    if (stop_) return;
  } else if (mailbox_) {
    ++stats_.dropped_backpressure;
    dropped_backpressure_total_.Increment();
  }
  mailbox_ = Pending{std::move(image), capture_ms};
  cv_.notify_all();
}

void StreamRunner::ExpireLocked(std::int64_t now) {
  for (auto it = in_flight_.begin(); it != in_flight_.end();) {
    if (it->second.expires_ms <= now) {
      it = in_flight_.erase(it);
      ++stats_.dropped_deadline;
      dropped_deadline_total_.Increment();
      cv_.notify_all();
    } else {
      ++it;
    }
  }
}

void StreamRunner::PublishLoop() {
  std::unique_lock lock(mu_);
  while (true) {
    ExpireLocked(NowMs());
    if (stop_) break;
    if (mailbox_ && in_flight_.size() < static_cast<std::size_t>(spec_.window)) {
      Pending p = std::move(*mailbox_);
      mailbox_.reset();
      cv_.notify_all();
      lock.unlock();
      Publish(p);
      lock.lock();
      continue;
    }
    if (capture_done_ && !mailbox_ && in_flight_.empty()) break;
    if (in_flight_.empty()) {
      cv_.wait(lock);
    } else {
      std::int64_t next = in_flight_.begin()->second.expires_ms;
      for (const auto& [id, f] : in_flight_) next = std::min(next, f.expires_ms);
      const std::int64_t wait_ms = std::clamp<std::int64_t>(next - NowMs(), 1, 1000);
      cv_.wait_for(lock, std::chrono::milliseconds(wait_ms));
    }
  }
  publish_done_ = true;
  cv_.notify_all();
}

void StreamRunner::Publish(const Pending& frame) {
  imaging::JpegOptions jo;
  jo.quality = options_.jpeg_quality;
  auto jpeg = imaging::EncodeJpeg(frame.image, jo);
  if (!jpeg) {
    RecordError(jpeg.error().WithContext("encoding a frame"));
    std::lock_guard lock(mu_);
    ++stats_.dropped_error;
    dropped_error_total_.Increment();
    return;
  }
  std::int64_t seq = 0;
  {
    std::lock_guard lock(mu_);
    seq = next_seq_++;
  }
  protocol::FrameMeta meta;
  meta.frame_id = frame_prefix_ + std::to_string(seq);
  meta.stream_id = spec_.id;
  meta.sequence = seq;
  meta.capture_ms = frame.capture_ms;
  // Lossless: no deadline, so no worker skips a frame (a broker fail-over can hold frames
  // for seconds); a frame without a result after kLosslessResultTimeoutMs is still counted.
  const bool lossless = spec_.mode == StreamMode::kLossless;
  const std::int64_t expires_ms =
      frame.capture_ms + (lossless ? kLosslessResultTimeoutMs : spec_.max_latency_ms);
  if (!lossless) meta.deadline_ms = expires_ms;
  meta.model = spec_.model;
  meta.reply_to = options_.results_topic;
  meta.annotated_to = options_.annotated_topic;
  meta.source = spec_.name;
  meta.correlation_id = meta.frame_id;
  meta.options.confidence = spec_.conf;
  meta.draw = true;
  meta.kind = protocol::kind::kLive;
  bus::Message message{topic_, spec_.id, std::move(*jpeg), {}};
  protocol::EncodeFrameHeaders(meta, message.headers);
  {
    std::lock_guard lock(mu_);
    in_flight_[meta.frame_id] = InFlight{frame.capture_ms, expires_ms};
  }
  const std::string frame_id = meta.frame_id;
  auto on_delivery = [this, lifetime = lifetime_, frame_id](const Status& s) {
    if (s.ok()) return;
    std::lock_guard alive(lifetime->mu);
    if (lifetime->closed) return;
    OnDeliveryFailed(frame_id, s);
  };
  const Status published = publisher_.Publish(std::move(message), std::move(on_delivery));
  if (!published.ok()) {
    OnDeliveryFailed(frame_id, published);
    return;
  }
  std::lock_guard lock(mu_);
  ++stats_.frames_published;
  published_total_.Increment();
}

void StreamRunner::OnDeliveryFailed(const std::string& frame_id, const Status& error) {
  {
    std::lock_guard lock(mu_);
    if (in_flight_.erase(frame_id) == 0) return;
    ++stats_.dropped_error;
    dropped_error_total_.Increment();
    cv_.notify_all();
  }
  RecordError(error.WithContext("publishing a frame"));
}

void StreamRunner::OnResult(const protocol::FrameResult& result, std::int64_t received_ms) {
  std::optional<Status> worker_error;
  {
    std::lock_guard lock(mu_);
    auto it = in_flight_.find(result.frame_id);
    if (it == in_flight_.end()) return;
    const std::int64_t capture_ms = it->second.capture_ms;
    in_flight_.erase(it);
    stats_.last_result_ms = received_ms;
    switch (result.status) {
      case protocol::FrameStatus::kOk: {
        ++stats_.frames_done;
        done_total_.Increment();
        const auto now = std::chrono::steady_clock::now();
        done_times_.push_back(now);
        while (!done_times_.empty() && done_times_.front() < now - options_.fps_window) {
          done_times_.pop_front();
        }
        const double latency = static_cast<double>(received_ms - capture_ms);
        latencies_.push_back(latency);
        while (latencies_.size() > options_.latency_samples) latencies_.pop_front();
        latency_seconds_.Observe(latency / 1000.0);
        break;
      }
      case protocol::FrameStatus::kSkipped:
        ++stats_.dropped_deadline;
        dropped_deadline_total_.Increment();
        break;
      case protocol::FrameStatus::kError:
        ++stats_.dropped_error;
        dropped_error_total_.Increment();
        worker_error = result.error;
        break;
    }
    cv_.notify_all();
  }
  if (worker_error && !worker_error->ok()) RecordError(worker_error->WithContext("worker"));
}

double StreamRunner::Rate(const std::deque<SteadyTime>& events, SteadyTime now,
                          std::chrono::milliseconds window, SteadyTime since) {
  const auto from = now - window;
  std::size_t n = 0;
  for (auto it = events.rbegin(); it != events.rend() && *it >= from; ++it) ++n;
  const double span = std::min(std::chrono::duration<double>(window).count(),
                               std::chrono::duration<double>(now - since).count());
  return span > 0.2 ? static_cast<double>(n) / span : 0.0;
}

StreamSnapshot StreamRunner::Snapshot() const {
  std::lock_guard lock(mu_);
  StreamSnapshot s;
  s.state = state_;
  s.stats = stats_;
  s.stats.in_flight = in_flight_.size();
  const auto now = std::chrono::steady_clock::now();
  s.stats.input_fps = Rate(captured_times_, now, options_.fps_window, running_since_);
  s.stats.output_fps = Rate(done_times_, now, options_.fps_window, running_since_);
  if (!latencies_.empty()) {
    const std::vector<double> v(latencies_.begin(), latencies_.end());
    s.stats.latency_p50_ms = Percentile(v, 0.50);
    s.stats.latency_p95_ms = Percentile(v, 0.95);
  }
  return s;
}

}  // namespace kadr::camera
