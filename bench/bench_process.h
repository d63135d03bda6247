// Helpers shared by the benches that drive a whole `kadr` process (gateway_bench,
// stream_bench): start `kadr up` as a child, read its URL line, wait for /readyz, CPU time of a
// process, small file and string helpers. Header-only; benches are single programs.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <httplib.h>

namespace kadr::bench {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;  // as kadr::SteadyClock (common/clock.h)

// The line `kadr up` prints once its HTTP server listens.
inline constexpr std::string_view kUrlPrefix = "kadr: web UI and API on ";

inline double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

inline std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline std::string LoadAverage() {
  std::string s = ReadFile("/proc/loadavg");
  std::istringstream in(s);
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c + " (1/5/15 min)";
}

inline std::vector<std::string> SplitWords(const std::string& s) {
  std::istringstream in(s);
  return {std::istream_iterator<std::string>(in), std::istream_iterator<std::string>()};
}

// CPU seconds (user + system) of this process.
inline double SelfCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return tv(usage.ru_utime) + tv(usage.ru_stime);
}

// CPU seconds (user + system) of another process, from /proc/<pid>/stat; -1 when unknown.
inline double ProcessCpuSeconds(pid_t pid) {
  const std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');  // the command name may contain spaces
  if (close == std::string::npos) return -1;
  std::istringstream in(stat.substr(close + 2));
  std::vector<std::string> fields{std::istream_iterator<std::string>(in),
                                  std::istream_iterator<std::string>()};
  // Fields after the name start at 3 (state); utime and stime are fields 14 and 15.
  if (fields.size() < 13) return -1;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  return (std::atof(fields[11].c_str()) + std::atof(fields[12].c_str())) / ticks;
}

inline fs::path SelfDir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : exe.parent_path();
}

class KadrProcess {
 public:
  ~KadrProcess() { Stop(); }

  bool Start(const std::vector<std::string>& argv, const fs::path& log_path) {
    log_path_ = log_path;
    int out_pipe[2];
    if (pipe(out_pipe) != 0) {
      std::perror("pipe");
      return false;
    }
    const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      std::perror("open log");
      return false;
    }
    std::vector<char*> cargv;
    cargv.reserve(argv.size() + 1);
    for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0) {
      std::perror("fork");
      return false;
    }
    if (pid_ == 0) {
      // The child dies with the bench, even if the bench crashes.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(127);
      dup2(out_pipe[1], STDOUT_FILENO);
      dup2(log_fd, STDERR_FILENO);
      close(out_pipe[0]);
      close(out_pipe[1]);
      execv(cargv[0], cargv.data());
      constexpr char kExecFailed[] = "bench: execv of kadr failed\n";
      [[maybe_unused]] const auto ignored =
          write(STDERR_FILENO, kExecFailed, sizeof kExecFailed - 1);
      _exit(127);
    }
    close(out_pipe[1]);
    close(log_fd);
    out_fd_ = out_pipe[0];
    reader_ = std::thread([this] { ReadStdout(); });
    return true;
  }

  // Waits for the URL line; empty when it does not come within `timeout` or the child exits.
  std::string WaitForUrl(std::chrono::seconds timeout) {
    const auto deadline = SteadyClock::now() + timeout;
    while (SteadyClock::now() < deadline) {
      {
        std::lock_guard lock(mu_);
        if (!url_.empty()) return url_;
      }
      if (!Alive()) return "";
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return "";
  }

  // False once the child has exited (and reaps it). Thread-compatible.
  bool Alive() {
    if (pid_ <= 0 || exited_) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      exit_status_ = status;
      return false;
    }
    return true;
  }

  pid_t pid() const { return pid_; }

  // SIGTERM, then waits up to `timeout` (SIGKILL after it). Returns a line describing the exit.
  std::string Stop(std::chrono::seconds timeout = std::chrono::seconds(20)) {
    std::string what;
    if (pid_ > 0 && Alive()) {
      const auto start = SteadyClock::now();
      kill(pid_, SIGTERM);
      while (Alive() && SteadyClock::now() - start < timeout) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      char buf[128];
      if (Alive()) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &exit_status_, 0);
        exited_ = true;
        std::snprintf(buf, sizeof buf, "did not exit %lld s after SIGTERM: killed",
                      static_cast<long long>(timeout.count()));
      } else {
        std::snprintf(buf, sizeof buf, "exited %.2f s after SIGTERM, %s",
                      Seconds(SteadyClock::now() - start), ExitText().c_str());
      }
      what = buf;
    } else if (pid_ > 0) {
      what = "had already exited, " + ExitText();
    }
    if (reader_.joinable()) reader_.join();
    if (out_fd_ >= 0) close(out_fd_);
    out_fd_ = -1;
    pid_ = -1;
    return what;
  }

  // The last lines of the child's stderr, for error messages.
  std::string LogTail(std::size_t lines = 25) const {
    std::istringstream in(ReadFile(log_path_));
    std::vector<std::string> all;
    for (std::string line; std::getline(in, line);) all.push_back(line);
    std::string out;
    for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
      out += "    " + all[i] + "\n";
    }
    return out;
  }

 private:
  std::string ExitText() const {
    if (WIFEXITED(exit_status_)) return "exit code " + std::to_string(WEXITSTATUS(exit_status_));
    if (WIFSIGNALED(exit_status_)) return "signal " + std::to_string(WTERMSIG(exit_status_));
    return "status " + std::to_string(exit_status_);
  }

  // Echoes the child's stdout (prefixed) and picks out the URL; runs until EOF.
  void ReadStdout() {
    std::string pending;
    char buf[4096];
    for (;;) {
      const ssize_t n = read(out_fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      pending.append(buf, static_cast<std::size_t>(n));
      for (auto eol = pending.find('\n'); eol != std::string::npos; eol = pending.find('\n')) {
        const std::string line = pending.substr(0, eol);
        pending.erase(0, eol + 1);
        std::printf("  [kadr stdout] %s\n", line.c_str());
        std::fflush(stdout);
        const auto at = line.find(kUrlPrefix);
        if (at != std::string::npos) {
          std::string url = line.substr(at + kUrlPrefix.size());
          while (!url.empty() && (url.back() == '/' || url.back() == '\r' || url.back() == ' ')) {
            url.pop_back();
          }
          std::lock_guard lock(mu_);
          if (url_.empty()) url_ = url;
        }
      }
    }
  }

  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_status_ = 0;
  int out_fd_ = -1;
  fs::path log_path_;
  std::thread reader_;
  std::mutex mu_;
  std::string url_;  // guarded by mu_
};

