// StreamStore: the camera service's streams, persisted in SQLite (<dir>/streams.db) so that
// they come back after a restart.
//
// One row per stream: its id, creation order and the spec as JSON (SpecToStorageJson). The
// spec holds the source with its credentials, so the database file is created 0600; it is the
// only place they are kept. Schema versioned by PRAGMA user_version.
// Thread-safe (one connection behind a mutex). Errors: kUnavailable when the database cannot
// be opened or written (permissions, disk full, locked), kInternal for anything else.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "camera/stream_runner.h"
#include "common/status.h"

namespace kadr::camera {

class StreamStore {
 public:
  // Creates `dir` if needed and opens (or creates) <dir>/streams.db.
  static Result<std::unique_ptr<StreamStore>> Create(const std::filesystem::path& dir);
  ~StreamStore();
  StreamStore(const StreamStore&) = delete;
  StreamStore& operator=(const StreamStore&) = delete;

  // Inserts or replaces the stream `spec.id`.
  Status Put(const StreamSpec& spec);
  // Removes a stream; kNotFound when there is none with that id.
  Status Delete(const std::string& id);
  // Every stream in creation order. Rows that no longer parse are skipped (and logged).
  Result<std::vector<StreamSpec>> List() const;

 private:
  struct Impl;
  explicit StreamStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kadr::camera
