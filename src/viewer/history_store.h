// HistoryStore: the viewer's persistent record of jobs, their results and annotated images.
//
// Rows live in a SQLite database `<dir>/history.db`; annotated images (and optional
// thumbnails) are files under `<dir>/images/`, named by job id and written atomically
// (temporary file, fsync, rename), so a reader never sees half an image. Retention
// (Enforce) removes the oldest jobs, rows and files together.
//
// Thread-safe: every method may be called from any thread; calls are serialised on one
// SQLite connection (WAL mode, busy timeout). Only one HistoryStore should own a directory
// at a time; a second process sharing it gets kUnavailable while the database is busy.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kadr::viewer {

struct HistoryOptions {
  // Directory holding history.db and images/; created if missing.
  std::filesystem::path dir;
  // Enforce keeps at most this many jobs (the newest by created_ms).
  std::size_t max_jobs = 10000;
  // Enforce keeps the annotated images and thumbnails of all jobs under this many bytes in
  // total, deleting the oldest jobs that have images first.
  std::uint64_t max_image_bytes = std::uint64_t{2} << 30;  // 2 GiB
  // Enforce deletes jobs created longer ago than this.
  std::chrono::hours max_age{24 * 7};
};

// One job as the viewer shows it. Times are Unix milliseconds, set by the caller.
struct JobRecord {
  std::string id;     // [A-Za-z0-9_-]{1,64}; see IsValidJobId
  std::string kind;   // "image"; later "video", "stream"
  std::string model;  // registry name of the model
  std::string state;  // "queued", "running", "done", "failed", "cancelled"
  std::int64_t created_ms = 0;
  std::int64_t updated_ms = 0;
  std::int64_t frames_total = 1;
  std::int64_t frames_done = 0;
  std::string source_name;      // uploaded file name or stream URL, for display
  std::optional<Status> error;  // why the job failed, when it did
  std::string result_json;      // FrameResult JSON of the last (or only) frame; may be empty
  // Output only: whether an annotated image is stored. Maintained by SaveAnnotatedImage and
  // ignored by PutJob.
  bool has_image = false;
};

// True when `id` is 1..64 characters from [A-Za-z0-9_-]. Only such ids ever reach a path.
bool IsValidJobId(std::string_view id);

class HistoryStore {
 public:
  // Opens (creating if needed) the store under options.dir, migrates the schema to the
  // current version, checks the database's integrity and removes image files left behind by
  // a crash (temporary files, files of deleted jobs).
  // Errors: kInvalidArgument (empty dir), kUnavailable (directory or database cannot be
  // created/opened), kInternal (database corrupt or not a SQLite file; the message names the
  // file), kFailedPrecondition (database written by a newer kadr schema).
  static Result<std::unique_ptr<HistoryStore>> Create(const HistoryOptions& options);

  ~HistoryStore();
  HistoryStore(const HistoryStore&) = delete;
  HistoryStore& operator=(const HistoryStore&) = delete;

  // Inserts the job or replaces every field of the stored one with the same id (has_image
  // excepted). Errors: kInvalidArgument (bad id), kInternal / kUnavailable (database).
  Status PutJob(const JobRecord& job);

  // Stores the annotated JPEG of an existing job as images/<id>.jpg, replacing any previous
  // one, and sets its has_image. Errors: kInvalidArgument (bad id, empty image), kNotFound
  // (no such job), kUnavailable (file system), kInternal / kUnavailable (database).
  Status SaveAnnotatedImage(const std::string& job_id, std::span<const std::uint8_t> jpeg);
  // Same for a small preview the caller has already encoded (images/<id>.thumb.jpg).
  Status SaveThumbnail(const std::string& job_id, std::span<const std::uint8_t> jpeg);

  // Errors: kInvalidArgument (bad id), kNotFound, kInternal / kUnavailable.
  Result<JobRecord> GetJob(const std::string& job_id);
  // Errors: kInvalidArgument (bad id), kNotFound (no such job or no image stored),
  // kUnavailable (file unreadable).
  Result<std::vector<std::uint8_t>> LoadAnnotatedImage(const std::string& job_id);
  Result<std::vector<std::uint8_t>> LoadThumbnail(const std::string& job_id);

  // Up to `limit` jobs, newest (created_ms, then id) first, skipping the first `offset`.
  Result<std::vector<JobRecord>> ListJobs(std::size_t limit, std::size_t offset);
  Result<std::size_t> CountJobs();

  // Applies retention, in this order: jobs older than max_age; the oldest jobs beyond
  // max_jobs; then the oldest jobs with images until all images fit in max_image_bytes.
  // Deletes rows first, then their files. Jobs in any state are eligible. Not called
  // automatically: the owner runs it periodically and after adding jobs.
  // Errors: kInternal / kUnavailable (database), kUnavailable (a file could not be removed;
  // the rows are gone and the next Create removes the file).
  Status Enforce();

  const HistoryOptions& options() const { return options_; }

 private:
  struct Db;  // the SQLite connection and its prepared statements
  HistoryStore(HistoryOptions options, std::unique_ptr<Db> db);

  Status SaveImageFile(const std::string& job_id, std::span<const std::uint8_t> jpeg,
                       bool thumbnail);
  Result<std::vector<std::uint8_t>> LoadImageFile(const std::string& job_id, bool thumbnail);
  std::filesystem::path ImagePath(std::string_view job_id, bool thumbnail) const;

  const HistoryOptions options_;
  const std::filesystem::path images_dir_;
  std::mutex mu_;  // guards db_ and the files under images_dir_
  std::unique_ptr<Db> db_;
};

}  // namespace kadr::viewer
