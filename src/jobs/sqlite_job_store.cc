#include "jobs/sqlite_job_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <system_error>
#include <utility>

#include <sqlite3.h>

#include "common/clock.h"
#include "common/sqlite_status.h"

namespace kadr::jobs {
namespace {

namespace fs = std::filesystem;

constexpr char kDbFileName[] = "history.db";
constexpr char kImagesDirName[] = "images";
constexpr std::string_view kImageSuffix = ".jpg";
constexpr std::string_view kThumbSuffix = ".thumb.jpg";
constexpr std::string_view kTmpSuffix = ".tmp";
constexpr std::size_t kMaxJobIdLength = 64;
// A second process holding the write lock (e.g. a CLI inspecting the history) is waited for
// this long before a call fails with kUnavailable.
constexpr int kBusyTimeoutMs = 5000;

// kMigrations[v] takes a database at PRAGMA user_version v to v + 1; each runs in its own
// transaction together with the version bump. Append new steps; never edit a shipped one.
constexpr std::array<const char*, 2> kMigrations = {
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
constexpr int kSchemaVersion = static_cast<int>(kMigrations.size());

constexpr char kJobColumns[] =
    "id, kind, model, state, created_ms, updated_ms, frames_total, frames_done, source_name, "
    "error_code, error_message, result_json, has_image, deadline_ms, control_topic, details_json";

Status SqliteError(sqlite3* db, int rc, std::string_view what) {
  std::string m(what);
  m += ": ";
  // errmsg describes the connection's latest failure; errstr only the code.
  m += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  m += " (sqlite code " + std::to_string(rc) + ")";
  return {SqliteStatusCode(rc), std::move(m)};
}

Status ErrnoError(std::string_view what, const fs::path& path, int err) {
  std::string m(what);
  m += " " + path.string() + ": " + std::strerror(err);
  return UnavailableError(std::move(m));
}

struct ConnCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using ConnPtr = std::unique_ptr<sqlite3, ConnCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// Resets a cached statement on scope exit so it never holds a read snapshot between calls.
class StmtUse {
 public:
  explicit StmtUse(const StmtPtr& s) : s_(s.get()) {}
  ~StmtUse() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  StmtUse(const StmtUse&) = delete;
  StmtUse& operator=(const StmtUse&) = delete;
  sqlite3_stmt* get() const { return s_; }

 private:
  sqlite3_stmt* s_;
};

Status Exec(sqlite3* db, const std::string& sql, std::string_view what) {
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db, rc, what);
  return Status::Ok();
}

Result<StmtPtr> Prepare(sqlite3* db, const std::string& sql) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v3(db, sql.c_str(), static_cast<int>(sql.size() + 1),
                              SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
  StmtPtr stmt(raw);
  if (rc != SQLITE_OK) return SqliteError(db, rc, "preparing \"" + sql + "\"");
  return stmt;
}

// Runs a one-row, one-column query (a PRAGMA) and returns the column as text ("" for no row).
Result<std::string> QueryText(sqlite3* db, const std::string& sql) {
  ASSIGN_OR_RETURN(StmtPtr stmt, Prepare(db, sql));
  int rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) return std::string();
  if (rc != SQLITE_ROW) return SqliteError(db, rc, sql);
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), 0));
  return std::string(text != nullptr ? text : "");
}

// Collects bind failures so a statement is bound in one go and checked once.
class Binder {
 public:
  explicit Binder(sqlite3_stmt* s) : s_(s) {}
  // The bound text must outlive the statement's step (SQLITE_STATIC).
  Binder& Text(int i, std::string_view v) {
    Check(sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC));
    return *this;
  }
  Binder& Int(int i, std::int64_t v) {
    Check(sqlite3_bind_int64(s_, i, v));
    return *this;
  }
  Binder& Null(int i) {
    Check(sqlite3_bind_null(s_, i));
    return *this;
  }
  Status Done(sqlite3* db) const {
    if (rc_ != SQLITE_OK) return SqliteError(db, rc_, "binding parameters");
    return Status::Ok();
  }

 private:
  void Check(int rc) {
    if (rc_ == SQLITE_OK) rc_ = rc;
  }
  sqlite3_stmt* s_;
  int rc_ = SQLITE_OK;
};

std::int64_t ClampToInt64(std::uint64_t v) {
  constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  return static_cast<std::int64_t>(std::min(v, kMax));
}

std::string ColumnText(sqlite3_stmt* s, int i) {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
  if (p == nullptr) return {};
  return std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s, i)));
}

StatusCode StatusCodeFromName(std::string_view name) {
  for (int c = static_cast<int>(StatusCode::kOk);
       c <= static_cast<int>(StatusCode::kDeadlineExceeded); ++c) {
    if (StatusCodeName(static_cast<StatusCode>(c)) == name) return static_cast<StatusCode>(c);
  }
  return StatusCode::kInternal;  // a name from a newer kadr: still shown as an error
}

