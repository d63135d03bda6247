// The StatusCode for an SQLite result code, shared by the components that keep SQLite stores
// (camera's streams.db, viewer's history.db). Header-only: include it only where SQLite is
// linked (its constants come from <sqlite3.h>).
#pragma once

#include <sqlite3.h>

#include "common/status.h"

namespace kadr {

// Busy, locked, I/O, disk-full and permission failures are conditions of the environment that
// may pass (kUnavailable); everything else (corruption, constraint, misuse) is not expected to
// (kInternal). Extended codes are reduced to their primary code.
inline StatusCode SqliteStatusCode(int rc) {
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

}  // namespace kadr
