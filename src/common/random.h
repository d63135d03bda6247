// Unpredictable numbers from the operating system (getrandom(2)): for ids that must not be
// guessable from the ones a client has seen (job and stream ids). Thread-safe.
#pragma once

#include <cstdint>

namespace kadr {

// 64 bits from the kernel's random source. Blocks only before the kernel's pool is
// initialised at boot; aborts when the source fails (it does not on Linux >= 3.17).
std::uint64_t OsRandom64();

}  // namespace kadr