// Reads a row selected with kJobColumns.
JobRecord ReadJob(sqlite3_stmt* s) {
  JobRecord job;
  job.id = ColumnText(s, 0);
  job.kind = ParseJobKind(ColumnText(s, 1)).value_or(JobKind::kImage);
  job.model = ColumnText(s, 2);
  // A state from a newer kadr reads as failed: still shown, never resumed.
  job.state = ParseJobState(ColumnText(s, 3)).value_or(JobState::kFailed);
  job.created_ms = sqlite3_column_int64(s, 4);
  job.updated_ms = sqlite3_column_int64(s, 5);
  job.frames_total = sqlite3_column_int64(s, 6);
  job.frames_done = sqlite3_column_int64(s, 7);
  job.source_name = ColumnText(s, 8);
  if (sqlite3_column_type(s, 9) != SQLITE_NULL) {
    job.error = Status(StatusCodeFromName(ColumnText(s, 9)), ColumnText(s, 10));
  }
  job.result_json = ColumnText(s, 11);
  job.has_image = sqlite3_column_int64(s, 12) != 0;
  job.deadline_ms = sqlite3_column_int64(s, 13);
  job.control_topic = ColumnText(s, 14);
  job.details_json = ColumnText(s, 15);
  return job;
}

Status FsyncPath(const fs::path& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open", path, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoError("cannot fsync", path, err);
  return Status::Ok();
}

