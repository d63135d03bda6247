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
#include "jobs/job_store.h"

namespace kadr::jobs {

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

  ~SqliteJobStore();
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

}  // namespace kadr::jobs
