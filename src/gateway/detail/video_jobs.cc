#include "gateway/detail/video_jobs.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "gateway/detail/responses.h"
#include "gateway/detail/upload.h"
#include "imaging/decode.h"
#include "imaging/encode.h"
#include "protocol/frame.h"
#include "protocol/result.h"
#include "video/video.h"
#include "viewer/history_store.h"
#include "viewer/job_json.h"
#include "viewer/viewer_service.h"

namespace kadr::gateway::detail {
namespace {

namespace fs = std::filesystem;
namespace header = protocol::header;
using http::HttpResponse;
using nlohmann::json;

constexpr char kJobIdHeader[] = "X-Kadr-Job-Id";
constexpr char kFramesName[] = "kadr_gateway_video_frames_total";
constexpr char kFramesHelp[] =
    "Frames of video jobs written to their MP4, by model and outcome (ok, error, skipped).";
constexpr char kJobsName[] = "kadr_gateway_video_jobs_total";
constexpr char kJobsHelp[] =
    "Video jobs finished, by model and outcome (done, cancelled, or the error code).";
constexpr char kActiveName[] = "kadr_gateway_video_jobs";
constexpr char kActiveHelp[] = "Video jobs not finished yet, by state (queued, running).";
constexpr char kInFlightName[] = "kadr_gateway_video_frames_in_flight";
constexpr char kInFlightHelp[] = "Frames of video jobs published and not yet written.";

fs::path FileOf(const std::string& dir, const std::string& id, std::string_view suffix) {
  return fs::path(dir) / (id + std::string(suffix));
}

Status WriteWhole(const fs::path& path, std::string_view bytes) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) return UnavailableError("cannot write " + tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return UnavailableError("cannot rename " + tmp.string() + ": " + ec.message());
  return Status::Ok();
}

Result<std::string> ReadWhole(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot open " + path.string());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void RemoveQuietly(const fs::path& path) {
  std::error_code ec;
  fs::remove(path, ec);
}

Status ErrorFromJson(const json& e) {
  const std::string code = e.value("code", "internal");
  const std::string message = e.value("message", "");
  for (int c = 0; c <= static_cast<int>(StatusCode::kDeadlineExceeded); ++c) {
    const auto sc = static_cast<StatusCode>(c);
    if (StatusCodeName(sc) == code && sc != StatusCode::kOk) return Status(sc, message);
  }
  return InternalError(message);
}

}  // namespace

// One published frame until it is written.
struct VideoJobs::Frame {
  std::vector<std::uint8_t> jpeg;  // the source frame as published (the fallback picture)
  SteadyClock::time_point sent;
  std::optional<protocol::FrameResult> result;
  std::vector<std::uint8_t> image;  // the annotated JPEG, when it came
  bool done = false;                // the result is in
};

struct VideoJobs::Job {
  // Set before the thread starts, then constant.
  std::string id;
  VideoRequest request;
  std::int64_t created_ms = 0;
  double fps = 0;
  int width = 0;
  int height = 0;
  std::int64_t stated_frames = 0;
  std::string container;
  std::chrono::milliseconds frame_timeout{0};
  std::optional<video::VideoFileReader> reader;  // used by the job's thread only
  std::thread thread;                            // joined under VideoJobs::mu_ or at shutdown

  std::mutex mu;  // guards everything below
  std::condition_variable changed;
  std::string state = "queued";
  std::optional<Status> error;
  std::int64_t updated_ms = 0;
  std::int64_t frames_total = 0;
  std::int64_t frames_done = 0;
  std::int64_t frames_failed = 0;
  bool cancel = false;
  bool stop = false;            // the gateway is shutting down
  std::optional<Status> abort;  // a frame the broker refused
  bool started = false;
  SteadyClock::time_point started_at;
  std::map<std::int64_t, Frame> in_flight;
  bool finished = false;  // state is final and the files are in place
};

VideoJobs::VideoJobs(VideoJobsOptions options, bus::FramePublisher& publisher,
                     MetricsRegistry& metrics)
    : options_(std::move(options)), publisher_(publisher), metrics_(metrics) {
  metrics_.GetGauge(kActiveName, kActiveHelp, {{"state", "queued"}});
  metrics_.GetGauge(kActiveName, kActiveHelp, {{"state", "running"}});
  metrics_.GetGauge(kInFlightName, kInFlightHelp);
}

