// Monotonic time helpers for measuring stages. Header-only, thread-safe.
#pragma once

#include <chrono>
#include <cstdint>

namespace kadr {

using SteadyClock = std::chrono::steady_clock;

// Wall-clock time as Unix milliseconds: the protocol's timestamps (capture, deadline, job times).
inline std::int64_t UnixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Milliseconds (fractional) elapsed since `start`.
inline double MillisSince(SteadyClock::time_point start) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - start).count();
}

// A started stopwatch: `Stopwatch sw; ...; double ms = sw.Lap();` returns ms since the last lap.
class Stopwatch {
 public:
  Stopwatch() : last_(SteadyClock::now()) {}
  double Lap() {
    auto now = SteadyClock::now();
    double ms = std::chrono::duration<double, std::milli>(now - last_).count();
    last_ = now;
    return ms;
  }

 private:
  SteadyClock::time_point last_;
};

}  // namespace kadr
