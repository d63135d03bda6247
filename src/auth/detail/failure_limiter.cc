#include "auth/detail/failure_limiter.h"

#include <algorithm>

namespace kadr::auth::detail {

FailureLimiter::FailureLimiter(std::size_t max_failures, std::chrono::seconds window,
                               std::size_t max_clients)
    : max_failures_(std::max<std::size_t>(max_failures, 1)),
      window_(window),
      max_clients_(std::max<std::size_t>(max_clients, 1)) {}

std::chrono::seconds FailureLimiter::RetryAfter(const std::string& client, Clock::time_point now) {
  std::lock_guard lock(mu_);
  const auto it = clients_.find(client);
  if (it == clients_.end()) return std::chrono::seconds(0);
  const auto end = it->second.window_start + window_;
  if (now >= end) {
    clients_.erase(it);
    return std::chrono::seconds(0);
  }
  if (it->second.failures < max_failures_) return std::chrono::seconds(0);
  // Rounded up: a client that waits this long is let in.
  return std::chrono::ceil<std::chrono::seconds>(end - now);
}

void FailureLimiter::Fail(const std::string& client, Clock::time_point now) {
  std::lock_guard lock(mu_);
  auto it = clients_.find(client);
  if (it != clients_.end() && now >= it->second.window_start + window_) {
    clients_.erase(it);
    it = clients_.end();
  }
  if (it == clients_.end()) {
    if (clients_.size() >= max_clients_) MakeRoomLocked(now);
    it = clients_.emplace(client, Entry{now, 0}).first;
  }
  ++it->second.failures;
}

std::size_t FailureLimiter::size() const {
  std::lock_guard lock(mu_);
  return clients_.size();
}

void FailureLimiter::MakeRoomLocked(Clock::time_point now) {
  std::erase_if(clients_, [&](const auto& kv) { return now >= kv.second.window_start + window_; });
  if (clients_.size() < max_clients_) return;
  const auto oldest = std::min_element(
      clients_.begin(), clients_.end(),
      [](const auto& a, const auto& b) { return a.second.window_start < b.second.window_start; });
  clients_.erase(oldest);
}

}  // namespace kadr::auth::detail