VideoJobs::~VideoJobs() { Shutdown(); }

std::int64_t VideoJobs::NowMs() const { return options_.now_ms ? options_.now_ms() : UnixMillis(); }

Status VideoJobs::Init() {
  std::error_code ec;
  fs::create_directories(options_.dir, ec);
  if (ec) {
    return UnavailableError("cannot create the video folder " + options_.dir + ": " + ec.message());
  }
  // Leftovers of a crash: uploads and partial outputs have no job any more.
  std::size_t removed = 0;
  for (const auto& entry : fs::directory_iterator(options_.dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.ends_with(".src") || name.find(".part.") != std::string::npos ||
        name.ends_with(".tmp")) {
      RemoveQuietly(entry.path());
      ++removed;
    }
  }
  if (ec) return UnavailableError("cannot read the video folder " + options_.dir);
  if (removed > 0) spdlog::info("video leftovers removed dir={} files={}", options_.dir, removed);
  Retain();
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Submitting

HttpResponse VideoJobs::Submit(std::string_view bytes, VideoRequest request) {
  const std::string id = NewJobId();
  {
    std::lock_guard lock(mu_);
    if (stopping_) return ErrorResponse(UnavailableError("the gateway is shutting down"));
    if (queue_.size() >= options_.max_queued) {
      return ErrorResponse(
          ResourceExhaustedError("the gateway has " + std::to_string(queue_.size()) +
                                 " video jobs waiting, its limit; retry when one has finished"));
    }
  }
  const fs::path src = FileOf(options_.dir, id, ".src");
  if (Status s = WriteWhole(src, bytes); !s.ok()) {
    RemoveQuietly(src);
    spdlog::warn("video upload not saved job={} error=\"{}\"", id, s.ToString());
    return ErrorResponse(UnavailableError("cannot store the video: " + s.message()));
  }
  auto reader = video::VideoFileReader::Open(src.string());
  if (!reader) {
    RemoveQuietly(src);
    spdlog::info("video refused job={} error=\"{}\"", id, reader.error().ToString());
    return ErrorResponse(reader.error());
  }

  auto job = std::make_shared<Job>();
  job->id = id;
  job->request = std::move(request);
  job->created_ms = NowMs();
  job->updated_ms = job->created_ms;
  job->fps = reader->fps();
  job->width = reader->width();
  job->height = reader->height();
  job->stated_frames = reader->frame_count();
  job->frames_total = job->stated_frames;
  job->container = std::string(reader->container());
  job->frame_timeout = job->request.frame_timeout.value_or(options_.frame_timeout);
  job->reader.emplace(std::move(reader).value());

  std::string body;
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      RemoveQuietly(src);
      return ErrorResponse(UnavailableError("the gateway is shutting down"));
    }
    jobs_[id] = job;
    queue_.push_back(id);
    metrics_.GetGauge(kActiveName, kActiveHelp, {{"state", "queued"}}).Add(1);
    {
      std::lock_guard job_lock(job->mu);
      body = JobJsonLocked(*job);
    }
    job->thread = std::thread([this, job] { RunJob(job); });
  }
  spdlog::info("video job queued job={} model={} container={} frames={} fps={:.2f} size={}x{}", id,
               job->request.model, job->container, job->stated_frames, job->fps, job->width,
               job->height);
  HttpResponse r = HttpResponse::Json(std::move(body), 202);
  r.headers.emplace("Location", viewer::JobPath(id));
  r.headers.emplace(kJobIdHeader, id);
  return r;
}

// ---------------------------------------------------------------------------------------------
// The job's thread

