#include "common/random.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdlib>

namespace kadr {

std::uint64_t OsRandom64() {
  std::uint64_t value = 0;
  auto* at = reinterpret_cast<unsigned char*>(&value);
  std::size_t left = sizeof(value);
  while (left > 0) {
    const ssize_t n = getrandom(at, left, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::abort();  // no unpredictable ids rather than guessable ones
    }
    at += n;
    left -= static_cast<std::size_t>(n);
  }
  return value;
}

}  // namespace kadr
