#!/usr/bin/env bash
# Builds and runs kadr's CPU container image (deploy/docker/Dockerfile) without a Docker daemon,
# with Debian's buildah and debootstrap (scripts/setup-debian.sh installs them), as root:
#
#   scripts/image.sh base                   make the base image localhost/debian:12-slim (cached)
#   scripts/image.sh build [--prebuilt BUILD_DIR] [--tag NAME]
#                                           build the image (default tag localhost/kadr:cpu): the
#                                           whole multi-stage Dockerfile, or with --prebuilt the
#                                           same runtime stages around BUILD_DIR's `cmake --install`
#                                           (KADR_FROM=prebuilt); prints the time, size and layers
#   scripts/image.sh run IMAGE [OPTION]... [-- ARG...]
#                                           run IMAGE's entrypoint with ARGs (default: its CMD) as
#                                           its USER, on the host's network; OPTIONs are
#                                           `buildah run`'s (-e K=V, -v SRC:DST[:ro])
#   scripts/image.sh exec IMAGE [OPTION]... -- COMMAND [ARG]...
#                                           the same with COMMAND instead of the entrypoint
#   scripts/image.sh health IMAGE [OPTION]...
#                                           run IMAGE's HEALTHCHECK command once (exit status)
#   scripts/image.sh layers IMAGE           its layers: size and the instruction that made each
#   scripts/image.sh size IMAGE             the image's size in bytes (its layers, uncompressed)
#   scripts/image.sh buildah ARG...         buildah with this script's storage (inspect, rmi, ...)
#
# No registry is reachable from the project's machines, so the base image is made here:
# `debootstrap --variant=minbase bookworm` trimmed the way Debian's official debian:12-slim is
# (no documentation but copyright files, no man pages, no locales, no apt lists or caches, and
# the same dpkg/apt settings), imported as localhost/debian:12-slim and passed to the Dockerfile
# as DEBIAN_IMAGE. On a machine with Docker and a registry, `docker build` uses the real base.
#
# Storage (vfs driver; the base's tarball is kept between runs) is in $KADR_IMAGE_CACHE
# (default ~/.cache/kadr/images). Containers run with chroot isolation: the sandboxes the project
# runs in do not let an OCI runtime set resource limits (`podman run` fails there).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${KADR_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kadr/images}"
base_image=localhost/debian:12-slim
mirror="${KADR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
storage=(--root "$cache/storage" --runroot "$cache/run" --storage-driver vfs)

die() {
  echo "image: $*" >&2
  exit 1
}
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
  exit 2
}
bah() { buildah "${storage[@]}" "$@"; }
require_tools() {
  [[ $(id -u) == 0 ]] || die "needs root (buildah's chroot isolation and debootstrap)"
  local tool
  for tool in buildah "$@"; do
    command -v "$tool" >/dev/null || die "$tool not found: run scripts/setup-debian.sh"
  done
}
has_image() { bah inspect --type image "$1" >/dev/null 2>&1; }

