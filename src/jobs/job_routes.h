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
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "bus/bus.h"
#include "common/status.h"
#include "http/server.h"
#include "jobs/job_store.h"
#include "jobs/recorder.h"

namespace kadr::jobs {

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
