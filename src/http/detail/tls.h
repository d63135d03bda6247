// TlsContext: the server side of TLS for HttpServer (OpenSSL), loaded from PEM files.
//
// Ownership: the context owns its SSL_CTX; Accept() hands out SSL objects the caller owns
// (freed with SSL_free, which Connection does). Thread-safety: Accept() may run on many
// threads at once (OpenSSL contexts are thread-safe once configured).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/status.h"

// OpenSSL's own names for its types, declared here so that users of this header need not
// include OpenSSL.
using SSL = struct ssl_st;          // NOLINT(readability-identifier-naming)
using SSL_CTX = struct ssl_ctx_st;  // NOLINT(readability-identifier-naming)

namespace kadr::http::detail {

class TlsContext {
 public:
  // Loads the certificate chain and its private key; TLS 1.2 and newer only.
  // kInvalidArgument: a file is missing or unreadable, not PEM, or the key does not match.
  static Result<std::unique_ptr<TlsContext>> Create(const std::string& cert_file,
                                                    const std::string& key_file);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // Runs the handshake on the non-blocking socket `fd` until `deadline`. nullptr when it fails
  // or the deadline passes (the caller closes the socket).
  SSL* Accept(int fd, std::chrono::steady_clock::time_point deadline) const;

 private:
  explicit TlsContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

// Waits until `fd` is readable (`want_write` false) or writable, at most until `deadline`.
// False on timeout or error.
bool WaitFd(int fd, bool want_write, std::chrono::steady_clock::time_point deadline);

}  // namespace kadr::http::detail
