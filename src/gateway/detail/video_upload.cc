#include "gateway/detail/video_upload.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "gateway/detail/publish.h"
#include "gateway/detail/responses.h"
#include "jobs/job.h"
#include "storage/files.h"
#include "video/video.h"

namespace kadr::gateway::detail {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kJobIdHeader[] = "X-Kadr-Job-Id";

}  // namespace

Status PrepareVideoFolder(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return UnavailableError("cannot create the video folder " + dir + ": " + ec.message());
  return Status::Ok();
}

http::HttpResponse SubmitVideo(const VideoUploadOptions& options, std::string_view bytes,
                               const VideoRequest& request, std::int64_t now_ms,
                               bus::FramePublisher& publisher) {
  const std::string id = jobs::NewJobId(now_ms);
  const fs::path src = fs::path(options.dir) / (id + ".src");
  auto remove = [&] {
    std::error_code ec;
    fs::remove(src, ec);
  };
  if (Status s = storage::WriteFileAtomically(src, bytes); !s.ok()) {
    remove();
    spdlog::warn("video upload not saved job={} error=\"{}\"", id, s.ToString());
    return ErrorResponse(UnavailableError("cannot store the video: " + s.message()));
  }
  // The container and its first frame only; the camera service decodes the rest.
  auto reader = video::VideoFileReader::Open(src.string());
  if (!reader) {
    remove();
    spdlog::info("video refused job={} error=\"{}\"", id, reader.error().ToString());
    return ErrorResponse(reader.error());
  }

  jobs::VideoJobRequest job_request;
  jobs::JobRecord& job = job_request.job;
  job.id = id;
  job.kind = jobs::JobKind::kVideo;
  job.model = request.model;
  job.state = jobs::JobState::kQueued;
  job.created_ms = now_ms;
  job.updated_ms = now_ms;
  job.frames_total = reader->frame_count();
  job.source_name = request.filename;
  // A camera service that takes the job renews this; none within it fails the job.
  job.deadline_ms = now_ms + options.claim_timeout.count();
  const std::string self = jobs::JobPath(id);
  job.details_json = Dump({{"video",
                            {{"fps", reader->fps()},
                             {"frames", reader->frame_count()},
                             {"width", reader->width()},
                             {"height", reader->height()},
                             {"container", reader->container()}}},
                           {"progress", {{"fps", 0.0}, {"eta_ms", nullptr}, {"frames_failed", 0}}},
                           {"links", {{"video", self + "/video"}, {"result", self + "/result"}}}});
  job_request.upload = id + ".src";
  job_request.options = request.options;
  job_request.draw = request.draw;
  job_request.frame_timeout_ms = request.frame_timeout_ms;

  // The job exists on the broker before the client hears of it, and so does its request.
  for (bus::Message message :
       {jobs::JobEventMessage(job), jobs::VideoJobRequestMessage(job_request)}) {
    if (Status s = PublishAndWait(publisher, std::move(message), options.snapshot_timeout);
        !s.ok()) {
      remove();
      spdlog::warn("video job not recorded job={} error=\"{}\"", id, s.ToString());
      return ErrorResponse(UnavailableError("cannot record the job on the broker: " + s.message()));
    }
  }
  spdlog::info("video job queued job={} model={} container={} frames={} fps={:.2f} size={}x{}", id,
               request.model, reader->container(), reader->frame_count(), reader->fps(),
               reader->width(), reader->height());
  http::HttpResponse r = http::HttpResponse::Json(jobs::JobToJson(job), 202);
  r.headers.emplace("Location", self);
  r.headers.emplace(kJobIdHeader, id);
  return r;
}

}  // namespace kadr::gateway::detail
