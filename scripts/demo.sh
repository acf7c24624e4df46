#!/usr/bin/env bash
# The main job: the example services exchange commands and events as separate OS processes over the embedded
# transport (no broker needed). Installs the project into .venv first, when pyproject.toml changed since the last
# install (see _venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_installed .
exec .venv/bin/python -m examples.demo "$@"
