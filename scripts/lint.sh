#!/usr/bin/env bash
# Lint kadr: clang-format (check only) over src/ tests/ bench/, then clang-tidy over src/**/*.cc.
#
#   scripts/lint.sh [BUILD_DIR]          BUILD_DIR holds compile_commands.json (default build/ci)
#   KADR_LINT_TIDY=0 scripts/lint.sh     clang-format only (no build needed)
#   KADR_LINT_JOBS=N                     parallel clang-tidy processes (default: nproc)
#
# Exits non-zero on any formatting difference or clang-tidy finding. To fix formatting:
#   clang-format -i $(git ls-files 'src/*.h' 'src/*.cc' 'tests/*.h' 'tests/*.cc' 'bench/*.h' 'bench/*.cc')
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build_dir="${1:-build/ci}"
run_tidy="${KADR_LINT_TIDY:-1}"
jobs="${KADR_LINT_JOBS:-$(nproc 2>/dev/null || echo 4)}"

# Prefer the versioned binaries Debian 12 ships, fall back to the unversioned names.
pick() {
  local tool
  for tool in "$@"; do
    if command -v "$tool" >/dev/null 2>&1; then
      echo "$tool"
      return 0
    fi
  done
  return 1
}

status=0

# --- clang-format ----------------------------------------------------------------------------
clang_format="$(pick clang-format-14 clang-format)" || {
  echo "lint: clang-format not found (apt-get install clang-format)" >&2
  exit 2
}
mapfile -t format_files < <(find src tests bench tools -type f \( -name '*.h' -o -name '*.cc' \) \
                              2>/dev/null | LC_ALL=C sort)
echo "lint: $clang_format on ${#format_files[@]} files"
if ((${#format_files[@]} > 0)); then
  if ! "$clang_format" --dry-run -Werror "${format_files[@]}"; then
    echo "lint: formatting differs (see above); run clang-format -i on those files" >&2
    status=1
  fi
fi

# --- clang-tidy ------------------------------------------------------------------------------
if [[ "$run_tidy" == "0" ]]; then
  echo "lint: clang-tidy skipped (KADR_LINT_TIDY=0)"
  exit "$status"
fi
clang_tidy="$(pick clang-tidy-14 clang-tidy)" || {
  echo "lint: clang-tidy not found (apt-get install clang-tidy, or KADR_LINT_TIDY=0)" >&2
  exit 2
}
if [[ ! -f "$build_dir/compile_commands.json" ]]; then
  echo "lint: $build_dir/compile_commands.json not found; configure first, e.g." >&2
  echo "      cmake --preset ${build_dir#build/}   (or pass the build dir as \$1)" >&2
  exit 2
fi
# Only sources the build knows about: a .cc not in compile_commands.json has no flags.
mapfile -t tidy_files < <(find src -type f -name '*.cc' | LC_ALL=C sort | while read -r f; do
  if grep -qF "\"$root/$f\"" "$build_dir/compile_commands.json"; then echo "$f"; fi
done)
echo "lint: $clang_tidy on ${#tidy_files[@]} files (build dir $build_dir, $jobs jobs)"
if ((${#tidy_files[@]} > 0)); then
  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
  # --warnings-as-errors makes every finding fail the run; --quiet drops the per-file
  # "N warnings generated" chatter.
  if ! printf '%s\n' "${tidy_files[@]}" |
      xargs -P "$jobs" -n 1 "$clang_tidy" -p "$build_dir" --quiet --warnings-as-errors='*' \
        >"$log" 2>&1; then
    status=1
  fi
  # Keep the findings and drop clang-tidy's summary noise.
  grep -v -E '^[0-9]+ (warnings?|errors?) (generated|treated as errors)\.$|^Suppressed [0-9]+ warnings|^Use -header-filter|^Error while processing' "$log" || true
  if ((status != 0)); then echo "lint: clang-tidy reported findings (see above)" >&2; fi
fi

if ((status == 0)); then echo "lint: clean"; fi
exit "$status"
