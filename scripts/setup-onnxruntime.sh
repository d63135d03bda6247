#!/usr/bin/env bash
# Provides ONNX Runtime 1.21.0 (C and C++ API) for building and running kadr (ADR 0006).
#
#   scripts/setup-onnxruntime.sh            the system's, or a project-local prefix (below)
#   scripts/setup-onnxruntime.sh --prefix   prints the prefix CMake should use ("" = the system's)
#
# On Debian 13 and later the system's `libonnxruntime-dev` is used as it is (apt-get install
# libonnxruntime-dev; CMake finds it in /usr). Debian 12 has no ONNX Runtime package, so this
# script assembles one in $KADR_ONNXRUNTIME_ROOT (default: .deps/onnxruntime-1.21.0 in the
# checkout), from two pinned, checksummed sources, leaving the system's apt sources untouched:
#   - the headers: Debian 13's libonnxruntime-dev 1.21.0+dfsg-1 (arch-independent headers), by
#     `apt-get download` with a private apt configuration whose lists and cache live under
#     $KADR_CACHE_DIR (default ~/.cache/kadr), pointing at the same Debian mirror as the system;
#   - the library: Microsoft's official libonnxruntime.so.1.21.0 for Linux (x64 or arm64; needs
#     GLIBC 2.27), shipped in the npm package onnxruntime-node@1.21.0 (`npm pack`).
# Idempotent: a stamp records what the prefix holds; downloads are cached in $KADR_CACHE_DIR.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version=1.21.0
deb_version=1.21.0+dfsg-1
deb_file="libonnxruntime-dev_${deb_version}_amd64.deb"
deb_sha256=14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08
npm_file="onnxruntime-node-${version}.tgz"
npm_sha256=c711a4048a8b460a70de25a5008b1628e3773878ef9deec1dd4a4ccab46de01a
case "$(uname -m)" in
  x86_64) npm_arch=x64; lib_sha256=05bfddeefc536a44478c20226218dae8853995518bb2a994b4fa15a996f5f412 ;;
  aarch64) npm_arch=arm64; lib_sha256=36671b53885a8433882c4db360138bd060f3580f7d7cb6578050e755e83b6128 ;;
  *) echo "setup-onnxruntime: no ONNX Runtime build for $(uname -m)" >&2; exit 1 ;;
esac

prefix="${KADR_ONNXRUNTIME_ROOT:-$root/.deps/onnxruntime-$version}"
cache="${KADR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kadr}"

system_has_ort() {
  [[ -f /usr/include/onnxruntime/onnxruntime_cxx_api.h ]] &&
    compgen -G "/usr/lib/*/libonnxruntime.so" >/dev/null
}

if [[ "${1:-}" == --prefix ]]; then
  if system_has_ort; then echo ""; else echo "$prefix"; fi
  exit 0
fi
if system_has_ort; then
  echo "setup-onnxruntime: using the system's ONNX Runtime (libonnxruntime-dev)"
  exit 0
fi

stamp="$prefix/.kadr-stamp"
want="headers $deb_file $deb_sha256; library $npm_file $npm_arch $lib_sha256"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "setup-onnxruntime: ONNX Runtime $version in $prefix up to date"
  exit 0
fi

check_sha256() {  # FILE SHA256
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [[ "$got" != "$2" ]]; then
    echo "setup-onnxruntime: checksum mismatch for $1: expected $2, got $got" >&2
    rm -f "$1"
    exit 1
  fi
}

mkdir -p "$cache/downloads"
downloads="$cache/downloads"

# The headers: a private apt configuration for Debian 13 on the system's own mirror.
if [[ ! -f "$downloads/$deb_file" ]]; then
  mirror="$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
    grep -E '^(URIs:|deb )' | grep -v security | head -1 |
    sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//; s/[[:space:]].*//' || true)"
  if [[ -z "$mirror" ]]; then
    echo "setup-onnxruntime: no Debian mirror found in /etc/apt" >&2
    exit 1
  fi
  apt_dir="$cache/apt-trixie"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" \
    >"$apt_dir/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir" -o "Dir::Cache::Archives=$apt_dir/archives"
    -o "Dir::State::status=/dev/null" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root"
    -o "Acquire::Languages=none")
  echo "setup-onnxruntime: fetching $deb_file (Debian 13) through a private apt configuration"
  apt-get "${apt_opts[@]}" update -qq
  (cd "$downloads" && apt-get "${apt_opts[@]}" download -qq "libonnxruntime-dev=$deb_version")
fi
check_sha256 "$downloads/$deb_file" "$deb_sha256"

# The library: Microsoft's build inside the npm package.
if [[ ! -f "$downloads/$npm_file" ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup-onnxruntime: npm is needed to fetch $npm_file (scripts/setup-debian.sh installs it)" >&2
    exit 1
  fi
  echo "setup-onnxruntime: fetching $npm_file (npm pack)"
  (cd "$downloads" && npm pack --silent "onnxruntime-node@$version" >/dev/null)
fi
check_sha256 "$downloads/$npm_file" "$npm_sha256"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$downloads/$deb_file" "$work/deb"
tar -xzf "$downloads/$npm_file" -C "$work" "package/bin/napi-v3/linux/$npm_arch/libonnxruntime.so.$version"
check_sha256 "$work/package/bin/napi-v3/linux/$npm_arch/libonnxruntime.so.$version" "$lib_sha256"

rm -rf "$prefix"
mkdir -p "$prefix/include" "$prefix/lib" "$prefix/share/doc"
cp -r "$work/deb/usr/include/onnxruntime" "$prefix/include/"
cp "$work/deb/usr/share/doc/libonnxruntime-dev/copyright" "$prefix/share/doc/copyright.debian"
install -m 0644 "$work/package/bin/napi-v3/linux/$npm_arch/libonnxruntime.so.$version" "$prefix/lib/"
ln -s "libonnxruntime.so.$version" "$prefix/lib/libonnxruntime.so.1"
ln -s libonnxruntime.so.1 "$prefix/lib/libonnxruntime.so"
echo "$want" >"$stamp"
echo "setup-onnxruntime: ONNX Runtime $version in $prefix"
