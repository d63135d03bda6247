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

namespace kadr::gateway::detail {

struct VideoUploadOptions {
  std::string dir;  // the shared video folder
  std::chrono::milliseconds snapshot_timeout{5000};
  std::chrono::milliseconds claim_timeout{60000};
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

// Saves `bytes` as <id>.src in the folder, checks it is a video with a decodable first frame,
// and publishes the queued snapshot and the request (both taken by the broker before the
// answer): 202 + Location + the job JSON. Errors as responses: 415 (not a video), 400 (a
// damaged or truncated video), 503 (disk, broker); the upload is removed then.
http::HttpResponse SubmitVideo(const VideoUploadOptions& options, std::string_view bytes,
                               const VideoRequest& request, std::int64_t now_ms,
                               bus::FramePublisher& publisher);

}  // namespace kadr::gateway::detail
