// VideoJobs: the video jobs of one camera service (docs/adr/0008-job-model-and-events.md,
// docs/api.md "Video jobs"). A gateway saves an upload as <id>.src in the shared video folder
// and publishes a request to kadr.video.jobs (jobs/job.h); every camera service reads
// that topic in one consumer group, so one of them takes each job:
//
//   Take(request) -> <id>.request.json (this camera's claim) -> queue -> thread per job:
//     engine::VideoFileSource(<id>.src) -> FrameRun (lossless, ordered, window, frame
//     timeout fails the job) -> engine::BusDispatcher (kind video, key and stream id = job
//     id, answers to this camera's reply topic) -> engine::VideoFileSink (<id>.part.mp4 +
//     <id>.part.jsonl) -> <id>.mp4 + <id>.jsonl, which the job routes serve.
//
// The job itself is its snapshots on kadr.jobs: queued when taken (control_topic = this
// camera's reply topic, where cancel requests come as control messages), running, progress
// at most every progress_interval, finished. Every snapshot of an unfinished job carries
// deadline_ms = now + liveness and Tick() renews it, so a job whose camera service died is
// failed by the recorder instead of staying "running" for ever.
//
// Restarts: a claim survives in the video folder. Init() runs every job this camera had
// claimed again from its first frame (the partial outputs are discarded); a claim whose
// upload is gone fails cleanly. A redelivered request of a job this camera knows, or one
// whose outputs exist already, is ignored.
//
// A request with draw=0 is results only: no MP4 is written (its snapshots say "annotated":
// false and have no links.video), only <id>.jsonl.
//
// Lossless: at most `window` frames are in flight; nothing is dropped. A frame whose result is
// `error` or `skipped`, or whose annotated image is missing, is written un-annotated and
// counted (progress.frames_failed). A frame with no answer within the job's frame timeout
// fails the job (deadline_exceeded); a frame the broker refuses fails it too.
//
// Ownership: the publisher, router and metrics registry are borrowed and must outlive this
// object. Thread-safety: every method may be called from any thread.
// Lifecycle: construct -> Init() -> Take()/HandleControl()/Tick() -> Shutdown() (also run
// by the destructor): running jobs stop where they are; their claims stay, so the next
// start runs them again.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "bus/bus.h"
#include "common/metrics.h"
#include "common/status.h"
#include "engine/bus_dispatch.h"
#include "jobs/job.h"

namespace kadr::camera {

struct VideoJobsOptions {
  // The shared video folder: uploads, claims and outputs; created by Init().
  std::string dir;
  // This camera service's id (its claims) and reply topic (answers and cancel requests).
  std::string camera_id;
  std::string reply_topic;
  // Frames in flight per job, 1..256.
  std::size_t window = 16;
  // Jobs decoding at once; later ones wait in state "queued".
  std::size_t max_running = 2;
  // Finished jobs whose outputs are kept; the oldest go first.
  std::size_t max_kept = 100;
  // The kept outputs (annotated MP4s and result lines) together at most this many bytes;
  // the oldest go first, the newest is always kept. 0: no limit.
  std::uint64_t max_kept_bytes = std::uint64_t{16} << 30;
  // A video with more frames than this fails its job after them (invalid_argument), whatever
  // its container stated. 0: no limit.
  std::int64_t max_frames = 108000;
  // A frame's answer must arrive within this after it was sent (a request may ask for
  // another).
  std::chrono::milliseconds frame_timeout{60000};
  // JPEG quality of the published frames (the wire format, docs/adr/0002).
  int jpeg_quality = 90;
  // Frames larger than this on their long side travel scaled down (the models letterbox
  // them to their input, at most 1280 for the ones kadr ships); the MP4 and the results stay
  // in the video's own pixels. 0: full size.
  int max_frame_side = 1280;
  // The longest input side of `model`'s workers (0: unknown); when set, a job's frames travel
  // at most that large (detail::WireSide: never below 320), since the MP4 is drawn on the
  // decoded frames here and the wire only feeds the model (docs/adr/0017). CameraService sets
  // it from the workers' announcements.
  std::function<int(std::string_view model)> model_input_side;
  // Room on the broker for the frames, shared with the process's other producers: a job's
  // frames wait for it, in turn with other jobs and uploads. Unset: none.
  std::shared_ptr<engine::Admission> admission;
  // Progress snapshots of a running job at most this often.
  std::chrono::milliseconds progress_interval{1000};
  // How long an unfinished job's snapshot vouches for it (deadline_ms); renewed by Tick()
  // every liveness / 3.
  std::chrono::milliseconds liveness{60000};
  // Unix milliseconds for job times; the system clock when unset.
  std::function<std::int64_t()> now_ms;
};

struct VideoJobsStats {
  std::size_t queued = 0;
  std::size_t running = 0;
  std::uint64_t taken = 0;      // requests claimed
  std::uint64_t malformed = 0;  // requests refused as malformed
};

class VideoJobs {
 public:
  VideoJobs(VideoJobsOptions options, bus::FramePublisher& publisher, engine::Router& router,
            MetricsRegistry& metrics);
  ~VideoJobs();
  VideoJobs(const VideoJobs&) = delete;
  VideoJobs& operator=(const VideoJobs&) = delete;

  // kInvalidArgument naming the bad field.
  static Status ValidateOptions(const VideoJobsOptions& options);

  // Creates the folder, removes partial outputs, resumes this camera's claims and applies
  // the retention. kUnavailable when the folder cannot be created or read.
  Status Init();

  // One message of kadr.video.jobs: a request (claimed and queued, unless known, finished or
  // malformed — those are logged, counted and dropped; a request whose upload is missing or
  // whose claim cannot be written fails its job) or a cancel request. Always handled:
  // acknowledge the message afterwards.
  void Take(const bus::Message& message);

  // A message on the reply topic that is not a frame's answer: a cancel request is handled
  // (true); anything else is not one of ours (false).
  bool HandleControl(const bus::Message& message);

  void Tick();

  // Stops every job where it is (their claims stay) and joins their threads. New requests
  // are refused with kUnavailable afterwards. Idempotent.
  void Shutdown();

  VideoJobsStats stats() const;

 private:
  struct Job;

  void StartLocked(const std::shared_ptr<Job>& job);
  void RunJob(const std::shared_ptr<Job>& job);
  Status Process(Job& job);
  void Finish(Job& job, const Status& outcome);
  void Cancel(const std::string& id);
  void Retain();
  // The job's record as its snapshot carries it; job.mu held.
  jobs::JobRecord RecordLocked(const Job& job) const;
  // Publishes the job's snapshot without waiting; job.mu held.
  void PublishLocked(Job& job);
  void PublishFailed(const jobs::VideoJobRequest& request, const Status& why);
  std::int64_t NowMs() const;

  const VideoJobsOptions options_;
  bus::FramePublisher& publisher_;
  engine::Router& router_;
  MetricsRegistry& metrics_;

  mutable std::mutex mu_;  // guards the members below
  std::condition_variable slots_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;
  std::deque<std::string> queue_;  // queued job ids, in claim order
  std::size_t running_ = 0;
  std::uint64_t taken_ = 0;
  std::uint64_t malformed_ = 0;
  bool stopping_ = false;
};

}  // namespace kadr::camera