void VideoJobs::RunJob(const std::shared_ptr<Job>& job) {
  bool got_slot = false;
  {
    std::unique_lock lock(mu_);
    slots_.wait(lock, [&] {
      bool cancelled = false;
      {
        std::lock_guard job_lock(job->mu);
        cancelled = job->cancel;
      }
      return stopping_ || cancelled ||
             (running_ < options_.max_running && !queue_.empty() && queue_.front() == job->id);
    });
    const auto it = std::find(queue_.begin(), queue_.end(), job->id);
    if (it != queue_.end()) queue_.erase(it);
    metrics_.GetGauge(kActiveName, kActiveHelp, {{"state", "queued"}}).Sub(1);
    {
      std::lock_guard job_lock(job->mu);
      got_slot = !stopping_ && !job->cancel;
    }
    if (got_slot) {
      ++running_;
      metrics_.GetGauge(kActiveName, kActiveHelp, {{"state", "running"}}).Add(1);
    }
  }
  slots_.notify_all();  // the queue's head changed

  Status outcome;
  if (!got_slot) {
    std::lock_guard job_lock(job->mu);
    outcome = job->cancel ? CancelledError("the job was cancelled")
                          : UnavailableError("the gateway is shutting down");
  } else {
    outcome = Process(*job);
  }
  Finish(*job, outcome);
  if (got_slot) {
    {
      std::lock_guard lock(mu_);
      --running_;
    }
    metrics_.GetGauge(kActiveName, kActiveHelp, {{"state", "running"}}).Sub(1);
    slots_.notify_all();
  }
  Retain();
}

