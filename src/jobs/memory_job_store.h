// MemoryJobStore: a JobStore in memory (nothing survives the process), for unit tests and
// for processes that keep no history. Same semantics and errors as SqliteJobStore, except
// that nothing is unavailable. Thread-safe.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "jobs/job_store.h"

namespace kadr::jobs {

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
