#include "cli/detail/shutdown.h"

#include <pthread.h>

#include <condition_variable>
#include <mutex>

#include <spdlog/spdlog.h>

namespace kadr::cli {

ShutdownSignal::ShutdownSignal() {
  sigemptyset(&set_);
  sigaddset(&set_, SIGINT);
  sigaddset(&set_, SIGTERM);
  sigaddset(&set_, SIGUSR1);  // used only to wake the waiter at destruction
  pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  waiter_ = std::thread([this] {
    int sig = 0;
    while (sigwait(&set_, &sig) == 0) {
      if (sig == SIGUSR1) return;
      signal_ = sig;
      spdlog::info("shutting down signal={}", sig == SIGINT ? "SIGINT" : "SIGTERM");
      source_.request_stop();
    }
  });
}

void ShutdownSignal::Wait() const {
  std::mutex mu;
  std::condition_variable cv;
  const std::stop_token token = source_.get_token();
  std::stop_callback wake(token, [&] {
    std::lock_guard lock(mu);
    cv.notify_all();
  });
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return token.stop_requested(); });
}

ShutdownSignal::~ShutdownSignal() {
  pthread_kill(waiter_.native_handle(), SIGUSR1);
  waiter_.join();
}

}  // namespace kadr::cli
