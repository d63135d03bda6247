#include "viewer/viewer_service.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "imaging/decode.h"
#include "imaging/encode.h"
#include "protocol/frame.h"
#include "viewer/job_json.h"

namespace kadr::viewer {
namespace {

namespace header = protocol::header;

constexpr char kRecordsMetric[] = "kadr_viewer_records_total";
constexpr char kRecordsHelp[] =
    "Results and annotated images the viewer consumed, by outcome (stored, malformed, failed).";
constexpr std::size_t kDefaultListLimit = 50;
constexpr std::size_t kMaxListLimit = 500;
// Ids are shown in error messages; a hostile one is cut short.
constexpr std::size_t kMaxEchoedIdLength = 80;
// JobIdForStream: kept characters of an invalid stream id, then '-' and 16 hex digits.
constexpr std::size_t kKeptStreamChars = 47;
constexpr char kImageCacheControl[] = "private, max-age=3600";
constexpr char kLiveCacheControl[] = "no-cache, no-store, must-revalidate";
constexpr char kLiveMetric[] = "kadr_viewer_live_messages_total";
constexpr char kLiveHelp[] =
    "Live-stream frames and results the viewer took into its live hub, by outcome.";
// How long EventSource waits before reconnecting after the connection drops.
constexpr char kSseRetry[] = "retry: 2000\n\n";

Counter& RecordsCounter(MetricsRegistry& metrics, const char* kind, const char* outcome) {
  return metrics.GetCounter(kRecordsMetric, kRecordsHelp, {{"kind", kind}, {"outcome", outcome}});
}

Counter& LiveCounter(MetricsRegistry& metrics, const char* kind, const char* outcome) {
  return metrics.GetCounter(kLiveMetric, kLiveHelp, {{"kind", kind}, {"outcome", outcome}});
}

std::string_view AsText(const std::vector<std::uint8_t>& bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

bool IsJobIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

// FNV-1a, 64 bits: stable across builds and platforms, unlike std::hash, so that a stream
// keeps its job id across restarts.
std::uint64_t Fnv1a64(std::string_view s) {
  std::uint64_t h = 14695981039346656037ULL;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return h;
}

}  // namespace

bool IsImageMessage(const bus::Message& m) {
  if (auto type = m.headers.Get(header::kContentType)) {
    std::string t = type->substr(0, type->find(';'));
    std::transform(t.begin(), t.end(), t.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (t.starts_with("image/")) return true;
    if (t == "application/json" || t.ends_with("+json")) return false;
  }
  // No (or an unexpected) content type: a producer other than kadr's worker. Sniff.
  return imaging::SniffFormat(m.value) != imaging::ImageFormat::kUnknown;
}

namespace {

// The first non-empty of the message's stream header and key.
std::string StreamOf(const bus::Message& m) {
  if (auto stream = m.headers.Get(header::kStreamId); stream && !stream->empty()) return *stream;
  return m.key;
}

std::string Where(const bus::InboundMessage& in) {
  return in.token.topic + "/" + std::to_string(in.token.partition) + "/" +
         std::to_string(in.token.offset);
}

std::string Echo(const std::string& id) {
  return id.size() <= kMaxEchoedIdLength ? id : id.substr(0, kMaxEchoedIdLength) + "...";
}

// Parses a non-negative decimal query parameter; `fallback` when absent.
std::optional<std::size_t> ParseCount(const http::HttpRequest& req, std::string_view name,
                                      std::size_t fallback) {
  const auto text = req.Query(name);
  if (!text) return fallback;
  std::size_t value = 0;
  const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (ec != std::errc() || end != text->data() + text->size()) {
    return std::nullopt;
  }
  return value;
}

http::HttpResponse Jpeg(std::vector<std::uint8_t> bytes) {
  http::HttpResponse r;
  r.content_type = "image/jpeg";
  r.body.assign(bytes.begin(), bytes.end());
  r.headers.emplace("Cache-Control", kImageCacheControl);
  return r;
}

// Store failures other than "not found" are logged in full and answered without the details
// (they name files on the server).
http::HttpResponse StoreError(const Status& s, const std::string& what) {
  if (s.code() == StatusCode::kNotFound || s.code() == StatusCode::kInvalidArgument) {
    return http::HttpResponse::Error(s);
  }
  spdlog::warn("history read failed what=\"{}\" error=\"{}\"", what, s.ToString());
  return http::HttpResponse::Error(Status(s.code(), "history store failed reading " + what));
}

}  // namespace

std::vector<std::string> ViewerTopics() {
  return {std::string(protocol::kResultsTopic), std::string(protocol::kAnnotatedTopic),
          "^kadr\\.replies\\..*",
          // A pattern rather than kLiveResultsTopic and kLiveAnnotatedTopic: they are
          // created with the first live stream, and a pattern waits for them quietly.
          "^kadr\\.live\\.(results|annotated)$"};
}

std::string JobIdForStream(std::string_view stream_id) {
  if (stream_id.empty() || IsValidJobId(stream_id)) return std::string(stream_id);
  std::string id;
  for (char c : stream_id.substr(0, kKeptStreamChars)) id += IsJobIdChar(c) ? c : '_';
  static constexpr char kHex[] = "0123456789abcdef";
  std::uint64_t h = Fnv1a64(stream_id);
  std::string digits(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) digits[static_cast<std::size_t>(i)] = kHex[h & 0xf];
  return id + "-" + digits;
}

ViewerService::ViewerService(ViewerOptions options, HistoryStore& store,
                             bus::FrameSubscriber& subscriber, MetricsRegistry& metrics)
    : options_(std::move(options)),
      store_(store),
      subscriber_(subscriber),
      results_stored_(RecordsCounter(metrics, "result", "stored")),
      results_malformed_(RecordsCounter(metrics, "result", "malformed")),
      results_failed_(RecordsCounter(metrics, "result", "failed")),
      images_stored_(RecordsCounter(metrics, "image", "stored")),
      images_malformed_(RecordsCounter(metrics, "image", "malformed")),
      images_failed_(RecordsCounter(metrics, "image", "failed")),
      live_frames_(LiveCounter(metrics, "frame", "accepted")),
      live_results_(LiveCounter(metrics, "result", "accepted")),
      live_frames_malformed_(LiveCounter(metrics, "frame", "malformed")),
      live_results_malformed_(LiveCounter(metrics, "result", "malformed")),
      video_ignored_(metrics.GetCounter(
          "kadr_viewer_ignored_messages_total",
          "Messages the viewer acknowledged without recording (video-job frames).",
          {{"kind", "video"}})),
      live_clients_gauge_(
          metrics.GetGauge("kadr_viewer_live_clients", "Open live connections (MJPEG and SSE).")),
      live_rejected_(metrics.GetCounter(
          "kadr_viewer_live_rejected_total",
          "Live connections refused with 503 because max_live_clients were open.")),
      live_(options_.live),
      last_enforce_ms_(NowMs()) {}

std::int64_t ViewerService::NowMs() const {
  if (options_.now_ms) return options_.now_ms();
  return UnixMillis();
}

ViewerStats ViewerService::stats() const {
  ViewerStats s;
  s.results_stored = results_stored_.value();
  s.results_malformed = results_malformed_.value();
  s.results_failed = results_failed_.value();
  s.images_stored = images_stored_.value();
  s.images_malformed = images_malformed_.value();
  s.images_failed = images_failed_.value();
  s.live_frames = live_frames_.value();
  s.live_results = live_results_.value();
  s.live_malformed = live_frames_malformed_.value() + live_results_malformed_.value();
  s.video_ignored = video_ignored_.value();
  s.live_clients = live_clients_.load();
  s.live_rejected = live_rejected_.value();
  return s;
}

Status ViewerService::WithRetries(const std::function<Status()>& op) const {
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

Status ViewerService::StoreResult(const bus::InboundMessage& in) {
  const bus::Message& m = in.message;
  const std::string_view text = AsText(m.value);
  auto parsed = protocol::FrameResultFromJson(text);
  if (!parsed) return InvalidArgumentError(parsed.error().message());
  const protocol::FrameResult& r = *parsed;

  std::string stream = StreamOf(m);
  if (stream.empty()) stream = !r.stream_id.empty() ? r.stream_id : r.frame_id;
  const std::string job_id = JobIdForStream(stream);
  if (job_id.empty()) return InvalidArgumentError("result without a stream or frame id");

  std::optional<JobRecord> existing;
  RETURN_IF_ERROR(WithRetries([&] {
    auto got = store_.GetJob(job_id);
    if (got) existing = std::move(*got);
    return got.has_value() || got.error().code() == StatusCode::kNotFound ? Status::Ok()
                                                                          : got.error();
  }));

  const std::int64_t now = NowMs();
  JobRecord job;
  job.id = job_id;
  job.kind = "image";
  job.model = m.headers.Get(header::kModel).value_or(r.result.model);
  if (job.model.empty() && existing) job.model = existing->model;
  job.source_name = m.headers.Get(header::kSource).value_or(existing ? existing->source_name : "");
  job.created_ms = r.capture_ms > 0 ? r.capture_ms : existing ? existing->created_ms : now;
  job.updated_ms = now;
  job.frames_total = 1;
  job.frames_done = 1;
  if (r.status == protocol::FrameStatus::kOk) {
    job.state = "done";
  } else {
    job.state = "failed";
    job.error =
        r.error.ok() ? InternalError("the worker reported a failure without an error") : r.error;
  }
  job.result_json = std::string(text);
  RETURN_IF_ERROR(WithRetries([&] { return store_.PutJob(job); }));
  spdlog::debug("recorded result job={} frame={} state={} detections={}", job.id, r.frame_id,
                job.state, r.result.detections.size());
  return Status::Ok();
}

Status ViewerService::StoreImage(const bus::InboundMessage& in) {
  const bus::Message& m = in.message;
  std::string stream = StreamOf(m);
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
  // the history serves images/<id>.jpg as image/jpeg.
  std::vector<std::uint8_t> reencoded;
  if (imaging::SniffFormat(m.value) != imaging::ImageFormat::kJpeg) {
    auto jpeg = imaging::EncodeJpeg(image);
    if (!jpeg) return jpeg.error();
    reencoded = std::move(*jpeg);
  }
  const std::span<const std::uint8_t> jpeg =
      reencoded.empty() ? std::span<const std::uint8_t>(m.value) : reencoded;

  cv::Mat small = image;
  const int long_side = std::max(image.cols, image.rows);
  if (long_side > options_.thumbnail_max_side) {
    const double scale = static_cast<double>(options_.thumbnail_max_side) / long_side;
    const cv::Size size(std::max(1, static_cast<int>(std::lround(image.cols * scale))),
                        std::max(1, static_cast<int>(std::lround(image.rows * scale))));
    try {
      cv::resize(image, small, size, 0, 0, cv::INTER_AREA);
    } catch (const cv::Exception& e) {
      return InternalError(std::string("thumbnail resize failed: ") + e.what());
    }
  }
  imaging::JpegOptions thumb_options;
  thumb_options.quality = options_.thumbnail_quality;
  auto thumbnail = imaging::EncodeJpeg(small, thumb_options);
  if (!thumbnail) return thumbnail.error().WithContext("thumbnail");

  RETURN_IF_ERROR(WithRetries([&] {
    auto got = store_.GetJob(job_id);
    if (got || got.error().code() != StatusCode::kNotFound) return got.status();
    // The image came first (it is published before the result): the job is in progress.
    const std::int64_t now = NowMs();
    JobRecord job;
    job.id = job_id;
    job.kind = "image";
    job.model = m.headers.Get(header::kModel).value_or("");
    job.state = "running";
    job.created_ms = now;
    job.updated_ms = now;
    job.frames_total = 1;
    job.frames_done = 0;
    job.source_name = m.headers.Get(header::kSource).value_or("");
    return store_.PutJob(job);
  }));
  RETURN_IF_ERROR(WithRetries([&] { return store_.SaveAnnotatedImage(job_id, jpeg); }));
  RETURN_IF_ERROR(WithRetries([&] { return store_.SaveThumbnail(job_id, *thumbnail); }));
  spdlog::debug("recorded annotated image job={} bytes={} thumbnail_bytes={}", job_id, jpeg.size(),
                thumbnail->size());
  return Status::Ok();
}

Status ViewerService::PutLive(const bus::InboundMessage& in, bool image) {
  const bus::Message& m = in.message;
  std::string stream = StreamOf(m);
  std::optional<std::int64_t> sequence;
  if (auto text = m.headers.Get(header::kSequence)) {
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
    if (ec == std::errc() && end == text->data() + text->size()) sequence = v;
  }
  if (image) {
    // Served as-is in image/jpeg parts: anything else would need a re-encode per frame.
    if (imaging::SniffFormat(m.value) != imaging::ImageFormat::kJpeg) {
      return InvalidArgumentError("live annotated image is not a JPEG");
    }
    return live_.Put(LiveKind::kFrame, stream, sequence.value_or(0), std::string(AsText(m.value)));
  }
  const std::string_view text = AsText(m.value);
  auto parsed = protocol::FrameResultFromJson(text);
  if (!parsed) return InvalidArgumentError(parsed.error().message());
  if (stream.empty()) stream = parsed->stream_id;
  return live_.Put(LiveKind::kResult, stream, sequence.value_or(parsed->sequence),
                   std::string(text));
}

void ViewerService::Handle(const bus::InboundMessage& in) {
  const auto frame_kind = in.message.headers.Get(header::kKind);
  if (frame_kind && *frame_kind == protocol::kind::kVideo) {
    // A video job's frame: its gateway assembles the job; the history shows the job itself.
    video_ignored_.Increment();
    subscriber_.Ack(in.token);
    return;
  }
  const bool image = IsImageMessage(in.message);
  if (frame_kind && *frame_kind == protocol::kind::kLive) {
    // Live frames are shown, never recorded.
    if (Status s = PutLive(in, image); s.ok()) {
      (image ? live_frames_ : live_results_).Increment();
    } else {
      (image ? live_frames_malformed_ : live_results_malformed_).Increment();
      spdlog::warn("dropped malformed live {} at={} key={} error=\"{}\"",
                   image ? "image" : "result", Where(in), in.message.key, s.message());
    }
    subscriber_.Ack(in.token);
    return;
  }
  const Status s = image ? StoreImage(in) : StoreResult(in);
  const char* kind = image ? "image" : "result";
  if (s.ok()) {
    (image ? images_stored_ : results_stored_).Increment();
    ++stored_since_enforce_;
  } else if (s.code() == StatusCode::kInvalidArgument) {
    (image ? images_malformed_ : results_malformed_).Increment();
    spdlog::warn("dropped malformed {} at={} key={} error=\"{}\"", kind, Where(in), in.message.key,
                 s.message());
  } else {
    (image ? images_failed_ : results_failed_).Increment();
    spdlog::error("could not record {} at={} key={} error=\"{}\"", kind, Where(in), in.message.key,
                  s.ToString());
  }
  subscriber_.Ack(in.token);
}

void ViewerService::MaybeEnforce() {
  const std::int64_t now = NowMs();
  if (stored_since_enforce_ < options_.enforce_every_records &&
      now - last_enforce_ms_ < options_.enforce_interval.count()) {
    return;
  }
  stored_since_enforce_ = 0;
  last_enforce_ms_ = now;
  if (Status s = store_.Enforce(); !s.ok()) {
    spdlog::warn("history retention failed error=\"{}\"", s.ToString());
  }
}

std::size_t ViewerService::PollOnce(std::chrono::milliseconds timeout) {
  const auto batch = subscriber_.Poll(options_.max_batch, timeout, std::chrono::milliseconds(0));
  for (const auto& in : batch) Handle(in);
  MaybeEnforce();
  return batch.size();
}

Status ViewerService::Run(const std::stop_token& stop) {
  spdlog::info("viewer started history={}", store_.options().dir.string());
  // Retention first: the history may have aged while the viewer was down.
  if (Status s = store_.Enforce(); !s.ok()) {
    spdlog::warn("history retention failed error=\"{}\"", s.ToString());
  }
  while (!stop.stop_requested()) (void)PollOnce(options_.poll_timeout);
  Status closed = subscriber_.Close();
  const ViewerStats s = stats();
  spdlog::info(
      "viewer stopped results={} images={} malformed_results={} malformed_images={} "
      "failed_results={} failed_images={}",
      s.results_stored, s.images_stored, s.results_malformed, s.images_malformed, s.results_failed,
      s.images_failed);
  return closed;
}

// ---- HTTP -----------------------------------------------------------------------------------

http::HttpResponse ViewerService::ListJobs(const http::HttpRequest& req) {
  const auto limit = ParseCount(req, "limit", kDefaultListLimit);
  if (!limit || *limit < 1 || *limit > kMaxListLimit) {
    return http::HttpResponse::Error(InvalidArgumentError("limit must be an integer from 1 to " +
                                                          std::to_string(kMaxListLimit)));
  }
  const auto offset = ParseCount(req, "offset", 0);
  if (!offset) {
    return http::HttpResponse::Error(InvalidArgumentError("offset must be an integer >= 0"));
  }
  auto jobs = store_.ListJobs(*limit, *offset);
  if (!jobs) return StoreError(jobs.error(), "the job list");
  auto total = store_.CountJobs();
  if (!total) return StoreError(total.error(), "the job count");
  return http::HttpResponse::Json(JobListToJson(*jobs, *total));
}

http::HttpResponse ViewerService::GetJob(const http::HttpRequest& req) {
  const std::string& id = req.path_params.at("id");
  if (!IsValidJobId(id)) {
    return http::HttpResponse::Error(InvalidArgumentError("invalid job id '" + Echo(id) + "'"));
  }
  auto job = store_.GetJob(id);
  if (!job) return StoreError(job.error(), "job " + id);
  return http::HttpResponse::Json(JobToJson(*job));
}

http::HttpResponse ViewerService::GetResult(const http::HttpRequest& req) {
  const std::string& id = req.path_params.at("id");
  if (!IsValidJobId(id)) {
    return http::HttpResponse::Error(InvalidArgumentError("invalid job id '" + Echo(id) + "'"));
  }
  auto job = store_.GetJob(id);
  if (!job) return StoreError(job.error(), "job " + id);
  if (job->state == "queued" || job->state == "running") {
    return http::HttpResponse::Json(JobToJson(*job), 202);
  }
  if (job->state != "done") {
    if (job->error) return http::HttpResponse::Error(*job->error);
    return http::HttpResponse::Error(FailedPreconditionError("job " + id + " is " + job->state));
  }
  auto result = protocol::FrameResultFromJson(job->result_json);
  if (!result) {
    spdlog::warn("stored result does not parse job={} error=\"{}\"", id, result.error().message());
    return http::HttpResponse::Error(
        InternalError("the stored result of job " + id + " cannot be read"));
  }
  return http::HttpResponse::Json(ResultToJson(*job, *result));
}

http::HttpResponse ViewerService::GetImage(const http::HttpRequest& req, bool thumbnail) {
  const std::string& id = req.path_params.at("id");
  if (!IsValidJobId(id)) {
    return http::HttpResponse::Error(InvalidArgumentError("invalid job id '" + Echo(id) + "'"));
  }
  auto bytes = thumbnail ? store_.LoadThumbnail(id) : store_.LoadAnnotatedImage(id);
  if (bytes) return Jpeg(std::move(*bytes));
  if (bytes.error().code() == StatusCode::kNotFound) {
    // The store's own message may name the file on disk.
    if (bytes.error().message().starts_with("no job ")) {
      return http::HttpResponse::Error(NotFoundError("no job " + id));
    }
    return http::HttpResponse::Error(NotFoundError(
        std::string(thumbnail ? "no thumbnail" : "no annotated image") + " for job " + id));
  }
  return StoreError(bytes.error(),
                    std::string(thumbnail ? "the thumbnail" : "the image") + " of job " + id);
}

// ---- live view -------------------------------------------------------------------------------

namespace {

// Holds one of max_live_clients for as long as the response that owns it lives.
class LiveSlot {
 public:
  LiveSlot(std::atomic<std::size_t>& count, Gauge& gauge) : count_(count), gauge_(gauge) {
    gauge_.Add(1);
  }
  ~LiveSlot() {
    count_.fetch_sub(1);
    gauge_.Sub(1);
  }
  LiveSlot(const LiveSlot&) = delete;
  LiveSlot& operator=(const LiveSlot&) = delete;

 private:
  std::atomic<std::size_t>& count_;
  Gauge& gauge_;
};

// One SSE event; every line of `data` gets its own "data:" field (JSON from other producers
// may be pretty-printed).
std::string SseEvent(std::int64_t sequence, std::string_view data) {
  std::string out = "id: " + std::to_string(sequence) + "\nevent: result\n";
  std::size_t pos = 0;
  while (pos <= data.size()) {
    std::size_t end = data.find('\n', pos);
    if (end == std::string_view::npos) end = data.size();
    std::string_view line = data.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    out += "data: ";
    out += line;
    out += '\n';
    pos = end + 1;
  }
  out += '\n';
  return out;
}

}  // namespace

void ViewerService::WriteMjpeg(const std::string& stream, http::StreamWriter& out) {
  const std::stop_token stop = out.StopToken();
  const std::string delimiter = std::string("--") + kMjpegBoundary + "\r\n";
  std::uint64_t seen = 0;
  std::optional<LiveItem> last;
  bool first = true;
  auto last_write = std::chrono::steady_clock::now();
  while (out.Alive()) {
    auto item = live_.Next(LiveKind::kFrame, stream, seen, options_.live_check_interval, stop);
    if (stop.stop_requested()) return;
    if (item) {
      seen = item->generation;
      last = std::move(item);
    } else if (!last || std::chrono::steady_clock::now() - last_write < options_.live_keepalive) {
      continue;
    }
    // Each part is followed by the next delimiter at once, so that a browser shows the frame
    // as soon as it arrives instead of when the next one does.
    std::string part = first ? delimiter : std::string();
    part += "Content-Type: image/jpeg\r\nContent-Length: " + std::to_string(last->data->size()) +
            "\r\nkadr-seq: " + std::to_string(last->sequence) + "\r\n\r\n";
    part += *last->data;
    part += "\r\n" + delimiter;
    if (!out.Write(part)) return;
    first = false;
    last_write = std::chrono::steady_clock::now();
  }
}

void ViewerService::WriteEvents(const std::string& stream, http::StreamWriter& out) {
  const std::stop_token stop = out.StopToken();
  if (!out.Write(kSseRetry)) return;
  std::uint64_t seen = 0;
  auto last_write = std::chrono::steady_clock::now();
  while (out.Alive()) {
    auto item = live_.Next(LiveKind::kResult, stream, seen, options_.live_check_interval, stop);
    if (stop.stop_requested()) return;
    std::string event;
    if (item) {
      seen = item->generation;
      event = SseEvent(item->sequence, *item->data);
    } else if (std::chrono::steady_clock::now() - last_write >= options_.live_keepalive) {
      event = ": keep-alive\n\n";
    } else {
      continue;
    }
    if (!out.Write(event)) return;
    last_write = std::chrono::steady_clock::now();
  }
}

http::HttpResponse ViewerService::LiveStream(const http::HttpRequest& req, LiveKind kind) {
  const std::string& id = req.path_params.at("id");
  if (id.size() > options_.live.max_stream_id_bytes) {
    return http::HttpResponse::Error(InvalidArgumentError(
        "stream id longer than " + std::to_string(options_.live.max_stream_id_bytes) + " bytes"));
  }
  std::size_t open = live_clients_.load();
  do {
    if (open >= options_.max_live_clients) {
      live_rejected_.Increment();
      return http::HttpResponse::Error(UnavailableError(
          "too many live connections (" + std::to_string(options_.max_live_clients) +
          " open); close one or raise --max-live-clients"));
    }
  } while (!live_clients_.compare_exchange_weak(open, open + 1));
  // Released with the response: when the stream ends, or at once for a HEAD request.
  auto slot = std::make_shared<LiveSlot>(live_clients_, live_clients_gauge_);
  http::HttpResponse r;
  if (kind == LiveKind::kFrame) {
    r = http::HttpResponse::Stream(
        std::string("multipart/x-mixed-replace; boundary=") + kMjpegBoundary,
        [this, id, slot](http::StreamWriter& out) { WriteMjpeg(id, out); });
  } else {
    // Exactly "text/event-stream": httplib would gzip (and so hold back) other text/ types.
    r = http::HttpResponse::Stream(
        "text/event-stream", [this, id, slot](http::StreamWriter& out) { WriteEvents(id, out); });
  }
  r.headers.emplace("Cache-Control", kLiveCacheControl);
  r.headers.emplace("X-Accel-Buffering", "no");  // nginx: pass each part on at once
  return r;
}

http::HttpResponse ViewerService::LiveFrame(const http::HttpRequest& req) {
  const std::string& id = req.path_params.at("id");
  auto frame = live_.Latest(LiveKind::kFrame, id);
  if (!frame) {
    return http::HttpResponse::Error(
        NotFoundError("no live frame for stream '" + Echo(id) + "' yet"));
  }
  http::HttpResponse r;
  r.content_type = "image/jpeg";
  r.body = *frame->data;
  r.headers.emplace("Cache-Control", kLiveCacheControl);
  r.headers.emplace("kadr-seq", std::to_string(frame->sequence));
  return r;
}

Status ViewerService::RegisterRoutes(http::HttpServer& server, bool job_routes) {
  RETURN_IF_ERROR(server.Route(
      "GET", "/api/v1/streams/:id/live",
      [this](const http::HttpRequest& req) { return LiveStream(req, LiveKind::kFrame); }));
  RETURN_IF_ERROR(server.Route(
      "GET", "/api/v1/streams/:id/events",
      [this](const http::HttpRequest& req) { return LiveStream(req, LiveKind::kResult); }));
  RETURN_IF_ERROR(server.Route("GET", "/api/v1/streams/:id/frame",
                               [this](const http::HttpRequest& req) { return LiveFrame(req); }));
  RETURN_IF_ERROR(server.Route("GET", "/api/v1/jobs",
                               [this](const http::HttpRequest& req) { return ListJobs(req); }));
  RETURN_IF_ERROR(
      server.Route("GET", "/api/v1/jobs/:id/thumbnail",
                   [this](const http::HttpRequest& req) { return GetImage(req, true); }));
  if (!job_routes) return Status::Ok();
  RETURN_IF_ERROR(server.Route("GET", "/api/v1/jobs/:id",
                               [this](const http::HttpRequest& req) { return GetJob(req); }));
  RETURN_IF_ERROR(server.Route("GET", "/api/v1/jobs/:id/result",
                               [this](const http::HttpRequest& req) { return GetResult(req); }));
  RETURN_IF_ERROR(
      server.Route("GET", "/api/v1/jobs/:id/image",
                   [this](const http::HttpRequest& req) { return GetImage(req, false); }));
  return Status::Ok();
}

}  // namespace kadr::viewer
