// SQLite for the stores that keep state on disk (the job store's history.db, the camera's
// streams.db): the only place that includes <sqlite3.h>. A Database is one connection, opened
// with the settings every store wants (WAL, a busy timeout, an integrity check, numbered
// migrations); Statements are prepared once and reused.
//
// Errors: busy, locked, I/O, disk-full and permission failures are conditions of the
// environment that may pass (kUnavailable); everything else (corruption, constraint, misuse)
// is not expected to (kInternal). Messages name the database ("history database /x/history.db")
// and what was being done.
//
// Thread-safety: none. A Database and its Statements are used by one thread at a time (the
// stores hold a mutex around every use). Ownership: Statements must be destroyed before their
// Database.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace kadr::storage {

class Database;

// One prepared statement. Bind parameters (1-based; text must outlive the step), Step through
// the rows, read columns (0-based), Reset. Use it through a Use scope, which resets it when it
// ends so that a cached statement never holds a read snapshot between calls.
class Statement {
 public:
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& Bind(int index, std::string_view text);
  Statement& Bind(int index, std::int64_t value);
  Statement& BindNull(int index);

  // The next row: true when there is one, false when done. Errors: a failed bind (reported
  // here, once), or the step's.
  Result<bool> Step();
  // Steps a statement that returns no rows to its end.
  Status Run();

  std::int64_t Int(int column) const;
  std::string Text(int column) const;  // "" for NULL
  bool IsNull(int column) const;

  // Resets the statement and clears its bindings.
  void Reset();

  // Resets `statement` when it goes out of scope.
  class Use {
   public:
    explicit Use(Statement& statement) : s_(statement) {}
    ~Use() { s_.Reset(); }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    Statement* operator->() const { return &s_; }
    Statement& operator*() const { return s_; }

   private:
    Statement& s_;
  };

 private:
  friend class Database;
  Statement(Database& db, sqlite3_stmt* stmt, std::string sql);
  Status Error(int rc, std::string_view what) const;

  Database& db_;
  sqlite3_stmt* stmt_;
  const std::string sql_;
  int bind_rc_ = 0;  // the first failed bind since the last Reset
};

struct DatabaseOptions {
  std::filesystem::path path;
  // How messages name it: "history database" -> "history database <path>".
  std::string name = "database";
  // migrations[v] takes the database from PRAGMA user_version v to v + 1; each runs in its
  // own transaction with the version bump, so a crash leaves it at v or v + 1. Append steps;
  // never edit a shipped one. A database newer than the last step is refused.
  std::vector<std::string_view> migrations;
  // Created with this mode when it does not exist yet (0600: it may hold credentials).
  mode_t file_mode = 0600;
  // How long a write waits for another connection's lock before kUnavailable.
  int busy_timeout_ms = 5000;
};

class Database {
 public:
  // Opens (creating) the file in WAL mode with synchronous=NORMAL (a committed change
  // survives a process crash; a power cut may lose the last commits but never corrupts it),
  // checks it (PRAGMA quick_check) and migrates it.
  // Errors: kUnavailable (cannot create or open), kInternal (not a database, corrupt: the
  // message says to move it aside), kFailedPrecondition (a newer schema).
  static Result<std::unique_ptr<Database>> Open(const DatabaseOptions& options);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // A statement kept for reuse. Errors: kInternal naming the SQL.
  Result<std::unique_ptr<Statement>> Prepare(std::string_view sql);
  // Runs one or more statements without results.
  Status Exec(std::string_view sql);
  // Rows changed by the last statement.
  std::int64_t Changes() const;

  // BEGIN IMMEDIATE (the write lock up front, so a writer never fails upgrading a read lock)
  // ... Commit; rolled back when the scope ends without Commit.
  class Transaction {
   public:
    explicit Transaction(Database& db) : db_(db) {}
    ~Transaction();
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    Status Begin();
    Status Commit();

   private:
    Database& db_;
    bool open_ = false;
  };

  const std::string& name() const { return name_; }

 private:
  friend class Statement;
  Database(sqlite3* db, std::string name) : db_(db), name_(std::move(name)) {}
  Status Error(int rc, std::string_view what) const;
  Result<std::string> QueryText(std::string_view sql);

  sqlite3* db_;
  const std::string name_;
};

}  // namespace kadr::storage
