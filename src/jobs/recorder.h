// The read side of jobs: the Recorder materialises every job in the JobStore, and the job
// routes answer the REST API from the store.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "bus/bus.h"
#include "common/metrics.h"
#include "common/status.h"
#include "http/server.h"
#include "jobs/job_store.h"

namespace kadr::jobs {

// ---------------------------------------------------------------------------------------------
// Recorder: the one materialiser of jobs. It consumes everything that says something about
// a job and writes it to the JobStore, so that every job read — whichever gateway took the
// job — is answered from one place (docs/adr/0008-job-model-and-events.md).
//
//   kadr.jobs (snapshots) + kadr.results + kadr.annotated + kadr.replies.* -> JobStore -> ack
//
// Messages are told apart by their content type (job snapshot, application/json result,
// image/*), else by their first bytes. A result's or image's job is its stream: header
// kadr-stream-id, else the message key (else, for a result, its frame.stream / frame.id), as
// a job id when IsValidJobId accepts it, else JobIdForStream of it. Frames of video jobs and
// live streams (kadr-kind video / live) and control messages are acknowledged and ignored:
// video jobs report through their snapshots, live streams are the live view's.
//
// Merging. Snapshots, results and images of one job arrive in any order and may repeat. A
// record moves only along the job state machine (jobs/job.h): a snapshot or a result that
// would move a finished job elsewhere only fills in what the record lacks (model, source,
// creation time). A result makes an image job done (ok) or failed; an image that comes
// first makes it running. Snapshots carry no result: a stored result stays.
//
// Overdue jobs: every sweep_interval, unfinished jobs whose deadline_ms passed more than
// overdue_grace ago fail with deadline_exceeded — a frame that no worker answered, whatever
// happened to the gateway that published it.
//
// Every message is acknowledged once handled: stored, or found malformed (logged at warn,
// counted, dropped so that one bad message never blocks the stream), or failed to store after
// `store_attempts` tries (logged at error, counted, dropped). Retention (JobStore::Enforce)
// runs every `enforce_every_records` stored records and every `enforce_interval`.
//
// Read-your-writes: a client that has just been given a job id (202 from a gateway) may ask
// for it before its snapshot is consumed. WaitForJob waits, bounded, for a job to be stored.
//
// Metrics: kadr_jobs_records_total{kind="event"|"result"|"image",outcome="stored"|
// "malformed"|"failed"|"stale"}, kadr_jobs_ignored_messages_total{kind}, kadr_jobs_overdue_total.
//
// Threading: Run() (or PollOnce()) from one thread; WaitForJob and stats() from any thread.
// Ownership: the store, subscriber and metrics registry are borrowed and must outlive it.

struct RecorderOptions {
  // Messages taken per poll.
  std::size_t max_batch = 64;
  // Longest wait of one poll for the first message; also the stop-check interval.
  std::chrono::milliseconds poll_timeout{100};
  // Retention runs after this many stored records...
  std::size_t enforce_every_records = 100;
  // ...and at least this often (measured with now_ms).
  std::chrono::milliseconds enforce_interval{30000};
  // Thumbnails are scaled down (never up) to this many pixels on their long side.
  int thumbnail_max_side = 240;
  // JPEG quality of thumbnails, 1..100.
  int thumbnail_quality = 80;
  // Tries per message when the store fails with kUnavailable (busy database, full disk).
  int store_attempts = 3;
  // Wait between those tries.
  std::chrono::milliseconds store_retry_backoff{50};
  // How often overdue jobs are looked for, and how long past its deadline a job may still
  // get its result before it is failed.
  std::chrono::milliseconds sweep_interval{1000};
  std::chrono::milliseconds overdue_grace{2000};
  // WaitForJob callers at once; more return at once (bounds the threads a client can hold).
  std::size_t max_waiters = 32;
  // Unix ms; the system clock when unset.
  std::function<std::int64_t()> now_ms;
};

struct RecorderStats {
  std::uint64_t events_stored = 0;
  std::uint64_t results_stored = 0;
  std::uint64_t images_stored = 0;
  std::uint64_t malformed = 0;
  std::uint64_t failed = 0;
  std::uint64_t stale = 0;    // would have left a finished state; only filled in
  std::uint64_t ignored = 0;  // video and live frames, control messages
  std::uint64_t overdue = 0;  // jobs failed past their deadline
};

// The topics (and patterns, starting with '^') the recorder's subscriber reads.
std::vector<std::string> RecorderTopics();

class Recorder {
 public:
  Recorder(RecorderOptions options, JobStore& store, bus::FrameSubscriber& subscriber,
           MetricsRegistry& metrics);
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  // Records messages until `stop` is requested, then closes the subscriber (which commits
  // what was acknowledged) and returns its status.
  Status Run(const std::stop_token& stop);

