#include "storage/sqlite.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <system_error>
#include <utility>

#include <sqlite3.h>

namespace kadr::storage {
namespace {

// See the header: conditions that may pass are kUnavailable, the rest kInternal. Extended
// codes are reduced to their primary code.
StatusCode CodeOf(int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
      return StatusCode::kUnavailable;
    default:
      return StatusCode::kInternal;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Statement

Statement::Statement(Database& db, sqlite3_stmt* stmt, std::string sql)
    : db_(db), stmt_(stmt), sql_(std::move(sql)) {}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::Bind(int index, std::string_view text) {
  const int rc =
      sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
  if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  return *this;
}

Statement& Statement::Bind(int index, std::int64_t value) {
  const int rc = sqlite3_bind_int64(stmt_, index, value);
  if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  return *this;
}

Statement& Statement::BindNull(int index) {
  const int rc = sqlite3_bind_null(stmt_, index);
  if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  return *this;
}

Status Statement::Error(int rc, std::string_view what) const {
  return db_.Error(rc, std::string(what) + " (\"" + sql_.substr(0, 60) + "\")");
}

Result<bool> Statement::Step() {
  if (bind_rc_ != SQLITE_OK) return Error(bind_rc_, "binding parameters");
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return Error(rc, "running a statement");
}

Status Statement::Run() {
  while (true) {
    ASSIGN_OR_RETURN(const bool row, Step());
    if (!row) return Status::Ok();
  }
}

std::int64_t Statement::Int(int column) const { return sqlite3_column_int64(stmt_, column); }

std::string Statement::Text(int column) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
  if (p == nullptr) return {};
  return std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)));
}

bool Statement::IsNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

void Statement::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  bind_rc_ = SQLITE_OK;
}

// ---------------------------------------------------------------------------------------------
// Database

Status Database::Error(int rc, std::string_view what) const {
  std::string m = name_ + ": " + std::string(what) + ": ";
  // errmsg describes the connection's latest failure; errstr only the code.
  m += db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
  m += " (sqlite code " + std::to_string(rc) + ")";
  return {CodeOf(rc), std::move(m)};
}

Result<std::unique_ptr<Database>> Database::Open(const DatabaseOptions& options) {
  const std::string name = options.name + " " + options.path.string();
  // Created with its mode before SQLite opens it (SQLite would use 0644).
  if (const int fd = ::open(options.path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, options.file_mode);
      fd >= 0) {
    ::close(fd);
  }
  sqlite3* raw = nullptr;
  const int rc =
      sqlite3_open_v2(options.path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  std::unique_ptr<Database> db(new Database(raw, name));  // closed on every path
  if (rc != SQLITE_OK) return db->Error(rc, "cannot open");
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, options.busy_timeout_ms);

  // The first statement reads the file header: a file that is not a database fails here.
  auto journal = db->QueryText("PRAGMA journal_mode = WAL");
  if (!journal) {
    if (journal.error().code() == StatusCode::kInternal) {
      return InternalError(name + " is corrupt or not a SQLite database (move it aside to start " +
                           "an empty one): " + journal.error().message());
    }
    return journal.error().WithContext("cannot open " + name);
  }
  auto check = db->QueryText("PRAGMA quick_check");
  if (!check) return check.error().WithContext(name + " failed its integrity check");
  if (*check != "ok") {
    return InternalError(name + " is corrupt (move it aside to start an empty one): " + *check);
  }
  RETURN_IF_ERROR(db->Exec("PRAGMA synchronous = NORMAL"));

  ASSIGN_OR_RETURN(const std::string version_text, db->QueryText("PRAGMA user_version"));
  const int version = std::atoi(version_text.c_str());
  const int latest = static_cast<int>(options.migrations.size());
  if (version > latest) {
    return FailedPreconditionError(name + " has schema version " + std::to_string(version) +
                                   ", newer than this kadr's " + std::to_string(latest));
  }
  for (int v = version; v < latest; ++v) {
    std::string sql = "BEGIN IMMEDIATE;\n";
    sql += options.migrations[static_cast<std::size_t>(v)];
    sql += "\nPRAGMA user_version = " + std::to_string(v + 1) + ";\nCOMMIT;";
    if (Status s = db->Exec(sql); !s.ok()) {
      (void)db->Exec("ROLLBACK");
      return s.WithContext("migrating the schema from version " + std::to_string(v));
    }
  }
  return db;
}

Database::~Database() { sqlite3_close_v2(db_); }

Result<std::unique_ptr<Statement>> Database::Prepare(std::string_view sql) {
  sqlite3_stmt* raw = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(raw);
    return Error(rc, "preparing \"" + std::string(sql) + "\"");
  }
  return std::unique_ptr<Statement>(new Statement(*this, raw, std::string(sql)));
}

Status Database::Exec(std::string_view sql) {
  const std::string text(sql);
  const int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return Error(rc, "running \"" + text.substr(0, 60) + "\"");
  return Status::Ok();
}

std::int64_t Database::Changes() const { return sqlite3_changes64(db_); }

Result<std::string> Database::QueryText(std::string_view sql) {
  ASSIGN_OR_RETURN(auto stmt, Prepare(sql));
  ASSIGN_OR_RETURN(const bool row, stmt->Step());
  return row ? stmt->Text(0) : std::string();
}

Database::Transaction::~Transaction() {
  if (open_) (void)db_.Exec("ROLLBACK");
}

Status Database::Transaction::Begin() {
  RETURN_IF_ERROR(db_.Exec("BEGIN IMMEDIATE"));
  open_ = true;
  return Status::Ok();
}

Status Database::Transaction::Commit() {
  RETURN_IF_ERROR(db_.Exec("COMMIT"));
  open_ = false;
  return Status::Ok();
}

}  // namespace kadr::storage
