// JobStore: where job records, their results and annotated images are kept, and the one
// interface every reader and writer of jobs uses. SqliteJobStore (below) is the production
// store; MemoryJobStore (below) keeps everything in memory, for tests and for callers that
// need no history.
//
// Thread-safety: implementations are safe to call from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
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

// ---------------------------------------------------------------------------------------------
// SqliteJobStore: the persistent JobStore — jobs, their results and annotated images.
//
// Rows live in a SQLite database `<dir>/history.db`; annotated images (and optional
// thumbnails) are files under `<dir>/images/`, named by job id and written atomically
// (temporary file, fsync, rename), so a reader never sees half an image. Retention
// (Enforce) removes the oldest jobs, rows and files together.
//
// Thread-safe: every method may be called from any thread; calls are serialised on one
// SQLite connection (WAL mode, busy timeout). Only one SqliteJobStore should own a directory
// at a time; a second process sharing it gets kUnavailable while the database is busy.

struct SqliteJobStoreOptions {
  // Directory holding history.db and images/; created if missing.
  std::filesystem::path dir;
  RetentionOptions retention;
};

class SqliteJobStore final : public JobStore {
 public:
  // Opens (creating if needed) the store under options.dir, migrates the schema to the
  // current version, checks the database's integrity and removes image files left behind by
  // a crash (temporary files, files of deleted jobs).
  // Errors: kInvalidArgument (empty dir), kUnavailable (directory or database cannot be
  // created/opened), kInternal (database corrupt or not a SQLite file; the message names the
  // file), kFailedPrecondition (database written by a newer kadr schema).
  static Result<std::unique_ptr<SqliteJobStore>> Create(const SqliteJobStoreOptions& options);

  ~SqliteJobStore() override;
  SqliteJobStore(const SqliteJobStore&) = delete;
  SqliteJobStore& operator=(const SqliteJobStore&) = delete;

  // JobStore. Images are files images/<id>.jpg and images/<id>.thumb.jpg. Enforce deletes
  // rows first, then their files; a file that cannot be removed is kUnavailable (the rows are
  // gone and the next Create removes the file).
  Status PutJob(const JobRecord& job) override;
  Status SaveAnnotatedImage(const std::string& job_id, std::span<const std::uint8_t> jpeg) override;
  Status SaveThumbnail(const std::string& job_id, std::span<const std::uint8_t> jpeg) override;
  Result<JobRecord> GetJob(const std::string& job_id) override;
  Result<std::vector<std::uint8_t>> LoadAnnotatedImage(const std::string& job_id) override;
  Result<std::vector<std::uint8_t>> LoadThumbnail(const std::string& job_id) override;
  Result<std::vector<JobRecord>> ListJobs(std::size_t limit, std::size_t offset) override;
  Result<std::size_t> CountJobs() override;
  Result<std::vector<JobRecord>> ListOverdue(std::int64_t now_ms, std::size_t limit) override;
  Status Enforce() override;

  const SqliteJobStoreOptions& options() const { return options_; }

 private:
  struct Db;  // the SQLite connection and its prepared statements
  SqliteJobStore(SqliteJobStoreOptions options, std::unique_ptr<Db> db);

  Status SaveImageFile(const std::string& job_id, std::span<const std::uint8_t> jpeg,
                       bool thumbnail);
  Result<std::vector<std::uint8_t>> LoadImageFile(const std::string& job_id, bool thumbnail);
  std::filesystem::path ImagePath(std::string_view job_id, bool thumbnail) const;

  const SqliteJobStoreOptions options_;
  const std::filesystem::path images_dir_;
  std::mutex mu_;  // guards db_ and the files under images_dir_
  std::unique_ptr<Db> db_;
};

// ---------------------------------------------------------------------------------------------
// MemoryJobStore: a JobStore in memory (nothing survives the process), for unit tests and
// for processes that keep no history. Same semantics and errors as SqliteJobStore, except
// that nothing is unavailable. Thread-safe.

class MemoryJobStore final : public JobStore {
 public:
  explicit MemoryJobStore(RetentionOptions retention = {},
                          std::function<std::int64_t()> now_ms = {});

  Status PutJob(const JobRecord& job) override;
  Status SaveAnnotatedImage(const std::string& job_id, std::span<const std::uint8_t> jpeg) override;
  Status SaveThumbnail(const std::string& job_id, std::span<const std::uint8_t> jpeg) override;
  Result<JobRecord> GetJob(const std::string& job_id) override;
  Result<std::vector<std::uint8_t>> LoadAnnotatedImage(const std::string& job_id) override;
  Result<std::vector<std::uint8_t>> LoadThumbnail(const std::string& job_id) override;
  Result<std::vector<JobRecord>> ListJobs(std::size_t limit, std::size_t offset) override;
  Result<std::size_t> CountJobs() override;
  Result<std::vector<JobRecord>> ListOverdue(std::int64_t now_ms, std::size_t limit) override;
  Status Enforce() override;

 private:
  struct Entry {
    JobRecord job;
    std::vector<std::uint8_t> image;
    std::vector<std::uint8_t> thumbnail;
  };
  // Newest first, as ListJobs orders them.
  std::vector<const Entry*> SortedLocked() const;

  const RetentionOptions retention_;
  const std::function<std::int64_t()> now_ms_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> jobs_;
};

}  // namespace kadr::jobs
