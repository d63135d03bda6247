#include "camera/video_jobs.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "camera/detail/model_inputs.h"
#include "common/clock.h"
#include "engine/frame_run.h"
#include "engine/video_file.h"
#include "jobs/job.h"
#include "protocol/frame.h"
#include "storage/files.h"

namespace kadr::camera {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kFramesName[] = "kadr_camera_video_frames_total";
constexpr char kFramesHelp[] =
    "Frames of video jobs written to their MP4, by model and outcome (ok, failed).";
constexpr char kJobsName[] = "kadr_camera_video_jobs_total";
constexpr char kJobsHelp[] =
    "Video jobs finished, by model and outcome (done, cancelled, or the error code).";
constexpr char kActiveName[] = "kadr_camera_video_jobs";
constexpr char kActiveHelp[] = "Video jobs of this camera service not finished yet, by state.";
constexpr char kRequestsName[] = "kadr_camera_video_requests_total";
constexpr char kRequestsHelp[] =
    "Messages read from kadr.video.jobs, by outcome (taken, duplicate, cancel, malformed, "
    "failed).";

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

fs::path FileOf(const std::string& dir, const std::string& id, std::string_view suffix) {
  return fs::path(dir) / (id + std::string(suffix));
}

void RemoveQuietly(const fs::path& path) {
  std::error_code ec;
  fs::remove(path, ec);
}

bool Exists(const fs::path& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

}  // namespace

struct VideoJobs::Job {
  // Set when claimed, then constant.
  jobs::VideoJobRequest request;
  std::chrono::milliseconds frame_timeout{0};
  std::stop_source stop;  // cancel or shutdown
  std::thread thread;     // joined by Tick, Retain or Shutdown

