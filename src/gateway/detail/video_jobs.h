// Video jobs (docs/adr/0004-streams-video-jobs-and-tracking.md, docs/api.md "Video jobs"): an
// uploaded video is saved, probed, decoded frame by frame on a thread of its own, each frame
// published to kadr.frames.<model> (kind video, key and stream id = job id, sequence = frame
// index, correlation id "<job>:<index>", replies and annotated images to the gateway's reply
// topic), and the answers are reassembled in index order into an annotated H.264 MP4 at the
// source frame rate plus one JSON line of results per frame.
//
// Files in `dir`, per job: <id>.src (the upload; removed when the job ends), <id>.part.mp4 and
// <id>.part.jsonl while running, then <id>.mp4, <id>.jsonl and <id>.json (the final job JSON,
// so a finished job outlives the in-memory table and a restart). The newest `max_kept`
// finished jobs are kept (in memory and on disk); older ones are deleted.
//
// Lossless: at most `window` frames are in flight (published, not yet written); the reader
// waits for room, nothing is dropped. A frame whose result is `error` or `skipped`, or whose
// annotated image is missing, is written un-annotated and counted (progress.frames_failed).
// A frame with no reply within `frame_timeout` of its publication fails the job (504
// deadline_exceeded) rather than letting it hang; a frame the broker refuses fails it too.
//
// Ownership: the publisher and the metrics registry are borrowed and must outlive this object.
// Thread-safety: every method may be called from any thread. One table mutex guards the jobs
// and the run queue; each job has its own mutex for its progress and frames in flight; neither
// is held while publishing, decoding or encoding. Delivery callbacks hold the job, never this
// object, so they may arrive after destruction.
// Lifecycle: construct -> Init() -> Submit()/HandleReply()/... -> Shutdown() (also run by the
// destructor): unfinished jobs fail with "the gateway is shutting down", their threads are
// joined.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>

#include <nlohmann/json.hpp>

#include "bus/bus.h"
#include "common/metrics.h"
#include "common/status.h"
#include "http/server.h"
#include "protocol/detection.h"
#include "viewer/history_store.h"

namespace kadr::gateway::detail {

struct VideoJobsOptions {
  // Folder for uploads, annotated MP4s and per-frame results; created by Init().
  std::string dir;
  // Where workers answer (results and annotated frames): the gateway's reply topic.
  std::string reply_topic;
  // Frames in flight per job (published, not yet written), 1..256.
  std::size_t window = 16;
  // Jobs decoding at once; later ones wait in state "queued".
  std::size_t max_running = 2;
  // Jobs waiting for a slot; beyond it uploads get 429.
  std::size_t max_queued = 16;
  // Finished jobs kept (table and files); the oldest go first.
  std::size_t max_kept = 100;
  // A frame's reply must arrive within this of its publication, else the job fails.
  std::chrono::milliseconds frame_timeout{60000};
  // JPEG quality of the published frames (the wire format, docs/adr/0002).
  int jpeg_quality = 90;
  // Unix milliseconds for job times; the system clock when unset.
  std::function<std::int64_t()> now_ms;
  // Optional: every finished job (done, failed, cancelled) is recorded here too, so that the
  // history list (the viewer's GET /api/v1/jobs) shows video jobs. Borrowed; must outlive
  // the VideoJobs.
  viewer::HistoryStore* history = nullptr;
};

// What the upload asked for, already validated by the gateway.
struct VideoRequest {
  std::string model;
  protocol::DetectOptions options;
  bool draw = true;
  std::string filename;                                    // sanitised, for display
  std::optional<std::chrono::milliseconds> frame_timeout;  // the request's timeout_ms
};

class VideoJobs {
 public:
  VideoJobs(VideoJobsOptions options, bus::FramePublisher& publisher, MetricsRegistry& metrics);
  ~VideoJobs();
  VideoJobs(const VideoJobs&) = delete;
  VideoJobs& operator=(const VideoJobs&) = delete;

  // Creates `dir`, removes what a crash left (uploads and partial outputs) and applies the
  // retention. kUnavailable when the folder cannot be created or read.
  Status Init();

  // Saves and probes the upload and queues the job: 202 + Location + job JSON. Errors as
  // responses: 415 (not a video), 400 (a video without a decodable frame: truncated or
  // damaged), 429 (queue full), 503 (shutting down, disk).
  http::HttpResponse Submit(std::string_view bytes, VideoRequest request);

  // A reply on the gateway's topic: true when it belongs to video jobs (correlation id
  // "<job>:<index>" or kadr-kind video), whether or not its job is still known; false to let
  // the image path handle it.
  bool HandleReply(const bus::InboundMessage& in);

  // The routes, for ids of video jobs; nullopt when `id` is no video job known here (the
  // caller then tries image jobs and the history).
  std::optional<http::HttpResponse> GetJob(const std::string& id);
  // 200 {"job_id","model","video":{...},"frames":[...]} when done (?format=jsonl: the JSON
  // lines as stored), 202 + job JSON while queued or running, the job's error otherwise.
  std::optional<http::HttpResponse> GetResult(const std::string& id, bool json_lines);
  // 200 video/mp4 when done, 409 otherwise. `range`: the request's Range header; one byte
  // range gets 206 with that slice (416 when outside the file); anything else the whole file.
  std::optional<http::HttpResponse> GetVideo(const std::string& id,
                                             const std::optional<std::string>& range);
  // Cancels a queued or running job: 200 + job JSON (state cancelled); 409 when finished.
  std::optional<http::HttpResponse> Cancel(const std::string& id);

  // Fails unfinished jobs ("the gateway is shutting down") and joins their threads. New
  // submissions get 503 afterwards. Idempotent.
  void Shutdown();

 private:
  struct Job;
  struct Frame;

  void RunJob(const std::shared_ptr<Job>& job);
  Status Process(Job& job);
  void Finish(Job& job, Status outcome);
  std::shared_ptr<Job> Find(const std::string& id);
  void Retain();
  // The job as the history (and the job JSON) records it; job.mu held.
  viewer::JobRecord RecordLocked(const Job& job) const;
  std::string JobJsonLocked(const Job& job) const;
  // The job JSON, as an object (JobJsonLocked dumps it).
  nlohmann::json JobObjectLocked(const Job& job) const;
  // For the routes that need a finished job, in memory or stored: its job JSON object, or
  // `unfinished(job)` (job.mu held) while it is queued or running; nullopt for an unknown id.
  std::optional<std::variant<nlohmann::json, http::HttpResponse>> FinishedJob(
      const std::string& id, const std::function<http::HttpResponse(const Job&)>& unfinished);
  std::int64_t NowMs() const;

  const VideoJobsOptions options_;
  bus::FramePublisher& publisher_;
  MetricsRegistry& metrics_;

  std::mutex mu_;  // guards the members below
  std::condition_variable slots_;
  std::unordered_map<std::string, std::shared_ptr<Job>> jobs_;
  std::deque<std::string> queue_;  // queued job ids, in submission order
  std::size_t running_ = 0;
  bool stopping_ = false;
};

}  // namespace kadr::gateway::detail
