// Monotonic time helpers for measuring stages. Header-only, thread-safe.
#pragma once

#include <chrono>

namespace kadr {

using SteadyClock = std::chrono::steady_clock;

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
