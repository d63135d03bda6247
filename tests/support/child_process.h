// ChildProcess: a program the test starts (`kadr up`, `kadr gateway`, `kadr worker`, ...), with
// its stdout and stderr in a log file, stopped with SIGTERM (then SIGKILL) when the test is done.
//
// The child starts clean whatever the test process did to itself: stdin is /dev/null, no
// signal is blocked and every signal has its default action (so SIGTERM and SIGINT reach the
// program's own handlers). Not thread-safe: one thread owns a ChildProcess.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
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
  // Starts `argv[0]` (a path, not searched in $PATH) with `argv`; stdout and stderr go to
  // `log`. When it cannot be started, started() is false and spawn_error() says why.
  ChildProcess(const std::vector<std::string>& argv, std::filesystem::path log)
      : log_(std::move(log)) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    sigset_t all;
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    spawn_error_ = posix_spawn(&pid_, args[0], &actions, &attr, args.data(), environ);
    if (spawn_error_ != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
  ~ChildProcess() { Stop(std::chrono::seconds(15)); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // posix_spawn's error number when the program could not be started; 0 otherwise.
  int spawn_error() const { return spawn_error_; }
  // The raw waitpid() status (WIFEXITED, WEXITSTATUS, WTERMSIG); meaningful once Running()
  // has returned false for a started process.
  int wait_status() const { return wait_status_; }

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

  // The last `max_chars` characters of the log, for a failure message.
  std::string LogTail(std::size_t max_chars = 6000) const {
    const std::string text = Log();
    return text.size() > max_chars ? text.substr(text.size() - max_chars) : text;
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

  // SIGKILL (no chance to clean up, like a crash or a power cut) and reap it; a no-op when it
  // has already exited or never started.
  void Kill() {
    if (!Running()) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, &wait_status_, 0);
    reaped_ = true;
  }

 private:
  pid_t pid_ = -1;
  std::filesystem::path log_;
  bool reaped_ = false;
  int wait_status_ = 0;
  int spawn_error_ = 0;
};

}  // namespace kadr::testing
