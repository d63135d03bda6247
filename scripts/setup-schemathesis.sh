#!/usr/bin/env bash
# Provides schemathesis, the schema-driven HTTP fuzzer that scripts/fuzz.sh runs against the
# OpenAPI description of a running `kadr up` (docs/adr/0012-fuzzing.md): a virtual environment
# in $KADR_SCHEMATHESIS_HOME (default: .deps/schemathesis in the checkout) on Debian 12's
# python3, with exactly the packages of fuzz/schemathesis/requirements.txt, each pinned and
# checked against its sha256 there (pip --require-hashes). Needs python3 and python3-venv
# (scripts/setup-debian.sh installs both). Idempotent.
#
#   scripts/setup-schemathesis.sh          create or update the environment
#   scripts/setup-schemathesis.sh --bin    prints the path of the schemathesis command
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="$root/fuzz/schemathesis/requirements.txt"
home="${KADR_SCHEMATHESIS_HOME:-$root/.deps/schemathesis}"
python=/usr/bin/python3  # Debian's, whatever else is on PATH: the hashes are for its version

if [[ "${1:-}" == --bin ]]; then
  echo "$home/bin/schemathesis"
  exit 0
fi

stamp="$home/.kadr-stamp"
want="$(sha256sum "$requirements" "${BASH_SOURCE[0]}" | cut -d' ' -f1 | tr '\n' ' ')"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$home/bin/schemathesis" ]]; then
  echo "setup-schemathesis: $("$home/bin/schemathesis" --version 2>/dev/null) in $home up to date"
  exit 0
fi

if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "setup-schemathesis: $python with venv and ensurepip needed (scripts/setup-debian.sh installs python3-venv)" >&2
  exit 1
fi

echo "setup-schemathesis: installing fuzz/schemathesis/requirements.txt into $home"
rm -rf "$home"
"$python" -m venv "$home"
# Only what the file names, each checked against its hashes; no build from source.
PIP_DISABLE_PIP_VERSION_CHECK=1 "$home/bin/pip" install --quiet --no-cache-dir \
  --require-hashes --no-deps --only-binary=:all: -r "$requirements"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$home/bin/pip" check
echo "$want" >"$stamp"
echo "setup-schemathesis: $("$home/bin/schemathesis" --version) in $home (hashes ok)"
