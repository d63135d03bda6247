#!/usr/bin/env bash
# Fuzzing, bounded in time (docs/adr/0012-fuzzing.md; what is fuzzed: docs/security.md
# "Fuzzing"). Two fuzzers, run side by side (each keeps one core busy):
#
#   libFuzzer   builds the fuzz preset (clang 14; build/fuzz; kadr's libraries under ASan +
#               UBSan with coverage) and runs every target of fuzz/ for SECONDS (default 20)
#               from its checked-in seed corpus (fuzz/corpus/<target>, whose reproducers of
#               fixed bugs run first) with its dictionary (fuzz/dict); fails on a crash, a
#               sanitizer report, a broken property, a leak, an input slower than 10 s or one
#               that needs over 2 GiB. Each failing input is kept in
#               build/fuzz/artifacts/<target>/ (replay: build/fuzz/bin/<target> FILE).
#   API         scripts/fuzz-api.sh: schemathesis on docs/openapi.json against `kadr up`, for
#               $KADR_FUZZ_API_SECONDS (default 100), in the background once the build is done
#               (within the libFuzzer targets' time, so it adds nothing to the stage's).
#
#   scripts/fuzz.sh [SECONDS]              both; prints executions per target, fails on any finding
#   scripts/fuzz.sh --libfuzzer [SECONDS]  only the libFuzzer targets
#   KADR_FUZZ_TARGETS="upload multipart"   only these libFuzzer targets
#
# New inputs that reach new code are kept in build/fuzz/corpus/<target> (not checked in), so
# repeated local runs go deeper. scripts/test.sh fuzz runs this after installing the packages.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

api=1
if [[ "${1:-}" == --libfuzzer ]]; then
  api=0
  shift
fi
seconds="${1:-20}"
api_seconds="${KADR_FUZZ_API_SECONDS:-100}"
start=$SECONDS

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$(nproc)"
echo "fuzz: built in $((SECONDS - start)) s"

# The API fuzzer beside the libFuzzer targets: each is one process busy on one core.
api_pid=""
api_log="build/fuzz/api.log"
if ((api)); then
  ./scripts/fuzz-api.sh "$api_seconds" >"$api_log" 2>&1 &
  api_pid=$!
  echo "fuzz: API fuzzer started in the background (log: $api_log)"
fi

targets=()
if [[ -n "${KADR_FUZZ_TARGETS:-}" ]]; then
  for t in $KADR_FUZZ_TARGETS; do targets+=("${t%_fuzzer}"); done
else
  for bin in build/fuzz/bin/*_fuzzer; do
    t="$(basename "$bin")"
    targets+=("${t%_fuzzer}")
  done
fi

# Which dictionary each target reads (targets on JSON share one).
dict_of() {
  case "$1" in
    image_decode) echo fuzz/dict/image.dict ;;
    result_json | stream_spec) echo fuzz/dict/json.dict ;;
    *) echo "fuzz/dict/$1.dict" ;;
  esac
}

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
failed=()
summary=()
for t in "${targets[@]}"; do
  bin="build/fuzz/bin/${t}_fuzzer"
  if [[ ! -x "$bin" ]]; then
    echo "fuzz: no target $t ($bin)" >&2
    failed+=("$t")
    continue
  fi
  corpus="build/fuzz/corpus/$t"
  artifacts="build/fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$artifacts/")
  dict="$(dict_of "$t")"
  [[ -f "$dict" ]] && args+=(-dict="$dict")
  log="build/fuzz/$t.log"
  echo "fuzz: $t for ${seconds}s"
  status=0
  "$bin" "${args[@]}" "$corpus" "fuzz/corpus/$t" >"$log" 2>&1 || status=$?
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")"
  rss="$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")"
  if ((status != 0)); then
    failed+=("$t")
    summary+=("$(printf '%-14s FAILED (exit %d) after %s executions' "$t" "$status" "${runs:-0}")")
    echo "fuzz: $t FAILED; the report (from build/fuzz/$t.log):" >&2
    grep -E -A30 'ERROR: |runtime error:|property broken|Test unit written' "$log" | head -n 60 >&2 ||
      tail -n 40 "$log" >&2
  else
    summary+=("$(printf '%-14s ok  %9s executions  %6s/s  peak %s MB' "$t" "$runs" "$rate" "$rss")")
  fi
done

echo "fuzz: libFuzzer, ${seconds}s per target:"
printf '  %s\n' "${summary[@]}"

if [[ -n "$api_pid" ]]; then
  api_status=0
  wait "$api_pid" || api_status=$?
  echo "fuzz: API fuzzer (scripts/fuzz-api.sh ${api_seconds}), log $api_log:"
  sed -n '/^fuzz-api:/p; /^=\+ SUMMARY/,/^=\+ .* in [0-9.]*s =\+$/p' "$api_log" | sed 's/^/  /'
  if ((api_status != 0)); then
    failed+=("api")
    sed -n '/^=\+ FAILURES/,/^=\+ WARNINGS\|^=\+ SUMMARY/p' "$api_log" | cut -c1-400 >&2
  fi
fi

echo "fuzz: $((SECONDS - start)) s in all"
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ok"