# The base: debootstrap's minbase, trimmed like debian:12-slim. The tarball is cached; the
# image is imported from it when the storage lacks it.
make_base() {
  require_tools debootstrap
  has_image "$base_image" && return 0
  mkdir -p "$cache"
  local tarball="$cache/debian-12-slim.tar"
  if [[ ! -f $tarball ]]; then
    local started=$SECONDS rootfs
    rootfs="$(mktemp -d "$cache/rootfs.XXXXXX")"
    trap 'rm -rf "$rootfs"' RETURN
    echo "image: debootstrap --variant=minbase bookworm ($mirror)"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
      { tail -20 "$cache/debootstrap.log" >&2; die "debootstrap failed (log: $cache/debootstrap.log)"; }
    # debian:12-slim's settings: no documentation but copyright, no man pages or locales in
    # what apt installs later; apt keeps no .deb files and no translated lists.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
    echo 'Apt::AutoRemove::SuggestsImportant "false";' \
      >"$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests"
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    rm -rf "$rootfs"/usr/share/{man,info,groff,lintian,linda}/* "$rootfs"/var/cache/apt/archives/*.deb \
      "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log \
      "$rootfs"/var/cache/debconf/*-old
    tar -C "$rootfs" --numeric-owner -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    echo "image: base made in $((SECONDS - started)) s"
  fi
  local ctr
  ctr="$(bah from scratch)"
  bah add "$ctr" "$tarball" / >/dev/null
  bah config --cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --created-by "debootstrap --variant=minbase bookworm, trimmed like debian:12-slim" "$ctr"
  bah commit -q --rm "$ctr" "$base_image" >/dev/null
  echo "image: $base_image imported ($(image_size "$base_image"))"
}

image_size() { bah images --format '{{.Size}}' "$1" | head -1; }

# The image's layers: uncompressed size and the instruction that made each one, then the total
# (bytes only, with `bytes` as $2).
print_layers() {
  local image="$1"
  bah inspect --type image "$image" | python3 -c '
import json, sys
image = json.load(sys.stdin)
bytes_only = sys.argv[2:] == ["bytes"]
sizes = {}
with open(sys.argv[1]) as f:
    for layer in json.load(f):
        if layer.get("diff-digest"):
            sizes[layer["diff-digest"]] = layer.get("diff-size", 0)
diffs = image["OCIv1"]["rootfs"]["diff_ids"]
steps = [h for h in image["Docker"]["history"] if not h.get("empty_layer")]
total = 0
for i, digest in enumerate(diffs):
    size = sizes.get(digest, 0)
    total += size
    made_by = steps[i].get("created_by", "") if i < len(steps) else ""
    made_by = " ".join(made_by.replace("/bin/sh -c #(nop) ", "").split())
    if not bytes_only:
        print(f"  layer {i + 1}: {size / 1e6:8.1f} MB  {made_by[:100]}")
print(total if bytes_only else f"  total:   {total / 1e6:8.1f} MB in {len(diffs)} layers")
' "$cache/storage/vfs-layers/layers.json" "${2:-}"
}

build() {
  local prebuilt="" tag=localhost/kadr:cpu
  while (($#)); do
    case "$1" in
      --prebuilt) prebuilt="$2"; shift 2 ;;
      --tag) tag="$2"; shift 2 ;;
      *) usage ;;
    esac
  done
  make_base
  local args=(--isolation chroot --network host --pull=never --format docker --layers
              -f "$root/deploy/docker/Dockerfile" --build-arg "DEBIAN_IMAGE=$base_image"
              --build-arg "KADR_REVISION=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
              -t "$tag")
  local install=""
  if [[ -n $prebuilt ]]; then
    [[ -f $prebuilt/cmake_install.cmake && -x $prebuilt/kadr ]] ||
      die "$prebuilt is not a kadr build folder"
    install="$(mktemp -d)"
    trap 'rm -rf "$install"' RETURN
    cmake --install "$prebuilt" --prefix "$install" --strip >/dev/null
    args+=(--build-arg KADR_FROM=prebuilt --build-context "kadr-install=$install")
  else
    # Named although it is the default: buildah 1.28 expands only the arguments given here when
    # it picks the stages the target needs, and would skip "builder" otherwise.
    args+=(--build-arg KADR_FROM=builder)
    # The builder's downloads (scripts/setup-onnxruntime.sh: ONNX Runtime's headers and
    # library, each checked against its pinned sha256) are shared with the host's cache, as
    # BuildKit's cache mounts would: a rebuild fetches nothing, and a build behind an egress
    # proxy that re-signs TLS uses what the host (which trusts the proxy) fetched.
    local downloads="${KADR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kadr}/downloads"
    mkdir -p "$downloads"
    args+=(-v "$downloads:/root/.cache/kadr/downloads")
  fi
  local started=$SECONDS
  echo "image: building $tag (${prebuilt:+runtime stages around $prebuilt, }Dockerfile deploy/docker/Dockerfile)"
  # One build at a time in this storage (flock), so that the containers that appear while it
  # runs are its own: buildah 1.28 leaves the working container of a stage that is only a
  # FROM of another (`FROM ${KADR_FROM} AS kadr`) behind, a full copy of a root folder per
  # build with vfs; they are removed afterwards (runs' containers, named kadr-run-* or
  # $KADR_IMAGE_RUN_PREFIX-*, are not build containers and are left alone).
  mkdir -p "$cache"
  exec {lock}>"$cache/build.lock"
  flock "$lock"
  local before leaked
  before="$(bah containers --format '{{.ContainerID}} {{.ContainerName}}' | sort)"
  bah bud "${args[@]}" "$root"
  leaked="$(comm -13 <(echo "$before") \
    <(bah containers --format '{{.ContainerID}} {{.ContainerName}}' | sort) |
    awk '$2 ~ /-working-container(-[0-9]+)?$/ { print $1 }')"
  [[ -n $leaked ]] && bah rm $leaked >/dev/null
  flock -u "$lock"
  echo "image: built $tag in $((SECONDS - started)) s, size $(image_size "$tag")"
  print_layers "$tag"
}

# The image's ENTRYPOINT and CMD, or ENTRYPOINT and ARGS, as one word per line.
image_argv() {
  local image="$1"
  shift
  bah inspect --type image "$image" | python3 -c '
import json, sys
config = json.load(sys.stdin)["Docker"]["config"]
args = sys.argv[1:] if len(sys.argv) > 1 else (config.get("Cmd") or [])
print("\n".join((config.get("Entrypoint") or []) + args))
' "$@"
}

# A working container of IMAGE named $KADR_IMAGE_RUN_PREFIX-<random> (default kadr-run), so that
# whoever kills a run can find and remove its container (`buildah rm`). The image's VOLUMEs are
# taken off the container: buildah run would mount an empty anonymous volume on each, in an
# order of its own, sometimes over the -v bind mount given for the same path (`docker run -v`
# replaces the anonymous volume instead). Without -v such a path is the container's own folder,
# gone with it, as an anonymous volume would be.
new_container() {
  local ctr volumes=() path
  ctr="$(bah from --pull=never -q \
    --name "${KADR_IMAGE_RUN_PREFIX:-kadr-run}-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')" "$1")"
  while IFS= read -r path; do
    [[ -n $path ]] && volumes+=(--volume "$path-")
  done < <(bah inspect --type image "$1" | python3 -c '
import json, sys
print("\n".join(json.load(sys.stdin)["Docker"]["config"].get("Volumes") or {}))')
  ((${#volumes[@]})) && bah config "${volumes[@]}" "$ctr"
  echo "$ctr"
}

# run IMAGE [buildah run option]... [-- ARG...]: a fresh working container of IMAGE, removed
# when the command ends; its exit status is the command's. With entrypoint=none (exec), ARGs
# are the whole command.
run() {
  (($# >= 1)) || usage
  local image="$1" entrypoint="${entrypoint:-image}"
  shift
  local opts=() args=() seen_dashes=0
  while (($#)); do
    if ((seen_dashes)); then args+=("$1"); elif [[ $1 == -- ]]; then seen_dashes=1; else opts+=("$1"); fi
    shift
  done
  local argv ctr status=0
  if [[ $entrypoint == none ]]; then
    ((${#args[@]})) || usage
    argv=("${args[@]}")
  else
    mapfile -t argv < <(image_argv "$image" "${args[@]}")
  fi
  ctr="$(new_container "$image")"
  bah run --isolation chroot --network host "${opts[@]}" "$ctr" -- "${argv[@]}" || status=$?
  bah rm "$ctr" >/dev/null
  return "$status"
}

health() {
  (($# >= 1)) || usage
  local image="$1" test
  shift
  mapfile -t test < <(bah inspect --type image "$image" | python3 -c '
import json, sys
check = json.load(sys.stdin)["Docker"]["config"].get("Healthcheck") or {}
test = check.get("Test") or []
if test[:1] != ["CMD"]:
    sys.exit("the image has no HEALTHCHECK CMD: %r" % test)
print("\n".join(test[1:]))')
  local ctr status=0
  ctr="$(new_container "$image")"
  bah run --isolation chroot --network host "$@" "$ctr" -- "${test[@]}" || status=$?
  bah rm "$ctr" >/dev/null
  return "$status"
}

(($# >= 1)) || usage
command="$1"
shift
case "$command" in
  base) require_tools; make_base ;;
  build) require_tools; build "$@" ;;
  run) require_tools; run "$@" ;;
  exec) require_tools; entrypoint=none run "$@" ;;
  health) require_tools; health "$@" ;;
  layers) require_tools; (($# == 1)) || usage; print_layers "$1" ;;
  size) require_tools; (($# == 1)) || usage; print_layers "$1" bytes ;;
  buildah) require_tools; bah "$@" ;;
  *) usage ;;
esac
