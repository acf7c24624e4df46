#!/usr/bin/env bash
# Runs the whole test suite: installs the project with its dev tools into .venv when pyproject.toml changed since
# the last install (see _venv.sh), then lint, types and tests.
# Tests that need RabbitMQ or Redis use the brokers on 127.0.0.1 (CONTAINER_MESSAGING_AMQP_URL,
# CONTAINER_MESSAGING_REDIS_URL); outside CI they skip loudly when a broker is unreachable, with CI=true they fail.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_installed '.[dev]'
echo "== ruff"
.venv/bin/python -m ruff check .
echo "== mypy --strict"
.venv/bin/python -m mypy
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
