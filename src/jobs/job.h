// Jobs, in three parts: the job record (its kind, states and ids); the REST API's job JSON
// (the job and result bodies); and the job events and requests on the bus (snapshots on
// kadr.jobs, cancel requests, video job requests).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "bus/bus.h"
#include "common/status.h"
#include "protocol/frame.h"
#include "protocol/result.h"

namespace kadr::jobs {

// ---------------------------------------------------------------------------------------------
// The job model (docs/adr/0008-job-model-and-events.md): one record for every kind of work a
// client asked for — an uploaded image, a video, a stream — with one state machine.
//
//   queued ──► running ──► done
//      │          │   ╲──► failed
//      └──────────┴─────► cancelled
//
// A state may be repeated (redelivered events and results rewrite the same record); a
// finished state (done, failed, cancelled) is final. Pure types and functions, thread-safe.

enum class JobKind { kImage, kVideo, kStream };
enum class JobState { kQueued, kRunning, kDone, kFailed, kCancelled };

// "image", "video", "stream" and back; nullopt for anything else.
std::string_view JobKindName(JobKind kind);
std::optional<JobKind> ParseJobKind(std::string_view name);
// "queued", "running", "done", "failed", "cancelled" and back; nullopt for anything else.
std::string_view JobStateName(JobState state);
std::optional<JobState> ParseJobState(std::string_view name);

// done, failed or cancelled.
bool IsFinished(JobState state);
// Whether a job in `from` may move to `to`: the same state again, or forward (queued ->
// running, either -> a finished state). Never out of a finished state.
bool CanTransition(JobState from, JobState to);
// OK when CanTransition, else kFailedPrecondition naming both states.
Status CheckTransition(JobState from, JobState to);

// One job as the API shows it. Times are Unix milliseconds.
struct JobRecord {
  std::string id;  // see IsValidJobId
  JobKind kind = JobKind::kImage;
  std::string model;  // registry name of the model
  JobState state = JobState::kQueued;
  std::int64_t created_ms = 0;
  std::int64_t updated_ms = 0;
  std::int64_t frames_total = 1;
  std::int64_t frames_done = 0;
  std::string source_name;      // uploaded file name or stream URL (redacted), for display
  std::optional<Status> error;  // why the job failed or was cancelled
  std::string result_json;      // FrameResult JSON of the last (or only) frame; may be empty
  // When the job's runner gives up on it (0: no deadline). A job still unfinished past it is
  // failed by the recorder (an image whose frame was lost).
  std::int64_t deadline_ms = 0;
  // Where cancel requests go (the runner's reply topic); empty: the job cannot be cancelled.
  std::string control_topic;
  // A JSON object of kind-specific fields merged into the job JSON (a video's "video" and
  // progress figures); empty for none.
  std::string details_json;
  // Output only: whether an annotated image is stored. Maintained by the store.
  bool has_image = false;
};

// True when `id` is 1..64 characters from [A-Za-z0-9_-]. Only such ids ever reach a path.
bool IsValidJobId(std::string_view id);

// A new job id: "j" + 12 hex digits of `now_ms` + 12 random hex digits (48 bits), so that the
// id says when it was made (JobIdTimeMs) and ids sort by creation.
std::string NewJobId(std::int64_t now_ms);
// The creation time NewJobId put in `id`; nullopt for ids of another shape.
std::optional<std::int64_t> JobIdTimeMs(std::string_view id);

// The job id for a stream id: `stream_id` itself when IsValidJobId accepts it; otherwise its
// allowed characters (others replaced by '_', at most 47 of them) followed by '-' and 16 hex
// digits of a hash of the whole stream id, so that distinct streams keep distinct jobs.
// Empty for an empty stream id.
std::string JobIdForStream(std::string_view stream_id);

// ---------------------------------------------------------------------------------------------
// The REST API's job and result bodies (docs/api.md): every route that shows a job uses
// these, so all answer in exactly the same shape.
// Pure functions, thread-safe.

// "/api/v1/jobs/<id>" and its sub-resources.
std::string JobPath(const std::string& job_id);

// The job object of docs/api.md: id, kind, model, state, created_ms, updated_ms,
// progress{frames_done, frames_total}, source_name, detections_count (when result_json has
// a result), error{code, message} (when set), links{self, result, image?, thumbnail?}; then
// job.details_json merged over it (RFC 7386 merge patch).
std::string JobToJson(const JobRecord& job);

// A video job's output fields in `details` (its details_json), the same from its 202 to its
// end, whoever writes the snapshot (the gateway that takes the job, the camera service that
// runs it): "annotated" (whether an annotated MP4 is written: draw=1) and
// links{result, video (only when annotated)}.
void SetVideoOutput(nlohmann::json& details, const std::string& job_id, bool annotated);

// Whether a video job's details say it writes no MP4 (draw=0). False when they say nothing.
bool IsResultsOnlyVideo(const JobRecord& job);

// The body of POST /api/v1/detect and GET /api/v1/jobs/{id}/result for a finished job:
// job_id, model, image, detections, timings_ms (the worker's stages from `result`, with
// `extra_timings_ms` merged over them: gateway, queue, total), annotated_image (when
// job.has_image).
std::string ResultToJson(const JobRecord& job, const protocol::FrameResult& result,
                         const std::map<std::string, double>& extra_timings_ms = {});

// {"jobs": [JobToJson...], "total": total}
std::string JobListToJson(const std::vector<JobRecord>& jobs, std::size_t total);

// ---------------------------------------------------------------------------------------------
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
