#!/usr/bin/env bash
# What can be checked of deploy/docker without a Docker engine:
#
# 1. The Dockerfiles, statically: every COPY/ADD source exists in the build context (the repo
#    root) and is not excluded by .dockerignore; every COPY --from names an earlier stage; base
#    images are pinned by tag; the final stage runs as a non-root USER, has a HEALTHCHECK with
#    `kadr health` and ENTRYPOINT kadr; the CPU image's builder installs its packages with
#    `scripts/setup-debian.sh --build`, a stage installs runtime-packages.txt and the final
#    stage copies what deploy/docker/collect-runtime.sh collected there (COPY --from=libraries).
#    The built image itself is checked by tests/image/image_test.sh (label image).
# 2. The CPU image's runtime stage would start the binary: every shared library that `ldd KADR`
#    resolves here belongs (dpkg -S) to a package that `apt-get install --no-install-recommends
#    $(runtime-packages.txt)` installs on an empty system (apt's own resolver, simulated with an
#    empty dpkg status, against this machine's Debian 12 package lists).
#
#   tests/deploy/runtime_libs.sh KADR_BIN [--root DIR] [--packages FILE]
#
# Exits 1 with the missing packages / broken Dockerfile lines; prints "kadr deploy test
# skipped:" (CTest marks it skipped) for part 2 when this machine has no dpkg/apt lists.
set -euo pipefail

