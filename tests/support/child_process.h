// ChildProcess: a program the test starts (`kadr up`, `kadr gateway`, ...), with its stdout
// and stderr in a log file, stopped with SIGTERM (then SIGKILL) when the test is done.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace kadr::testing {

class ChildProcess {
 public:
  // Starts `argv[0]` with `argv`; stdout and stderr go to `log`.
  ChildProcess(const std::vector<std::string>& argv, std::filesystem::path log)
      : log_(std::move(log)) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~ChildProcess() { Stop(std::chrono::seconds(15)); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  bool Running() {
    if (pid_ <= 0 || reaped_) return false;
    if (waitpid(pid_, &wait_status_, WNOHANG) == pid_) reaped_ = true;
    return !reaped_;
  }

  std::string Log() const {
    std::ifstream in(log_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // Waits for a log line matching `pattern`; returns its first capture group (or the whole
  // match). Empty when the process exits or `timeout` passes first.
  std::optional<std::string> WaitForLog(const std::string& pattern,
                                        std::chrono::milliseconds timeout) {
    const std::regex re(pattern);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string text = Log();
      std::smatch m;
      if (std::regex_search(text, m, re)) return m.size() > 1 ? m[1].str() : m[0].str();
      if (!Running()) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return std::nullopt;
  }

  // SIGTERM, then SIGKILL after `grace`. Returns the exit code, or -1 when it was killed by
  // a signal (or never started).
  int Stop(std::chrono::milliseconds grace) {
    if (pid_ <= 0) return -1;
    if (!reaped_) {
      kill(pid_, SIGTERM);
      const auto deadline = std::chrono::steady_clock::now() + grace;
      while (Running() && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (Running()) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &wait_status_, 0);
        reaped_ = true;
      }
    }
    return WIFEXITED(wait_status_) ? WEXITSTATUS(wait_status_) : -1;
  }

 private:
  pid_t pid_ = -1;
  std::filesystem::path log_;
  bool reaped_ = false;
  int wait_status_ = 0;
};

}  // namespace kadr::testing
