#!/usr/bin/env bash
# The second README command: installs dependencies, builds, and runs every test.
#
#   scripts/test.sh            release build, all tests (unit, integration, deploy, browser)
#   scripts/test.sh unit       the developer's inner loop: builds only the unit-test binaries
#                              (target unit_tests) in build/release and runs the `unit` label
#   scripts/test.sh asan       unit + integration tests under AddressSanitizer + UBSan (the
#                              deploy and browser checks run node/nginx/chromium, not our code)
#   scripts/test.sh ci         release with -Werror, all tests, failing fast: the unit label
#                              first (test preset ci-unit), then the rest (ci-rest)
#   scripts/test.sh fuzz       fuzzing, bounded in time (scripts/fuzz.sh): every libFuzzer target
#                              of fuzz/ for $KADR_FUZZ_SECONDS (default 20) under ASan + UBSan, and
#                              schemathesis on `kadr up` (the ci or release build) beside them
#   scripts/test.sh PRESET     any other preset (e.g. debug): build it, run its test preset
#   KADR_LINT=1 scripts/test.sh ...   also checks clang-format and clang-tidy, before the tests
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

if [ "$preset" = fuzz ]; then
  exec ./scripts/fuzz.sh "${KADR_FUZZ_SECONDS:-20}"
fi

# The build preset, its targets (none: all) and the test presets to run, in order.
case "$preset" in
  unit) build_preset=release targets=(unit_tests) test_presets=(unit) ;;
  ci) build_preset=ci targets=() test_presets=(ci-unit ci-rest) ;;
  *) build_preset="$preset" targets=() test_presets=("$preset") ;;
esac

./scripts/build.sh "$build_preset" "${targets[@]}"
if [ "${KADR_LINT:-0}" = 1 ]; then
  ./scripts/lint.sh "build/$build_preset"
fi
for test_preset in "${test_presets[@]}"; do
  ctest --preset "$test_preset" -j "$(nproc)"
done
