// The job model (docs/adr/0008-job-model-and-events.md): one record for every kind of work a
// client asked for — an uploaded image, a video, a stream — with one state machine.
//
//   queued ──► running ──► done
//      │          │   ╲──► failed
//      └──────────┴─────► cancelled
//
// A state may be repeated (redelivered events and results rewrite the same record); a
// finished state (done, failed, cancelled) is final. Pure types and functions, thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kadr::jobs {

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

}  // namespace kadr::jobs
