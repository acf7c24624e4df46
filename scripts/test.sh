#!/usr/bin/env bash
# Runs the whole test suite: installs what it needs into .venv, then lint, types and tests.
# Tests that need RabbitMQ or Redis use the brokers on 127.0.0.1 (CONTAINER_MESSAGING_AMQP_URL,
# CONTAINER_MESSAGING_REDIS_URL); outside CI they skip loudly when a broker is unreachable, with CI=true they fail.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -m pip install --disable-pip-version-check -e '.[dev]' >.venv/install.log 2>&1; then
  cat .venv/install.log >&2
  echo "installing the project failed (log above)" >&2
  exit 1
fi
echo "== ruff"
.venv/bin/python -m ruff check .
echo "== mypy --strict"
.venv/bin/python -m mypy
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
