#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <variant>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "jobs/job.h"
#include "jobs/recorder.h"
#include "protocol/frame.h"
#include "storage/files.h"

namespace kadr::jobs {
namespace {

using http::HttpRequest;
using http::HttpResponse;
using nlohmann::json;

constexpr std::size_t kDefaultListLimit = 50;
constexpr std::size_t kMaxListLimit = 500;
constexpr char kJobIdHeader[] = "X-Kadr-Job-Id";
constexpr char kImageCacheControl[] = "private, max-age=3600";

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Parses a non-negative decimal query parameter; `fallback` when absent.
std::optional<std::size_t> ParseCount(const HttpRequest& req, std::string_view name,
                                      std::size_t fallback) {
  const auto text = req.Query(name);
  if (!text) return fallback;
  std::size_t value = 0;
  const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (ec != std::errc() || end != text->data() + text->size()) return std::nullopt;
  return value;
}

HttpResponse Jpeg(std::vector<std::uint8_t> bytes, const std::string& id) {
  HttpResponse r;
  r.content_type = "image/jpeg";
  r.body.assign(bytes.begin(), bytes.end());
  r.headers.emplace("Cache-Control", kImageCacheControl);
  r.headers.emplace(kJobIdHeader, id);
  return r;
}

Status UnknownJob(const std::string& id) {
  // Ids are shown in error messages; a hostile one is cut short.
  constexpr std::size_t kMaxEchoed = 80;
  return NotFoundError("unknown job '" +
                       (id.size() <= kMaxEchoed ? id : id.substr(0, kMaxEchoed) + "...") + "'");
}

// Store failures other than "not found" are logged in full and answered without the details
// (they name files on the server).
HttpResponse StoreError(const Status& s, const std::string& what) {
  if (s.code() == StatusCode::kNotFound || s.code() == StatusCode::kInvalidArgument) {
    return HttpResponse::Error(s);
  }
  spdlog::warn("job store read failed what=\"{}\" error=\"{}\"", what, s.ToString());
  HttpResponse r = HttpResponse::Error(Status(s.code(), "the job store failed reading " + what));
  if (s.code() == StatusCode::kUnavailable) r.headers.emplace("Retry-After", "2");
  return r;
}

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

// Largest slice of a file one answer carries: a 206 for a longer range is cut to this (media
// players ask for the rest), and a whole file beyond it is streamed in blocks.
constexpr std::size_t kMaxSliceBytes = std::size_t{8} << 20;
constexpr std::size_t kStreamBlockBytes = std::size_t{256} << 10;

// The file at `path` as a streamed body, block by block; `transform` may rewrite each block
// (it gets the block and whether it is the last) before it is written.
http::StreamBody StreamFile(std::filesystem::path path, std::string prefix, std::string suffix,
                            std::function<std::string(std::string_view)> transform = nullptr) {
  return [path = std::move(path), prefix = std::move(prefix), suffix = std::move(suffix),
          transform = std::move(transform)](http::StreamWriter& out) {
    std::ifstream in(path, std::ios::binary);
    if (!prefix.empty() && !out.Write(prefix)) return;
    std::string block(kStreamBlockBytes, '\0');
    while (in) {
      in.read(block.data(), static_cast<std::streamsize>(block.size()));
      const auto n = static_cast<std::size_t>(std::max<std::streamsize>(0, in.gcount()));
      if (n == 0) break;
      const std::string_view data(block.data(), n);
      if (!out.Write(transform ? transform(data) : std::string(data))) return;
    }
    if (!suffix.empty()) out.Write(suffix);
  };
}

class Routes {
 public:
  Routes(JobRoutesOptions options, JobStore& store, Recorder& recorder,
         bus::FramePublisher& publisher)
      : options_(std::move(options)), store_(store), recorder_(recorder), publisher_(publisher) {}

  HttpResponse List(const HttpRequest& req);
  HttpResponse Get(const HttpRequest& req);
  HttpResponse GetResult(const HttpRequest& req);
  HttpResponse GetImage(const HttpRequest& req, bool thumbnail);
  HttpResponse GetVideo(const HttpRequest& req);
  HttpResponse Cancel(const HttpRequest& req);

