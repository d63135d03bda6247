// JobStore: where job records, their results and annotated images are kept, and the one
// interface every reader and writer of jobs uses. SqliteJobStore (sqlite_job_store.h) is the
// production store; MemoryJobStore (memory_job_store.h) keeps everything in memory, for tests
// and for callers that need no history.
//
// Thread-safety: implementations are safe to call from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "jobs/job.h"

namespace kadr::jobs {

// What Enforce keeps.
struct RetentionOptions {
  // At most this many jobs (the newest by created_ms).
  std::size_t max_jobs = 10000;
  // The annotated images and thumbnails of all jobs under this many bytes in total, deleting
  // the oldest jobs that have images first.
  std::uint64_t max_image_bytes = std::uint64_t{2} << 30;  // 2 GiB
  // Jobs created longer ago than this are deleted.
  std::chrono::hours max_age{24 * 7};
};

class JobStore {
 public:
  virtual ~JobStore() = default;

  // Inserts the job or replaces every field of the stored one with the same id (has_image
  // excepted). Errors: kInvalidArgument (bad id), kInternal / kUnavailable (storage).
  virtual Status PutJob(const JobRecord& job) = 0;

  // Stores the annotated JPEG of an existing job, replacing any previous one, and sets its
  // has_image. Errors: kInvalidArgument (bad id, empty image), kNotFound (no such job),
  // kUnavailable / kInternal (storage).
  virtual Status SaveAnnotatedImage(const std::string& job_id,
                                    std::span<const std::uint8_t> jpeg) = 0;
  // Same for a small preview the caller has already encoded.
  virtual Status SaveThumbnail(const std::string& job_id, std::span<const std::uint8_t> jpeg) = 0;

  // Errors: kInvalidArgument (bad id), kNotFound, kInternal / kUnavailable.
  virtual Result<JobRecord> GetJob(const std::string& job_id) = 0;
  // Errors: kInvalidArgument (bad id), kNotFound (no such job or no image stored),
  // kUnavailable (unreadable).
  virtual Result<std::vector<std::uint8_t>> LoadAnnotatedImage(const std::string& job_id) = 0;
  virtual Result<std::vector<std::uint8_t>> LoadThumbnail(const std::string& job_id) = 0;

  // Up to `limit` jobs, newest (created_ms, then id) first, skipping the first `offset`.
  virtual Result<std::vector<JobRecord>> ListJobs(std::size_t limit, std::size_t offset) = 0;
  virtual Result<std::size_t> CountJobs() = 0;
  // Unfinished jobs with a deadline_ms at or before `now_ms`, at most `limit`, oldest first.
  virtual Result<std::vector<JobRecord>> ListOverdue(std::int64_t now_ms, std::size_t limit) = 0;

  // Applies retention, in this order: jobs older than max_age; the oldest jobs beyond
  // max_jobs; then the oldest jobs with images until all images fit in max_image_bytes.
  // Jobs in any state are eligible. Not called automatically: the owner runs it periodically.
  virtual Status Enforce() = 0;
};

}  // namespace kadr::jobs
