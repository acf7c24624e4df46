#!/usr/bin/env bash
# The main job: the example services exchange commands and events as separate OS processes over the embedded
# transport (no broker needed). Installs what it needs into .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
exec .venv/bin/python -m examples.demo "$@"
