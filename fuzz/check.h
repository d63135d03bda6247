// KADR_FUZZ_CHECK: a property every fuzz target states about kadr's answer (a decoded image
// within its limits, a result that encodes and decodes again). A broken property aborts, and
// libFuzzer keeps the input as crash-<sha1>, exactly as for a sanitizer's report.
#pragma once

#include <cstdio>
#include <cstdlib>

#define KADR_FUZZ_CHECK(condition, what)                                                  \
  do {                                                                                    \
    if (!(condition)) {                                                                   \
      std::fprintf(stderr, "%s:%d: property broken: %s (%s)\n", __FILE__, __LINE__, what, \
                   #condition);                                                           \
      std::abort();                                                                       \
    }                                                                                     \
  } while (false)
