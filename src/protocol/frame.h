// The Kafka topic contract (docs/protocol.md): topic names, frame headers, the result
// envelope that workers send back, and worker announcements on kadr.workers. Pure functions,
// thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bus/bus.h"
#include "common/status.h"
#include "protocol/result.h"

namespace kadr::protocol {

inline constexpr int kProtocolVersion = 1;

// Topics. Frames are per model so each model's worker pool is its own consumer group.
inline constexpr std::string_view kFramesTopicPrefix = "kadr.frames.";
inline constexpr std::string_view kResultsTopic = "kadr.results";
inline constexpr std::string_view kAnnotatedTopic = "kadr.annotated";
// Live-stream frames name these in kadr-reply-to / kadr-annotated-to (ADR 0004).
inline constexpr std::string_view kLiveResultsTopic = "kadr.live.results";
inline constexpr std::string_view kLiveAnnotatedTopic = "kadr.live.annotated";
inline constexpr std::string_view kDeadLetterTopic = "kadr.dlq";
// Job snapshots, compacted, keyed by job id (jobs/job.h, docs/protocol.md "Job events").
inline constexpr std::string_view kJobsTopic = "kadr.jobs";
// Video jobs for the camera services (jobs/job.h VideoJobRequest), keyed by job id;
// every camera service reads it in one group, so each job runs once.
inline constexpr std::string_view kVideoJobsTopic = "kadr.video.jobs";
inline constexpr std::string_view kWorkerGroupPrefix = "kadr.worker.";

// "kadr.frames.<model>", with characters Kafka does not allow in topic names replaced by '_'.
std::string FramesTopic(std::string_view model);
std::string WorkerGroup(std::string_view model);
// Kafka's rule: 1..249 characters from [A-Za-z0-9._-], not "." or "..".
bool IsValidTopicName(std::string_view topic);
// Where a frame may send its answers (kadr-reply-to, kadr-annotated-to): topics that start
// with one of `prefixes` (empty: any topic). Workers default to kDefaultReplyPrefix, so that
// a frame cannot make them write to any topic of the cluster.
inline constexpr std::string_view kDefaultReplyPrefix = "kadr.";
bool IsAllowedReplyTopic(std::string_view topic, const std::vector<std::string>& prefixes);

// Header names.
namespace header {
inline constexpr char kFrameId[] = "kadr-frame-id";
inline constexpr char kStreamId[] = "kadr-stream-id";
inline constexpr char kSequence[] = "kadr-seq";
inline constexpr char kCaptureMs[] = "kadr-capture-ms";
inline constexpr char kDeadlineMs[] = "kadr-deadline-ms";
inline constexpr char kModel[] = "kadr-model";
inline constexpr char kReplyTo[] = "kadr-reply-to";
inline constexpr char kAnnotatedTo[] = "kadr-annotated-to";
inline constexpr char kSource[] = "kadr-source";
inline constexpr char kCorrelationId[] = "kadr-correlation-id";
inline constexpr char kContentType[] = "content-type";
inline constexpr char kSchema[] = "kadr-schema";
inline constexpr char kConfidence[] = "kadr-conf";
inline constexpr char kIou[] = "kadr-iou";
inline constexpr char kClasses[] = "kadr-classes";
inline constexpr char kDraw[] = "kadr-draw";
inline constexpr char kKind[] = "kadr-kind";
inline constexpr char kReportSize[] = "kadr-report-size";
inline constexpr char kStatus[] = "kadr-status";
inline constexpr char kErrorCode[] = "kadr-error-code";
inline constexpr char kErrorMessage[] = "kadr-error-message";
}  // namespace header

// Values of the kadr-kind header: what a frame is part of. Workers track (assign
// Detection::track_id per stream id) for video and live frames only.
namespace kind {
inline constexpr char kImage[] = "image";  // an uploaded image (also: header absent, "")
inline constexpr char kVideo[] = "video";  // a frame of a video job
inline constexpr char kLive[] = "live";    // a frame of a live stream
// Not a frame: a request to a job's runner on its reply topic (jobs/job.h).
inline constexpr char kControl[] = "control";
}  // namespace kind

// True for "video" and "live": frames whose detections are tracked per stream.
bool IsTrackedKind(std::string_view kind);

// Identity and routing of one frame, carried in its headers.
struct FrameMeta {
  std::string frame_id;                     // unique per frame; required
  std::string stream_id;                    // message key; defaults to frame_id
  std::int64_t sequence = 0;                // position in the stream
  std::int64_t capture_ms = 0;              // Unix ms when captured / received; 0 unknown
  std::optional<std::int64_t> deadline_ms;  // Unix ms after which the result is useless
  std::string model;
  std::string reply_to;      // results topic; defaults to kadr.results
  std::string annotated_to;  // annotated-image topic; empty: the worker's default (kadr.annotated)
  std::string source;        // where the frame came from, for display (file name, camera)
  std::string correlation_id;  // echoed back to the requester
  DetectOptions options;       // per-frame thresholds and class filter
  bool draw = true;            // produce the annotated image
  std::string kind;            // kadr-kind: "" (absent), "image", "video" or "live"
  // kadr-report-size "WxH": the frame was scaled down from an image of this size, and the
  // worker reports detections in its pixels (the annotated image stays at the frame's size);
  // 0x0 (absent): in the frame's own pixels.
  int report_width = 0;
  int report_height = 0;
};

void EncodeFrameHeaders(const FrameMeta& meta, bus::Headers& headers);
// kInvalidArgument naming the bad header (missing frame id, non-numeric number, unknown
// kadr-kind, ...).
Result<FrameMeta> DecodeFrameHeaders(const bus::Headers& headers);
// For answering a frame whose headers did not decode: its identity and reply route as far
// as they can be read (frame id `fallback_id` when absent, reply-to kadr.results when
// absent or invalid). Never fails.
FrameMeta BestEffortFrameMeta(const bus::Headers& headers, const std::string& key,
                              const std::string& fallback_id);

enum class FrameStatus { kOk, kError, kSkipped };
std::string_view FrameStatusName(FrameStatus s);  // "ok", "error", "skipped"

// What a worker sends to the reply-to topic for every frame it takes: exactly one of these
// per frame (more only on redelivery, recognisable by frame id).
struct FrameResult {
  std::string frame_id;
  std::string stream_id;
  std::int64_t sequence = 0;
  std::string correlation_id;
  std::int64_t capture_ms = 0;
  FrameStatus status = FrameStatus::kOk;
  Status error;                 // kError and kSkipped: why
  DetectionResult result;       // kOk: the detections
  std::string annotated_topic;  // where the annotated JPEG went (empty: not drawn)
};

std::string FrameResultToJson(const FrameResult& r);
Result<FrameResult> FrameResultFromJson(std::string_view json);

// Whether a message on a results or reply topic is an annotated image rather than a result:
// by its content-type header (image/* or JSON), else — a producer that sets none — by its
// bytes: a result is a JSON object, so anything not starting with '{' counts as an image.
bool IsImageMessage(const bus::Message& m);

// The stream (or job) a message on a results or reply topic belongs to: its kadr-stream-id
// header, else its key; "" when neither is set.
std::string StreamIdOf(const bus::Message& m);

// ---------------------------------------------------------------------------------------------
// Worker announcements on the `kadr.workers` topic (docs/protocol.md): every worker publishes
// one every `interval_ms` and one with state "stopping" when it leaves. Gateways read them to
// know which models have live workers (readiness, 503 when none) and to show per-model
// counters; any language can read or write them. Pure functions, thread-safe.

inline constexpr std::string_view kWorkersTopic = "kadr.workers";

struct WorkerHeartbeat {
  std::string worker_id;            // unique per worker process and model: "<host>-<pid>-<model>"
  std::string model;                // registry name; frames come from FramesTopic(model)
  std::int64_t ts_ms = 0;           // Unix ms when sent
  std::int64_t interval_ms = 2000;  // the next one comes within this; dead after 3 missed
  std::string state = "running";    // "running" or "stopping" (the last one a worker sends)
  // What the worker knows of its model, so a gateway needs no model files.
  std::string family;           // "yolox", "yolov8", "people-hog", ...
  std::string task = "detect";  // "detect" or "segment"
  int input_width = 0;
  int input_height = 0;
  std::vector<std::string> labels;
  // Cumulative since the worker started.
  std::uint64_t frames = 0;
  std::uint64_t processed = 0;
  std::uint64_t skipped = 0;
  std::uint64_t failed = 0;
  std::int64_t in_flight = 0;  // frames taken and not yet acknowledged
  // Frames the broker deleted before this worker read them (retention, the embedded
  // broker's 5 MiB per partition), cumulative; and the offsets lost in the last
  // kLossReportMs, repeated in every announcement meanwhile, so that the producers of those
  // frames learn of it (engine::Router::OnDeletedUnread) even if one announcement is lost.
  std::uint64_t lost = 0;
  std::vector<bus::Loss> losses;
};

inline constexpr std::int64_t kLossReportMs = 10000;
// Bounds on what an announcement may say (WorkerHeartbeatFromJson refuses more).
inline constexpr std::size_t kMaxHeartbeatText = 256;      // worker_id, model, labels, ...
inline constexpr std::size_t kMaxHeartbeatLabels = 10000;  // model_info.labels
inline constexpr std::int64_t kMaxHeartbeatTsMs = 100'000'000'000'000;  // ~ year 5138
inline constexpr std::int64_t kMaxHeartbeatIntervalMs = 3'600'000;
inline constexpr std::int64_t kMaxHeartbeatCount = 1'000'000'000'000'000;  // stats
// Loss ranges in one announcement, at most (more are not read).
inline constexpr std::size_t kMaxLossesPerHeartbeat = 64;

std::string WorkerHeartbeatToJson(const WorkerHeartbeat& hb);
// kInvalidArgument for malformed JSON, another schema_version, missing worker_id/model, or
// a value out of its range (the kMaxHeartbeat* bounds, negative counters).
Result<WorkerHeartbeat> WorkerHeartbeatFromJson(std::string_view json);

// True when `hb` is "running" and its next heartbeat is not more than 3 intervals late.
bool IsAlive(const WorkerHeartbeat& hb, std::int64_t now_ms);

}  // namespace kadr::protocol
