"""Scenario 9: what the middleware hooks cost per message, publishing and consuming over the memory transport in
one process: a no-op middleware and OpenTelemetry tracing + metrics, each against no middleware in the same run."""

from __future__ import annotations

from benchmarks.common import Context, Row, ScenarioResult, Worker


def run(ctx: Context) -> ScenarioResult:
    messages = 1_000 if ctx.quick else 5_000
    result = ScenarioResult(
        "9", f"Middleware hooks: publish and consume over memory:// ({messages:,} messages x 5 alternating blocks)"
    )
    rows = {
        (variant, path): Row(
            "9",
            f"{path}: {label} vs no middleware",
            "us/msg",
            baseline_name="no middleware",
            higher_is_better=False,
        )
        for variant, label in (("noop", "a no-op Middleware"), ("otel", "TracingMiddleware + MetricsMiddleware"))
        for path in ("publish", "consume")
    }
    for rep in range(ctx.repeat):
        ctx.log(f"  9 repetition {rep + 1}/{ctx.repeat}")
        figures = Worker(ctx, "observability", ["--messages", messages, "--blocks", 5]).wait(600)
        for (variant, path), row in rows.items():
            row.framework.append(figures[f"{variant}_{path}_us"])
            row.baseline.append(figures[f"none_{path}_us"])
        result.raw.append({"repetition": rep + 1, **figures})
    result.rows += list(rows.values())
    result.notes.append(
        "Without middleware the container installs no hook (no transport decorator, one None check per message in "
        "the consumer): the baseline is the framework as it runs by default. Times are CPU time of the worker process. "
        "The otel rows create real spans and "
        "readings (SDK providers) and export nothing."
    )
    return result
