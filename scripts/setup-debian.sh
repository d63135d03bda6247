#!/usr/bin/env bash
# Installs every Debian 12 package kadr needs to build, run and test, and the browser tests'
# npm packages (tests/browser).
# Idempotent and non-interactive; uses sudo only when not already root.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libopencv-dev opencv-data
  libavformat-dev libavcodec-dev libavutil-dev libswscale-dev
  libturbojpeg0-dev libexif-dev
  libonnx-dev libprotobuf-dev
  nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev libcpp-httplib-dev
  librdkafka-dev kcat
  libsqlite3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-format clang-tidy
  chromium
  ffmpeg
  python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
)
# The browser tests (tests/browser) run on node + npm. Debian's nodejs/npm only when no node is
# installed: a NodeSource nodejs already provides npm and conflicts with Debian's npm package.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages already installed"
else
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The browser tests' npm packages (playwright-core, pinned in tests/browser/package-lock.json),
# installed again only when the lock file changed since the last `npm ci`.
browser_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/browser"
stamp="$browser_dir/node_modules/.kadr-lock.sha256"
lock_sum="$(sha256sum "$browser_dir/package-lock.json" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$lock_sum" ]]; then
  echo "setup: tests/browser node_modules up to date"
else
  echo "setup: npm ci in tests/browser"
  npm ci --prefix "$browser_dir" --no-audit --no-fund
  echo "$lock_sum" >"$stamp"
fi
