#include <algorithm>
#include <array>
#include <cstdlib>
#include <limits>
#include <system_error>
#include <utility>

#include "common/clock.h"
#include "jobs/job_store.h"
#include "storage/files.h"
#include "storage/sqlite.h"

namespace kadr::jobs {
namespace {

namespace fs = std::filesystem;

constexpr char kDbFileName[] = "history.db";
constexpr char kImagesDirName[] = "images";
constexpr std::string_view kImageSuffix = ".jpg";
constexpr std::string_view kThumbSuffix = ".thumb.jpg";
constexpr std::string_view kTmpSuffix = ".tmp";
constexpr std::size_t kMaxJobIdLength = 64;
// kMigrations[v] takes a database at PRAGMA user_version v to v + 1; each runs in its own
// transaction together with the version bump. Append new steps; never edit a shipped one.
constexpr std::array<std::string_view, 2> kMigrations = {
    // v0 -> v1: the jobs table. image_bytes / thumb_bytes are the sizes of the files under
    // images/ (0: none), kept here so that retention never has to stat the directory.
    R"sql(
CREATE TABLE jobs (
  id            TEXT PRIMARY KEY NOT NULL,
  kind          TEXT NOT NULL,
  model         TEXT NOT NULL,
  state         TEXT NOT NULL,
  created_ms    INTEGER NOT NULL,
  updated_ms    INTEGER NOT NULL,
  frames_total  INTEGER NOT NULL,
  frames_done   INTEGER NOT NULL,
  source_name   TEXT NOT NULL,
  error_code    TEXT,
  error_message TEXT,
  result_json   TEXT NOT NULL,
  has_image     INTEGER NOT NULL DEFAULT 0,
  image_bytes   INTEGER NOT NULL DEFAULT 0,
  thumb_bytes   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_created ON jobs (created_ms, id);
)sql",
    // v1 -> v2: the job model's deadline (overdue jobs are failed by the recorder), the
    // runner's control topic and the kind-specific details (docs/adr/0008).
    R"sql(
ALTER TABLE jobs ADD COLUMN deadline_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN control_topic TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN details_json TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_by_deadline ON jobs (deadline_ms) WHERE deadline_ms > 0
  AND state IN ('queued', 'running');
)sql",
};
constexpr char kJobColumns[] =
    "id, kind, model, state, created_ms, updated_ms, frames_total, frames_done, source_name, "
    "error_code, error_message, result_json, has_image, deadline_ms, control_topic, details_json";

std::int64_t ClampToInt64(std::uint64_t v) {
  constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  return static_cast<std::int64_t>(std::min(v, kMax));
}

StatusCode StatusCodeFromName(std::string_view name) {
  for (int c = static_cast<int>(StatusCode::kOk);
       c <= static_cast<int>(StatusCode::kPermissionDenied); ++c) {
    if (StatusCodeName(static_cast<StatusCode>(c)) == name) return static_cast<StatusCode>(c);
  }
  return StatusCode::kInternal;  // a name from a newer kadr: still shown as an error
}

// Reads a row selected with kJobColumns.
JobRecord ReadJob(const storage::Statement& s) {
  JobRecord job;
  job.id = s.Text(0);
  job.kind = ParseJobKind(s.Text(1)).value_or(JobKind::kImage);
  job.model = s.Text(2);
  // A state from a newer kadr reads as failed: still shown, never resumed.
  job.state = ParseJobState(s.Text(3)).value_or(JobState::kFailed);
  job.created_ms = s.Int(4);
  job.updated_ms = s.Int(5);
  job.frames_total = s.Int(6);
  job.frames_done = s.Int(7);
  job.source_name = s.Text(8);
  if (!s.IsNull(9)) job.error = Status(StatusCodeFromName(s.Text(9)), s.Text(10));
  job.result_json = s.Text(11);
  job.has_image = s.Int(12) != 0;
  job.deadline_ms = s.Int(13);
  job.control_topic = s.Text(14);
  job.details_json = s.Text(15);
  return job;
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

namespace {
Status CheckJobId(std::string_view id) {
  if (IsValidJobId(id)) return Status::Ok();
  return InvalidArgumentError("invalid job id \"" + std::string(id.substr(0, kMaxJobIdLength)) +
                              "\": expected 1-64 characters from [A-Za-z0-9_-]");
}
}  // namespace

struct SqliteJobStore::Db {
  using Stmt = std::unique_ptr<storage::Statement>;
  // Declared first so that it is destroyed after every statement.
  std::unique_ptr<storage::Database> db;
  Stmt put, get, list, overdue, count, files_of, set_image, set_thumb, delete_job;
  Stmt older_than, beyond_newest, total_image_bytes, oldest_with_images;

  Status PrepareAll() {
    struct Entry {
      Stmt* stmt;
      std::string sql;
    };
    const std::string cols = kJobColumns;
    const Entry entries[] = {
        {&put,
         "INSERT INTO jobs (id, kind, model, state, created_ms, updated_ms, frames_total, "
         "frames_done, source_name, error_code, error_message, result_json, deadline_ms, "
         "control_topic, details_json) "
         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) "
         "ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, model = excluded.model, "
         "state = excluded.state, created_ms = excluded.created_ms, "
         "updated_ms = excluded.updated_ms, frames_total = excluded.frames_total, "
         "frames_done = excluded.frames_done, source_name = excluded.source_name, "
         "error_code = excluded.error_code, error_message = excluded.error_message, "
         "result_json = excluded.result_json, deadline_ms = excluded.deadline_ms, "
         "control_topic = excluded.control_topic, details_json = excluded.details_json"},
        {&overdue,
         "SELECT " + cols +
             " FROM jobs WHERE deadline_ms > 0 AND deadline_ms <= ?1 AND state IN ('queued', "
             "'running') ORDER BY deadline_ms ASC LIMIT ?2"},
        {&get, "SELECT " + cols + " FROM jobs WHERE id = ?1"},
        {&list,
         "SELECT " + cols + " FROM jobs ORDER BY created_ms DESC, id DESC LIMIT ?1 OFFSET ?2"},
        {&count, "SELECT COUNT(*) FROM jobs"},
        {&files_of, "SELECT has_image, thumb_bytes > 0 FROM jobs WHERE id = ?1"},
        {&set_image, "UPDATE jobs SET has_image = 1, image_bytes = ?2 WHERE id = ?1"},
        {&set_thumb, "UPDATE jobs SET thumb_bytes = ?2 WHERE id = ?1"},
        {&delete_job, "DELETE FROM jobs WHERE id = ?1"},
        {&older_than, "SELECT id FROM jobs WHERE created_ms < ?1"},
        {&beyond_newest,
         "SELECT id FROM jobs ORDER BY created_ms DESC, id DESC LIMIT -1 OFFSET ?1"},
        {&total_image_bytes, "SELECT COALESCE(SUM(image_bytes + thumb_bytes), 0) FROM jobs"},
        {&oldest_with_images,
         "SELECT id, image_bytes + thumb_bytes FROM jobs WHERE image_bytes + thumb_bytes > 0 "
         "ORDER BY created_ms ASC, id ASC"},
    };
    for (const Entry& e : entries) {
      ASSIGN_OR_RETURN(*e.stmt, db->Prepare(e.sql));
    }
    return Status::Ok();
  }

  // Which files a job should have: nullopt when there is no such job.
  struct Files {
    bool image = false;
    bool thumb = false;
  };
  Result<std::optional<Files>> FilesOf(std::string_view id) const {
    storage::Statement::Use s(*files_of);
    s->Bind(1, id);
    ASSIGN_OR_RETURN(const bool row, s->Step());
    if (!row) return std::optional<Files>();
    return std::optional<Files>(Files{s->Int(0) != 0, s->Int(1) != 0});
  }

  // Appends the ids a one-column id query returns.
  static Status CollectIds(storage::Statement& s, std::vector<std::string>& ids) {
    while (true) {
      ASSIGN_OR_RETURN(const bool row, s.Step());
      if (!row) return Status::Ok();
      ids.push_back(s.Text(0));
    }
  }
};

Result<std::unique_ptr<SqliteJobStore>> SqliteJobStore::Create(
    const SqliteJobStoreOptions& options) {
  if (options.dir.empty()) return InvalidArgumentError("history directory not set");
  const fs::path images_dir = options.dir / kImagesDirName;
  std::error_code ec;
  fs::create_directories(images_dir, ec);
  if (ec) {
    return UnavailableError("cannot create history directory " + images_dir.string() + ": " +
                            ec.message());
  }

  storage::DatabaseOptions dbo;
  dbo.path = options.dir / kDbFileName;
  dbo.name = "history database";
  dbo.migrations.assign(kMigrations.begin(), kMigrations.end());
  dbo.file_mode = 0600;
  auto db = std::make_unique<Db>();
  ASSIGN_OR_RETURN(db->db, storage::Database::Open(dbo));
  const std::string where = db->db->name();
  RETURN_IF_ERROR(db->PrepareAll().WithContext(where));

  // Remove what a crash can leave in images/: temporary files, and files whose job row is
  // gone (Enforce deletes rows before files) or never recorded the file.
  for (const auto& entry : fs::directory_iterator(images_dir, ec)) {
    const std::string name = entry.path().filename().string();
    std::string_view id;
    bool thumb = false;
    if (EndsWith(name, kTmpSuffix)) {
      fs::remove(entry.path(), ec);
      continue;
    } else if (EndsWith(name, kThumbSuffix)) {
      id = std::string_view(name).substr(0, name.size() - kThumbSuffix.size());
      thumb = true;
    } else if (EndsWith(name, kImageSuffix)) {
      id = std::string_view(name).substr(0, name.size() - kImageSuffix.size());
    } else {
      continue;  // not ours
    }
    if (!IsValidJobId(id)) continue;
    ASSIGN_OR_RETURN(std::optional<Db::Files> files, db->FilesOf(id));
    if (!files.has_value() || !(thumb ? files->thumb : files->image)) {
      fs::remove(entry.path(), ec);
    }
  }
  if (ec) {
    return UnavailableError("cannot clean up " + images_dir.string() + ": " + ec.message());
  }

  return std::unique_ptr<SqliteJobStore>(new SqliteJobStore(options, std::move(db)));
}

SqliteJobStore::SqliteJobStore(SqliteJobStoreOptions options, std::unique_ptr<Db> db)
    : options_(std::move(options)),
      images_dir_(options_.dir / kImagesDirName),
      db_(std::move(db)) {}

SqliteJobStore::~SqliteJobStore() = default;

fs::path SqliteJobStore::ImagePath(std::string_view job_id, bool thumbnail) const {
  std::string name(job_id);
  name += thumbnail ? kThumbSuffix : kImageSuffix;
  return images_dir_ / name;
}

Status SqliteJobStore::PutJob(const JobRecord& job) {
  RETURN_IF_ERROR(CheckJobId(job.id));
  std::lock_guard lock(mu_);
  storage::Statement::Use put(*db_->put);
  put->Bind(1, job.id)
      .Bind(2, JobKindName(job.kind))
      .Bind(3, job.model)
      .Bind(4, JobStateName(job.state))
      .Bind(5, job.created_ms)
      .Bind(6, job.updated_ms)
      .Bind(7, job.frames_total)
      .Bind(8, job.frames_done)
      .Bind(9, job.source_name)
      .Bind(12, job.result_json)
      .Bind(13, job.deadline_ms)
      .Bind(14, job.control_topic)
      .Bind(15, job.details_json);
  if (job.error.has_value()) {
    put->Bind(10, StatusCodeName(job.error->code())).Bind(11, job.error->message());
  } else {
    put->BindNull(10).BindNull(11);
  }
  return put->Run().WithContext("storing job " + job.id);
}

Status SqliteJobStore::SaveAnnotatedImage(const std::string& job_id,
                                          std::span<const std::uint8_t> jpeg) {
  return SaveImageFile(job_id, jpeg, /*thumbnail=*/false);
}

Status SqliteJobStore::SaveThumbnail(const std::string& job_id,
                                     std::span<const std::uint8_t> jpeg) {
  return SaveImageFile(job_id, jpeg, /*thumbnail=*/true);
}

Status SqliteJobStore::SaveImageFile(const std::string& job_id, std::span<const std::uint8_t> jpeg,
                                     bool thumbnail) {
  RETURN_IF_ERROR(CheckJobId(job_id));
  if (jpeg.empty()) return InvalidArgumentError("empty image for job " + job_id);
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(std::optional<Db::Files> files, db_->FilesOf(job_id));
  if (!files.has_value()) return NotFoundError("no job " + job_id);
  RETURN_IF_ERROR(storage::WriteFileAtomically(ImagePath(job_id, thumbnail), jpeg));
  storage::Statement::Use update(thumbnail ? *db_->set_thumb : *db_->set_image);
  update->Bind(1, job_id).Bind(2, static_cast<std::int64_t>(jpeg.size()));
  return update->Run().WithContext("recording the image of job " + job_id);
}

Result<JobRecord> SqliteJobStore::GetJob(const std::string& job_id) {
  RETURN_IF_ERROR(CheckJobId(job_id));
  std::lock_guard lock(mu_);
  storage::Statement::Use get(*db_->get);
  get->Bind(1, job_id);
  ASSIGN_OR_RETURN(const bool row, get->Step());
  if (!row) return NotFoundError("no job " + job_id);
  return ReadJob(*get);
}

Result<std::vector<std::uint8_t>> SqliteJobStore::LoadAnnotatedImage(const std::string& job_id) {
  return LoadImageFile(job_id, /*thumbnail=*/false);
}

Result<std::vector<std::uint8_t>> SqliteJobStore::LoadThumbnail(const std::string& job_id) {
  return LoadImageFile(job_id, /*thumbnail=*/true);
}

Result<std::vector<std::uint8_t>> SqliteJobStore::LoadImageFile(const std::string& job_id,
                                                                bool thumbnail) {
  RETURN_IF_ERROR(CheckJobId(job_id));
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(std::optional<Db::Files> files, db_->FilesOf(job_id));
  if (!files.has_value()) return NotFoundError("no job " + job_id);
  if (!(thumbnail ? files->thumb : files->image)) {
    return NotFoundError(std::string(thumbnail ? "no thumbnail" : "no image") + " for job " +
                         job_id);
  }
  return storage::ReadFileBytes(ImagePath(job_id, thumbnail));
}

Result<std::vector<JobRecord>> SqliteJobStore::ListJobs(std::size_t limit, std::size_t offset) {
  std::vector<JobRecord> jobs;
  if (limit == 0) return jobs;
  std::lock_guard lock(mu_);
  storage::Statement::Use list(*db_->list);
  list->Bind(1, ClampToInt64(limit)).Bind(2, ClampToInt64(offset));
  while (true) {
    ASSIGN_OR_RETURN(const bool row, list->Step());
    if (!row) return jobs;
    jobs.push_back(ReadJob(*list));
  }
}

Result<std::vector<JobRecord>> SqliteJobStore::ListOverdue(std::int64_t now_ms, std::size_t limit) {
  std::vector<JobRecord> jobs;
  if (limit == 0) return jobs;
  std::lock_guard lock(mu_);
  storage::Statement::Use overdue(*db_->overdue);
  overdue->Bind(1, now_ms).Bind(2, ClampToInt64(limit));
  while (true) {
    ASSIGN_OR_RETURN(const bool row, overdue->Step());
    if (!row) return jobs;
    jobs.push_back(ReadJob(*overdue));
  }
}

Result<std::size_t> SqliteJobStore::CountJobs() {
  std::lock_guard lock(mu_);
  storage::Statement::Use count(*db_->count);
  ASSIGN_OR_RETURN(const bool row, count->Step());
  if (!row) return InternalError("counting jobs gave no row");
  return static_cast<std::size_t>(count->Int(0));
}

Status SqliteJobStore::Enforce() {
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  const std::int64_t now_ms = UnixMillis();
  const std::int64_t cutoff_ms =
      now_ms - duration_cast<milliseconds>(options_.retention.max_age).count();

  std::lock_guard lock(mu_);
  std::vector<std::string> doomed;
  storage::Database::Transaction tx(*db_->db);
  RETURN_IF_ERROR(tx.Begin());
  // Deletes the ids collected since `from`, so that the next rule sees what is left.
  auto delete_from = [&](std::size_t from) -> Status {
    for (std::size_t i = from; i < doomed.size(); ++i) {
      storage::Statement::Use del(*db_->delete_job);
      del->Bind(1, doomed[i]);
      RETURN_IF_ERROR(del->Run().WithContext("deleting job " + doomed[i]));
    }
    return Status::Ok();
  };

  {  // max_age
    storage::Statement::Use older(*db_->older_than);
    older->Bind(1, cutoff_ms);
    RETURN_IF_ERROR(Db::CollectIds(*older, doomed));
  }
  RETURN_IF_ERROR(delete_from(0));

  std::size_t from = doomed.size();
  {  // max_jobs
    storage::Statement::Use beyond(*db_->beyond_newest);
    beyond->Bind(1, ClampToInt64(options_.retention.max_jobs));
    RETURN_IF_ERROR(Db::CollectIds(*beyond, doomed));
  }
  RETURN_IF_ERROR(delete_from(from));

  from = doomed.size();
  {  // max_image_bytes
    std::int64_t total = 0;
    {
      storage::Statement::Use sum(*db_->total_image_bytes);
      ASSIGN_OR_RETURN(const bool row, sum->Step());
      total = row ? sum->Int(0) : 0;
    }
    const std::int64_t budget = ClampToInt64(options_.retention.max_image_bytes);
    if (total > budget) {
      storage::Statement::Use oldest(*db_->oldest_with_images);
      while (total > budget) {
        ASSIGN_OR_RETURN(const bool row, oldest->Step());
        if (!row) break;
        doomed.push_back(oldest->Text(0));
        total -= oldest->Int(1);
      }
    }
  }
  RETURN_IF_ERROR(delete_from(from));
  RETURN_IF_ERROR(tx.Commit());

  // Rows first, then files: a crash in between leaves files without rows, which Create removes.
  Status result;
  for (const std::string& id : doomed) {
    for (bool thumb : {false, true}) {
      std::error_code ec;
      fs::remove(ImagePath(id, thumb), ec);
      if (ec && result.ok()) {
        result = UnavailableError("cannot remove image of deleted job " + id + ": " + ec.message());
      }
    }
  }
  return result;
}

}  // namespace kadr::jobs
