#!/usr/bin/env bash
# Runs the benchmarks (framework vs raw kombu, see BENCHMARKS.md): installs what it needs into .venv when
# pyproject.toml changed since the last install (see _venv.sh), then `python -m benchmarks` with any arguments
# passed through (--quick, --repeat N, --only 1,4, --help).
# Needs RabbitMQ on 127.0.0.1:5672 (guest/guest; override with BENCH_AMQP_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_installed '.[dev]'
exec .venv/bin/python -m benchmarks "$@"
