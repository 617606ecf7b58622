#!/usr/bin/env bash
# Shared by run.sh and test.sh: services up, virtualenv with the project installed.
# Usage: source scripts/bootstrap-env.sh [dev]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/services.sh"
if [[ ! -x $ROOT/.venv/bin/python ]]; then
  python3 -m venv "$ROOT/.venv"
fi
extras=""
[[ ${1:-} == dev ]] && extras="[dev]"
# Reinstall only when pyproject.toml changed since the last install (keeps reruns fast).
stamp="$ROOT/.venv/.mailgw-installed${extras:+-dev}"
if [[ ! -f $stamp || $ROOT/pyproject.toml -nt $stamp ]]; then
  "$ROOT/.venv/bin/pip" install -q --disable-pip-version-check -e "$ROOT$extras"
  touch "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