inline std::unique_ptr<httplib::Client> MakeClient(const std::string& url) {
  auto client = std::make_unique<httplib::Client>(url);
  client->set_keep_alive(true);
  client->set_tcp_nodelay(true);  // as curl and browsers do; else Nagle can hold the last segment
  client->set_connection_timeout(5);
  client->set_read_timeout(120);
  client->set_write_timeout(60);
  return client;
}

// Polls GET /readyz until 200; false after `timeout` or when the child exits.
inline bool WaitReady(KadrProcess& kadr, const std::string& url, std::chrono::seconds timeout) {
  auto client = MakeClient(url);
  client->set_read_timeout(5);
  const auto start = SteadyClock::now();
  std::string last = "no answer";
  while (SteadyClock::now() - start < timeout) {
    if (!kadr.Alive()) {
      std::fprintf(stderr, "error: kadr exited while starting\n");
      return false;
    }
    auto res = client->Get("/readyz");
    if (res && res->status == 200) {
      std::printf("ready after %.1f s: %s\n", Seconds(SteadyClock::now() - start),
                  res->body.substr(0, 300).c_str());
      return true;
    }
    last = res ? "HTTP " + std::to_string(res->status) + " " + res->body.substr(0, 300)
               : "transport " + httplib::to_string(res.error());
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::fprintf(stderr, "error: /readyz not 200 after %lld s; last: %s\n",
               static_cast<long long>(timeout.count()), last.c_str());
  return false;
}

// The kadr binary: `override` when set, else next to the running bench.
inline fs::path FindKadr(const std::string& override_path) {
  if (!override_path.empty()) return override_path;
  // build/<preset>/bench/<this> -> build/<preset>/kadr (the kadr target's RUNTIME_OUTPUT_DIRECTORY
  // is the build root), or build/<preset>/src/cli/kadr.
  const fs::path dir = SelfDir();
  for (const fs::path& candidate : {dir / ".." / "kadr", dir / ".." / "src" / "cli" / "kadr"}) {
    if (fs::exists(candidate)) return fs::weakly_canonical(candidate);
  }
  return dir / ".." / "kadr";
}

}  // namespace kadr::bench
