#!/usr/bin/env bash
# The second README command: installs dependencies, builds, and runs every test.
#
#   scripts/test.sh            release build, all tests (unit + integration)
#   scripts/test.sh asan       the same suite under AddressSanitizer + UBSan
#   KADR_LINT=1 scripts/test.sh   also checks clang-format and clang-tidy
#
# Tests that need real models and photos read them from $KADR_TEST_DATA (default: ../shared
# when it exists) and skip with a message otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"

./scripts/setup-debian.sh
if [ -z "${KADR_TEST_DATA:-}" ] && [ -d ../shared/models ]; then
  KADR_TEST_DATA="$(cd ../shared && pwd)"
fi
export KADR_TEST_DATA="${KADR_TEST_DATA:-}"
if [ -n "$KADR_TEST_DATA" ]; then
  echo "test data: $KADR_TEST_DATA"
else
  echo "test data: none (set KADR_TEST_DATA=../shared to run the real-model tests)"
fi

./scripts/build.sh "$preset"
if [ "${KADR_LINT:-0}" = 1 ]; then
  ./scripts/lint.sh "build/$preset"
fi
ctest --preset "$preset" -j "$(nproc)"
