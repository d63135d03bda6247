#include <algorithm>
#include <chrono>
#include <utility>

#include "common/clock.h"
#include "jobs/job_store.h"

namespace kadr::jobs {
namespace {

Status CheckJobId(std::string_view id) {
  if (IsValidJobId(id)) return Status::Ok();
  return InvalidArgumentError("invalid job id \"" + std::string(id.substr(0, 64)) +
                              "\": expected 1-64 characters from [A-Za-z0-9_-]");
}

Status UnknownJob(const std::string& id) { return NotFoundError("unknown job '" + id + "'"); }

}  // namespace

MemoryJobStore::MemoryJobStore(RetentionOptions retention, std::function<std::int64_t()> now_ms)
    : retention_(retention), now_ms_(std::move(now_ms)) {}

Status MemoryJobStore::PutJob(const JobRecord& job) {
  RETURN_IF_ERROR(CheckJobId(job.id));
  std::lock_guard lock(mu_);
  Entry& e = jobs_[job.id];
  const bool has_image = e.job.has_image;
  e.job = job;
  e.job.has_image = has_image;
  return Status::Ok();
}

Status MemoryJobStore::SaveAnnotatedImage(const std::string& job_id,
                                          std::span<const std::uint8_t> jpeg) {
  RETURN_IF_ERROR(CheckJobId(job_id));
  if (jpeg.empty()) return InvalidArgumentError("empty annotated image");
  std::lock_guard lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return UnknownJob(job_id);
  it->second.image.assign(jpeg.begin(), jpeg.end());
  it->second.job.has_image = true;
  return Status::Ok();
}

Status MemoryJobStore::SaveThumbnail(const std::string& job_id,
                                     std::span<const std::uint8_t> jpeg) {
  RETURN_IF_ERROR(CheckJobId(job_id));
  if (jpeg.empty()) return InvalidArgumentError("empty thumbnail");
  std::lock_guard lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return UnknownJob(job_id);
  it->second.thumbnail.assign(jpeg.begin(), jpeg.end());
  return Status::Ok();
}

Result<JobRecord> MemoryJobStore::GetJob(const std::string& job_id) {
  RETURN_IF_ERROR(CheckJobId(job_id));
  std::lock_guard lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return UnknownJob(job_id);
  return it->second.job;
}

Result<std::vector<std::uint8_t>> MemoryJobStore::LoadAnnotatedImage(const std::string& job_id) {
  RETURN_IF_ERROR(CheckJobId(job_id));
  std::lock_guard lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.image.empty()) {
    return NotFoundError("no annotated image for job '" + job_id + "'");
  }
  return it->second.image;
}

Result<std::vector<std::uint8_t>> MemoryJobStore::LoadThumbnail(const std::string& job_id) {
  RETURN_IF_ERROR(CheckJobId(job_id));
  std::lock_guard lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.thumbnail.empty()) {
    return NotFoundError("no thumbnail for job '" + job_id + "'");
  }
  return it->second.thumbnail;
}

std::vector<const MemoryJobStore::Entry*> MemoryJobStore::SortedLocked() const {
  std::vector<const Entry*> sorted;
  sorted.reserve(jobs_.size());
  for (const auto& [id, e] : jobs_) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(), [](const Entry* a, const Entry* b) {
    if (a->job.created_ms != b->job.created_ms) return a->job.created_ms > b->job.created_ms;
    return a->job.id > b->job.id;
  });
  return sorted;
}

Result<std::vector<JobRecord>> MemoryJobStore::ListJobs(std::size_t limit, std::size_t offset) {
  std::lock_guard lock(mu_);
  std::vector<JobRecord> out;
  const auto sorted = SortedLocked();
  for (std::size_t i = offset; i < sorted.size() && out.size() < limit; ++i) {
    out.push_back(sorted[i]->job);
  }
  return out;
}

Result<std::size_t> MemoryJobStore::CountJobs() {
  std::lock_guard lock(mu_);
  return jobs_.size();
}

Result<std::vector<JobRecord>> MemoryJobStore::ListOverdue(std::int64_t now_ms, std::size_t limit) {
  std::lock_guard lock(mu_);
  std::vector<JobRecord> out;
  for (const auto& [id, e] : jobs_) {
    if (e.job.deadline_ms > 0 && e.job.deadline_ms <= now_ms && !IsFinished(e.job.state)) {
      out.push_back(e.job);
    }
  }
  std::sort(out.begin(), out.end(),
            [](const JobRecord& a, const JobRecord& b) { return a.deadline_ms < b.deadline_ms; });
  if (out.size() > limit) out.resize(limit);
  return out;
}

Status MemoryJobStore::Enforce() {
  const std::int64_t now = now_ms_ ? now_ms_() : UnixMillis();
  const std::int64_t cutoff =
      now - std::chrono::duration_cast<std::chrono::milliseconds>(retention_.max_age).count();
  std::lock_guard lock(mu_);
  std::erase_if(jobs_, [&](const auto& entry) { return entry.second.job.created_ms < cutoff; });
  auto sorted = SortedLocked();
  std::vector<std::string> doomed;
  std::uint64_t image_bytes = 0;
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    if (i >= retention_.max_jobs) {
      doomed.push_back(sorted[i]->job.id);
    } else {
      image_bytes += sorted[i]->image.size() + sorted[i]->thumbnail.size();
    }
  }
  for (const auto& id : doomed) jobs_.erase(id);
  sorted = SortedLocked();
  for (auto it = sorted.rbegin(); it != sorted.rend() && image_bytes > retention_.max_image_bytes;
       ++it) {
    const std::uint64_t bytes = (*it)->image.size() + (*it)->thumbnail.size();
    if (bytes == 0) continue;
    image_bytes -= bytes;
    const std::string id = (*it)->job.id;  // a copy: the entry goes
    jobs_.erase(id);
  }
  return Status::Ok();
}

}  // namespace kadr::jobs
