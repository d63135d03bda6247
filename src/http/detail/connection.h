// Connection: one accepted client socket (plain or TLS) as the httplib::Stream that httplib's
// request parser reads from, with the limits httplib itself lacks (ADR 0013).
//
// While a request's head is read it counts the request line (414 past its limit), the head's
// bytes and lines (431), refuses methods no route can have (501: PRI, TRACE, CONNECT, ...)
// and holds the head to its deadline (408). While the body is read it holds it to the route's
// byte limit (413) and to a minimum average rate (408). A tripped limit writes the JSON error
// straight to the socket; from then on reads report end of stream and writes are dropped, so
// httplib's own error answer never reaches the client and the connection closes.
//
// Ownership: owns the socket and the SSL object (closed and freed by the destructor).
// Thread-safety: one thread at a time (the connection's worker).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include <httplib.h>

#include "common/status.h"

namespace kadr::http::detail {

using Clock = std::chrono::steady_clock;

struct ConnectionLimits {
  std::size_t max_request_line_bytes = 8192;
  std::size_t max_header_bytes = 32 * 1024;
  std::size_t max_headers = 64;
  std::chrono::milliseconds header_timeout{10000};
  std::size_t min_body_bytes_per_second = 64 * 1024;
  std::chrono::milliseconds read_timeout{30000};
  std::chrono::milliseconds write_timeout{5000};
  // Body limit of a request until its route sets its own.
  std::size_t default_body_bytes = 64 * 1024;
};

// Whether `method` is one a route can have (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS).
bool IsRoutableMethod(std::string_view method);

// "HTTP/1.1 <status> <reason>" headers and a JSON error body, with Connection: close.
std::string ErrorResponseText(int status, const Status& error, std::string_view extra_headers);

class Connection final : public httplib::Stream {
 public:
  // `fd` is a connected non-blocking socket; `ssl` its TLS session or nullptr; `prefix` bytes
  // already read from it (by the shedding thread).
  Connection(int fd, SSL* ssl, const ConnectionLimits& limits, std::string prefix = {});
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // httplib::Stream
  bool is_readable() const override;
  bool is_writable() const override;
  ssize_t read(char* ptr, size_t size) override;
  ssize_t write(const char* ptr, size_t size) override;
  void get_remote_ip_and_port(std::string& ip, int& port) const override;
  void get_local_ip_and_port(std::string& ip, int& port) const override;
  socket_t socket() const override { return fd_; }

  // Waits up to `timeout` for the first byte of the next request, checking `give_up` every
  // 50 ms. True when a byte is there.
  bool WaitForRequest(std::chrono::milliseconds timeout, const std::function<bool()>& give_up);
  // Starts a request: the head's limits and deadline apply from now on.
  void BeginRequest();
  // The body limit of the current request (a route sets it before reading its body).
  void SetBodyLimit(std::size_t bytes) { body_limit_ = bytes; }
  std::size_t body_limit() const { return body_limit_; }

  // Writes `status` with the JSON error for `error` (and `extra_headers`, each ending in CRLF)
  // and closes the exchange: reads report end of stream, writes are dropped.
  void Refuse(int status, const Status& error, std::string_view extra_headers = {});
  bool refused() const { return refused_; }
  // The connection must close after the current response (a body left unread, an error).
  void MarkClosing() { closing_ = true; }
  bool closing() const { return closing_ || refused_; }
  bool secure() const { return ssl_ != nullptr; }

 private:
  enum class Phase { kHead, kBody };
  // Reads more bytes into buf_ (at most until `deadline`); false on end, error or timeout.
  bool Fill(Clock::time_point deadline);
  ssize_t RawRead(char* ptr, size_t size);
  ssize_t RawWrite(const char* ptr, size_t size, Clock::time_point deadline);
  // Checks the head's limits against the bytes handed out; false once refused.
  bool ScanHead(const char* data, std::size_t n);
  Clock::time_point ReadDeadline() const;

  int fd_;
  SSL* ssl_;
  ConnectionLimits limits_;
  std::string buf_;
  std::size_t buf_pos_ = 0;
  bool eof_ = false;
  bool refused_ = false;
  bool closing_ = false;
  Phase phase_ = Phase::kHead;
  Clock::time_point request_start_;
  Clock::time_point body_start_;
  std::size_t head_bytes_ = 0;
  std::size_t line_bytes_ = 0;  // bytes of the head's current line, CR excluded
  std::size_t lines_ = 0;       // complete lines of the head
  std::string method_;          // the request line's method, while it is read
  bool method_done_ = false;
  std::size_t body_read_ = 0;
  std::size_t body_limit_;
};

}  // namespace kadr::http::detail
