#include "jobs/recorder.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <optional>
#include <thread>
#include <utility>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "imaging/decode.h"
#include "imaging/encode.h"
#include "jobs/job.h"
#include "protocol/frame.h"

namespace kadr::jobs {
namespace {

namespace header = protocol::header;

constexpr char kRecordsMetric[] = "kadr_jobs_records_total";
constexpr char kRecordsHelp[] =
    "Job snapshots, results and annotated images the recorder consumed, by outcome (stored, "
    "malformed, failed, stale).";
constexpr std::size_t kSweepBatch = 100;

Counter& RecordsCounter(MetricsRegistry& metrics, const char* kind, const char* outcome) {
  return metrics.GetCounter(kRecordsMetric, kRecordsHelp, {{"kind", kind}, {"outcome", outcome}});
}

// What a stale message may still add to a record: what the record lacks.
void FillIn(JobRecord& job, const JobRecord& from) {
  if (job.model.empty()) job.model = from.model;
  if (job.source_name.empty()) job.source_name = from.source_name;
  if (job.control_topic.empty()) job.control_topic = from.control_topic;
  if (job.details_json.empty()) job.details_json = from.details_json;
  if (job.deadline_ms == 0) job.deadline_ms = from.deadline_ms;
}

}  // namespace

std::vector<std::string> RecorderTopics() {
  return {std::string(protocol::kJobsTopic), std::string(protocol::kResultsTopic),
          std::string(protocol::kAnnotatedTopic), "^kadr\\.replies\\..*"};
}

Recorder::Recorder(RecorderOptions options, JobStore& store, bus::FrameSubscriber& subscriber,
                   MetricsRegistry& metrics)
    : options_(std::move(options)),
      store_(store),
      subscriber_(subscriber),
      events_stored_(RecordsCounter(metrics, "event", "stored")),
      results_stored_(RecordsCounter(metrics, "result", "stored")),
      images_stored_(RecordsCounter(metrics, "image", "stored")),
      malformed_(RecordsCounter(metrics, "any", "malformed")),
      failed_(RecordsCounter(metrics, "any", "failed")),
      stale_(RecordsCounter(metrics, "any", "stale")),
      ignored_(metrics.GetCounter(
          "kadr_jobs_ignored_messages_total",
          "Messages the recorder acknowledged without recording (video and live frames, "
          "control messages).")),
      overdue_(metrics.GetCounter("kadr_jobs_overdue_total",
                                  "Jobs the recorder failed because their deadline passed "
                                  "without a result.")),
      last_enforce_ms_(NowMs()) {}

std::int64_t Recorder::NowMs() const { return options_.now_ms ? options_.now_ms() : UnixMillis(); }

RecorderStats Recorder::stats() const {
  RecorderStats s;
  s.events_stored = events_stored_.value();
  s.results_stored = results_stored_.value();
  s.images_stored = images_stored_.value();
  s.malformed = malformed_.value();
  s.failed = failed_.value();
  s.stale = stale_.value();
  s.ignored = ignored_.value();
  s.overdue = overdue_.value();
  return s;
}

Status Recorder::WithRetries(const std::function<Status()>& op) const {
  Status s;
  for (int attempt = 1;; ++attempt) {
    s = op();
    if (s.ok() || s.code() != StatusCode::kUnavailable || attempt >= options_.store_attempts) {
      break;
    }
    std::this_thread::sleep_for(options_.store_retry_backoff);
  }
  // The message was checked before it reached the store: a rejection there is not the
  // message's fault, and must not be counted as malformed.
  if (s.code() == StatusCode::kInvalidArgument) return InternalError(s.message());
  return s;
}

Result<std::optional<JobRecord>> Recorder::Existing(const std::string& id) const {
  std::optional<JobRecord> existing;
  RETURN_IF_ERROR(WithRetries([&] {
    auto got = store_.GetJob(id);
    if (got) existing = std::move(*got);
    return got.has_value() || got.error().code() == StatusCode::kNotFound ? Status::Ok()
                                                                          : got.error();
  }));
  return existing;
}

Status Recorder::StoreEvent(const bus::InboundMessage& in, bool& stale) {
  auto snapshot = JobFromEvent(bus::ValueText(in.message));
  if (!snapshot) return snapshot.error();
  ASSIGN_OR_RETURN(std::optional<JobRecord> existing, Existing(snapshot->id));
  JobRecord job = std::move(snapshot).value();
  if (existing) {
    if (CanTransition(existing->state, job.state)) {
      job.result_json = existing->result_json;  // snapshots carry none
      FillIn(job, *existing);  // a snapshot that knows less (a runner after a restart)
      if (job.created_ms == 0) job.created_ms = existing->created_ms;
      if (job.frames_total == 0) {
        job.frames_total = existing->frames_total;
        job.frames_done = existing->frames_done;
      }
      if (existing->frames_done > job.frames_done && existing->state == job.state) {
        job.frames_done = existing->frames_done;  // an older progress snapshot
      }
    } else {
      stale = true;
      JobRecord kept = *existing;
      FillIn(kept, job);
      kept.kind = job.kind;
      if (job.created_ms > 0) kept.created_ms = job.created_ms;  // the runner's own time
      if (!IsFinished(existing->state) && job.updated_ms >= existing->updated_ms) {
        // A runner that took the job again (a camera service after a restart, queued there
        // before it runs again) still vouches for it: its deadline and control topic count.
        kept.deadline_ms = job.deadline_ms;
        if (!job.control_topic.empty()) kept.control_topic = job.control_topic;
        kept.updated_ms = job.updated_ms;
      }
      job = std::move(kept);
    }
  }
  return WithRetries([&] { return store_.PutJob(job); });
}

Status Recorder::StoreResult(const bus::InboundMessage& in, bool& stale) {
  const bus::Message& m = in.message;
  const std::string_view text = bus::ValueText(m);
  auto parsed = protocol::FrameResultFromJson(text);
  if (!parsed) return InvalidArgumentError(parsed.error().message());
  const protocol::FrameResult& r = *parsed;

  std::string stream = protocol::StreamIdOf(m);
  if (stream.empty()) stream = !r.stream_id.empty() ? r.stream_id : r.frame_id;
  const std::string job_id = JobIdForStream(stream);
  if (job_id.empty()) return InvalidArgumentError("result without a stream or frame id");
  ASSIGN_OR_RETURN(std::optional<JobRecord> existing, Existing(job_id));

  JobState state = JobState::kDone;
  std::optional<Status> error;
  switch (r.status) {
    case protocol::FrameStatus::kOk:
      break;
    case protocol::FrameStatus::kSkipped:
      state = JobState::kFailed;
      error = DeadlineExceededError(r.error.message());
      break;
    case protocol::FrameStatus::kError:
      state = JobState::kFailed;
      error =
          r.error.ok() ? InternalError("the worker reported a failure without an error") : r.error;
      break;
  }
  const std::int64_t now = NowMs();
  JobRecord job;
  if (existing) {
    job = *existing;
    if (!CanTransition(job.state, state)) {
      stale = true;
      if (job.model.empty()) job.model = m.headers.Get(header::kModel).value_or(r.result.model);
      return WithRetries([&] { return store_.PutJob(job); });
    }
  } else {
    job.id = job_id;
    job.kind = JobKind::kImage;
    job.source_name = m.headers.Get(header::kSource).value_or("");
    job.created_ms = r.capture_ms > 0 ? r.capture_ms : now;
    job.frames_total = 1;
  }
  if (job.model.empty()) job.model = m.headers.Get(header::kModel).value_or(r.result.model);
  if (r.capture_ms > 0) job.created_ms = r.capture_ms;  // the frame's own time beats arrival
  job.state = state;
  job.error = error;
  job.updated_ms = now;
  job.frames_done = job.frames_total;
  job.result_json = std::string(text);
  RETURN_IF_ERROR(WithRetries([&] { return store_.PutJob(job); }));
  spdlog::debug("recorded result job={} frame={} state={} detections={}", job.id, r.frame_id,
                JobStateName(job.state), r.result.detections.size());
  return Status::Ok();
}

Status Recorder::StoreImage(const bus::InboundMessage& in) {
  const bus::Message& m = in.message;
  std::string stream = protocol::StreamIdOf(m);
  if (stream.empty()) stream = m.headers.Get(header::kFrameId).value_or("");
  const std::string job_id = JobIdForStream(stream);
  if (job_id.empty()) return InvalidArgumentError("annotated image without a stream or frame id");

  // Only a preview is needed from the pixels: a JPEG decodes straight to near thumbnail size
  // (other formats decode in full, and are re-encoded below).
  auto decoded = imaging::DecodeImageReduced(m.value, options_.thumbnail_max_side);
  if (!decoded) {
    return InvalidArgumentError("annotated image does not decode: " + decoded.error().ToString());
  }
  const cv::Mat& image = *decoded;

  // Workers send JPEG; anything else a foreign producer sends is stored as JPEG too, since
  // images are served as image/jpeg.
  std::vector<std::uint8_t> reencoded;
  if (imaging::SniffFormat(m.value) != imaging::ImageFormat::kJpeg) {
    auto jpeg = imaging::EncodeJpeg(image);
    if (!jpeg) return jpeg.error();
    reencoded = std::move(*jpeg);
  }
  const std::span<const std::uint8_t> jpeg =
      reencoded.empty() ? std::span<const std::uint8_t>(m.value) : reencoded;

  cv::Mat small;
  try {
    small = imaging::FitLongSide(image, options_.thumbnail_max_side);
  } catch (const cv::Exception& e) {
    return InternalError(std::string("thumbnail resize failed: ") + e.what());
  }
  imaging::JpegOptions thumb_options;
  thumb_options.quality = options_.thumbnail_quality;
  auto thumbnail = imaging::EncodeJpeg(small, thumb_options);
  if (!thumbnail) return thumbnail.error().WithContext("thumbnail");

  ASSIGN_OR_RETURN(std::optional<JobRecord> existing, Existing(job_id));
  if (!existing || existing->state == JobState::kQueued) {
    // The image came first (it is published before the result): the job is in progress.
    const std::int64_t now = NowMs();
    JobRecord job;
    if (existing) {
      job = *existing;
    } else {
      job.id = job_id;
      job.kind = JobKind::kImage;
      job.model = m.headers.Get(header::kModel).value_or("");
      job.created_ms = now;
      job.frames_total = 1;
      job.source_name = m.headers.Get(header::kSource).value_or("");
    }
    job.state = JobState::kRunning;
    job.updated_ms = now;
    RETURN_IF_ERROR(WithRetries([&] { return store_.PutJob(job); }));
  }
  RETURN_IF_ERROR(WithRetries([&] { return store_.SaveAnnotatedImage(job_id, jpeg); }));
  RETURN_IF_ERROR(WithRetries([&] { return store_.SaveThumbnail(job_id, *thumbnail); }));
  spdlog::debug("recorded annotated image job={} bytes={} thumbnail_bytes={}", job_id, jpeg.size(),
                thumbnail->size());
  return Status::Ok();
}

void Recorder::Handle(const bus::InboundMessage& in) {
  const auto frame_kind = in.message.headers.Get(header::kKind);
  if (frame_kind &&
      (*frame_kind == protocol::kind::kVideo || *frame_kind == protocol::kind::kLive ||
       *frame_kind == protocol::kind::kControl)) {
    // Video jobs report through their snapshots; live frames are the live view's; control
    // messages are for a job's runner.
    ignored_.Increment();
    subscriber_.Ack(in.token);
    return;
  }
  const bool event = IsJobEvent(in.message);
  const bool image = !event && protocol::IsImageMessage(in.message);
  bool stale = false;
  const Status s = event ? StoreEvent(in, stale) : image ? StoreImage(in) : StoreResult(in, stale);
  const char* kind = event ? "job event" : image ? "image" : "result";
  if (s.ok()) {
    (event ? events_stored_ : image ? images_stored_ : results_stored_).Increment();
    if (stale) {
      stale_.Increment();
      spdlog::debug("stale {} at={} key={}: the job is already finished", kind,
                    bus::Describe(in.token), in.message.key);
    }
    ++stored_since_enforce_;
    Notify();
  } else if (s.code() == StatusCode::kInvalidArgument) {
    malformed_.Increment();
    spdlog::warn("dropped malformed {} at={} key={} error=\"{}\"", kind, bus::Describe(in.token),
                 in.message.key, s.message());
  } else {
    failed_.Increment();
    spdlog::error("could not record {} at={} key={} error=\"{}\"", kind, bus::Describe(in.token),
                  in.message.key, s.ToString());
  }
  subscriber_.Ack(in.token);
}

void Recorder::Notify() {
  {
    std::lock_guard lock(wait_mu_);
    ++generation_;
  }
  stored_.notify_all();
}

void Recorder::Sweep() {
  const std::int64_t now = NowMs();
  if (now - last_sweep_ms_ < options_.sweep_interval.count()) return;
  last_sweep_ms_ = now;
  auto overdue = store_.ListOverdue(now - options_.overdue_grace.count(), kSweepBatch);
  if (!overdue) {
    spdlog::warn("overdue jobs could not be listed error=\"{}\"", overdue.error().ToString());
    return;
  }
  for (JobRecord& job : *overdue) {
    const std::int64_t allowed = job.deadline_ms - job.created_ms;
    job.state = JobState::kFailed;
    job.error =
        job.kind == JobKind::kVideo
            ? DeadlineExceededError("no news of the video job from a camera service within " +
                                    std::to_string(job.deadline_ms - job.updated_ms) +
                                    " ms: none took it, or the one running it stopped")
            : DeadlineExceededError("no result from a worker of model '" + job.model + "' within " +
                                    std::to_string(allowed) + " ms");
    job.updated_ms = now;
    if (Status s = WithRetries([&] { return store_.PutJob(job); }); !s.ok()) {
      spdlog::warn("overdue job not failed job={} error=\"{}\"", job.id, s.ToString());
      continue;
    }
    overdue_.Increment();
    spdlog::info("job failed job={} model={} error=\"{}\"", job.id, job.model,
                 job.error->ToString());
  }
  if (!overdue->empty()) Notify();
}

void Recorder::MaybeEnforce() {
  const std::int64_t now = NowMs();
  if (stored_since_enforce_ < options_.enforce_every_records &&
      now - last_enforce_ms_ < options_.enforce_interval.count()) {
    return;
  }
  stored_since_enforce_ = 0;
  last_enforce_ms_ = now;
  if (Status s = store_.Enforce(); !s.ok()) {
    spdlog::warn("job retention failed error=\"{}\"", s.ToString());
  }
}

std::size_t Recorder::PollOnce(std::chrono::milliseconds timeout) {
  const auto batch = subscriber_.Poll(options_.max_batch, timeout, std::chrono::milliseconds(0));
  for (const auto& in : batch) Handle(in);
  Sweep();
  MaybeEnforce();
  return batch.size();
}

Status Recorder::Run(const std::stop_token& stop) {
  spdlog::info("job recorder started");
  // Retention first: the history may have aged while the recorder was down.
  if (Status s = store_.Enforce(); !s.ok()) {
    spdlog::warn("job retention failed error=\"{}\"", s.ToString());
  }
  while (!stop.stop_requested()) (void)PollOnce(options_.poll_timeout);
  Status closed = subscriber_.Close();
  const RecorderStats s = stats();
  spdlog::info(
      "job recorder stopped events={} results={} images={} malformed={} failed={} stale={} "
      "overdue={}",
      s.events_stored, s.results_stored, s.images_stored, s.malformed, s.failed, s.stale,
      s.overdue);
  return closed;
}

Result<JobRecord> Recorder::WaitForJob(const std::string& id, std::chrono::milliseconds wait,
                                       const std::function<bool(const JobRecord&)>& ready) {
  const auto deadline = SteadyClock::now() + wait;
  std::unique_lock lock(wait_mu_);
  const bool may_wait = waiters_ < options_.max_waiters;
  if (may_wait) ++waiters_;
  Result<JobRecord> job = NotFoundError("unknown job '" + id + "'");
  while (true) {
    const std::uint64_t seen = generation_;
    lock.unlock();
    job = store_.GetJob(id);
    lock.lock();
    const bool done = job ? (!ready || ready(*job)) : job.error().code() != StatusCode::kNotFound;
    if (done || !may_wait) break;
    if (!stored_.wait_until(lock, deadline, [&] { return generation_ != seen; })) break;
  }
  if (may_wait) --waiters_;
  return job;
}

}  // namespace kadr::jobs
