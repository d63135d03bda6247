// Job events on the bus (docs/protocol.md "Job events"): whoever runs a job publishes a full
// snapshot of its record to the compacted topic kadr.jobs, keyed by job id, whenever it
// changes — created (queued), progress (running) and finished (done, failed, cancelled) — and
// the Recorder writes the latest of them to the JobStore. Cancel requests travel to the
// job's control_topic (its runner's reply topic) as messages of kadr-kind "control"; a video
// job no camera service has taken yet has none, and its cancel follows its request on
// kadr.video.jobs (same key, so the same partition, after it).
// Video job requests (docs/protocol.md "Video jobs"): the gateway that took an upload puts it
// on the shared video folder and publishes a VideoJobRequest to kadr.video.jobs; one camera
// service takes it and runs the job.
// Pure functions, thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "bus/message.h"
#include "common/status.h"
#include "jobs/job.h"
#include "protocol/detection.h"

namespace kadr::jobs {

inline constexpr std::string_view kJobEventContentType = "application/vnd.kadr.job+json";
inline constexpr std::string_view kControlContentType = "application/vnd.kadr.control+json";
inline constexpr std::string_view kVideoJobContentType = "application/vnd.kadr.video-job+json";

// "created" (queued), "progress" (running) or "finished", by the record's state.
std::string_view JobEventName(JobState state);

// The snapshot message of `job` for kadr.jobs: key = job id, content-type
// kJobEventContentType, value {"event", "job": {every field of JobRecord but result_json and
// has_image; error as {code, message}; details as an object}}.
bus::Message JobEventMessage(const JobRecord& job);
// Whether a message is a job snapshot (by its content type).
bool IsJobEvent(const bus::Message& message);
// The record in a snapshot; kInvalidArgument naming what is wrong (not JSON, no valid id, an
// unknown kind or state).
Result<JobRecord> JobFromEvent(std::string_view value);

// A cancel request for `job`, to its control_topic (kadr.video.jobs when it has none): key =
// job id, kadr-kind "control", value {"action": "cancel", "job_id"}.
bus::Message CancelRequestMessage(const JobRecord& job);
// The job id a control message asks to cancel; nullopt for anything else.
std::optional<std::string> CancelRequestJobId(const bus::Message& message);

// What a camera service needs to run a video job.
struct VideoJobRequest {
  JobRecord job;       // the job as queued: kind video, id, model, created_ms, source_name...
  std::string upload;  // the upload's file name in the shared video folder ("<id>.src")
  protocol::DetectOptions options;
  bool draw = true;
  std::int64_t frame_timeout_ms = 0;  // a frame's answer must come within it; 0: the default
};

// The request for kadr.video.jobs: key = job id, content type kVideoJobContentType, value
// {"job": (as in a snapshot), "upload", "options": {conf, iou, classes}, "draw",
// "frame_timeout_ms"}.
bus::Message VideoJobRequestMessage(const VideoJobRequest& request);
bool IsVideoJobRequest(const bus::Message& message);
// kInvalidArgument naming what is wrong: not JSON, a job that is no valid video job, an
// upload name that is not "<job id>.src" (no request may name another file), bad options.
Result<VideoJobRequest> VideoJobRequestFromJson(std::string_view value);

}  // namespace kadr::jobs
