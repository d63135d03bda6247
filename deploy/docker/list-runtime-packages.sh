#!/usr/bin/env bash
# Prints the Debian/Ubuntu packages that provide the shared libraries a binary loads, one
# "package<TAB>library" line each (sorted, unique by package): every library `ldd BIN` resolves,
# mapped to its owner with `dpkg -S`.
#
#   deploy/docker/list-runtime-packages.sh BIN [--skip PREFIX]... [--allow-missing SONAME]... [--paths]
#
# --paths: one "package<TAB>library<TAB>path" line per library instead (ldd's path, not unique by
# package), for deploy/docker/collect-runtime.sh, which copies those files into the CPU image.
# --skip PREFIX: libraries under PREFIX (a glob) are not looked up (they are copied into the image, like
# the GPU image's own OpenCV in /opt/opencv). --allow-missing SONAME: ldd may not find it here
# (libcuda.so.1 comes from the host's driver at run time). Any other library that no package
# owns, or that ldd cannot find, is an error (exit 1): a runtime stage could not install it.
#
# Used by deploy/docker/Dockerfile.cuda (its runtime stage installs exactly these packages) and
# by tests/deploy/runtime_libs.sh (the CPU image's runtime-packages.txt must cover them).
set -euo pipefail

usage() {
  echo "usage: $0 BIN [--skip PREFIX]... [--allow-missing SONAME]... [--paths]" >&2
  exit 2
}
(($# >= 1)) || usage
bin="$1"
shift
skips=()
allowed_missing=()
paths=0
while (($#)); do
  case "$1" in
    --paths) paths=1; shift ;;
    --skip) skips+=("$2"); shift 2 ;;
    --allow-missing) allowed_missing+=("$2"); shift 2 ;;
    *) usage ;;
  esac
done

out="$(ldd "$bin")" || { echo "ldd $bin failed" >&2; exit 1; }
status=0
while read -r lib _; do
  for a in "${allowed_missing[@]}"; do [[ $lib == "$a" ]] && continue 2; done
  echo "$lib: ldd cannot find it" >&2
  status=1
done < <(grep 'not found' <<<"$out" || true)

libs=()   # "soname path" of every resolved library not skipped
while read -r lib path; do
  for s in "${skips[@]}"; do
    # shellcheck disable=SC2053  # PREFIX may be a glob ('/usr/local/cuda*')
    [[ $path == $s/* || $(realpath "$path") == $s/* ]] && continue 2
  done
  libs+=("$lib $path")
done < <(awk '/=>/ && $3 ~ /^\// { print $1, $3 } $1 ~ /^\/.*ld-linux/ { print $1, $1 }' <<<"$out")

# With merged /usr, dpkg may know a library under /lib or /usr/lib, and under the symlink's or
# the file's name: ask for every spelling at once (one dpkg call), then take the first known.
candidates() {
  local p="$1" real
  real="$(realpath "$p")"
  printf '%s\n' "$p" "/usr$p" "${p#/usr}" "$real" "/usr$real" "${real#/usr}"
}
declare -A owner_of=()
if ((${#libs[@]})); then
  while IFS= read -r line; do
    [[ $line == diversion* || $line != *": /"* ]] && continue
    pkgs="${line%%: /*}"  # "pkg:amd64: /path" or "pkg1, pkg2: /path"
    pkg="${pkgs%%,*}"
    owner_of["/${line#*: /}"]="${pkg%%:*}"
  done < <(for l in "${libs[@]}"; do candidates "${l#* }"; done | sort -u |
    xargs -d '\n' dpkg -S 2>/dev/null || true)
fi

declare -A seen=()
for l in "${libs[@]}"; do
  lib="${l%% *}"
  path="${l#* }"
  pkg=""
  while read -r c; do
    if [[ -n ${owner_of[$c]:-} ]]; then pkg="${owner_of[$c]}"; break; fi
  done < <(candidates "$path")
  if [[ -n $pkg ]]; then
    ((paths)) && printf '%s\t%s\t%s\n' "$pkg" "$lib" "$path"
    [[ -n ${seen[$pkg]:-} ]] || seen["$pkg"]="$lib"
  else
    echo "$lib ($path) belongs to no package" >&2
    status=1
  fi
done

((paths)) && exit "$status"
for pkg in "${!seen[@]}"; do printf '%s\t%s\n' "$pkg" "${seen[$pkg]}"; done | sort
exit "$status"
