"""Scenario 6 (optional): other Python messaging libraries, only if already installed in this environment."""

from __future__ import annotations

import importlib.util

from benchmarks.common import Context, ScenarioResult

LIBRARIES = ("celery", "dramatiq", "faststream", "nameko")


def run(ctx: Context) -> ScenarioResult:
    result = ScenarioResult("6", "Other libraries (Celery, Dramatiq, FastStream, nameko)")
    for name in LIBRARIES:
        if importlib.util.find_spec(name) is None:
            result.notes.append(f"{name}: not installed in this environment; skipped (the benchmark installs nothing).")
        else:
            result.notes.append(f"{name}: installed, but no comparison is implemented; skipped.")
    return result