  std::mutex mu;  // guards everything below
  jobs::JobState state = jobs::JobState::kQueued;
  std::optional<Status> error;
  std::int64_t updated_ms = 0;
  std::int64_t frames_total = 0;
  std::int64_t frames_done = 0;
  std::int64_t frames_failed = 0;
  double fps = 0;
  int width = 0;
  int height = 0;
  std::int64_t stated_frames = 0;
  std::string container;
  bool cancel = false;
  bool started = false;
  SteadyClock::time_point started_at;
  SteadyClock::time_point last_snapshot;
  bool finished = false;  // the thread is done with it (finished, or left for a restart)
};

VideoJobs::VideoJobs(VideoJobsOptions options, bus::FramePublisher& publisher,
                     engine::Router& router, MetricsRegistry& metrics)
    : options_(std::move(options)), publisher_(publisher), router_(router), metrics_(metrics) {
  metrics_.GetGauge(kActiveName, kActiveHelp, {{"state", "queued"}});
  metrics_.GetGauge(kActiveName, kActiveHelp, {{"state", "running"}});
}

VideoJobs::~VideoJobs() { Shutdown(); }

std::int64_t VideoJobs::NowMs() const { return options_.now_ms ? options_.now_ms() : UnixMillis(); }

Status VideoJobs::ValidateOptions(const VideoJobsOptions& o) {
  if (o.dir.empty()) return InvalidArgumentError("video jobs need a video folder");
  if (o.camera_id.empty() || !protocol::IsValidTopicName(o.camera_id)) {
    return InvalidArgumentError("video jobs camera_id must be 1..249 of [A-Za-z0-9._-]: '" +
                                o.camera_id + "'");
  }
  if (!protocol::IsValidTopicName(o.reply_topic)) {
    return InvalidArgumentError("video jobs reply_topic is not a valid topic: '" + o.reply_topic +
                                "'");
  }
  if (o.window < 1 || o.window > 256) return InvalidArgumentError("video window must be 1..256");
  if (o.max_running == 0) return InvalidArgumentError("video max_running is 0");
  if (o.max_kept == 0) return InvalidArgumentError("video max_kept is 0");
  if (o.frame_timeout.count() <= 0) {
    return InvalidArgumentError("video frame_timeout must be positive");
  }
  if (o.jpeg_quality < 1 || o.jpeg_quality > 100) {
    return InvalidArgumentError("video jpeg_quality must be in 1..100");
  }
  if (o.max_frame_side != 0 && o.max_frame_side < 16) {
    return InvalidArgumentError("video max_frame_side must be 0 (full size) or at least 16");
  }
  if (o.progress_interval.count() <= 0 || o.liveness.count() <= 0) {
    return InvalidArgumentError("video progress_interval and liveness must be positive");
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Claims

Status VideoJobs::Init() {
  RETURN_IF_ERROR(ValidateOptions(options_));
  std::error_code ec;
  fs::create_directories(options_.dir, ec);
  if (ec) {
    return UnavailableError("cannot create the video folder " + options_.dir + ": " + ec.message());
  }
  std::vector<fs::path> claims;
  for (const auto& entry : fs::directory_iterator(options_.dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.ends_with(".request.json")) {
      claims.push_back(entry.path());
    } else if (name.find(".part.") != std::string::npos || name.ends_with(".tmp")) {
      // Partial outputs of a job that stopped mid-way: it runs again from its first frame.
      RemoveQuietly(entry.path());
    }
  }
  if (ec) return UnavailableError("cannot read the video folder " + options_.dir);
  std::size_t resumed = 0;
  for (const fs::path& path : claims) {
    auto text = storage::ReadFileText(path);
    const json claim = text ? json::parse(*text, nullptr, false) : json();
    if (!claim.is_object() || claim.value("camera", "") != options_.camera_id ||
        !claim.contains("request")) {
      continue;  // another camera service's claim
    }
    auto request = jobs::VideoJobRequestFromJson(Dump(claim["request"]));
    if (!request) {
      spdlog::warn("camera: unreadable video job claim removed file={} error=\"{}\"", path.string(),
                   request.error().ToString());
      RemoveQuietly(path);
      continue;
    }
    const std::string& id = request->job.id;
    if (!Exists(FileOf(options_.dir, id, ".src"))) {
      RemoveQuietly(path);
      if (!Exists(FileOf(options_.dir, id, ".jsonl"))) {
        PublishFailed(*request, UnavailableError("the camera service restarted and the upload "
                                                 "of the job is gone; submit the video again"));
      }
      continue;
    }
    auto job = std::make_shared<Job>();
    job->request = std::move(request).value();
    job->frame_timeout = job->request.frame_timeout_ms > 0
                             ? std::chrono::milliseconds(job->request.frame_timeout_ms)
                             : options_.frame_timeout;
    job->updated_ms = NowMs();
    std::lock_guard lock(mu_);
    StartLocked(job);
    ++resumed;
  }
  if (resumed > 0) {
    spdlog::info("camera: video jobs resumed after a restart camera={} jobs={}", options_.camera_id,
                 resumed);
  }
  Retain();
  return Status::Ok();
}

void VideoJobs::Take(const bus::Message& message) {
  auto count = [&](const char* outcome) {
    metrics_.GetCounter(kRequestsName, kRequestsHelp, {{"outcome", outcome}}).Increment();
  };
  if (auto cancel = jobs::CancelRequestJobId(message)) {
    count("cancel");
    Cancel(*cancel);
    return;
  }
  auto parsed = jobs::IsVideoJobRequest(message)
                    ? jobs::VideoJobRequestFromJson(bus::ValueText(message))
                    : Result<jobs::VideoJobRequest>(
                          InvalidArgumentError("not a video job request (content type)"));
  if (!parsed) {
    count("malformed");
    {
      std::lock_guard lock(mu_);
      ++malformed_;
    }
    spdlog::warn("camera: video job request ignored key={} error=\"{}\"", message.key,
                 parsed.error().ToString());
    return;
  }
  jobs::VideoJobRequest request = std::move(parsed).value();
  const std::string id = request.job.id;
  {
    std::lock_guard lock(mu_);
    if (stopping_ || jobs_.count(id) > 0) {
      count("duplicate");
      return;
    }
  }
  if (Exists(FileOf(options_.dir, id, ".mp4")) || Exists(FileOf(options_.dir, id, ".jsonl"))) {
    count("duplicate");  // redelivered after it finished
    return;
  }
  if (!Exists(FileOf(options_.dir, id, ".src"))) {
    count("failed");
    PublishFailed(request, UnavailableError("the upload of the job is not in the video folder of "
                                            "camera service '" +
                                            options_.camera_id +
                                            "': gateways and camera services must share it"));
    return;
  }
  const json claim = {{"camera", options_.camera_id},
                      {"request", json::parse(bus::ValueText(jobs::VideoJobRequestMessage(request)),
                                              nullptr, false)}};
  if (Status s =
          storage::WriteFileAtomically(FileOf(options_.dir, id, ".request.json"), Dump(claim));
      !s.ok()) {
    count("failed");
    RemoveQuietly(FileOf(options_.dir, id, ".src"));
    PublishFailed(request,
                  UnavailableError("the camera service cannot store the job: " + s.message()));
    return;
  }
  auto job = std::make_shared<Job>();
  job->request = std::move(request);
  job->frame_timeout = job->request.frame_timeout_ms > 0
                           ? std::chrono::milliseconds(job->request.frame_timeout_ms)
                           : options_.frame_timeout;
  job->updated_ms = NowMs();
  count("taken");
  std::lock_guard lock(mu_);
  if (stopping_) return;  // the claim stays: the next start runs it
  ++taken_;
  StartLocked(job);
  spdlog::info("camera: video job taken job={} model={} camera={}", id, job->request.job.model,
               options_.camera_id);
}

void VideoJobs::StartLocked(const std::shared_ptr<Job>& job) {
  const std::string& id = job->request.job.id;
  jobs_[id] = job;
  queue_.push_back(id);
  metrics_.GetGauge(kActiveName, kActiveHelp, {{"state", "queued"}}).Add(1);
  {
    std::lock_guard job_lock(job->mu);
    PublishLocked(*job);  // queued here, with this camera's control topic
  }
  job->thread = std::thread([this, job] { RunJob(job); });
}

void VideoJobs::PublishFailed(const jobs::VideoJobRequest& request, const Status& why) {
  jobs::JobRecord failed = request.job;
  failed.state = jobs::JobState::kFailed;
  failed.error = why;
  failed.updated_ms = NowMs();
  failed.deadline_ms = 0;
  const std::string id = failed.id;
  spdlog::warn("camera: video job failed job={} error=\"{}\"", id, why.ToString());
  const Status s = publisher_.Publish(
      jobs::JobEventMessage(failed), [id](const Status& st, const bus::AckToken&) {
        if (!st.ok()) {
          spdlog::warn("camera: video job snapshot not delivered job={} error=\"{}\"", id,
                       st.ToString());
        }
      });
  if (!s.ok()) {
    spdlog::warn("camera: video job snapshot not published job={} error=\"{}\"", id, s.ToString());
  }
}

// ---------------------------------------------------------------------------------------------
// The job's thread

void VideoJobs::RunJob(const std::shared_ptr<Job>& job) {
  const std::string id = job->request.job.id;
  bool got_slot = false;
  {
    std::unique_lock lock(mu_);
    slots_.wait(lock, [&] {
      return stopping_ || job->stop.stop_requested() ||
             (running_ < options_.max_running && !queue_.empty() && queue_.front() == id);
    });
    const auto it = std::find(queue_.begin(), queue_.end(), id);
    if (it != queue_.end()) queue_.erase(it);
    metrics_.GetGauge(kActiveName, kActiveHelp, {{"state", "queued"}}).Sub(1);
    got_slot = !stopping_ && !job->stop.stop_requested();
    if (got_slot) {
      ++running_;
      metrics_.GetGauge(kActiveName, kActiveHelp, {{"state", "running"}}).Add(1);
    }
  }
  slots_.notify_all();  // the queue's head changed

  Status outcome = got_slot ? Process(*job) : CancelledError("stopped");
  bool cancelled = false;
  {
    std::lock_guard job_lock(job->mu);
    cancelled = job->cancel;
  }
  if (cancelled) {
    outcome = CancelledError("the job was cancelled");
  }
  const bool shutting_down = !cancelled && outcome.code() == StatusCode::kCancelled;
  if (shutting_down) {
    // Left for the next start: the claim and the upload stay, the partial outputs go.
    for (const char* suffix : {".part.mp4", ".part.jsonl"}) {
      RemoveQuietly(FileOf(options_.dir, id, suffix));
    }
    std::lock_guard job_lock(job->mu);
    job->finished = true;
    spdlog::info("camera: video job stopped, to resume at the next start job={}", id);
  } else {
    Finish(*job, outcome);
  }
  if (got_slot) {
    {
      std::lock_guard lock(mu_);
      --running_;
    }
    metrics_.GetGauge(kActiveName, kActiveHelp, {{"state", "running"}}).Sub(1);
    slots_.notify_all();
  }
}

Status VideoJobs::Process(Job& job) {
  const std::string id = job.request.job.id;
  const std::string& model = job.request.job.model;
  ASSIGN_OR_RETURN(auto source,
                   engine::VideoFileSource::Open(FileOf(options_.dir, id, ".src").string(),
                                                 options_.max_frames));
  const fs::path mp4_part = FileOf(options_.dir, id, ".part.mp4");
  const fs::path jsonl_part = FileOf(options_.dir, id, ".part.jsonl");
  std::ofstream lines(jsonl_part, std::ios::binary | std::ios::trunc);
  if (!lines) return UnavailableError("cannot create " + jsonl_part.string());
  {
    std::lock_guard lock(job.mu);
    job.fps = source->fps();
    job.width = source->width();
    job.height = source->height();
    job.stated_frames = source->stated_frames();
    job.frames_total = job.stated_frames;
    job.container = std::string(source->container());
    job.state = jobs::JobState::kRunning;
    job.started = true;
    job.started_at = SteadyClock::now();
    job.updated_ms = NowMs();
    PublishLocked(job);
  }
  const int wire_side = detail::WireSide(
      options_.max_frame_side, options_.model_input_side ? options_.model_input_side(model) : 0);
  spdlog::info(
      "camera: video job started job={} model={} frames={} fps={:.2f} size={}x{} wire_side={} "
      "draw={}",
      id, model, job.stated_frames, job.fps, job.width, job.height, wire_side, job.request.draw);

  engine::VideoFileSinkOptions so;
  // A results-only job (draw=0) writes no MP4 at all: its encoder would cost more CPU per
  // frame than the model's forward pass (docs/performance.md), for a video nobody asked for.
  if (job.request.draw) so.mp4_path = mp4_part.string();
  so.fps = source->fps();
  so.width = source->width();
  so.height = source->height();
  so.lines = &lines;
  // The detections are drawn here, on the frame this service decoded: the workers encode no
  // annotated JPEG and this service decodes none (two JPEG codecs less per frame).
  so.annotate = job.request.draw;
  so.on_frame = [&](std::int64_t written, bool failed) {
    metrics_
        .GetCounter(kFramesName, kFramesHelp,
                    {{"model", model}, {"outcome", failed ? "failed" : "ok"}})
        .Increment();
    std::lock_guard lock(job.mu);
    job.frames_done = written;
    if (failed) ++job.frames_failed;
    job.updated_ms = NowMs();
    if (SteadyClock::now() - job.last_snapshot >= options_.progress_interval) PublishLocked(job);
  };
  ASSIGN_OR_RETURN(auto sink, engine::VideoFileSink::Open(std::move(so)));

  engine::BusDispatchOptions bo;
  bo.model = model;
  bo.stream_id = id;
  bo.reply_to = options_.reply_topic;
  bo.annotated_to = options_.reply_topic;
  bo.source = job.request.job.source_name;
  bo.kind = protocol::kind::kVideo;
  bo.options = job.request.options;
  bo.draw = false;  // the sink draws (above)
  bo.jpeg_quality = options_.jpeg_quality;
  bo.max_side = wire_side;
  bo.admission = options_.admission.get();
  bo.client = "video:" + id;
  engine::BusDispatcher dispatcher(std::move(bo), publisher_);

  engine::RunOptions ro;
  ro.id = id;
  ro.mode = engine::Mode::kLossless;
  ro.window = options_.window;
  ro.answer_timeout = job.frame_timeout;
  ro.fail_on_timeout = true;
  ro.send_attempts = 3;  // a frame the broker loses on a fail-over is sent again
  ro.fail_on_send_error = true;
  ro.ordered = true;
  ro.keep_frames = true;
  ro.now_ms = options_.now_ms;
  engine::FrameRun run(std::move(ro), dispatcher, *sink);
  router_.Add(run);
  Status outcome = run.Run(*source, job.stop.get_token());
  router_.Remove(run);
  if (!outcome.ok()) {
    switch (outcome.code()) {
      case StatusCode::kCancelled:
        return outcome;
      case StatusCode::kDeadlineExceeded:
        return DeadlineExceededError(outcome.message() + " from a worker of model '" + model + "'");
      case StatusCode::kTooLarge:
      case StatusCode::kResourceExhausted:
      case StatusCode::kUnavailable:
        return Status(outcome.code() == StatusCode::kTooLarge ? StatusCode::kTooLarge
                                                              : StatusCode::kUnavailable,
                      "cannot publish a frame of the video: " + outcome.message());
      default:
        return outcome;
    }
  }
  {
    std::lock_guard lock(job.mu);
    job.frames_total = source->frames_read();  // the truth, whatever the container stated
  }
  if (source->frames_read() != job.stated_frames) {
    spdlog::info("camera: video frame count differs from the container job={} stated={} read={}",
                 id, job.stated_frames, source->frames_read());
  }
  if (source->frames_read() == 0) return InvalidArgumentError("the video has no decodable frame");
  RETURN_IF_ERROR(sink->Close());
  lines.close();
  if (!lines) return UnavailableError("cannot write " + jsonl_part.string());
  std::error_code ec;
  fs::rename(jsonl_part, FileOf(options_.dir, id, ".jsonl"), ec);
  if (!ec && job.request.draw) fs::rename(mp4_part, FileOf(options_.dir, id, ".mp4"), ec);
  if (ec) return UnavailableError("cannot move the finished video into place: " + ec.message());
  return Status::Ok();
}

void VideoJobs::Finish(Job& job, const Status& outcome) {
  const std::string id = job.request.job.id;
  RemoveQuietly(FileOf(options_.dir, id, ".src"));
  RemoveQuietly(FileOf(options_.dir, id, ".request.json"));
  if (!outcome.ok()) {
    for (const char* suffix : {".part.mp4", ".part.jsonl", ".mp4", ".jsonl"}) {
      RemoveQuietly(FileOf(options_.dir, id, suffix));
    }
  }
  double seconds = 0;
  std::int64_t frames = 0;
  {
    std::lock_guard lock(job.mu);
    if (outcome.ok()) {
      job.state = jobs::JobState::kDone;
    } else if (outcome.code() == StatusCode::kCancelled) {
      job.state = jobs::JobState::kCancelled;
      job.error = outcome;
    } else {
      job.state = jobs::JobState::kFailed;
      job.error = outcome;
    }
    job.updated_ms = NowMs();
    job.finished = true;
    if (job.started) {
      seconds = std::chrono::duration<double>(SteadyClock::now() - job.started_at).count();
    }
    frames = job.frames_done;
    PublishLocked(job);
  }
  const std::string outcome_name = outcome.ok()
                                       ? "done"
                                       : (outcome.code() == StatusCode::kCancelled
                                              ? "cancelled"
                                              : std::string(StatusCodeName(outcome.code())));
  metrics_
      .GetCounter(kJobsName, kJobsHelp,
                  {{"model", job.request.job.model}, {"outcome", outcome_name}})
      .Increment();
  if (outcome.ok()) {
    spdlog::info("camera: video job done job={} frames={} seconds={:.1f} fps={:.1f}", id, frames,
                 seconds, seconds > 0 ? static_cast<double>(frames) / seconds : 0.0);
  } else {
    spdlog::info("camera: video job ended job={} outcome={} frames={} error=\"{}\"", id,
                 outcome_name, frames, outcome.ToString());
  }
  Retain();
}

// ---------------------------------------------------------------------------------------------
// Snapshots, cancel, retention

jobs::JobRecord VideoJobs::RecordLocked(const Job& job) const {
  jobs::JobRecord record = job.request.job;
  record.kind = jobs::JobKind::kVideo;
  record.state = job.state;
  record.updated_ms = job.updated_ms;
  record.frames_total = job.frames_total;
  record.frames_done = job.frames_done;
  record.error = job.error;
  record.control_topic = options_.reply_topic;
  record.deadline_ms = jobs::IsFinished(job.state) ? 0 : NowMs() + options_.liveness.count();
  json details =
      json::parse(record.details_json.empty() ? "{}" : record.details_json, nullptr, false);
  if (!details.is_object()) details = json::object();
  if (job.started) {
    details["video"] = {{"fps", job.fps},
                        {"frames", job.stated_frames},
                        {"width", job.width},
                        {"height", job.height},
                        {"container", job.container}};
  }
  double fps = 0;
  json eta = nullptr;
  if (job.started && job.frames_done > 0) {
    const double seconds =
        std::chrono::duration<double>(SteadyClock::now() - job.started_at).count();
    if (seconds > 0) fps = static_cast<double>(job.frames_done) / seconds;
    if (job.state == jobs::JobState::kRunning && fps > 0 && job.frames_total >= job.frames_done) {
      eta = std::llround(static_cast<double>(job.frames_total - job.frames_done) / fps * 1000.0);
    }
  }
  if (job.state == jobs::JobState::kDone) eta = 0;
  details["progress"] = {{"fps", std::round(fps * 100.0) / 100.0},
                         {"eta_ms", eta},
                         {"frames_failed", job.frames_failed}};
  jobs::SetVideoOutput(details, record.id, job.request.draw);
  record.details_json = Dump(details);
  return record;
}

void VideoJobs::PublishLocked(Job& job) {
  job.last_snapshot = SteadyClock::now();
  const std::string id = job.request.job.id;
  const Status s = publisher_.Publish(
      jobs::JobEventMessage(RecordLocked(job)), [id](const Status& st, const bus::AckToken&) {
        if (!st.ok()) {
          spdlog::warn("camera: video job snapshot not delivered job={} error=\"{}\"", id,
                       st.ToString());
        }
      });
  if (!s.ok()) {
    spdlog::warn("camera: video job snapshot not published job={} error=\"{}\"", id, s.ToString());
  }
}

bool VideoJobs::HandleControl(const bus::Message& message) {
  auto id = jobs::CancelRequestJobId(message);
  if (!id) return false;
  Cancel(*id);
  return true;
}

void VideoJobs::Cancel(const std::string& id) {
  std::shared_ptr<Job> job;
  {
    std::lock_guard lock(mu_);
    const auto it = jobs_.find(id);
    if (it != jobs_.end()) job = it->second;
  }
  if (!job) {
    spdlog::debug("camera: cancel request ignored, no such video job here job={}", id);
    return;
  }
  {
    std::lock_guard lock(job->mu);
    if (job->finished || job->cancel || jobs::IsFinished(job->state)) return;
    job->cancel = true;
    // Shown at once; the thread stops publishing and cleans up on its own.
    job->state = jobs::JobState::kCancelled;
    job->error = CancelledError("the job was cancelled");
    job->updated_ms = NowMs();
    PublishLocked(*job);
  }
  job->stop.request_stop();
  {
    std::lock_guard lock(mu_);  // so a queued job's wait sees the stop
  }
  slots_.notify_all();
  spdlog::info("camera: video job cancelled job={}", id);
}

void VideoJobs::Tick() {
  std::vector<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, job] : jobs_) jobs.push_back(job);
  }
  const auto renew = options_.liveness / 3;
  for (const auto& job : jobs) {
    std::lock_guard lock(job->mu);
    if (!job->finished && !jobs::IsFinished(job->state) &&
        SteadyClock::now() - job->last_snapshot >= renew) {
      PublishLocked(*job);
    }
  }
}

