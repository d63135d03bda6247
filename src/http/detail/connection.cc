#include "http/detail/connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "http/detail/tls.h"
#include "http/status_mapping.h"

namespace kadr::http::detail {
namespace {

constexpr std::size_t kReadChunk = 16 * 1024;
constexpr std::size_t kMaxMethod = 16;
// After a refusal, the unread rest of a request is drained for this long (at most this many
// bytes) before the socket closes: closing with unread data sends a reset, which can destroy
// the error response before the client reads it.
constexpr auto kLingerTime = std::chrono::milliseconds(2000);
constexpr std::size_t kLingerBytes = 32 * 1024 * 1024;

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 408:
      return "Request Timeout";
    case 413:
      return "Payload Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 421:
      return "Misdirected Request";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    default:
      return status >= 500 ? "Internal Server Error" : "Bad Request";
  }
}

void AddressOf(const sockaddr_storage& addr, std::string& ip, int& port) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(addr);
    ::inet_ntop(AF_INET, &a.sin_addr, buf, sizeof(buf));
    port = ntohs(a.sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(addr);
    ::inet_ntop(AF_INET6, &a.sin6_addr, buf, sizeof(buf));
    port = ntohs(a.sin6_port);
  }
  ip = buf;
}

}  // namespace

bool IsRoutableMethod(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "POST" || method == "PUT" ||
         method == "PATCH" || method == "DELETE" || method == "OPTIONS";
}

std::string ErrorResponseText(int status, const Status& error, std::string_view extra_headers) {
  const std::string body = ErrorBody(error);
  std::string out =
      "HTTP/1.1 " + std::to_string(status) + " " + std::string(ReasonPhrase(status)) +
      "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\nConnection: close\r\nX-Content-Type-Options: nosniff\r\n";
  out += extra_headers;
  out += "\r\n";
  out += body;
  return out;
}

Connection::Connection(int fd, SSL* ssl, const ConnectionLimits& limits, std::string prefix)
    : fd_(fd),
      ssl_(ssl),
      limits_(limits),
      buf_(std::move(prefix)),
      request_start_(Clock::now()),
      body_limit_(limits.default_body_bytes) {}

Connection::~Connection() {
  if (refused_ || closing_) {
    // Lingering close: say we are done, then drain what the client still sends, briefly.
    if (ssl_ != nullptr) SSL_shutdown(ssl_);
    ::shutdown(fd_, SHUT_WR);
    const auto until = Clock::now() + kLingerTime;
    std::array<char, kReadChunk> sink{};
    std::size_t drained = 0;
    while (drained < kLingerBytes && WaitFd(fd_, false, until)) {
      const ssize_t n = ::recv(fd_, sink.data(), sink.size(), MSG_DONTWAIT);
      if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) break;
      if (n > 0) drained += static_cast<std::size_t>(n);
    }
  } else if (ssl_ != nullptr) {
    SSL_shutdown(ssl_);
  }
  if (ssl_ != nullptr) SSL_free(ssl_);
  ::close(fd_);
}

