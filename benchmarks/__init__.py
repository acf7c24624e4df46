"""Benchmarks of container_messaging against raw kombu (not part of the test suite).

Run them with ``bash scripts/bench.sh`` (or ``.venv/bin/python -m benchmarks --help``); see BENCHMARKS.md.
"""
