#include "common/cpu.h"

#include <sched.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <fstream>
#include <string>
#include <thread>

namespace kadr::cpu {
namespace {

// The first line of a small kernel file; empty when it cannot be read.
std::string FirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (in) std::getline(in, line);
  return line.substr(0, 256);
}

std::optional<std::int64_t> ParsePositive(std::string_view text) {
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value <= 0) return std::nullopt;
  return value;
}

std::optional<int> CoresFromQuota(std::string_view quota, std::string_view period) {
  const std::optional<std::int64_t> q = ParsePositive(quota);
  const std::optional<std::int64_t> p = ParsePositive(period);
  if (!q || !p) return std::nullopt;
  const std::int64_t cores = (*q + *p - 1) / *p;
  return static_cast<int>(std::clamp<std::int64_t>(cores, 1, 1 << 20));
}

// The process's cgroup path in one hierarchy of /proc/self/cgroup: "0::" for cgroup v2, the
// line whose controllers include "cpu" for v1. "/" inside a container's cgroup namespace.
std::optional<std::string> CgroupPath(bool v2) {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  for (int lines = 0; lines < 64 && std::getline(in, line); ++lines) {
    const std::size_t first = line.find(':');
    const std::size_t second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = "," + line.substr(first + 1, second - first - 1) + ",";
    if (v2 ? line.rfind("0::", 0) == 0 : controllers.find(",cpu,") != std::string::npos) {
      return line.substr(second + 1);
    }
  }
  return std::nullopt;
}

// `limit_in(dir)` for `path` and each of its ancestors up to the hierarchy's root: the limit of
// every ancestor applies too.
template <typename LimitIn>
void ForPathAndAncestors(std::string path, LimitIn limit_in) {
  for (int depth = 0; depth < 32; ++depth) {
    limit_in(path == "/" ? std::string() : path);
    if (path.empty() || path == "/") return;
    const std::size_t slash = path.rfind('/');
    path = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
  }
}

std::optional<int> CgroupCores() {
  std::optional<int> cores;
  const auto take = [&cores](std::optional<int> limit) {
    if (limit && (!cores || *limit < *cores)) cores = limit;
  };
  if (std::optional<std::string> path = CgroupPath(true)) {
    ForPathAndAncestors(*path, [&](const std::string& dir) {
      take(CoresFromCpuMax(FirstLine("/sys/fs/cgroup" + dir + "/cpu.max")));
    });
  }
  if (std::optional<std::string> path = CgroupPath(false)) {
    ForPathAndAncestors(*path, [&](const std::string& dir) {
      const std::string base = "/sys/fs/cgroup/cpu" + dir;
      take(CoresFromQuota(FirstLine(base + "/cpu.cfs_quota_us"),
                          FirstLine(base + "/cpu.cfs_period_us")));
    });
  }
  return cores;
}

}  // namespace

std::optional<int> CoresFromCpuMax(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  const std::size_t space = text.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  return CoresFromQuota(text.substr(0, space), text.substr(space + 1));
}

int UsableCores() {
  int cores = static_cast<int>(std::thread::hardware_concurrency());
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = CPU_COUNT(&set);
  if (const std::optional<int> limit = CgroupCores()) cores = std::min(cores, *limit);
  return std::max(1, cores);
}

}  // namespace kadr::cpu