 private:
  // What a read waits for: nothing, the job to finish, or its annotated image (or its end).
  enum class Settle { kNo, kFinished, kImage };
  // The job the request names, or the response for an unknown one or a failed store. A recent
  // image job that is not settled yet is waited for (see JobRoutesOptions::settle_wait).
  std::variant<JobRecord, HttpResponse> Find(const HttpRequest& req, Settle settle);
  HttpResponse VideoResult(const JobRecord& job, bool json_lines);
  std::int64_t NowMs() const { return options_.now_ms ? options_.now_ms() : UnixMillis(); }

  const JobRoutesOptions options_;
  JobStore& store_;
  Recorder& recorder_;
  bus::FramePublisher& publisher_;
};

std::variant<JobRecord, HttpResponse> Routes::Find(const HttpRequest& req, Settle settle) {
  const auto it = req.path_params.find("id");
  const std::string id = it == req.path_params.end() ? std::string() : it->second;
  if (!IsValidJobId(id)) return HttpResponse::Error(UnknownJob(id));
  auto job = store_.GetJob(id);
  const auto made = JobIdTimeMs(id);
  const std::int64_t now = NowMs();
  const bool recent =
      made && *made <= now + options_.recent.count() && now - *made <= options_.recent.count();
  if (!job && job.error().code() == StatusCode::kNotFound && recent) {
    // Just made (by its id): its snapshot may still be on its way to the recorder.
    job = recorder_.WaitForJob(id, options_.recent_wait);
  }
  // Just answered: the client may have its result from its gateway while the recorder is
  // still storing it (the same reply, read by both).
  if (job && recent && settle != Settle::kNo && job->kind == JobKind::kImage &&
      !IsFinished(job->state)) {
    const auto settled = [settle](const JobRecord& j) {
      return IsFinished(j.state) || (settle == Settle::kImage && j.has_image);
    };
    if (auto waited = recorder_.WaitForJob(id, options_.settle_wait, settled)) {
      job = std::move(waited).value();
    }
  }
  if (job) return std::move(job).value();
  if (job.error().code() == StatusCode::kNotFound) return HttpResponse::Error(UnknownJob(id));
  return StoreError(job.error(), "job " + id);
}

HttpResponse Routes::List(const HttpRequest& req) {
  const auto limit = ParseCount(req, "limit", kDefaultListLimit);
  if (!limit || *limit < 1 || *limit > kMaxListLimit) {
    return HttpResponse::Error(InvalidArgumentError("limit must be an integer from 1 to " +
                                                    std::to_string(kMaxListLimit)));
  }
  const auto offset = ParseCount(req, "offset", 0);
  if (!offset) return HttpResponse::Error(InvalidArgumentError("offset must be an integer >= 0"));
  auto jobs = store_.ListJobs(*limit, *offset);
  if (!jobs) return StoreError(jobs.error(), "the job list");
  auto total = store_.CountJobs();
  if (!total) return StoreError(total.error(), "the job count");
  return HttpResponse::Json(JobListToJson(*jobs, *total));
}

HttpResponse Routes::Get(const HttpRequest& req) {
  auto found = Find(req, Settle::kFinished);
  if (auto* r = std::get_if<HttpResponse>(&found)) return std::move(*r);
  return HttpResponse::Json(JobToJson(std::get<JobRecord>(found)));
}

HttpResponse Routes::GetResult(const HttpRequest& req) {
  auto found = Find(req, Settle::kFinished);
  if (auto* r = std::get_if<HttpResponse>(&found)) return std::move(*r);
  const JobRecord& job = std::get<JobRecord>(found);
  switch (job.state) {
    case JobState::kQueued:
    case JobState::kRunning:
      return HttpResponse::Json(JobToJson(job), 202);
    case JobState::kCancelled:
      return HttpResponse::Error(
          job.error.value_or(CancelledError("job '" + job.id + "' was cancelled")));
    case JobState::kFailed:
      return HttpResponse::Error(job.error.value_or(InternalError("job failed")));
    case JobState::kDone:
      break;
  }
  if (job.kind == JobKind::kVideo)
    return VideoResult(job, req.Query("format").value_or("") == "jsonl");
  auto result = protocol::FrameResultFromJson(job.result_json);
  if (!result) {
    spdlog::warn("stored result does not parse job={} error=\"{}\"", job.id,
                 result.error().message());
    return HttpResponse::Error(
        InternalError("the stored result of job '" + job.id + "' is unreadable"));
  }
  // From the job's creation (at its gateway) to its result's recording: the whole trip, and
  // what of it was not the worker's (the gateway's checks, the bus, waiting for a worker).
  std::map<std::string, double> trip;
  if (job.created_ms > 0 && job.updated_ms >= job.created_ms) {
    const double total = static_cast<double>(job.updated_ms - job.created_ms);
    const auto worker = result->result.timings_ms.find("total");
    const double worker_ms = worker == result->result.timings_ms.end() ? 0.0 : worker->second;
    trip = {{"total", total}, {"queue", std::max(0.0, total - worker_ms)}};
  }
  HttpResponse r = HttpResponse::Json(ResultToJson(job, *result, trip));
  r.headers.emplace(kJobIdHeader, job.id);
  return r;
}

HttpResponse Routes::VideoResult(const JobRecord& job, bool json_lines) {
  const std::filesystem::path path = VideoOutputPath(options_.video_dir, job.id, ".jsonl");
  auto size = storage::FileSize(path);
  if (options_.video_dir.empty() || !size) {
    return HttpResponse::Error(
        NotFoundError("the results of job '" + job.id + "' are no longer stored"));
  }
  const json record = json::parse(JobToJson(job), nullptr, false);
  const json head = {
      {"job_id", job.id},
      {"model", job.model},
      {"video", record.is_object() ? record.value("video", json::object()) : json::object()},
      {"progress", record.is_object() ? record.value("progress", json::object()) : json::object()}};
  std::string prefix = Dump(head);
  prefix.pop_back();  // the closing brace
  prefix += ",\"frames\":[";
  // The stored lines are JSON objects already: joined with commas, not re-parsed, and read
  // block by block (a long video's results are not held in memory at once).
  auto join = [first = true, comma = false](std::string_view block) mutable {
    std::string out;
    out.reserve(block.size() + 1);
    for (const char c : block) {
      if (c == '\n') {
        comma = comma || !first;
        continue;
      }
      if (comma) {
        out += ',';
        comma = false;
      }
      first = false;
      out += c;
    }
    return out;
  };
  HttpResponse r;
  if (*size <= kMaxSliceBytes) {
    auto lines = storage::ReadFileText(path);
    if (!lines) {
      return HttpResponse::Error(
          NotFoundError("the results of job '" + job.id + "' are no longer stored"));
    }
    if (json_lines) {
      r.content_type = "application/x-ndjson";
      r.body = std::move(lines).value();
    } else {
      r.content_type = "application/json";
      r.body = prefix + join(*lines) + "]}";
    }
  } else if (json_lines) {
    r = HttpResponse::Stream("application/x-ndjson", StreamFile(path, "", ""));
  } else {
    r = HttpResponse::Stream("application/json", StreamFile(path, prefix, "]}", join));
  }
  r.headers.emplace(kJobIdHeader, job.id);
  return r;
}

HttpResponse Routes::GetImage(const HttpRequest& req, bool thumbnail) {
  auto found = Find(req, Settle::kImage);
  if (auto* r = std::get_if<HttpResponse>(&found)) return std::move(*r);
  const JobRecord& job = std::get<JobRecord>(found);
  auto bytes = thumbnail ? store_.LoadThumbnail(job.id) : store_.LoadAnnotatedImage(job.id);
  if (bytes) return Jpeg(std::move(bytes).value(), job.id);
  if (bytes.error().code() == StatusCode::kNotFound) {
    // The store's own message may name the file on disk.
    return HttpResponse::Error(NotFoundError("job '" + job.id + "' has no " +
                                             (thumbnail ? "thumbnail" : "annotated image")));
  }
  return StoreError(bytes.error(),
                    std::string(thumbnail ? "the thumbnail" : "the image") + " of job " + job.id);
}

HttpResponse Routes::GetVideo(const HttpRequest& req) {
  auto found = Find(req, Settle::kNo);
  if (auto* r = std::get_if<HttpResponse>(&found)) return std::move(*r);
  const JobRecord& job = std::get<JobRecord>(found);
  const std::string& id = job.id;
  if (job.kind != JobKind::kVideo) {
    return HttpResponse::Error(NotFoundError("job '" + id + "' is an image job and has no video"));
  }
  if (!IsFinished(job.state)) {
    return HttpResponse::Error(FailedPreconditionError(
        "job '" + id + "' is " + std::string(JobStateName(job.state)) + " (" +
        std::to_string(job.frames_done) + " of " + std::to_string(job.frames_total) +
        " frames); its video is ready when it is done"));
  }
  if (job.state != JobState::kDone) {
    return HttpResponse::Error(FailedPreconditionError(
        "job '" + id + "' is " + std::string(JobStateName(job.state)) +
        " and has no video: " + job.error.value_or(InternalError("job failed")).message()));
  }
  if (IsResultsOnlyVideo(job)) {
    return HttpResponse::Error(NotFoundError(
        "job '" + id +
        "' was submitted with draw=0 and has no video: its per-frame results are at " +
        JobPath(id) + "/result"));
  }
  const std::filesystem::path path = VideoOutputPath(options_.video_dir, id, ".mp4");
  auto file_size = storage::FileSize(path);
  if (options_.video_dir.empty() || !file_size) {
    return HttpResponse::Error(NotFoundError("the video of job '" + id + "' is no longer stored"));
  }
  const auto size = static_cast<std::size_t>(*file_size);
  auto read = [&](std::size_t first, std::size_t length) -> std::optional<std::string> {
    auto bytes = storage::ReadFileRange(path, first, length);
    if (!bytes || bytes->size() != length) return std::nullopt;
    return std::move(bytes).value();
  };
  auto gone = [&] {
    return HttpResponse::Error(NotFoundError("the video of job '" + id + "' is no longer stored"));
  };
  HttpResponse r;
  r.content_type = "video/mp4";
  r.headers.emplace(kJobIdHeader, id);
  r.headers.emplace("Accept-Ranges", "bytes");
  r.headers.emplace("Content-Disposition", "inline; filename=\"" + id + ".mp4\"");
  if (const auto range = req.Header("Range")) {
    auto parsed = ParseRange(*range, size);
    if (parsed && !*parsed) {
      HttpResponse unsatisfiable = HttpResponse::Error(InvalidArgumentError(
          "range '" + *range + "' is outside the video's " + std::to_string(size) + " bytes"));
      unsatisfiable.status = 416;
      unsatisfiable.headers.emplace("Content-Range", "bytes */" + std::to_string(size));
      return unsatisfiable;
    }
    if (parsed) {
      const auto first = (**parsed).first;
      // Only the slice is read, and at most kMaxSliceBytes of it: players ask for the rest.
      const auto last = std::min((**parsed).second, first + kMaxSliceBytes - 1);
      auto slice = read(first, last - first + 1);
      if (!slice) return gone();
      r.status = 206;
      r.headers.emplace("Content-Range", "bytes " + std::to_string(first) + "-" +
                                             std::to_string(last) + "/" + std::to_string(size));
      r.body = std::move(*slice);
      return r;
    }
  }
  if (size > kMaxSliceBytes) {
    HttpResponse streamed = HttpResponse::Stream("video/mp4", StreamFile(path, "", ""));
    streamed.headers = std::move(r.headers);
    return streamed;
  }
  auto whole = read(0, size);
  if (!whole) return gone();
  r.body = std::move(*whole);
  return r;
}

HttpResponse Routes::Cancel(const HttpRequest& req) {
  auto found = Find(req, Settle::kNo);
  if (auto* r = std::get_if<HttpResponse>(&found)) return std::move(*r);
  const JobRecord& job = std::get<JobRecord>(found);
  const std::string& id = job.id;
  if (IsFinished(job.state)) {
    return HttpResponse::Error(FailedPreconditionError("job '" + id + "' is already " +
                                                       std::string(JobStateName(job.state))));
  }
  if (job.kind == JobKind::kImage) {
    // An image is one frame, answered within its deadline: nothing worth cancelling.
    return HttpResponse::Error(FailedPreconditionError(
        "job '" + id + "' is an image job; only video jobs can be cancelled"));
  }
  if (job.control_topic.empty()) {
    // No camera service has taken the video job yet: its cancel follows its request on
    // kadr.video.jobs (same key, same partition), and the job is cancelled at once.
    JobRecord cancelled = job;
    cancelled.state = JobState::kCancelled;
    cancelled.error = CancelledError("the job was cancelled");
    cancelled.updated_ms = NowMs();
    cancelled.deadline_ms = 0;
    if (Status s = publisher_.Publish(JobEventMessage(cancelled), {}); !s.ok()) {
      spdlog::warn("cancelled snapshot not published job={} error=\"{}\"", id, s.ToString());
    }
  }
  if (Status s = publisher_.Publish(CancelRequestMessage(job), {}); !s.ok()) {
    spdlog::warn("cancel request not published job={} error=\"{}\"", id, s.ToString());
    HttpResponse r =
        HttpResponse::Error(UnavailableError("cannot send the cancel request: " + s.message()));
    r.headers.emplace("Retry-After", "2");
    return r;
  }
  spdlog::info("cancel requested job={} runner={}", id,
               job.control_topic.empty() ? "none yet" : job.control_topic);
  auto now = recorder_.WaitForJob(id, options_.cancel_wait,
                                  [](const JobRecord& j) { return IsFinished(j.state); });
  if (!now) return StoreError(now.error(), "job " + id);
  if (!IsFinished(now->state)) return HttpResponse::Json(JobToJson(*now), 202);
  if (now->state != JobState::kCancelled) {
    return HttpResponse::Error(FailedPreconditionError("job '" + id + "' is already " +
                                                       std::string(JobStateName(now->state))));
  }
  return HttpResponse::Json(JobToJson(*now));
}

}  // namespace

std::string VideoOutputPath(const std::string& dir, const std::string& id,
                            std::string_view suffix) {
  return (std::filesystem::path(dir) / (id + std::string(suffix))).string();
}

Status RegisterJobRoutes(http::HttpServer& server, JobRoutesOptions options, JobStore& store,
                         Recorder& recorder, bus::FramePublisher& publisher) {
  auto routes = std::make_shared<Routes>(std::move(options), store, recorder, publisher);
  // The history is for viewers and above; deleting (cancelling) a job is an admin's.
  const http::RouteOptions read{.access = http::Access::kRead};
  const http::RouteOptions admin{.access = http::Access::kAdmin};
  RETURN_IF_ERROR(server.Route(
      "GET", "/api/v1/jobs", [routes](const HttpRequest& r) { return routes->List(r); }, read));
  RETURN_IF_ERROR(server.Route(
      "GET", "/api/v1/jobs/:id", [routes](const HttpRequest& r) { return routes->Get(r); }, read));
  RETURN_IF_ERROR(server.Route(
      "GET", "/api/v1/jobs/:id/result",
      [routes](const HttpRequest& r) { return routes->GetResult(r); }, read));
  RETURN_IF_ERROR(server.Route(
      "GET", "/api/v1/jobs/:id/image",
      [routes](const HttpRequest& r) { return routes->GetImage(r, false); }, read));
  RETURN_IF_ERROR(server.Route(
      "GET", "/api/v1/jobs/:id/thumbnail",
      [routes](const HttpRequest& r) { return routes->GetImage(r, true); }, read));
  RETURN_IF_ERROR(server.Route(
      "GET", "/api/v1/jobs/:id/video",
      [routes](const HttpRequest& r) { return routes->GetVideo(r); }, read));
  RETURN_IF_ERROR(server.Route(
      "DELETE", "/api/v1/jobs/:id", [routes](const HttpRequest& r) { return routes->Cancel(r); },
      admin));
  return Status::Ok();
}

}  // namespace kadr::jobs