void VideoJobs::Retain() {
  // Finished jobs, newest first: in memory (joined) and on disk (by their files' time).
  std::vector<std::shared_ptr<Job>> to_join;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;  // Shutdown joins the threads
    std::vector<std::pair<std::int64_t, std::string>> finished;
    for (const auto& [id, job] : jobs_) {
      if (job->thread.get_id() == std::this_thread::get_id()) continue;  // never itself
      std::lock_guard job_lock(job->mu);
      if (job->finished) finished.emplace_back(job->updated_ms, id);
    }
    std::sort(finished.begin(), finished.end(), std::greater<>());
    for (std::size_t i = options_.max_kept; i < finished.size(); ++i) {
      auto it = jobs_.find(finished[i].second);
      to_join.push_back(it->second);
      jobs_.erase(it);
    }
  }
  for (const auto& job : to_join) {
    if (job->thread.joinable()) job->thread.join();
  }
  std::error_code ec;
  std::vector<std::pair<fs::file_time_type, std::string>> outputs;
  for (const auto& entry : fs::directory_iterator(options_.dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.ends_with(".jsonl") || name.find(".part.") != std::string::npos) continue;
    outputs.emplace_back(entry.last_write_time(ec), name.substr(0, name.size() - 6));
  }
  if (outputs.size() <= options_.max_kept && options_.max_kept_bytes == 0) return;
  std::sort(outputs.begin(), outputs.end(), std::greater<>());
  std::uint64_t kept_bytes = 0;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const std::string& id = outputs[i].second;
    std::uint64_t bytes = 0;
    for (const char* suffix : {".mp4", ".jsonl"}) {
      const std::uintmax_t size = fs::file_size(FileOf(options_.dir, id, suffix), ec);
      if (!ec) bytes += size;
    }
    // The newest is kept whatever its size; then by count and by bytes.
    if (i == 0 || (i < options_.max_kept && (options_.max_kept_bytes == 0 ||
                                             kept_bytes + bytes <= options_.max_kept_bytes))) {
      kept_bytes += bytes;
      continue;
    }
    {
      std::lock_guard lock(mu_);
      if (const auto it = jobs_.find(id); it != jobs_.end()) {
        std::lock_guard job_lock(it->second->mu);
        if (!it->second->finished) continue;
      }
    }
    for (const char* suffix : {".mp4", ".jsonl"}) RemoveQuietly(FileOf(options_.dir, id, suffix));
    spdlog::debug("camera: video job files removed job={}", id);
  }
}

void VideoJobs::Shutdown() {
  std::vector<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (const auto& [id, job] : jobs_) jobs.push_back(job);
  }
  slots_.notify_all();
  for (const auto& job : jobs) job->stop.request_stop();
  for (const auto& job : jobs) {
    if (job->thread.joinable()) job->thread.join();
  }
}

VideoJobsStats VideoJobs::stats() const {
  std::lock_guard lock(mu_);
  VideoJobsStats s;
  s.queued = queue_.size();
  s.running = running_;
  s.taken = taken_;
  s.malformed = malformed_;
  return s;
}

}  // namespace kadr::camera
