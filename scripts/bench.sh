#!/usr/bin/env bash
# Runs the benchmarks (framework vs raw kombu, see BENCHMARKS.md): installs what it needs into .venv, then
# `python -m benchmarks` with any arguments passed through (--quick, --repeat N, --only 1,4, --help).
# Needs RabbitMQ on 127.0.0.1:5672 (guest/guest; override with BENCH_AMQP_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -m pip install --disable-pip-version-check -e '.[dev]' >.venv/install.log 2>&1; then
  cat .venv/install.log >&2
  echo "installing the project failed (log above)" >&2
  exit 1
fi
exec .venv/bin/python -m benchmarks "$@"
