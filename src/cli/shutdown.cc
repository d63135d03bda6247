#include "cli/shutdown.h"

#include <pthread.h>

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

ShutdownSignal::~ShutdownSignal() {
  pthread_kill(waiter_.native_handle(), SIGUSR1);
  waiter_.join();
}

}  // namespace kadr::cli
