#!/usr/bin/env bash
# Configures and builds one CMake preset (default: release), all targets or the ones named.
#   scripts/build.sh [PRESET [TARGET...]]      e.g. scripts/build.sh release kadr
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
shift || true
cmake --preset "$preset" >/dev/null
if (($#)); then
  cmake --build --preset "$preset" -j "$(nproc)" --target "$@"
else
  cmake --build --preset "$preset" -j "$(nproc)"
fi