ssize_t Connection::RawRead(char* ptr, size_t size) {
  if (ssl_ == nullptr) {
    const ssize_t n = ::recv(fd_, ptr, size, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return -2;
    return n;
  }
  ERR_clear_error();
  const int n = SSL_read(ssl_, ptr, static_cast<int>(std::min<size_t>(size, 1 << 30)));
  if (n > 0) return n;
  const int err = SSL_get_error(ssl_, n);
  if (err == SSL_ERROR_WANT_READ) return -2;
  if (err == SSL_ERROR_WANT_WRITE) return -3;
  if (err == SSL_ERROR_ZERO_RETURN) return 0;
  return -1;
}

ssize_t Connection::RawWrite(const char* ptr, size_t size, Clock::time_point deadline) {
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = 0;
    bool want_read = false;
    if (ssl_ == nullptr) {
      n = ::send(fd_, ptr + done, size - done, MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
    } else {
      ERR_clear_error();
      n = SSL_write(ssl_, ptr + done, static_cast<int>(std::min<size_t>(size - done, 1 << 30)));
      if (n <= 0) {
        const int err = SSL_get_error(ssl_, static_cast<int>(n));
        if (err != SSL_ERROR_WANT_WRITE && err != SSL_ERROR_WANT_READ) return -1;
        want_read = err == SSL_ERROR_WANT_READ;
        n = -1;
      }
    }
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (!WaitFd(fd_, !want_read, deadline)) return -1;
  }
  return static_cast<ssize_t>(size);
}

Clock::time_point Connection::ReadDeadline() const {
  const auto idle = Clock::now() + limits_.read_timeout;
  if (phase_ == Phase::kHead) return std::min(idle, request_start_ + limits_.header_timeout);
  const auto rate = std::max<std::size_t>(limits_.min_body_bytes_per_second, 1);
  const auto allowed = std::chrono::milliseconds(body_read_ * 1000 / rate);
  return std::min(idle, body_start_ + limits_.header_timeout + allowed);
}

bool Connection::Fill(Clock::time_point deadline) {
  std::array<char, kReadChunk> chunk{};
  while (true) {
    const ssize_t n = RawRead(chunk.data(), chunk.size());
    if (n > 0) {
      if (buf_pos_ == buf_.size()) {
        buf_.clear();
        buf_pos_ = 0;
      }
      buf_.append(chunk.data(), static_cast<std::size_t>(n));
      return true;
    }
    if (n == 0 || n == -1) {
      eof_ = true;
      return false;
    }
    if (!WaitFd(fd_, n == -3, deadline)) {
      if (Clock::now() < deadline) {
        eof_ = true;  // a poll error
        return false;
      }
      if (phase_ == Phase::kHead) {
        Refuse(408, DeadlineExceededError("the request's line and headers did not arrive within " +
                                          std::to_string(limits_.header_timeout.count()) + " ms"));
      } else {
        Refuse(408, DeadlineExceededError("the request body arrived slower than " +
                                          std::to_string(limits_.min_body_bytes_per_second) +
                                          " bytes/s"));
      }
      return false;
    }
  }
}

bool Connection::is_readable() const {
  if (buf_pos_ < buf_.size() || refused_) return true;
  if (ssl_ != nullptr && SSL_pending(ssl_) > 0) return true;
  return WaitFd(fd_, false, Clock::now() + limits_.read_timeout);
}

bool Connection::is_writable() const {
  if (refused_) return true;
  if (!WaitFd(fd_, true, Clock::now() + limits_.write_timeout)) return false;
  // The peer's FIN shows as a zero-byte peek; pending input or nothing at all means alive.
  char byte = 0;
  const ssize_t n = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n != 0 && !(n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

ssize_t Connection::read(char* ptr, size_t size) {
  if (refused_) return -1;
  if (size == 0) return 0;
  if (buf_pos_ == buf_.size()) {
    if (eof_ || !Fill(ReadDeadline())) return refused_ ? -1 : 0;
  }
  std::size_t n = std::min(size, buf_.size() - buf_pos_);
  const char* data = buf_.data() + buf_pos_;
  if (phase_ == Phase::kHead) {
    const std::size_t before = head_bytes_;
    if (!ScanHead(data, n)) return -1;
    // ScanHead stops at the head's end: the bytes after it are the body's.
    n = head_bytes_ - before;
  } else {
    if (body_read_ + n > body_limit_) {
      Refuse(413, TooLargeError("request body exceeds " + std::to_string(body_limit_) + " bytes"));
      return -1;
    }
    body_read_ += n;
  }
  std::copy_n(data, n, ptr);
  buf_pos_ += n;
  return static_cast<ssize_t>(n);
}

bool Connection::ScanHead(const char* data, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const char c = data[i];
    if (++head_bytes_ > limits_.max_header_bytes) {
      Refuse(431, TooLargeError("request line and headers exceed " +
                                std::to_string(limits_.max_header_bytes) + " bytes"));
      return false;
    }
    if (c == '\n') {
      if (line_bytes_ == 0 && lines_ > 0) {
        phase_ = Phase::kBody;
        body_start_ = Clock::now();
        body_read_ = 0;
        return true;
      }
      if (lines_ == 0 && !method_done_) {
        method_done_ = true;  // a request line of one word: httplib answers 400
      }
      ++lines_;
      line_bytes_ = 0;
      if (lines_ > limits_.max_headers + 1) {
        Refuse(431, TooLargeError("request has more than " + std::to_string(limits_.max_headers) +
                                  " header lines"));
        return false;
      }
      continue;
    }
    if (c == '\r') continue;
    ++line_bytes_;
    if (lines_ != 0) continue;
    if (line_bytes_ > limits_.max_request_line_bytes) {
      Refuse(414, TooLargeError("request line exceeds " +
                                std::to_string(limits_.max_request_line_bytes) + " bytes"));
      return false;
    }
    if (method_done_) continue;
    if (c == ' ') {
      method_done_ = true;
      if (!IsRoutableMethod(method_)) {
        Refuse(501, UnsupportedError("method " + method_.substr(0, kMaxMethod) +
                                     " is not served here (GET, HEAD, POST, PUT, PATCH, DELETE, "
                                     "OPTIONS)"));
        return false;
      }
    } else if (method_.size() == kMaxMethod) {
      Refuse(501, UnsupportedError("unknown method"));
      return false;
    } else {
      method_ += c;
    }
  }
  return true;
}

ssize_t Connection::write(const char* ptr, size_t size) {
  if (refused_) return static_cast<ssize_t>(size);
  return RawWrite(ptr, size, Clock::now() + limits_.write_timeout);
}

void Connection::get_remote_ip_and_port(std::string& ip, int& port) const {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) AddressOf(addr, ip, port);
}

void Connection::get_local_ip_and_port(std::string& ip, int& port) const {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) AddressOf(addr, ip, port);
}

