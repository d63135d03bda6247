// TokenStore: the API tokens of one deployment, in a JSON file that several processes may share
// (compose: the gateway, viewer and camera containers mount one volume).
//
// A token is `kadr_<id>_<secret>`: a 12-hex-digit id (48 random bits; it names the token in
// lists, logs and sessions) and a 64-hex-digit secret (256 random bits). It is shown once, when
// it is created; the file keeps only its id, name, role, creation time and a salted SHA-256 of
// the secret (docs/adr/0014-access-control.md says why not PBKDF2), plus the deployment's
// random session key (auth/detail/session.h), so the file must stay private: it is written
// 0600 in a folder 0700.
//
// File: {"version": 1, "session_key": "<hex>", "tokens": [{"id", "name", "role",
// "hash": "sha256:<salt hex>:<digest hex>", "created_ms"}]}. Writes take an exclusive flock on
// `<file>.lock`, read the file afresh, change it, write `<file>.tmp` and rename it over the
// file, so that concurrent writers in several processes lose nothing and readers never see a
// partial file. Readers take no lock: every call checks the file's identity (inode, size,
// mtime) with one stat and reloads it when it changed, so a token revoked by `kadr token
// revoke` in another process stops working at the next request. A file that has become
// unreadable or malformed keeps the last good copy in use (logged); a file that is gone holds
// no tokens.
//
// Thread-safe: one mutex guards the in-memory copy.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/role.h"
#include "common/status.h"

namespace kadr::auth {

// What the file records of a token (never its secret).
struct TokenInfo {
  std::string id;    // 12 hex digits
  std::string name;  // who or what holds it ("admin", "ci", "prometheus")
  Role role = Role::kViewer;
  std::int64_t created_ms = 0;  // Unix milliseconds
};

// A token just created: the only time its secret exists outside its holder.
struct CreatedToken {
  TokenInfo info;
  std::string token;  // kadr_<id>_<secret>
};

class TokenStore {
 public:
  // The store of `file`; creates its folder (0700) when missing, not the file. Reads the file
  // when it exists. kInvalidArgument: the file is malformed; kUnavailable: it or its folder
  // cannot be read or created.
  static Result<std::unique_ptr<TokenStore>> Open(const std::filesystem::path& file);

  TokenStore(const TokenStore&) = delete;
  TokenStore& operator=(const TokenStore&) = delete;

  const std::filesystem::path& file() const { return file_; }

  // Creates a token for `name` (1..64 printable characters) with `role`.
  // kInvalidArgument: a bad name; kUnavailable: the file cannot be written.
  Result<CreatedToken> Create(std::string_view name, Role role);

  // Removes token `id` (its sessions end with it). kNotFound: no such token.
  Status Revoke(std::string_view id);

  // Every token, oldest first.
  Result<std::vector<TokenInfo>> List();

  // The token a client presented. kUnauthenticated: malformed, unknown, revoked or wrong.
  Result<TokenInfo> Verify(std::string_view token);

  // The token with id `id`. kNotFound when there is none (revoked).
  Result<TokenInfo> Find(std::string_view id);

  // The deployment's session key (32 raw bytes), created and stored when the file has none.
  Result<std::string> SessionKey();

  // When the file holds no admin token: creates one named `name` and returns it (shown once
  // by the caller); otherwise nullopt. Also creates the session key when there is none. Safe
  // when several processes start at once: only one of them creates the token.
  Result<std::optional<CreatedToken>> EnsureAdmin(std::string_view name = "admin");

 private:
  struct Entry {
    TokenInfo info;
    std::string salt;    // raw
    std::string digest;  // raw SHA-256(salt || secret)
  };
  struct Contents {
    std::string session_key;  // raw; empty when the file has none
    std::vector<Entry> tokens;
  };
  struct FileId {
    bool exists = false;
    std::uint64_t dev = 0, ino = 0, size = 0;
    std::int64_t mtime_ns = 0;
    bool operator==(const FileId&) const = default;
  };

  explicit TokenStore(std::filesystem::path file);
  // Reloads the file when its identity changed since the last load.
  Status RefreshLocked();
  // RefreshLocked() for the request paths: a file that cannot be read leaves the last good
  // contents in use, logged once per change of the file.
  void RefreshOrKeepLocked();
  static Result<Contents> Parse(const std::string& text);
  static std::string Serialize(const Contents& contents);
  // Adds a new token to `contents`; returns it with its secret.
  static CreatedToken AddToken(Contents& contents, std::string_view name, Role role);
  Result<FileId> Stat() const;
  // Runs `change` on the file's current contents under the cross-process lock and writes the
  // result back when `change` returns true.
  Status Modify(const std::function<Result<bool>(Contents&)>& change);

  const std::filesystem::path file_;
  std::mutex mu_;
  Contents contents_;
  FileId loaded_;
  bool loaded_once_ = false;
};

}  // namespace kadr::auth
