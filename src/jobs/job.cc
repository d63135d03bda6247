#include "jobs/job.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <utility>

#include "common/random.h"

namespace kadr::jobs {
namespace {

constexpr std::size_t kMaxJobIdLength = 64;
// JobIdForStream: kept characters of an invalid stream id, then '-' and 16 hex digits.
constexpr std::size_t kKeptStreamChars = 47;
constexpr char kHex[] = "0123456789abcdef";
// NewJobId: "j", 12 hex digits of time, 12 of randomness.
constexpr std::size_t kTimeDigits = 12;
constexpr std::size_t kRandomDigits = 12;

constexpr std::array<std::pair<JobKind, std::string_view>, 3> kKinds = {
    {{JobKind::kImage, "image"}, {JobKind::kVideo, "video"}, {JobKind::kStream, "stream"}}};
constexpr std::array<std::pair<JobState, std::string_view>, 5> kStates = {
    {{JobState::kQueued, "queued"},
     {JobState::kRunning, "running"},
     {JobState::kDone, "done"},
     {JobState::kFailed, "failed"},
     {JobState::kCancelled, "cancelled"}}};

bool IsJobIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

// FNV-1a, 64 bits: stable across builds and platforms, unlike std::hash, so that a stream
// keeps its job id across restarts.
std::uint64_t Fnv1a64(std::string_view s) {
  std::uint64_t h = 14695981039346656037ULL;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return h;
}

void AppendHex(std::string& out, std::uint64_t value, std::size_t digits) {
  for (std::size_t i = digits; i-- > 0;) out += kHex[(value >> (4 * i)) & 0xF];
}

}  // namespace

std::string_view JobKindName(JobKind kind) {
  for (const auto& [k, name] : kKinds) {
    if (k == kind) return name;
  }
  return "image";
}

std::optional<JobKind> ParseJobKind(std::string_view name) {
  for (const auto& [k, n] : kKinds) {
    if (n == name) return k;
  }
  return std::nullopt;
}

std::string_view JobStateName(JobState state) {
  for (const auto& [s, name] : kStates) {
    if (s == state) return name;
  }
  return "failed";
}

std::optional<JobState> ParseJobState(std::string_view name) {
  for (const auto& [s, n] : kStates) {
    if (n == name) return s;
  }
  return std::nullopt;
}

bool IsFinished(JobState state) {
  return state == JobState::kDone || state == JobState::kFailed || state == JobState::kCancelled;
}

bool CanTransition(JobState from, JobState to) {
  if (from == to) return true;
  switch (from) {
    case JobState::kQueued:
      return true;
    case JobState::kRunning:
      return to != JobState::kQueued;
    case JobState::kDone:
    case JobState::kFailed:
    case JobState::kCancelled:
      return false;
  }
  return false;
}

Status CheckTransition(JobState from, JobState to) {
  if (CanTransition(from, to)) return Status::Ok();
  return FailedPreconditionError("a " + std::string(JobStateName(from)) + " job cannot become " +
                                 std::string(JobStateName(to)));
}

bool IsValidJobId(std::string_view id) {
  return !id.empty() && id.size() <= kMaxJobIdLength &&
         std::all_of(id.begin(), id.end(), IsJobIdChar);
}

std::string NewJobId(std::int64_t now_ms) {
  // From the OS: a generator seeded once could be predicted from the ids it gave out.
  const std::uint64_t random = OsRandom64();
  std::string id = "j";
  id.reserve(1 + kTimeDigits + kRandomDigits);
  AppendHex(id, static_cast<std::uint64_t>(std::max<std::int64_t>(0, now_ms)), kTimeDigits);
  AppendHex(id, random, kRandomDigits);
  return id;
}

std::optional<std::int64_t> JobIdTimeMs(std::string_view id) {
  if (id.size() != 1 + kTimeDigits + kRandomDigits || id[0] != 'j') return std::nullopt;
  std::uint64_t ms = 0;
  const char* begin = id.data() + 1;
  const char* end = begin + kTimeDigits;
  const auto [ptr, ec] = std::from_chars(begin, end, ms, 16);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  if (!std::all_of(end, id.data() + id.size(),
                   [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); })) {
    return std::nullopt;
  }
  return static_cast<std::int64_t>(ms);
}

std::string JobIdForStream(std::string_view stream_id) {
  if (stream_id.empty() || IsValidJobId(stream_id)) return std::string(stream_id);
  std::string id;
  for (char c : stream_id.substr(0, kKeptStreamChars)) id += IsJobIdChar(c) ? c : '_';
  id += '-';
  AppendHex(id, Fnv1a64(stream_id), 16);
  return id;
}

}  // namespace kadr::jobs
