#!/usr/bin/env bash
# The main job: the example services exchange commands and events as separate OS processes over the embedded
# transport (no broker needed). Installs what it needs into .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -m pip install --disable-pip-version-check -e . >.venv/install.log 2>&1; then
  cat .venv/install.log >&2
  echo "installing the project failed (log above)" >&2
  exit 1
fi
exec .venv/bin/python -m examples.demo "$@"
