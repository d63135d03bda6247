#include "gateway/detail/video_upload.h"

#include <filesystem>
#include <fstream>

#include <fmt/format.h>
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

// Bytes of the regular files directly in `dir`.
std::uint64_t FolderBytes(const fs::path& dir) {
  std::uint64_t total = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code size_ec;
    if (it->is_regular_file(size_ec)) {
      const std::uintmax_t size = it->file_size(size_ec);
      if (!size_ec) total += size;
    }
  }
  return total;
}

}  // namespace

Status CheckVideoLimits(const video::VideoProbe& probe, const VideoLimits& limits) {
  const std::string size = std::to_string(probe.width) + "x" + std::to_string(probe.height);
  if (probe.width > limits.max_side || probe.height > limits.max_side) {
    return TooLargeError("the video's frames are " + size + ", more than " +
                         std::to_string(limits.max_side) + " pixels a side");
  }
  if (std::int64_t{probe.width} * probe.height > limits.max_pixels) {
    return TooLargeError("the video's frames are " + size + ", more than " +
                         std::to_string(limits.max_pixels) + " pixels");
  }
  if (probe.frames > limits.max_frames) {
    return TooLargeError("the video has " + std::to_string(probe.frames) + " frames, more than " +
                         std::to_string(limits.max_frames));
  }
  if (probe.duration_s > limits.max_seconds) {
    return TooLargeError(fmt::format("the video lasts {:.1f} s, more than {:.1f} s",
                                     probe.duration_s, limits.max_seconds));
  }
  return Status::Ok();
}

Status PrepareVideoFolder(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return UnavailableError("cannot create the video folder " + dir + ": " + ec.message());
  return Status::Ok();
}

http::HttpResponse SubmitVideo(const VideoUploadOptions& options, std::string_view bytes,
                               const VideoRequest& request, std::int64_t now_ms,
                               bus::FramePublisher& publisher) {
  if (options.max_dir_bytes > 0) {
    const std::uint64_t used = FolderBytes(options.dir);
    if (used + bytes.size() > options.max_dir_bytes) {
      spdlog::warn("video upload refused: the video folder is full used={} upload={} quota={}",
                   used, bytes.size(), options.max_dir_bytes);
      http::HttpResponse full = ErrorResponse(
          ResourceExhaustedError("the video folder is full (" + std::to_string(used >> 20) +
                                 " of " + std::to_string(options.max_dir_bytes >> 20) +
                                 " MiB used): retry when older jobs' videos have been deleted"));
      full.status = 507;
      return full;
    }
  }
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
  // The container's headers only: the camera service decodes the frames on its own threads.
  auto probe = video::ProbeVideo(src.string());
  Status fits = probe ? CheckVideoLimits(*probe, options.limits) : probe.error();
  if (!fits.ok()) {
    remove();
    spdlog::info("video refused job={} error=\"{}\"", id, fits.ToString());
    return ErrorResponse(fits);
  }

  jobs::VideoJobRequest job_request;
  jobs::JobRecord& job = job_request.job;
  job.id = id;
  job.kind = jobs::JobKind::kVideo;
  job.model = request.model;
  job.state = jobs::JobState::kQueued;
  job.created_ms = now_ms;
  job.updated_ms = now_ms;
  job.frames_total = probe->frames;
  job.source_name = request.filename;
  // A camera service that takes the job renews this; none within it fails the job.
  job.deadline_ms = now_ms + options.claim_timeout.count();
  nlohmann::json details = {
      {"video",
       {{"fps", probe->fps},
        {"frames", probe->frames},
        {"width", probe->width},
        {"height", probe->height},
        {"container", probe->container}}},
      {"progress", {{"fps", 0.0}, {"eta_ms", nullptr}, {"frames_failed", 0}}}};
  jobs::SetVideoOutput(details, id, request.draw);  // draw=0: results only, no MP4
  job.details_json = Dump(details);
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
               request.model, probe->container, probe->frames, probe->fps, probe->width,
               probe->height);
  http::HttpResponse r = http::HttpResponse::Json(jobs::JobToJson(job), 202);
  r.headers.emplace("Location", jobs::JobPath(id));
  r.headers.emplace(kJobIdHeader, id);
  return r;
}

}  // namespace kadr::gateway::detail