  // One step of Run(): polls one batch (waiting up to `timeout` for the first message),
  // records and acknowledges every message in it, sweeps overdue jobs and runs retention
  // when due. Returns the number of messages taken.
  std::size_t PollOnce(std::chrono::milliseconds timeout);

  // Waits up to `wait` for job `id` to be stored and for `ready` (when given) to accept it;
  // returns the job as last read (kNotFound when it never came). Returns at once past
  // max_waiters callers.
  Result<JobRecord> WaitForJob(const std::string& id, std::chrono::milliseconds wait,
                               const std::function<bool(const JobRecord&)>& ready = {});

  RecorderStats stats() const;

 private:
  void Handle(const bus::InboundMessage& in);
  // kInvalidArgument for a malformed message, other codes when the store failed; `stale` is
  // set when the message could not move the job's state.
  Status StoreEvent(const bus::InboundMessage& in, bool& stale);
  Status StoreResult(const bus::InboundMessage& in, bool& stale);
  Status StoreImage(const bus::InboundMessage& in);
  Status WithRetries(const std::function<Status()>& op) const;
  Result<std::optional<JobRecord>> Existing(const std::string& id) const;
  void Sweep();
  void MaybeEnforce();
  void Notify();
  std::int64_t NowMs() const;

  const RecorderOptions options_;
  JobStore& store_;
  bus::FrameSubscriber& subscriber_;

  Counter& events_stored_;
  Counter& results_stored_;
  Counter& images_stored_;
  Counter& malformed_;
  Counter& failed_;
  Counter& stale_;
  Counter& ignored_;
  Counter& overdue_;

  // Waiters of WaitForJob; `generation` counts stored records.
  mutable std::mutex wait_mu_;
  std::condition_variable stored_;
  std::uint64_t generation_ = 0;
  std::size_t waiters_ = 0;

  // Touched only by the polling thread.
  std::size_t stored_since_enforce_ = 0;
  std::int64_t last_enforce_ms_ = 0;
  std::int64_t last_sweep_ms_ = 0;
};

// ---------------------------------------------------------------------------------------------
// JobRoutes: the REST API's job routes (docs/api.md "Jobs"), answered from the JobStore —
// the same answer whichever gateway took the job, one answer for an id that names no job
// (404, also for a malformed id).
//
//   GET    /api/v1/jobs?limit=50&offset=0   newest first; limit 1..500, offset >= 0, else 400
//   GET    /api/v1/jobs/:id                 the job
//   GET    /api/v1/jobs/:id/result          done: the detect body (image) or the frames
//                                           (video; ?format=jsonl: JSON lines); queued or
//                                           running: 202 with the job; else the job's error
//   GET    /api/v1/jobs/:id/image           the annotated JPEG; 404 when there is none
//   GET    /api/v1/jobs/:id/thumbnail       its preview
//   GET    /api/v1/jobs/:id/video           a done video job's MP4 (one byte Range: 206)
//   DELETE /api/v1/jobs/:id                 cancels a queued or running video job: a
//                                           request to its runner, then 200 with the job
//                                           once cancelled (202 if not yet within
//                                           cancel_wait); 409 when finished or an image
//
// Video jobs' outputs are files in `video_dir`, written by their runner: <id>.mp4 and
// <id>.jsonl (one result per frame). A job id that says it was made within `recent` (see
// NewJobId) and is not stored yet is waited for up to `recent_wait` (the recorder may not
// have consumed its snapshot), so a client may ask for a job the moment it got its id; and a
// recent image job not finished yet up to `settle_wait`, so a client that had its answer
// from the gateway reads the job as done.
//
// Ownership: the store, recorder and publisher are borrowed and must outlive the routes'
// server. Thread-safety: the handlers run concurrently on the server's threads.

struct JobRoutesOptions {
  // Where video jobs' MP4s and JSON lines are (shared with their runner); empty: none.
  std::string video_dir;
  std::chrono::milliseconds recent{10000};
  std::chrono::milliseconds recent_wait{2000};
  // A recent image job that is not finished yet (or, for its image, has none yet) is waited
  // for up to this before the answer: its client may have had the result from its gateway
  // a moment before the recorder stored it.
  std::chrono::milliseconds settle_wait{500};
  std::chrono::milliseconds cancel_wait{5000};
  // Unix ms; the system clock when unset.
  std::function<std::int64_t()> now_ms;
};

// The path of a video job's output with `suffix` (".mp4", ".jsonl") in `dir`.
std::string VideoOutputPath(const std::string& dir, const std::string& id, std::string_view suffix);

// Installs the routes above on `server` (not yet started). `publisher` carries cancel
// requests. Errors: the server's Route() error.
Status RegisterJobRoutes(http::HttpServer& server, JobRoutesOptions options, JobStore& store,
                         Recorder& recorder, bus::FramePublisher& publisher);

}  // namespace kadr::jobs
