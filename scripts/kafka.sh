#!/usr/bin/env bash
# Runs one Apache Kafka node (KRaft, broker and controller) in the foreground, on loopback,
# with the broker settings of deploy/kafka/broker.properties: the same ones deploy/compose
# runs. A developer's broker for `kadr ... --brokers 127.0.0.1:9092`, and the node the tests
# and benchmarks start (one, or three for a cluster). Ctrl-C or SIGTERM stops it cleanly;
# its data stays in --dir, so the next start finds every message again.
#
#   scripts/kafka.sh [options]
#     --dir DIR              data and config (default: .kafka in the checkout)
#     --port P               client listener on 127.0.0.1 (default 9092; 0: a free port)
#     --controller-port C    controller listener (default: a free port)
#     --node-id N            this node's id (default 1)
#     --voters LIST          the controller quorum, id@host:port,... (default: this node only)
#     --cluster-id ID        KRaft cluster id, the same on every node of a cluster
#     --set KEY=VALUE        a broker setting over broker.properties (repeatable), e.g.
#                            --set default.replication.factor=3
#
# Prints `bootstrap: 127.0.0.1:P` once the broker answers metadata requests. Needs the broker's
# jars (scripts/setup-kafka.sh) and Java 17+. The process becomes the JVM (exec), so its pid is
# the broker's: SIGKILL kills the broker itself.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
home="$("$root/scripts/setup-kafka.sh" --home)"
dir="$root/.kafka"
port=9092
controller_port=0
node_id=1
voters=""
cluster_id="4L6g3nShT-eMCtK--X86sw"  # as deploy/compose
sets=()

usage() { sed -n '2,20s/^# \{0,1\}//p' "$0"; }
while (($#)); do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --controller-port) controller_port="$2"; shift 2 ;;
    --node-id) node_id="$2"; shift 2 ;;
    --voters) voters="$2"; shift 2 ;;
    --cluster-id) cluster_id="$2"; shift 2 ;;
    --set) sets+=("$2"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "kafka.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

if [[ ! -d "$home/libs" ]]; then
  echo "kafka.sh: no Apache Kafka in $home: run scripts/setup-kafka.sh" >&2
  exit 1
fi
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
[[ "$port" == 0 ]] && port="$(free_port)"
[[ "$controller_port" == 0 ]] && controller_port="$(free_port)"
[[ -z "$voters" ]] && voters="$node_id@127.0.0.1:$controller_port"

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
config="$dir/server.properties"
{
  cat "$root/deploy/kafka/broker.properties"
  echo
  echo "# this node (scripts/kafka.sh)"
  echo "process.roles=broker,controller"
  echo "node.id=$node_id"
  echo "controller.quorum.voters=$voters"
  echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port"
  echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port"
  echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  echo "controller.listener.names=CONTROLLER"
  echo "inter.broker.listener.name=PLAINTEXT"
  echo "log.dirs=$dir/data"
  if ((${#sets[@]})); then
    echo "# --set"
    printf '%s\n' "${sets[@]}"
  fi
} >"$config"

java_args=(${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$root/deploy/kafka/log4j2.properties"
  -cp "$home/libs/*")
if [[ ! -f "$dir/data/meta.properties" ]]; then
  java "${java_args[@]}" kafka.tools.StorageTool format --ignore-formatted \
    -t "$cluster_id" -c "$config" >"$dir/format.log" 2>&1 || {
    cat "$dir/format.log" >&2
    exit 1
  }
fi

# Says when the broker answers (a metadata request naming this node), from a watcher that
# ends with the broker.
broker_pid=$$
(
  for _ in $(seq 1 1200); do
    kill -0 "$broker_pid" 2>/dev/null || exit 0
    if kcat -b "127.0.0.1:$port" -L -m 2 2>/dev/null | grep -q "broker $node_id at"; then
      echo "bootstrap: 127.0.0.1:$port"
      exit 0
    fi
    sleep 0.2
  done
  echo "kafka.sh: node $node_id did not answer on 127.0.0.1:$port within 240 s" >&2
) &
exec java "${java_args[@]}" kafka.Kafka "$config"
