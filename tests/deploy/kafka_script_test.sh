#!/usr/bin/env bash
# scripts/kafka.sh as a developer uses it: a node starts on the given ports with
# deploy/kafka/broker.properties, prints its bootstrap line, takes a message, stops cleanly on
# SIGTERM, and a restart on the same folder still has the message (the data is on disk).
# Needs the broker's jars (scripts/setup-kafka.sh), Java and kcat; without the jars it reports
# itself skipped.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
libs="$("$root/scripts/setup-kafka.sh" --home)/libs"
if [[ ! -d "$libs" ]]; then
  echo "kadr deploy test skipped: no Apache Kafka in $libs (run scripts/setup-kafka.sh)"
  exit 0
fi
tmp="$(mktemp -d)"
pid=""
cleanup() {
  [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port="$(free_port)"
controller="$(free_port)"

start() {  # LOG
  "$root/scripts/kafka.sh" --dir "$tmp/kafka" --port "$port" --controller-port "$controller" \
    --set num.partitions=2 >"$1" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    if grep -q "^bootstrap: 127.0.0.1:$port$" "$1"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.2
  done
  echo "FAIL: no bootstrap line from scripts/kafka.sh"; cat "$1"; exit 1
}
stop() {
  kill -TERM "$pid"
  local code=0
  wait "$pid" || code=$?
  pid=""
  # The JVM reports a SIGTERM it handled (Kafka's clean shutdown) as 143.
  if [[ $code -ne 0 && $code -ne 143 ]]; then echo "FAIL: exit $code after SIGTERM"; exit 1; fi
}

start "$tmp/first.log"
grep -q "^message.max.bytes=18874368$" "$tmp/kafka/server.properties" ||
  { echo "FAIL: broker.properties not in the node's config"; exit 1; }
grep -q "^num.partitions=2$" "$tmp/kafka/server.properties" || { echo "FAIL: --set ignored"; exit 1; }
echo "kept across restarts" | kcat -q -P -b "127.0.0.1:$port" -t kadr.test.script -X acks=all
stop

start "$tmp/second.log"
got="$(timeout 30 kcat -q -C -e -b "127.0.0.1:$port" -t kadr.test.script -o beginning)"
[[ "$got" == "kept across restarts" ]] || { echo "FAIL: after the restart the topic had '$got'"; exit 1; }
partitions="$(kcat -L -b "127.0.0.1:$port" -t kadr.test.script | grep -c 'partition ')"
[[ "$partitions" == 2 ]] || { echo "FAIL: $partitions partitions, --set num.partitions=2"; exit 1; }
stop
echo "ok: scripts/kafka.sh started, kept a message across a clean restart, stopped on SIGTERM"
