#!/usr/bin/env bash
# Copies what a binary loads into a root folder for a runtime image made of files, not packages
# (the CPU image's "libraries" stage, docs/adr/0016-runtime-image-of-files-kadr-loads.md):
#
#   deploy/docker/collect-runtime.sh BIN DEST [--skip PREFIX]... [--base-packages FILE]
#                                   [--data PACKAGE:PATH]...
#
# - every shared library `ldd BIN` resolves, with each symlink on the way to the file (Debian's
#   alternatives: liblapack.so.3 -> /etc/alternatives/... -> lapack/liblapack.so.3), except
#   those under a --skip PREFIX (copied by the caller) and those of a package listed in
#   --base-packages FILE (one name per line: the packages the runtime's base image already has);
# - each --data PATH (a file or a folder, symlinks kept), owned by PACKAGE;
# - for every package that gave a file: its copyright file and its dpkg status entry, written to
#   DEST/var/lib/dpkg/status.d/PACKAGE (the layout of distroless images, read by scanners such
#   as Trivy and Syft; dpkg itself does not read it, so apt in the image does not see them).
#
# Fails (exit 1) when ldd cannot find a library or no package owns one
# (deploy/docker/list-runtime-packages.sh): the runtime could not start.
set -euo pipefail

usage() {
  echo "usage: $0 BIN DEST [--skip PREFIX]... [--base-packages FILE] [--data PACKAGE:PATH]..." >&2
  exit 2
}
(($# >= 2)) || usage
bin="$1"
dest="$2"
shift 2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
skips=()
data=()
declare -A base=()
while (($#)); do
  case "$1" in
    --skip) skips+=(--skip "$2"); shift 2 ;;
    --base-packages)
      while read -r pkg; do [[ -n $pkg ]] && base["${pkg%%:*}"]=1; done <"$2"
      shift 2
      ;;
    --data) [[ $2 == *:/* ]] || usage; data+=("$2"); shift 2 ;;
    *) usage ;;
  esac
done
mkdir -p "$dest"

# Copies PATH into DEST under the same name; for a symlink, also what it points to, until a
# file (the link's target is resolved against the link's folder, one step at a time). Folders
# are spelled by their real names: with merged /usr, ldd's /lib/x86_64-linux-gnu is
# /usr/lib/x86_64-linux-gnu, and a real /lib folder in DEST would replace the base's /lib link.
copy_chain() {
  local path="$1" target hops=0
  while :; do
    path="$(realpath "$(dirname "$path")")/$(basename "$path")"
    cp -a --parents "$path" "$dest"
    [[ -L $path ]] || return 0
    ((++hops <= 16)) || { echo "collect-runtime: symlink loop at $1" >&2; exit 1; }
    target="$(readlink "$path")"
    [[ $target == /* ]] || target="$(dirname "$path")/$target"
    path="$target"
  done
}

declare -A packages=()
lines="$("$here/list-runtime-packages.sh" "$bin" "${skips[@]}" --paths)" || {
  echo "collect-runtime: the libraries above cannot come from Debian packages" >&2
  exit 1
}
libraries=0
while IFS=$'\t' read -r pkg _ path; do
  [[ -z $pkg || -n ${base[$pkg]:-} ]] && continue
  copy_chain "$path"
  packages["$pkg"]=1
  libraries=$((libraries + 1))
done <<<"$lines"

for entry in "${data[@]}"; do
  pkg="${entry%%:*}"
  path="${entry#*:}"
  [[ -e $path ]] || { echo "collect-runtime: $path (data of $pkg) does not exist" >&2; exit 1; }
  cp -a --parents "$path" "$dest"
  packages["$pkg"]=1
done

mkdir -p "$dest/var/lib/dpkg/status.d"
for pkg in "${!packages[@]}"; do
  dpkg-query -s "$pkg" >"$dest/var/lib/dpkg/status.d/$pkg"
  copyright="/usr/share/doc/$pkg/copyright"
  [[ -f $copyright ]] && cp -a --parents "$copyright" "$dest"
done
echo "collect-runtime: $libraries libraries and ${#data[@]} data paths of ${#packages[@]} packages" \
  "($(du -sh "$dest" | cut -f1)) in $dest"