Status VideoJobs::Process(Job& job) {
  const std::string& id = job.id;
  const fs::path mp4_part = FileOf(options_.dir, id, ".part.mp4");
  const fs::path jsonl_part = FileOf(options_.dir, id, ".part.jsonl");
  ASSIGN_OR_RETURN(auto writer,
                   video::Mp4Writer::Open(mp4_part.string(), job.fps, {job.width, job.height}));
  std::ofstream lines(jsonl_part, std::ios::binary | std::ios::trunc);
  if (!lines) return UnavailableError("cannot create " + jsonl_part.string());
  video::VideoFileReader& reader = *job.reader;
  Gauge& in_flight_gauge = metrics_.GetGauge(kInFlightName, kInFlightHelp);
  const std::string topic = protocol::FramesTopic(job.request.model);

  std::int64_t next_read = 0;
  std::int64_t next_write = 0;
  bool input_done = false;
  std::unique_lock lock(job.mu);
  job.state = "running";
  job.started = true;
  job.started_at = SteadyClock::now();
  job.updated_ms = NowMs();
  spdlog::info("video job started job={} model={}", id, job.request.model);

  while (true) {
    if (job.cancel) return CancelledError("the job was cancelled");
    if (job.stop) return UnavailableError("the gateway is shutting down");
    if (job.abort) return *job.abort;

    // Write what is ready, in index order.
    if (auto it = job.in_flight.find(next_write); it != job.in_flight.end() && it->second.done) {
      Frame frame = std::move(it->second);
      job.in_flight.erase(it);
      in_flight_gauge.Sub(1);
      lock.unlock();
      const protocol::FrameResult& result = *frame.result;
      const bool ok = result.status == protocol::FrameStatus::kOk;
      cv::Mat picture;
      if (ok && !frame.image.empty()) {
        auto annotated = imaging::DecodeImage(frame.image);
        if (annotated) {
          picture = std::move(annotated).value();
        } else {
          spdlog::warn("annotated frame unreadable job={} index={} error=\"{}\"", id, next_write,
                       annotated.error().ToString());
        }
      }
      if (picture.empty()) {
        auto source = imaging::DecodeImage(frame.jpeg);
        if (!source)
          return InternalError("cannot decode frame " + std::to_string(next_write) + ": " +
                               source.error().message());
        picture = std::move(source).value();
      }
      RETURN_IF_ERROR(writer.Write(picture));
      json line = {{"index", next_write},
                   {"pts_ms", std::llround(static_cast<double>(next_write) * 1000.0 / job.fps)},
                   {"status", protocol::FrameStatusName(result.status)}};
      if (ok) {
        const json encoded = json::parse(protocol::ToJson(result.result), nullptr, false);
        line["detections"] = encoded.is_object() && encoded.contains("detections")
                                 ? encoded["detections"]
                                 : json::array();
      } else {
        line["detections"] = json::array();
        line["error"] = {{"code", StatusCodeName(result.error.code())},
                         {"message", result.error.message()}};
      }
      lines << Dump(line) << '\n';
      if (!lines) return UnavailableError("cannot write " + jsonl_part.string());
      metrics_
          .GetCounter(kFramesName, kFramesHelp,
                      {{"model", job.request.model},
                       {"outcome", std::string(protocol::FrameStatusName(result.status))}})
          .Increment();
      ++next_write;
      lock.lock();
      job.frames_done = next_write;
      if (!ok) ++job.frames_failed;
      job.updated_ms = NowMs();
      continue;
    }

    if (input_done && job.in_flight.empty()) break;

    // Read and publish while the window has room.
    if (!input_done && job.in_flight.size() < options_.window) {
      lock.unlock();
      cv::Mat bgr;
      auto more = reader.Read(bgr);
      if (!more) return more.error();
      if (!*more) {
        input_done = true;
        lock.lock();
        job.frames_total = next_read;  // the truth, whatever the container stated
        if (next_read != job.stated_frames) {
          spdlog::info("video frame count differs from the container job={} stated={} read={}", id,
                       job.stated_frames, next_read);
        }
        if (next_read == 0) return InvalidArgumentError("the video has no decodable frame");
        continue;
      }
      imaging::JpegOptions jpeg_options;
      jpeg_options.quality = options_.jpeg_quality;
      auto jpeg = imaging::EncodeJpeg(bgr, jpeg_options);
      if (!jpeg) return jpeg.error();

      protocol::FrameMeta meta;
      const std::int64_t now = NowMs();
      meta.frame_id = id + ":" + std::to_string(next_read);
      meta.stream_id = id;
      meta.sequence = next_read;
      meta.capture_ms = now;
      meta.deadline_ms = now + job.frame_timeout.count();
      meta.model = job.request.model;
      meta.reply_to = options_.reply_topic;
      meta.annotated_to = options_.reply_topic;
      meta.source = job.request.filename;
      meta.correlation_id = meta.frame_id;
      meta.options = job.request.options;
      meta.draw = job.request.draw;
      meta.kind = protocol::kind::kVideo;
      bus::Message message{topic, id, *jpeg, {}};
      protocol::EncodeFrameHeaders(meta, message.headers);

      lock.lock();
      Frame& slot = job.in_flight[next_read];
      slot.jpeg = std::move(jpeg).value();
      slot.sent = SteadyClock::now();
      in_flight_gauge.Add(1);
      lock.unlock();
      const std::int64_t index = next_read;
      // The callback holds the job, not this object: it may come after destruction, or from
      // inside Publish (no lock is held here).
      std::weak_ptr<Job> weak = Find(id);
      auto on_delivery = [weak, index](const Status& st) {
        if (st.ok()) return;
        auto held = weak.lock();
        if (!held) return;
        std::lock_guard job_lock(held->mu);
        if (!held->abort) {
          held->abort = UnavailableError("frame " + std::to_string(index) +
                                         " could not be delivered to the broker: " + st.message());
        }
        held->changed.notify_all();
      };
      const Status published = publisher_.Publish(std::move(message), std::move(on_delivery));
      if (!published.ok()) {
        lock.lock();
        return UnavailableError("cannot publish frame " + std::to_string(index) + ": " +
                                published.message());
      }
      ++next_read;
      lock.lock();
      continue;
    }

    // Wait for a reply, or give up on the oldest frame.
    const auto deadline = job.in_flight.begin()->second.sent + job.frame_timeout;
    if (SteadyClock::now() >= deadline) {
      const std::int64_t oldest = job.in_flight.begin()->first;
      return DeadlineExceededError("no result for frame " + std::to_string(oldest) +
                                   " from a worker of model '" + job.request.model + "' within " +
                                   std::to_string(job.frame_timeout.count()) + " ms");
    }
    job.changed.wait_until(lock, deadline);
  }
  lock.unlock();

  lines.close();
  if (!lines) return UnavailableError("cannot write " + jsonl_part.string());
  RETURN_IF_ERROR(writer.Close());
  std::error_code ec;
  fs::rename(jsonl_part, FileOf(options_.dir, id, ".jsonl"), ec);
  if (!ec) fs::rename(mp4_part, FileOf(options_.dir, id, ".mp4"), ec);
  if (ec) return UnavailableError("cannot move the finished video into place: " + ec.message());
  return Status::Ok();
}

