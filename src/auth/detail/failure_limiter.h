// FailureLimiter: counts failed sign-in attempts (a wrong token, a forged or expired session)
// per client address in fixed windows; a client with `max_failures` failures in its current
// window is refused until the window ends. Memory is bounded: at most `max_clients` addresses
// are tracked; when the table is full, windows that have ended are dropped first, then the
// oldest window.
//
// Thread-safe (one mutex; each call is O(1) except the rare sweep of a full table, O(n)).
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>

namespace kadr::auth::detail {

class FailureLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  FailureLimiter(std::size_t max_failures, std::chrono::seconds window, std::size_t max_clients);

  // How long `client` must wait before it may try again; zero when it may try now.
  std::chrono::seconds RetryAfter(const std::string& client, Clock::time_point now);

  // Counts one failure of `client`.
  void Fail(const std::string& client, Clock::time_point now);

  // Addresses tracked now (for tests).
  std::size_t size() const;

 private:
  struct Entry {
    Clock::time_point window_start;
    std::size_t failures = 0;
  };
  void MakeRoomLocked(Clock::time_point now);

  const std::size_t max_failures_;
  const std::chrono::seconds window_;
  const std::size_t max_clients_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> clients_;
};

}  // namespace kadr::auth::detail
