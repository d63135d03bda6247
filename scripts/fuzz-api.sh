#!/usr/bin/env bash
# Schema-driven fuzzing of kadr's HTTP API (docs/adr/0012-fuzzing.md): starts `kadr up` (the
# built-in `null` model, data in a temporary folder, a free port), waits for /readyz 200, then
# runs schemathesis (scripts/setup-schemathesis.sh) with docs/openapi.json against it for
# SECONDS (default 100; every phase: examples, coverage, fuzzing, stateful), one request at
# a time. Fails on any 5xx (check kadr_not_a_server_error in fuzz/schemathesis/kadr_checks.py:
# the documented exceptions are listed there), a request that gets no answer, and on `kadr up`
# crashing or not stopping cleanly on SIGTERM afterwards.
#
#   scripts/fuzz-api.sh [SECONDS]
#   KADR_BINARY=path/to/kadr    the binary to fuzz (default: the newer of build/ci/kadr and
#                               build/release/kadr, built when neither is; an ASan build works too)
#   KADR_FUZZ_SEED=N            schemathesis' seed (default: a new one, printed, to replay)
#   KADR_FUZZ_API_EXAMPLES=N    generated cases per operation in the fuzzing phase (default 15)
#
# Reports (JUnit, and a HAR file of every request) and the log of `kadr up` are kept in
# build/fuzz/api/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
seconds="${1:-100}"

"$root/scripts/setup-schemathesis.sh" >/dev/null
schemathesis="$("$root/scripts/setup-schemathesis.sh" --bin)"
python="$(dirname "$schemathesis")/python"

binary="${KADR_BINARY:-}"
if [[ -z "$binary" ]]; then
  # The newer of the two (CI: the ci build, just made).
  binary="$(ls -t build/ci/kadr build/release/kadr 2>/dev/null | head -n 1 || true)"
fi
if [[ -z "$binary" ]]; then
  ./scripts/build.sh release kadr
  binary=build/release/kadr
fi

out="$root/build/fuzz/api"
rm -rf "$out"
mkdir -p "$out"
work="$(mktemp -d)"
up_pid=""
cleanup() {
  if [[ -n "$up_pid" ]] && kill -0 "$up_pid" 2>/dev/null; then kill -KILL "$up_pid" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "fuzz-api: starting $binary up (log: build/fuzz/api/up.log)"
"$binary" --models-dir "$work/models" up --http-port 0 --models null --data-dir "$work/data" \
  --probe-timeout-ms 1000 --open-timeout-ms 1000 >"$out/up.log" 2>&1 &
up_pid=$!

# The port from the line `kadr up` prints once it listens, then /readyz 200 (a live worker).
port=""
for _ in $(seq 1 600); do
  port="$(sed -n 's|^kadr: web UI and API on http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$out/up.log")"
  [[ -n "$port" ]] && break
  if ! kill -0 "$up_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if [[ -z "$port" ]]; then
  echo "fuzz-api: kadr up did not start:" >&2
  tail -n 40 "$out/up.log" >&2
  exit 1
fi
base="http://127.0.0.1:$port"
if ! "$python" - "$base/readyz" <<'EOF'; then
import sys, time, urllib.request
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
            if r.status == 200:
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.2)
sys.exit(1)
EOF
  echo "fuzz-api: $base/readyz did not answer 200 within 60 s" >&2
  tail -n 40 "$out/up.log" >&2
  exit 1
fi

seed="${KADR_FUZZ_SEED:-$((RANDOM * 32768 + RANDOM))}"
echo "fuzz-api: schemathesis on docs/openapi.json against $base for ${seconds}s (seed $seed)"
# /api/v1/streams/{id}/live is left out: an MJPEG stream that never ends by design, which no
# request timeout can tell from a hang. The SSE route, /events, schemathesis reads until the
# request timeout (5 s: every other answer of `kadr up` with the null model takes
# milliseconds, a stream's probe at most its 1 s; a request without an answer by then fails).
# Every phase, in order, within the time: examples, coverage, fuzzing (at most
# $KADR_FUZZ_API_EXAMPLES cases per operation, so that the stateful phase, which creates jobs
# and streams and follows their links, gets the rest). From build/fuzz/api/: schemathesis and
# hypothesis keep caches in the working folder.
status=0
(
  cd "$out"
  SCHEMATHESIS_HOOKS="$root/fuzz/schemathesis/kadr_checks.py" \
    "$schemathesis" run "$root/docs/openapi.json" --url "$base" \
    --checks kadr_not_a_server_error --workers 1 --max-time "$seconds" --seed "$seed" \
    --max-examples "${KADR_FUZZ_API_EXAMPLES:-15}" \
    --request-timeout 5 --exclude-path '/api/v1/streams/{id}/live' \
    --generation-database none --no-color --output-truncate true \
    --report junit,har --report-dir "$out"
) || status=$?

if ! kill -0 "$up_pid" 2>/dev/null; then
  wait "$up_pid" || echo "fuzz-api: kadr up died during the run (exit $?):" >&2
  tail -n 60 "$out/up.log" >&2
  up_pid=""
  exit 1
fi
kill -TERM "$up_pid"
up_status=0
for _ in $(seq 1 300); do
  kill -0 "$up_pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$up_pid" 2>/dev/null; then
  echo "fuzz-api: kadr up did not stop within 30 s of SIGTERM" >&2
  status=1
else
  wait "$up_pid" || up_status=$?
  up_pid=""
  if ((up_status != 0)); then
    echo "fuzz-api: kadr up exited with $up_status after SIGTERM:" >&2
    tail -n 40 "$out/up.log" >&2
    status=1
  fi
fi
if grep -qE 'ERROR: AddressSanitizer|runtime error:' "$out/up.log"; then
  echo "fuzz-api: sanitizer report in build/fuzz/api/up.log" >&2
  status=1
fi
if ((status != 0)); then
  echo "fuzz-api: FAILED (replay with KADR_FUZZ_SEED=$seed; reports in build/fuzz/api/)" >&2
else
  echo "fuzz-api: ok"
fi
exit "$status"