void VideoJobs::Finish(Job& job, Status outcome) {
  const std::string& id = job.id;
  {
    // A cancel that raced with the last frame still wins: the client was told "cancelled".
    std::lock_guard lock(job.mu);
    if (job.cancel && outcome.ok()) outcome = CancelledError("the job was cancelled");
    metrics_.GetGauge(kInFlightName, kInFlightHelp).Sub(static_cast<double>(job.in_flight.size()));
    job.in_flight.clear();
  }
  job.reader.reset();
  RemoveQuietly(FileOf(options_.dir, id, ".src"));
  if (!outcome.ok()) {
    for (const char* suffix : {".part.mp4", ".part.jsonl", ".mp4", ".jsonl"}) {
      RemoveQuietly(FileOf(options_.dir, id, suffix));
    }
  }
  std::string body;
  viewer::JobRecord record;
  double seconds = 0;
  std::int64_t frames = 0;
  {
    std::lock_guard lock(job.mu);
    if (outcome.ok()) {
      job.state = "done";
    } else if (outcome.code() == StatusCode::kCancelled) {
      job.state = "cancelled";
      job.error = outcome;
    } else {
      job.state = "failed";
      job.error = outcome;
    }
    job.updated_ms = NowMs();
    job.finished = true;
    if (job.started) {
      seconds = std::chrono::duration<double>(SteadyClock::now() - job.started_at).count();
    }
    frames = job.frames_done;
    body = JobJsonLocked(job);
    if (options_.history != nullptr) record = RecordLocked(job);
  }
  if (Status s = WriteWhole(FileOf(options_.dir, id, ".json"), body); !s.ok()) {
    spdlog::warn("video job record not saved job={} error=\"{}\"", id, s.ToString());
  }
  if (options_.history != nullptr) {
    if (Status s = options_.history->PutJob(record); !s.ok()) {
      spdlog::warn("video job not recorded in the history job={} error=\"{}\"", id, s.ToString());
    }
  }
  const std::string outcome_name = outcome.ok()
                                       ? "done"
                                       : (outcome.code() == StatusCode::kCancelled
                                              ? "cancelled"
                                              : std::string(StatusCodeName(outcome.code())));
  metrics_
      .GetCounter(kJobsName, kJobsHelp, {{"model", job.request.model}, {"outcome", outcome_name}})
      .Increment();
  if (outcome.ok()) {
    spdlog::info("video job done job={} frames={} seconds={:.1f} fps={:.1f}", id, frames, seconds,
                 seconds > 0 ? static_cast<double>(frames) / seconds : 0.0);
  } else {
    spdlog::info("video job ended job={} outcome={} frames={} error=\"{}\"", id, outcome_name,
                 frames, outcome.ToString());
  }
}

// ---------------------------------------------------------------------------------------------
// Replies

bool VideoJobs::HandleReply(const bus::InboundMessage& in) {
  const bus::Headers& h = in.message.headers;
  std::string correlation = h.Get(header::kCorrelationId).value_or("");
  if (correlation.empty()) correlation = h.Get(header::kFrameId).value_or("");
  const bool video_kind = h.Get(header::kKind).value_or("") == protocol::kind::kVideo;
  const bool image = viewer::IsImageMessage(in.message);
  std::optional<protocol::FrameResult> result;
  if (!image && correlation.find(':') == std::string::npos) {
    if (!video_kind) return false;
    // A result without the header ids: the JSON holds them.
    const auto& v = in.message.value;
    auto parsed = protocol::FrameResultFromJson(
        std::string_view(reinterpret_cast<const char*>(v.data()), v.size()));
    if (!parsed) return true;
    result = std::move(parsed).value();
    correlation = result->correlation_id.empty() ? result->frame_id : result->correlation_id;
  }
  const std::size_t colon = correlation.find(':');
  if (colon == std::string::npos) return video_kind;
  const std::string id = correlation.substr(0, colon);
  const std::string_view index_text = std::string_view(correlation).substr(colon + 1);
  std::int64_t index = -1;
  const auto [ptr, ec] =
      std::from_chars(index_text.data(), index_text.data() + index_text.size(), index);
  if (ec != std::errc() || ptr != index_text.data() + index_text.size() || index < 0) {
    spdlog::debug("video reply ignored, bad correlation id={}", correlation);
    return true;
  }
  const std::shared_ptr<Job> job = Find(id);
  if (!job) {
    spdlog::debug("video reply ignored, unknown job id={}", id);
    return true;
  }
  if (!image && !result) {
    const auto& v = in.message.value;
    auto parsed = protocol::FrameResultFromJson(
        std::string_view(reinterpret_cast<const char*>(v.data()), v.size()));
    if (!parsed) {
      spdlog::warn("video reply unreadable job={} index={} error=\"{}\"", id, index,
                   parsed.error().ToString());
      protocol::FrameResult failed;
      failed.status = protocol::FrameStatus::kError;
      failed.error =
          InternalError("the worker's result is unreadable: " + parsed.error().message());
      result = std::move(failed);
    } else {
      result = std::move(parsed).value();
    }
  }
  std::lock_guard lock(job->mu);
  const auto it = job->in_flight.find(index);
  if (it == job->in_flight.end() || it->second.done) {
    spdlog::debug("video reply ignored, duplicate or not in flight job={} index={}", id, index);
    return true;
  }
  if (image) {
    it->second.image = in.message.value;
    return true;
  }
  it->second.result = std::move(result);
  it->second.done = true;
  job->changed.notify_all();
  return true;
}