// Writes `bytes` to `path` so that readers see either the old file or the whole new one, also
// after a crash: write a temporary file, fsync it, rename it over `path`, fsync the directory.
Status WriteFileAtomically(const fs::path& path, std::span<const std::uint8_t> bytes) {
  fs::path tmp = path;
  tmp += kTmpSuffix;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", tmp, errno);
  std::size_t written = 0;
  while (written < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return ErrnoError("cannot write", tmp, err);
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoError("cannot flush", tmp, err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoError("cannot rename into", path, err);
  }
  return FsyncPath(path.parent_path(), O_RDONLY | O_DIRECTORY);
}

Result<std::vector<std::uint8_t>> ReadWholeFile(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return NotFoundError("no image file " + path.string());
    return ErrnoError("cannot open", path, err);
  }
  std::vector<std::uint8_t> out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) out.reserve(static_cast<std::size_t>(st.st_size));
  std::uint8_t buf[64 * 1024];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return ErrnoError("cannot read", path, err);
    }
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  ::close(fd);
  return out;
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
  // Declared first so that it is destroyed after every statement.
  ConnPtr conn;
  StmtPtr begin, commit, rollback;
  StmtPtr put, get, list, overdue, count, files_of, set_image, set_thumb, delete_job;
  StmtPtr older_than, beyond_newest, total_image_bytes, oldest_with_images;

  sqlite3* c() const { return conn.get(); }

  Status Step(const StmtPtr& s, std::string_view what) const {
    int rc = sqlite3_step(s.get());
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return SqliteError(c(), rc, what);
    return Status::Ok();
  }
  Status Run(const StmtPtr& s, std::string_view what) const {
    StmtUse use(s);
    return Step(s, what);
  }
  Status PrepareAll() {
    struct Entry {
      StmtPtr* stmt;
      std::string sql;
    };
    const std::string cols = kJobColumns;
    const Entry entries[] = {
        {&begin, "BEGIN IMMEDIATE"},
        {&commit, "COMMIT"},
        {&rollback, "ROLLBACK"},
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
      ASSIGN_OR_RETURN(*e.stmt, Prepare(c(), e.sql));
    }
    return Status::Ok();
  }

  // Which files a job should have: nullopt when there is no such job.
  struct Files {
    bool image = false;
    bool thumb = false;
  };
  Result<std::optional<Files>> FilesOf(std::string_view id) const {
    StmtUse use(files_of);
    RETURN_IF_ERROR(Binder(files_of.get()).Text(1, id).Done(c()));
    int rc = sqlite3_step(files_of.get());
    if (rc == SQLITE_DONE) return std::optional<Files>();
    if (rc != SQLITE_ROW) return SqliteError(c(), rc, "looking up job");
    return std::optional<Files>(Files{sqlite3_column_int64(files_of.get(), 0) != 0,
                                      sqlite3_column_int64(files_of.get(), 1) != 0});
  }

  // Appends the ids a one-column id query returns.
  Status CollectIds(const StmtPtr& s, std::vector<std::string>& ids) const {
    int rc;
    while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) ids.push_back(ColumnText(s.get(), 0));
    if (rc != SQLITE_DONE) return SqliteError(c(), rc, "selecting jobs to delete");
    return Status::Ok();
  }

  // Rolls back unless Commit succeeded. BEGIN IMMEDIATE takes the write lock up front, so a
  // writer never fails upgrading a read lock.
  class Transaction {
   public:
    explicit Transaction(const Db& db) : db_(db) {}
    ~Transaction() {
      if (open_) (void)db_.Run(db_.rollback, "rollback");
    }
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    Status Begin() {
      RETURN_IF_ERROR(db_.Run(db_.begin, "beginning transaction"));
      open_ = true;
      return Status::Ok();
    }
    Status Commit() {
      RETURN_IF_ERROR(db_.Run(db_.commit, "committing"));
      open_ = false;
      return Status::Ok();
    }

   private:
    const Db& db_;
    bool open_ = false;
  };
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

  const fs::path db_path = options.dir / kDbFileName;
  const std::string where = "history database " + db_path.string();
  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(db_path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  auto db = std::make_unique<Db>();
  db->conn.reset(raw);  // closed on every path, also when opening failed
  if (rc != SQLITE_OK) return SqliteError(raw, rc, "cannot open " + where);
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, kBusyTimeoutMs);

  // The first statement reads the file header: a file that is not a database fails here.
  auto journal = QueryText(raw, "PRAGMA journal_mode = WAL");
  if (!journal.has_value()) {
    const Status& s = journal.error();
    if (s.code() == StatusCode::kInternal) {
      return InternalError(where + " is corrupt or not a SQLite database (move it aside to " +
                           "start an empty history): " + s.message());
    }
    return s.WithContext("cannot open " + where);
  }
  auto check = QueryText(raw, "PRAGMA quick_check");
  if (!check.has_value()) return check.error().WithContext(where + " failed its integrity check");
  if (*check != "ok") {
    return InternalError(where +
                         " is corrupt (move it aside to start an empty history): " + *check);
  }
  // WAL with synchronous=NORMAL: a committed job survives a process crash; a power cut may
  // lose the last commits but never corrupts the database.
  RETURN_IF_ERROR(
      Exec(raw, "PRAGMA synchronous = NORMAL", "setting synchronous").WithContext(where));

  ASSIGN_OR_RETURN(std::string version_text, QueryText(raw, "PRAGMA user_version"));
  const int version = std::atoi(version_text.c_str());
  if (version > kSchemaVersion) {
    return FailedPreconditionError(where + " has schema version " + std::to_string(version) +
                                   ", newer than this kadr's " + std::to_string(kSchemaVersion));
  }
  for (int v = version; v < kSchemaVersion; ++v) {
    const std::string step = "migrating schema from version " + std::to_string(v);
    // One transaction per step: a crash leaves the database at v or v + 1, never between.
    std::string sql = "BEGIN IMMEDIATE;\n";
    sql += kMigrations[static_cast<std::size_t>(v)];
    sql += "\nPRAGMA user_version = " + std::to_string(v + 1) + ";\nCOMMIT;";
    if (Status s = Exec(raw, sql, step); !s.ok()) {
      (void)Exec(raw, "ROLLBACK", "rollback");
      return s.WithContext(where);
    }
  }
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
  StmtUse use(db_->put);
  Binder b(db_->put.get());
  b.Text(1, job.id)
      .Text(2, JobKindName(job.kind))
      .Text(3, job.model)
      .Text(4, JobStateName(job.state))
      .Int(5, job.created_ms)
      .Int(6, job.updated_ms)
      .Int(7, job.frames_total)
      .Int(8, job.frames_done)
      .Text(9, job.source_name)
      .Text(12, job.result_json)
      .Int(13, job.deadline_ms)
      .Text(14, job.control_topic)
      .Text(15, job.details_json);
  if (job.error.has_value()) {
    b.Text(10, StatusCodeName(job.error->code())).Text(11, job.error->message());
  } else {
    b.Null(10).Null(11);
  }
  RETURN_IF_ERROR(b.Done(db_->c()));
  return db_->Step(db_->put, "storing job " + job.id);
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
  RETURN_IF_ERROR(WriteFileAtomically(ImagePath(job_id, thumbnail), jpeg));
  const StmtPtr& update = thumbnail ? db_->set_thumb : db_->set_image;
  StmtUse use(update);
  RETURN_IF_ERROR(Binder(update.get())
                      .Text(1, job_id)
                      .Int(2, static_cast<std::int64_t>(jpeg.size()))
                      .Done(db_->c()));
  return db_->Step(update, "recording image of job " + job_id);
}

Result<JobRecord> SqliteJobStore::GetJob(const std::string& job_id) {
  RETURN_IF_ERROR(CheckJobId(job_id));
  std::lock_guard lock(mu_);
  StmtUse use(db_->get);
  RETURN_IF_ERROR(Binder(db_->get.get()).Text(1, job_id).Done(db_->c()));
  int rc = sqlite3_step(db_->get.get());
  if (rc == SQLITE_DONE) return NotFoundError("no job " + job_id);
  if (rc != SQLITE_ROW) return SqliteError(db_->c(), rc, "reading job " + job_id);
  return ReadJob(db_->get.get());
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
  return ReadWholeFile(ImagePath(job_id, thumbnail));
}

