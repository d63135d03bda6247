// A video upload becoming a video job (docs/api.md "Video jobs"): the gateway only checks the
// container and hands the job to the camera services through the shared video folder and
// kadr.video.jobs (camera/video_jobs.h runs it). Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "bus/bus.h"
#include "http/server.h"
#include "protocol/result.h"
#include "video/video.h"

namespace kadr::gateway::detail {

// The largest video a job may take, as its container states it (video::ProbeVideo).
struct VideoLimits {
  std::int64_t max_pixels = std::int64_t{4096} * 4096;  // width x height of a frame
  int max_side = 8192;
  std::int64_t max_frames = 108000;  // one hour at 30 fps
  double max_seconds = 3600;
};

// kTooLarge naming the first limit `probe` exceeds; OK otherwise. A stated frame count or
// duration of 0 (unknown) passes: the camera service counts the frames as it reads them.
Status CheckVideoLimits(const video::VideoProbe& probe, const VideoLimits& limits);

struct VideoUploadOptions {
  std::string dir;  // the shared video folder
  std::chrono::milliseconds snapshot_timeout{5000};
  std::chrono::milliseconds claim_timeout{60000};
  // What the container's headers may state (413 beyond), checked before the job is queued.
  VideoLimits limits;
  // The folder's files (uploads and outputs) together at most this many bytes with the new
  // upload (507 beyond); 0: no quota.
  std::uint64_t max_dir_bytes = 0;
};

// What the upload asked for, already validated by the gateway.
struct VideoRequest {
  std::string model;
  protocol::DetectOptions options;
  bool draw = true;
  std::string filename;               // sanitised, for display
  std::int64_t frame_timeout_ms = 0;  // the request's timeout_ms; 0: the camera's default
};

// Creates the folder. kUnavailable when it cannot be created.
Status PrepareVideoFolder(const std::string& dir);

// Checks the folder's quota, saves `bytes` as <id>.src in the folder, reads its container's
// headers (nothing is decoded on the caller's thread: the camera service decodes the frames,
// and a video whose frames do not decode fails its job there), checks them against the
// limits, and publishes the queued snapshot and the request (both taken by the broker before
// the answer): 202 + Location + the job JSON. Errors as responses: 415 (not a video), 400 (a
// damaged or truncated container), 413 (over a limit), 507 (over the quota), 503 (disk,
// broker); the upload is removed then.
http::HttpResponse SubmitVideo(const VideoUploadOptions& options, std::string_view bytes,
                               const VideoRequest& request, std::int64_t now_ms,
                               bus::FramePublisher& publisher);

}  // namespace kadr::gateway::detail