// ---------------------------------------------------------------------------------------------
// Reading jobs

std::shared_ptr<VideoJobs::Job> VideoJobs::Find(const std::string& id) {
  std::lock_guard lock(mu_);
  const auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : it->second;
}

viewer::JobRecord VideoJobs::RecordLocked(const Job& job) const {
  viewer::JobRecord record;
  record.id = job.id;
  record.kind = "video";
  record.model = job.request.model;
  record.state = job.state;
  record.created_ms = job.created_ms;
  record.updated_ms = job.updated_ms;
  record.frames_total = job.frames_total;
  record.frames_done = job.frames_done;
  record.source_name = job.request.filename;
  record.error = job.error;
  return record;
}

std::string VideoJobs::JobJsonLocked(const Job& job) const { return Dump(JobObjectLocked(job)); }

json VideoJobs::JobObjectLocked(const Job& job) const {
  json j = json::parse(viewer::JobToJson(RecordLocked(job)), nullptr, false);
  if (!j.is_object()) j = json::object();
  double fps = 0;
  json eta = nullptr;
  if (job.started && job.frames_done > 0) {
    const double seconds =
        std::chrono::duration<double>(SteadyClock::now() - job.started_at).count();
    if (seconds > 0) fps = static_cast<double>(job.frames_done) / seconds;
    if (job.state == "running" && fps > 0 && job.frames_total >= job.frames_done) {
      eta = std::llround(static_cast<double>(job.frames_total - job.frames_done) / fps * 1000.0);
    }
  }
  if (job.state == "done") eta = 0;
  j["progress"]["fps"] = std::round(fps * 100.0) / 100.0;
  j["progress"]["eta_ms"] = eta;
  j["progress"]["frames_failed"] = job.frames_failed;
  j["video"] = {{"fps", job.fps},
                {"frames", job.stated_frames},
                {"width", job.width},
                {"height", job.height},
                {"container", job.container}};
  const std::string self = viewer::JobPath(job.id);
  j["links"]["video"] = self + "/video";
  j["links"]["result"] = self + "/result";
  return j;
}

namespace {

// The final job JSON saved next to the outputs, for jobs no longer in memory.
std::optional<json> StoredJob(const std::string& dir, const std::string& id) {
  if (!viewer::IsValidJobId(id)) return std::nullopt;
  auto text = ReadWhole(FileOf(dir, id, ".json"));
  if (!text) return std::nullopt;
  json j = json::parse(*text, nullptr, false);
  if (!j.is_object() || j.value("kind", "") != "video") return std::nullopt;
  return j;
}

Status ErrorOfStored(const json& j) {
  if (j.contains("error") && j["error"].is_object()) return ErrorFromJson(j["error"]);
  return InternalError("job failed");
}

}  // namespace

std::optional<HttpResponse> VideoJobs::GetJob(const std::string& id) {
  if (auto job = Find(id)) {
    std::lock_guard lock(job->mu);
    return HttpResponse::Json(JobJsonLocked(*job));
  }
  if (auto stored = StoredJob(options_.dir, id)) return HttpResponse::Json(Dump(*stored));
  return std::nullopt;
}