bool Connection::WaitForRequest(std::chrono::milliseconds timeout,
                                const std::function<bool()>& give_up) {
  const auto until = Clock::now() + timeout;
  if (buf_pos_ == buf_.size()) {
    buf_.clear();
    buf_pos_ = 0;
  }
  while (buf_pos_ == buf_.size() && !eof_) {
    if (ssl_ != nullptr && SSL_pending(ssl_) > 0) return true;
    if (give_up && give_up()) return false;
    const auto now = Clock::now();
    if (now >= until) return false;
    const auto step = std::min<Clock::duration>(until - now, std::chrono::milliseconds(50));
    if (WaitFd(fd_, false, now + step)) {
      // Readable: data, a TLS record without data, or the end. Take what is there.
      const ssize_t n = [&] {
        std::array<char, kReadChunk> chunk{};
        const ssize_t r = RawRead(chunk.data(), chunk.size());
        if (r > 0) buf_.append(chunk.data(), static_cast<std::size_t>(r));
        return r;
      }();
      if (n == 0 || n == -1) eof_ = true;
    }
  }
  return buf_pos_ < buf_.size();
}

void Connection::BeginRequest() {
  phase_ = Phase::kHead;
  request_start_ = Clock::now();
  head_bytes_ = 0;
  line_bytes_ = 0;
  lines_ = 0;
  method_.clear();
  method_done_ = false;
  body_read_ = 0;
  body_limit_ = limits_.default_body_bytes;
}

void Connection::Refuse(int status, const Status& error, std::string_view extra_headers) {
  if (refused_) return;
  const std::string text = ErrorResponseText(status, error, extra_headers);
  (void)RawWrite(text.data(), text.size(), Clock::now() + limits_.write_timeout);
  refused_ = true;
}

}  // namespace kadr::http::detail