Result<std::vector<JobRecord>> SqliteJobStore::ListJobs(std::size_t limit, std::size_t offset) {
  std::vector<JobRecord> jobs;
  if (limit == 0) return jobs;
  std::lock_guard lock(mu_);
  StmtUse use(db_->list);
  RETURN_IF_ERROR(Binder(db_->list.get())
                      .Int(1, ClampToInt64(limit))
                      .Int(2, ClampToInt64(offset))
                      .Done(db_->c()));
  int rc;
  while ((rc = sqlite3_step(db_->list.get())) == SQLITE_ROW)
    jobs.push_back(ReadJob(db_->list.get()));
  if (rc != SQLITE_DONE) return SqliteError(db_->c(), rc, "listing jobs");
  return jobs;
}

Result<std::vector<JobRecord>> SqliteJobStore::ListOverdue(std::int64_t now_ms, std::size_t limit) {
  std::vector<JobRecord> jobs;
  if (limit == 0) return jobs;
  std::lock_guard lock(mu_);
  StmtUse use(db_->overdue);
  RETURN_IF_ERROR(
      Binder(db_->overdue.get()).Int(1, now_ms).Int(2, ClampToInt64(limit)).Done(db_->c()));
  int rc;
  while ((rc = sqlite3_step(db_->overdue.get())) == SQLITE_ROW) {
    jobs.push_back(ReadJob(db_->overdue.get()));
  }
  if (rc != SQLITE_DONE) return SqliteError(db_->c(), rc, "listing overdue jobs");
  return jobs;
}

Result<std::size_t> SqliteJobStore::CountJobs() {
  std::lock_guard lock(mu_);
  StmtUse use(db_->count);
  int rc = sqlite3_step(db_->count.get());
  if (rc != SQLITE_ROW) return SqliteError(db_->c(), rc, "counting jobs");
  return static_cast<std::size_t>(sqlite3_column_int64(db_->count.get(), 0));
}

Status SqliteJobStore::Enforce() {
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  const std::int64_t now_ms = UnixMillis();
  const std::int64_t cutoff_ms =
      now_ms - duration_cast<milliseconds>(options_.retention.max_age).count();

  std::lock_guard lock(mu_);
  std::vector<std::string> doomed;
  Db::Transaction tx(*db_);
  RETURN_IF_ERROR(tx.Begin());
  // Deletes the ids collected since `from`, so that the next rule sees what is left.
  auto delete_from = [&](std::size_t from) -> Status {
    for (std::size_t i = from; i < doomed.size(); ++i) {
      StmtUse use(db_->delete_job);
      RETURN_IF_ERROR(Binder(db_->delete_job.get()).Text(1, doomed[i]).Done(db_->c()));
      RETURN_IF_ERROR(db_->Step(db_->delete_job, "deleting job " + doomed[i]));
    }
    return Status::Ok();
  };

  {  // max_age
    StmtUse use(db_->older_than);
    RETURN_IF_ERROR(Binder(db_->older_than.get()).Int(1, cutoff_ms).Done(db_->c()));
    RETURN_IF_ERROR(db_->CollectIds(db_->older_than, doomed));
  }
  RETURN_IF_ERROR(delete_from(0));

  std::size_t from = doomed.size();
  {  // max_jobs
    StmtUse use(db_->beyond_newest);
    RETURN_IF_ERROR(Binder(db_->beyond_newest.get())
                        .Int(1, ClampToInt64(options_.retention.max_jobs))
                        .Done(db_->c()));
    RETURN_IF_ERROR(db_->CollectIds(db_->beyond_newest, doomed));
  }
  RETURN_IF_ERROR(delete_from(from));

  from = doomed.size();
  {  // max_image_bytes
    std::int64_t total = 0;
    {
      StmtUse use(db_->total_image_bytes);
      int rc = sqlite3_step(db_->total_image_bytes.get());
      if (rc != SQLITE_ROW) return SqliteError(db_->c(), rc, "summing image sizes");
      total = sqlite3_column_int64(db_->total_image_bytes.get(), 0);
    }
    const std::int64_t budget = ClampToInt64(options_.retention.max_image_bytes);
    if (total > budget) {
      StmtUse use(db_->oldest_with_images);
      sqlite3_stmt* s = db_->oldest_with_images.get();
      int rc = SQLITE_DONE;
      while (total > budget && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        doomed.push_back(ColumnText(s, 0));
        total -= sqlite3_column_int64(s, 1);
      }
      if (total > budget && rc != SQLITE_DONE) {
        return SqliteError(db_->c(), rc, "selecting images to delete");
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