std::optional<std::variant<json, HttpResponse>> VideoJobs::FinishedJob(
    const std::string& id, const std::function<HttpResponse(const Job&)>& unfinished) {
  if (auto job = Find(id)) {
    std::lock_guard lock(job->mu);
    if (!job->finished) return unfinished(*job);
    return JobObjectLocked(*job);
  }
  if (auto stored = StoredJob(options_.dir, id)) return std::move(*stored);
  return std::nullopt;
}

std::optional<HttpResponse> VideoJobs::GetResult(const std::string& id, bool json_lines) {
  auto found = FinishedJob(
      id, [this](const Job& job) { return HttpResponse::Json(JobJsonLocked(job), 202); });
  if (!found) return std::nullopt;
  if (auto* answer = std::get_if<HttpResponse>(&*found)) return std::move(*answer);
  const json& record = std::get<json>(*found);
  const std::string state = record.value("state", "");
  if (state == "cancelled") return ErrorResponse(CancelledError("job '" + id + "' was cancelled"));
  if (state != "done") return ErrorResponse(ErrorOfStored(record));
  auto lines = ReadWhole(FileOf(options_.dir, id, ".jsonl"));
  if (!lines) {
    return ErrorResponse(NotFoundError("the results of job '" + id + "' are no longer stored"));
  }
  HttpResponse r;
  r.headers.emplace(kJobIdHeader, id);
  if (json_lines) {
    r.content_type = "application/x-ndjson";
    r.body = std::move(lines).value();
    return r;
  }
  // The stored lines are JSON objects already: joined, not re-parsed.
  std::string frames;
  frames.reserve(lines->size() + 2);
  std::size_t start = 0;
  while (start < lines->size()) {
    std::size_t end = lines->find('\n', start);
    if (end == std::string::npos) end = lines->size();
    if (end > start) {
      if (!frames.empty()) frames += ',';
      frames.append(*lines, start, end - start);
    }
    start = end + 1;
  }
  const json head = {{"job_id", id},
                     {"model", record.value("model", "")},
                     {"video", record.value("video", json::object())},
                     {"progress", record.value("progress", json::object())}};
  std::string body = Dump(head);
  body.pop_back();  // the closing brace
  body += ",\"frames\":[" + frames + "]}";
  r.content_type = "application/json";
  r.body = std::move(body);
  return r;
}

namespace {

// A single "bytes=first-last", "bytes=first-" or "bytes=-suffix" range of a `size`-byte body
// as [first, last]; nullopt when it cannot be satisfied; kInvalidArgument when it is not one
// such range (the whole body is then sent, as RFC 9110 allows).
Result<std::optional<std::pair<std::size_t, std::size_t>>> ParseRange(std::string_view header,
                                                                      std::size_t size) {
  using Range = std::optional<std::pair<std::size_t, std::size_t>>;
  constexpr std::string_view kPrefix = "bytes=";
  if (!header.starts_with(kPrefix)) return InvalidArgumentError("not a byte range");
  header.remove_prefix(kPrefix.size());
  const std::size_t dash = header.find('-');
  if (dash == std::string_view::npos || header.find(',') != std::string_view::npos) {
    return InvalidArgumentError("not a single byte range");
  }
  const auto number = [](std::string_view t) -> std::optional<std::size_t> {
    std::size_t v = 0;
    const auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (t.empty() || ec != std::errc() || ptr != t.data() + t.size()) return std::nullopt;
    return v;
  };
  const std::string_view a = header.substr(0, dash);
  const std::string_view b = header.substr(dash + 1);
  if (a.empty()) {  // the last b bytes
    const auto n = number(b);
    if (!n) return InvalidArgumentError("bad suffix range");
    if (*n == 0 || size == 0) return Range();
    return Range(std::make_pair(size - std::min(*n, size), size - 1));
  }
  const auto first = number(a);
  if (!first) return InvalidArgumentError("bad range start");
  std::size_t last = size == 0 ? 0 : size - 1;
  if (!b.empty()) {
    const auto l = number(b);
    if (!l || *l < *first) return InvalidArgumentError("bad range end");
    last = std::min(*l, last);
  }
  if (*first >= size) return Range();
  return Range(std::make_pair(*first, last));
}

}  // namespace

