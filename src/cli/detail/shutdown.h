// ShutdownSignal: turns SIGINT and SIGTERM into a std::stop_token.
//
// Construct it first thing in a composition root, before any thread starts: it blocks the
// two signals in the calling thread (threads created later inherit that) and waits for them
// on its own thread with sigwait, so no work happens in a signal handler.
#pragma once

#include <csignal>
#include <stop_token>
#include <thread>

namespace kadr::cli {

class ShutdownSignal {
 public:
  ShutdownSignal();
  ~ShutdownSignal();
  ShutdownSignal(const ShutdownSignal&) = delete;
  ShutdownSignal& operator=(const ShutdownSignal&) = delete;

  std::stop_token token() const { return source_.get_token(); }
  // Stops as if a signal had come (a composition root giving up during start-up).
  void RequestStop() { source_.request_stop(); }
  // Blocks until a stop is requested.
  void Wait() const;
  // The signal received (SIGINT or SIGTERM), 0 if none yet.
  int signal() const { return signal_; }

 private:
  std::stop_source source_;
  sigset_t set_{};
  volatile int signal_ = 0;
  std::thread waiter_;
};

}  // namespace kadr::cli
