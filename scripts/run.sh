#!/usr/bin/env bash
# The newcomer's first command: installs dependencies, builds kadr and runs the whole system
# with `kadr up` (embedded Kafka-protocol broker, a worker per model, viewer, gateway); the
# web UI and the REST API are on http://127.0.0.1:8080/ until Ctrl-C.
#
# Usage: scripts/run.sh [kadr up options...]     e.g. --http-port 9000 --models yolox_nano
#   Models come from $KADR_MODELS_DIR (default: ../shared/models when present, else ./models);
#   the built-ins people-hog, faces-haar and null are always there.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-debian.sh
./scripts/build.sh release kadr  # only what it runs: no tests, no benchmarks

data="${KADR_TEST_DATA:-../shared}"
export KADR_MODELS_DIR="${KADR_MODELS_DIR:-$([ -d "$data/models" ] && echo "$data/models" || echo models)}"
echo "run: models from $KADR_MODELS_DIR; history in ./kadr-data; Ctrl-C stops everything"
exec ./build/release/kadr up --data-dir kadr-data "$@"