std::optional<HttpResponse> VideoJobs::GetVideo(const std::string& id,
                                                const std::optional<std::string>& range) {
  auto found = FinishedJob(id, [&id](const Job& job) {
    return ErrorResponse(FailedPreconditionError(
        "job '" + id + "' is " + job.state + " (" + std::to_string(job.frames_done) + " of " +
        std::to_string(job.frames_total) + " frames); its video is ready when it is done"));
  });
  if (!found) return std::nullopt;
  if (auto* answer = std::get_if<HttpResponse>(&*found)) return std::move(*answer);
  const json& record = std::get<json>(*found);
  const std::string state = record.value("state", "");
  if (state != "done") {
    return ErrorResponse(FailedPreconditionError(
        "job '" + id + "' is " + state + " and has no video: " + ErrorOfStored(record).message()));
  }
  auto bytes = ReadWhole(FileOf(options_.dir, id, ".mp4"));
  if (!bytes) {
    return ErrorResponse(NotFoundError("the video of job '" + id + "' is no longer stored"));
  }
  HttpResponse r;
  r.content_type = "video/mp4";
  r.headers.emplace(kJobIdHeader, id);
  r.headers.emplace("Accept-Ranges", "bytes");
  r.headers.emplace("Content-Disposition", "inline; filename=\"" + id + ".mp4\"");
  const std::size_t size = bytes->size();
  if (range) {
    auto parsed = ParseRange(*range, size);
    if (parsed && !*parsed) {
      HttpResponse unsatisfiable = ErrorResponse(InvalidArgumentError(
          "range '" + *range + "' is outside the video's " + std::to_string(size) + " bytes"));
      unsatisfiable.status = 416;
      unsatisfiable.headers.emplace("Content-Range", "bytes */" + std::to_string(size));
      return unsatisfiable;
    }
    if (parsed) {
      const auto [first, last] = **parsed;
      r.status = 206;
      r.headers.emplace("Content-Range", "bytes " + std::to_string(first) + "-" +
                                             std::to_string(last) + "/" + std::to_string(size));
      r.body = bytes->substr(first, last - first + 1);
      return r;
    }
  }
  r.body = std::move(bytes).value();
  return r;
}

std::optional<HttpResponse> VideoJobs::Cancel(const std::string& id) {
  auto job = Find(id);
  if (!job) {
    if (auto stored = StoredJob(options_.dir, id)) {
      return ErrorResponse(FailedPreconditionError("job '" + id + "' is already " +
                                                   stored->value("state", "finished")));
    }
    return std::nullopt;
  }
  std::string body;
  {
    std::lock_guard lock(job->mu);
    if (job->finished || job->cancel || job->stop) {
      return ErrorResponse(FailedPreconditionError("job '" + id + "' is already " + job->state));
    }
    job->cancel = true;
    // Shown at once; the thread stops publishing and cleans up on its own.
    job->state = "cancelled";
    job->error = CancelledError("the job was cancelled");
    job->updated_ms = NowMs();
    job->changed.notify_all();
    body = JobJsonLocked(*job);
  }
  {
    std::lock_guard lock(mu_);  // so a queued job's wait sees the flag
  }
  slots_.notify_all();
  spdlog::info("video job cancel requested job={}", id);
  return HttpResponse::Json(std::move(body));
}

// ---------------------------------------------------------------------------------------------
// Retention and shutdown

void VideoJobs::Retain() {
  // Finished jobs, newest first: in memory (joined) and on disk (by their record's time).
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
  std::vector<std::pair<fs::file_time_type, std::string>> records;
  for (const auto& entry : fs::directory_iterator(options_.dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.ends_with(".json")) continue;
    records.emplace_back(entry.last_write_time(ec), name.substr(0, name.size() - 5));
  }
  if (records.size() <= options_.max_kept) return;
  std::sort(records.begin(), records.end(), std::greater<>());
  for (std::size_t i = options_.max_kept; i < records.size(); ++i) {
    const std::string& id = records[i].second;
    if (Find(id)) continue;
    for (const char* suffix : {".mp4", ".jsonl", ".json"}) {
      RemoveQuietly(FileOf(options_.dir, id, suffix));
    }
    spdlog::debug("video job files removed job={}", id);
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
  for (const auto& job : jobs) {
    std::lock_guard lock(job->mu);
    job->stop = true;
    job->changed.notify_all();
  }
  for (const auto& job : jobs) {
    if (job->thread.joinable()) job->thread.join();
  }
}

}  // namespace kadr::gateway::detail
