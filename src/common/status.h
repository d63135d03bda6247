// Status and Result<T>: expected failures as values.
//
// A Status is a code plus a human-readable message. Result<T> holds either a T or a non-OK
// Status, with the std::expected shape (has_value(), value(), error()). Both are [[nodiscard]]
// and cheap to move. Thread-compatible: distinct objects may be used from distinct threads.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace kadr {

// One small set of codes for the whole system; http/ maps each to one HTTP status.
enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // malformed input: corrupt image, bad parameter (400)
  kNotFound,            // unknown model, job, file (404)
  kTooLarge,            // input over a configured size limit (413)
  kUnsupported,         // format or model kind kadr does not handle (415)
  kResourceExhausted,   // in-flight bound reached; retry later (429)
  kFailedPrecondition,  // system not in the state the call needs (409)
  kCancelled,           // the caller gave up (499)
  kInternal,            // a bug or an unexpected library failure (500)
  kUnavailable,         // a dependency is down; retry (503)
  kDeadlineExceeded,    // the deadline passed (504)
  kUnauthenticated,     // no valid credentials (401)
  kPermissionDenied,    // credentials valid, but not allowed to do this (403)
};

// Stable lowercase name of a code, e.g. "invalid_argument"; used in logs and JSON errors.
std::string_view StatusCodeName(StatusCode code);
// The inverse of StatusCodeName for error codes; kInternal for names it does not know.
StatusCode StatusCodeFromName(std::string_view name);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "invalid_argument: truncated JPEG" or "ok".
  std::string ToString() const;

  // Returns a copy with `context + ": "` prepended to the message; the code is kept.
  Status WithContext(std::string_view context) const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgumentError(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status NotFoundError(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status TooLargeError(std::string m) { return {StatusCode::kTooLarge, std::move(m)}; }
inline Status UnsupportedError(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }
inline Status ResourceExhaustedError(std::string m) {
  return {StatusCode::kResourceExhausted, std::move(m)};
}
inline Status FailedPreconditionError(std::string m) {
  return {StatusCode::kFailedPrecondition, std::move(m)};
}
inline Status CancelledError(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
inline Status InternalError(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status UnavailableError(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status DeadlineExceededError(std::string m) {
  return {StatusCode::kDeadlineExceeded, std::move(m)};
}
inline Status UnauthenticatedError(std::string m) {
  return {StatusCode::kUnauthenticated, std::move(m)};
}
inline Status PermissionDeniedError(std::string m) {
  return {StatusCode::kPermissionDenied, std::move(m)};
}

// Either a value or a non-OK Status. Constructing from an OK Status is a programming error.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).ok() && "Result built from an OK Status");
  }

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Status& error() const& { return std::get<1>(v_); }
  Status&& error() && { return std::get<1>(std::move(v_)); }
  // OK when a value is held, the error otherwise.
  Status status() const { return has_value() ? Status::Ok() : error(); }

 private:
  std::variant<T, Status> v_;
};

namespace detail {
inline Status ToStatus(const Status& s) { return s; }
template <typename T>
Status ToStatus(const Result<T>& r) {
  return r.status();
}
}  // namespace detail

}  // namespace kadr

#define KADR_CONCAT_INNER(a, b) a##b
#define KADR_CONCAT(a, b) KADR_CONCAT_INNER(a, b)

// Returns the Status of `expr` (a Status or Result) from the current function when it is not OK.
#define RETURN_IF_ERROR(expr)                                                       \
  do {                                                                              \
    if (auto kadr_status_ = ::kadr::detail::ToStatus((expr)); !kadr_status_.ok()) { \
      return kadr_status_;                                                          \
    }                                                                               \
  } while (false)

// `ASSIGN_OR_RETURN(auto x, MakeX());` declares x from the Result's value or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  KADR_ASSIGN_OR_RETURN_IMPL(KADR_CONCAT(kadr_result_, __LINE__), lhs, expr)
#define KADR_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr)     \
  auto tmp = (expr);                                   \
  if (!tmp.has_value()) return std::move(tmp).error(); \
  lhs = std::move(tmp).value()
