#!/usr/bin/env bash
# Installs the Debian 12 packages kadr needs, in two groups:
#
#   scripts/setup-debian.sh           everything: build, run and test (linters, chromium, ffmpeg,
#                                     GStreamer, GoogleTest, benchmark, docker-compose, nginx,
#                                     node + the npm packages of tests/*/package-lock.json,
#                                     Java + Maven and Apache Kafka's broker for the tests
#                                     through scripts/setup-kafka.sh; clang 14 + libFuzzer and
#                                     schemathesis for scripts/fuzz.sh, the latter through
#                                     scripts/setup-schemathesis.sh; buildah and debootstrap
#                                     for the image test, scripts/image.sh)
#   scripts/setup-debian.sh --build   only what building `kadr` needs (compiler, CMake, Ninja,
#                                     pkg-config, the -dev libraries, ONNX Runtime through
#                                     scripts/setup-onnxruntime.sh); no test packages. The CPU image's
#                                     builder stage (deploy/docker/Dockerfile) runs exactly this.
#
# Idempotent and non-interactive; uses sudo only when not already root.
set -euo pipefail

usage() { sed -n '2,16s/^# \{0,1\}//p' "$0"; }
mode=all
case "${1:-}" in
  "") ;;
  --build) mode=build ;;
  --all) mode=all ;;
  -h | --help) usage; exit 0 ;;
  *) echo "setup: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
esac

# Building kadr (CMakeLists.txt's find_package / pkg_check_modules).
build_packages=(
  build-essential cmake ninja-build pkg-config
  libopencv-dev
  libavformat-dev libavcodec-dev libavutil-dev libswscale-dev
  libturbojpeg0-dev libexif-dev
  libonnx-dev libprotobuf-dev
  nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev libcpp-httplib-dev
  librdkafka-dev
  libsqlite3-dev
)
# Running and testing it here: the built-in Haar face detector's data, test frameworks, linters,
# the browser and streaming tests' tools, the deploy checks (tests/deploy: `docker-compose
# config` on deploy/compose, `nginx -t` on its reverse-proxy config), and fuzzing
# (scripts/fuzz.sh: clang 14 with libFuzzer, whose runtime is libclang-rt-14-dev's
# libclang_rt.fuzzer-x86_64.a; a venv for schemathesis), and the container image test
# (scripts/image.sh: buildah builds and runs the image without a daemon, debootstrap makes its
# base; curl and jq talk to it).
test_packages=(
  git ca-certificates
  opencv-data
  kcat
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-format clang-tidy
  chromium
  ffmpeg
  python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
  docker-compose nginx-light
  openjdk-17-jre-headless maven
  clang-14 libclang-rt-14-dev
  python3-venv
  buildah debootstrap curl jq
)

packages=("${build_packages[@]}")
if [[ $mode == all ]]; then
  packages+=("${test_packages[@]}")
fi
# npm fetches ONNX Runtime's library (scripts/setup-onnxruntime.sh), and the node tests
# (tests/browser, tests/deploy) run on node + npm. Debian's nodejs/npm only when no node is
# installed: a NodeSource nodejs already provides npm and conflicts with Debian's npm.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages ($mode) already installed"
else
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # The deploy tests run nginx as a plain process on free ports: a machine with systemd should
  # not keep the packaged nginx service on port 80 because this script installed it.
  if [[ " ${missing[*]} " == *" nginx-light "* ]] && [[ -d /run/systemd/system ]]; then
    $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
fi

# ONNX Runtime, the default model engine: not a Debian 12 package (ADR 0006).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup-onnxruntime.sh"

if [[ $mode == build ]]; then
  exit 0
fi

# Apache Kafka's broker for the tests and benchmarks (ADR 0007): jars from Maven Central.
"$root/scripts/setup-kafka.sh"

# schemathesis for the API fuzzer (ADR 0012): pinned, hash-checked wheels from PyPI.
"$root/scripts/setup-schemathesis.sh"

# The node tests' npm packages (pinned in each tests/<dir>/package-lock.json), installed again
# only when that lock file changed since its last `npm ci`.
shopt -s nullglob
for lock in "$root"/tests/*/package-lock.json; do
  dir="$(dirname "$lock")"
  name="${dir#"$root"/}"
  stamp="$dir/node_modules/.kadr-lock.sha256"
  lock_sum="$(sha256sum "$lock" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$lock_sum" ]]; then
    echo "setup: $name node_modules up to date"
  else
    echo "setup: npm ci in $name"
    npm ci --prefix "$dir" --no-audit --no-fund
    mkdir -p "$dir/node_modules"  # npm makes none for a lock without dependencies
    echo "$lock_sum" >"$stamp"
  fi
done
