// WaitUntil: the bounded polling loop every end-to-end test waits with (a process is ready, a
// result has come back, a job is done). No timing is asserted: the timeout only bounds a wait
// that should succeed, so a failure says what never happened instead of hanging.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace kadr::testing {

// Calls `done` every `poll` until it returns true (-> true) or `timeout` passes (-> false).
// `done` runs on the calling thread.
inline bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout,
                      std::chrono::milliseconds poll = std::chrono::milliseconds(100)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(poll);
  }
  return true;
}

}  // namespace kadr::testing