usage() { echo "usage: $0 KADR_BIN [--root DIR] [--packages FILE]" >&2; exit 2; }
(($# >= 1)) || usage
bin="$1"
shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
packages_file=""
while (($#)); do
  case "$1" in
    --root) root="$(cd "$2" && pwd)"; shift 2 ;;
    --packages) packages_file="$2"; shift 2 ;;
    *) usage ;;
  esac
done
packages_file="${packages_file:-$root/deploy/docker/runtime-packages.txt}"

errors=0
fail() {
  echo "FAIL: $*" >&2
  errors=$((errors + 1))
}

# --- .dockerignore ------------------------------------------------------------------------
ignore_patterns=()
if [[ -f $root/.dockerignore ]]; then
  while IFS= read -r line; do
    line="${line%%#*}"
    line="$(echo "$line" | xargs)"  # trim
    [[ -z $line || $line == !* ]] && continue
    line="${line#/}"
    line="${line%/}"
    ignore_patterns+=("$line")
  done <"$root/.dockerignore"
else
  fail ".dockerignore missing at the repo root (the build context would include build/ and .git)"
fi

# True when PATH (relative to the context) or a folder above it matches a .dockerignore pattern
# (Go filepath.Match per path; '**' any number of folders; '!' exceptions not supported here).
ignored() {
  local path="$1" pat glob prefix
  for pat in "${ignore_patterns[@]}"; do
    glob="${pat//\*\*\//*}"
    glob="${glob//\*\*/*}"
    prefix="$path"
    while :; do
      # shellcheck disable=SC2053
      [[ $prefix == $glob ]] && return 0
      [[ $prefix == */* ]] || break
      prefix="${prefix%/*}"
    done
  done
  return 1
}

# --- Dockerfile parsing ------------------------------------------------------------------
# Prints the Dockerfile's instructions one per line: continuations joined, comments dropped.
instructions() {
  awk '
    /^[[:space:]]*#/ { next }
    {
      line = $0
      if (line ~ /\\[[:space:]]*$/) { sub(/\\[[:space:]]*$/, " ", line); acc = acc line; next }
      acc = acc line
      if (acc ~ /[^[:space:]]/) print acc
      acc = ""
    }
    END { if (acc ~ /[^[:space:]]/) print acc }' "$1"
}

# Words of an instruction's arguments: JSON array form or whitespace-separated shell form.
args_words() {
  local rest="$1"
  if [[ $rest =~ ^[[:space:]]*\[ ]]; then
    echo "$rest" | sed -e 's/^[[:space:]]*\[//' -e 's/\][[:space:]]*$//' | tr ',' '\n' |
      sed -e 's/^[[:space:]]*"//' -e 's/"[[:space:]]*$//'
  else
    # shellcheck disable=SC2086
    printf '%s\n' $rest
  fi
}

# check_dockerfile FILE cpu|cuda
check_dockerfile() {
  local file="$1" kind="$2" rel="${1#"$root"/}"
  if [[ ! -f $file ]]; then
    fail "$rel missing"
    return
  fi
  local -A global_args=() stages=()
  local nstage=0 in_final_from=0 cmd rest words
  local final_user="" final_health="" final_entry="" builder_setup=0 runtime_pkgs=0 final_libs=0
  # Build contexts the Dockerfile names in COPY --from besides its stages: the CPU image's
  # prebuilt stage takes kadr's install tree from --build-context kadr-install=DIR.
  local -A contexts=([kadr-install]=1)
  local -a lines
  mapfile -t lines < <(instructions "$file")
  local total_from=0
  for l in "${lines[@]}"; do
    [[ ${l^^} =~ ^[[:space:]]*FROM[[:space:]] ]] && total_from=$((total_from + 1))
  done
  ((total_from >= 2)) || fail "$rel: not multi-stage (found $total_from FROM)"

  for l in "${lines[@]}"; do
    l="${l#"${l%%[![:space:]]*}"}"  # trim leading blanks
    cmd="${l%%[[:space:]]*}"
    cmd="${cmd^^}"
    rest="${l#*[[:space:]]}"
    [[ $rest == "$l" ]] && rest=""
    case "$cmd" in
      ARG)
        if ((nstage == 0)) && [[ $rest == *=* ]]; then
          global_args["${rest%%=*}"]="${rest#*=}"
        fi
        ;;
      FROM)
        nstage=$((nstage + 1))
        local image name="" w
        mapfile -t words < <(args_words "$rest")
        image=""
        for ((i = 0; i < ${#words[@]}; i++)); do
          w="${words[i]}"
          [[ $w == --* ]] && continue
          if [[ -z $image ]]; then
            image="$w"
          elif [[ ${w^^} == AS ]]; then
            name="${words[i + 1]:-}"
            break
          fi
        done
        # Resolve ${ARG} / $ARG from the global ARGs.
        local a
        for a in "${!global_args[@]}"; do
          image="${image//\$\{$a\}/${global_args[$a]}}"
          image="${image//\$$a/${global_args[$a]}}"
        done
        if [[ -n ${stages[$image]:-} ]]; then
          :  # FROM an earlier stage
        elif [[ $image == *'$'* ]]; then
          fail "$rel: FROM $image uses an ARG without a default"
        elif [[ $image != *:* && $image != *@sha256:* ]] || [[ $image == *:latest ]]; then
          fail "$rel: FROM $image is not pinned by tag"
        fi
        [[ -n $name ]] && stages["$name"]=1
        in_final_from=$((nstage == total_from ? 1 : 0))
        ;;
      COPY | ADD)
        mapfile -t words < <(args_words "$rest")
        local from="" srcs=() w2
        for w2 in "${words[@]}"; do
          case "$w2" in
            --from=*) from="${w2#--from=}" ;;
            --*) ;;
            *) srcs+=("$w2") ;;
          esac
        done
        if ((${#srcs[@]} < 2)); then
          fail "$rel: '$cmd $rest' has no source"
        fi
        unset 'srcs[-1]'  # the destination
        if [[ -n $from ]]; then
          [[ -n ${stages[$from]:-} || -n ${contexts[$from]:-} ]] ||
            fail "$rel: COPY --from=$from names no earlier stage"
          ((in_final_from)) && [[ $from == libraries ]] && final_libs=1
        else
          local s matches
          for s in "${srcs[@]}"; do
            s="${s#./}"
            [[ $s == . ]] && continue
            # shellcheck disable=SC2206
            matches=("$root"/$s)
            if [[ ! -e ${matches[0]} ]]; then
              fail "$rel: COPY source '$s' does not exist in the repository"
            elif ignored "$s"; then
              fail "$rel: COPY source '$s' is excluded by .dockerignore"
            fi
            if [[ $s == deploy/docker/runtime-packages.txt ]]; then
              runtime_pkgs=1
            fi
          done
        fi
        ;;
      RUN)
        if ((!in_final_from)) && [[ $rest =~ scripts/setup-debian\.sh[[:space:]]+--build ]]; then
          builder_setup=1
        fi
        ;;
      USER) ((in_final_from)) && final_user="$rest" ;;
      HEALTHCHECK) ((in_final_from)) && final_health="$rest" ;;
      ENTRYPOINT) ((in_final_from)) && final_entry="$rest" ;;
    esac
  done

  local user="${final_user%%:*}"
  user="$(echo "$user" | xargs)"
  if [[ -z $user ]]; then
    fail "$rel: the final stage sets no USER (it would run as root)"
  elif [[ $user == root || $user == 0 ]]; then
    fail "$rel: the final stage runs as root (USER $final_user)"
  fi
  if [[ -z $final_health || ${final_health^^} == NONE* ]]; then
    fail "$rel: the final stage has no HEALTHCHECK"
  elif ! [[ $final_health =~ kadr\"?,?[[:space:]]*\"?health ]]; then
    fail "$rel: the HEALTHCHECK does not run 'kadr health' ($final_health)"
  fi
  [[ $final_entry == *kadr* ]] || fail "$rel: the final stage's ENTRYPOINT is not kadr ($final_entry)"
  if [[ $kind == cpu ]]; then
    ((builder_setup)) || fail "$rel: no builder stage runs 'scripts/setup-debian.sh --build'"
    ((runtime_pkgs)) || fail "$rel: no stage COPYs deploy/docker/runtime-packages.txt"
    ((final_libs)) || fail "$rel: the final stage does not COPY --from=libraries (collect-runtime.sh's files)"
  fi
  echo "checked $rel: $nstage stages, USER ${final_user:-none}, HEALTHCHECK ${final_health:-none}"
}

check_dockerfile "$root/deploy/docker/Dockerfile" cpu
check_dockerfile "$root/deploy/docker/Dockerfile.cuda" cuda
if ((errors)); then
  echo "deploy_runtime_libs: $errors Dockerfile problem(s)" >&2
  exit 1
fi

# --- runtime libraries -------------------------------------------------------------------
[[ -x $bin ]] || { echo "FAIL: $bin is not an executable" >&2; exit 1; }
[[ -f $packages_file ]] || { echo "FAIL: $packages_file missing" >&2; exit 1; }
for tool in ldd dpkg apt-get; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "kadr deploy test skipped: no $tool on this machine (the library check needs Debian)"
    exit 0
  fi
done
# Without package lists apt knows only what is installed: an empty status then knows nothing.
if ! apt-get -s -o Dir::State::status=/dev/null install libc6 >/dev/null 2>&1; then
  echo "kadr deploy test skipped: no apt package lists (run apt-get update)"
  exit 0
fi

mapfile -t listed < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$packages_file")
((${#listed[@]})) || { echo "FAIL: $packages_file lists no package" >&2; exit 1; }

# Packages of every library `ldd` resolves (deploy/docker/list-runtime-packages.sh, which the
# GPU image's builder uses too); it fails on a library that no package owns or ldd cannot find.
declare -A needed=()  # package -> one library it provides
# ONNX Runtime is no Debian 12 package: `cmake --install` ships it next to the binary from the
# project-local prefix (scripts/setup-onnxruntime.sh, ADR 0006), so it is not looked up.
ort_skips=(--skip "$root/.deps")
[[ -n ${KADR_ONNXRUNTIME_ROOT:-} ]] && ort_skips+=(--skip "$KADR_ONNXRUNTIME_ROOT")
if ! pairs="$("$root/deploy/docker/list-runtime-packages.sh" "$bin" "${ort_skips[@]}")"; then
  fail "the libraries above cannot come from Debian packages: the runtime image cannot install them"
fi
while IFS=$'\t' read -r pkg lib; do
  # A sanitizer build (the asan preset) links GCC's sanitizer runtimes; the image's Release
  # build does not, so they are not the runtime stage's business.
  [[ $lib == libasan.so* || $lib == libubsan.so* || $lib == liblsan.so* || $lib == libtsan.so* ]] &&
    continue
  [[ -n $pkg ]] && needed["$pkg"]="$lib"
done <<<"$pairs"

# What apt installs from the list on an empty system (the runtime stage's apt-get install).
if ! sim="$(apt-get -s -o Dir::State::status=/dev/null install --no-install-recommends \
  "${listed[@]}" 2>&1)"; then
  echo "FAIL: apt-get cannot install the listed packages:" >&2
  grep -E '^E:|Unable|Depends' <<<"$sim" >&2 || echo "$sim" >&2
  exit 1
fi
declare -A installed=()
while read -r pkg; do installed["$pkg"]=1; done < <(awk '$1 == "Inst" { print $2 }' <<<"$sim")

missing=()
for pkg in "${!needed[@]}"; do
  [[ -n ${installed[$pkg]:-} ]] || missing+=("$pkg")
done
echo "kadr needs ${#needed[@]} packages' libraries; ${#listed[@]} listed in" \
  "${packages_file#"$root"/} install ${#installed[@]} packages"
if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort)
  echo "FAIL: the runtime stage would lack these packages (add them to ${packages_file#"$root"/}):" >&2
  for pkg in "${missing[@]}"; do echo "  $pkg (${needed[$pkg]})" >&2; done
  errors=$((errors + 1))
fi
if ((errors)); then
  exit 1
fi
echo "deploy_runtime_libs: ok"
