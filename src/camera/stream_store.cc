#include "camera/stream_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mutex>
#include <system_error>

#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include "common/sqlite_status.h"

namespace kadr::camera {
namespace {

constexpr char kDbFileName[] = "streams.db";
constexpr int kBusyTimeoutMs = 5000;
constexpr int kSchemaVersion = 1;
constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS streams (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  id         TEXT NOT NULL UNIQUE,
  spec_json  TEXT NOT NULL
);
PRAGMA user_version = 1;
)sql";

Status SqliteError(sqlite3* db, int rc, std::string_view what) {
  std::string m = "streams database: " + std::string(what) + ": ";
  m += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return {SqliteStatusCode(rc), std::move(m)};
}

struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

}  // namespace

struct StreamStore::Impl {
  mutable std::mutex mu;
  sqlite3* db = nullptr;
  ~Impl() { sqlite3_close_v2(db); }

  Status Exec(const char* sql) const {
    char* err = nullptr;
    const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
    sqlite3_free(err);
    return rc == SQLITE_OK ? Status::Ok() : SqliteError(db, rc, "exec");
  }
};

StreamStore::StreamStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StreamStore::~StreamStore() = default;

Result<std::unique_ptr<StreamStore>> StreamStore::Create(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return UnavailableError("cannot create " + dir.string() + ": " + ec.message());
  const std::filesystem::path file = dir / kDbFileName;
  // Created 0600 before SQLite opens it: it holds source URLs with their credentials.
  if (const int fd = ::open(file.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600); fd >= 0) {
    ::close(fd);
  }
  auto impl = std::make_unique<Impl>();
  const int rc =
      sqlite3_open_v2(file.c_str(), &impl->db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) return SqliteError(impl->db, rc, "open " + file.string());
  sqlite3_busy_timeout(impl->db, kBusyTimeoutMs);
  int version = 0;
  {
    Stmt st;
    if (sqlite3_prepare_v2(impl->db, "PRAGMA user_version", -1, &st.s, nullptr) == SQLITE_OK &&
        sqlite3_step(st.s) == SQLITE_ROW) {
      version = sqlite3_column_int(st.s, 0);
    }
  }
  if (version > kSchemaVersion) {
    return FailedPreconditionError(file.string() + " has schema version " +
                                   std::to_string(version) + ", newer than this kadr's " +
                                   std::to_string(kSchemaVersion));
  }
  RETURN_IF_ERROR(impl->Exec(kSchema));
  return std::unique_ptr<StreamStore>(new StreamStore(std::move(impl)));
}

Status StreamStore::Put(const StreamSpec& spec) {
  std::lock_guard lock(impl_->mu);
  Stmt st;
  int rc = sqlite3_prepare_v2(impl_->db,
                              "INSERT INTO streams (id, spec_json) VALUES (?1, ?2) "
                              "ON CONFLICT(id) DO UPDATE SET spec_json = excluded.spec_json",
                              -1, &st.s, nullptr);
  if (rc != SQLITE_OK) return SqliteError(impl_->db, rc, "prepare insert");
  const std::string json = SpecToStorageJson(spec);
  sqlite3_bind_text(st.s, 1, spec.id.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.s, 2, json.c_str(), -1, SQLITE_TRANSIENT);
  rc = sqlite3_step(st.s);
  return rc == SQLITE_DONE ? Status::Ok() : SqliteError(impl_->db, rc, "insert");
}

Status StreamStore::Delete(const std::string& id) {
  std::lock_guard lock(impl_->mu);
  Stmt st;
  int rc = sqlite3_prepare_v2(impl_->db, "DELETE FROM streams WHERE id = ?1", -1, &st.s, nullptr);
  if (rc != SQLITE_OK) return SqliteError(impl_->db, rc, "prepare delete");
  sqlite3_bind_text(st.s, 1, id.c_str(), -1, SQLITE_TRANSIENT);
  rc = sqlite3_step(st.s);
  if (rc != SQLITE_DONE) return SqliteError(impl_->db, rc, "delete");
  if (sqlite3_changes(impl_->db) == 0) return NotFoundError("unknown stream '" + id + "'");
  return Status::Ok();
}

Result<std::vector<StreamSpec>> StreamStore::List() const {
  std::lock_guard lock(impl_->mu);
  Stmt st;
  int rc = sqlite3_prepare_v2(impl_->db, "SELECT id, spec_json FROM streams ORDER BY seq", -1,
                              &st.s, nullptr);
  if (rc != SQLITE_OK) return SqliteError(impl_->db, rc, "prepare list");
  std::vector<StreamSpec> out;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
    const auto* id = reinterpret_cast<const char*>(sqlite3_column_text(st.s, 0));
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(st.s, 1));
    auto spec = SpecFromStorageJson(text != nullptr ? text : "");
    if (!spec) {
      spdlog::warn("camera: skipping stored stream id={} error=\"{}\"", id != nullptr ? id : "",
                   spec.error().message());
      continue;
    }
    out.push_back(std::move(*spec));
  }
  if (rc != SQLITE_DONE) return SqliteError(impl_->db, rc, "list");
  return out;
}

}  // namespace kadr::camera
