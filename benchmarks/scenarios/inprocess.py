"""Scenario 4: the in-process CommandBus against a direct method call (200,000 each, alternating blocks)."""

from __future__ import annotations

from benchmarks.common import Context, Row, ScenarioResult, Worker

TARGET_US = 10.0


def run(ctx: Context) -> ScenarioResult:
    iterations = 20_000 if ctx.quick else 200_000
    result = ScenarioResult(
        "4", f"In-process CommandBus.send vs direct call ({iterations:,} each, 10 alternating blocks)"
    )
    per_call = Row(
        "4",
        "CommandBus.send(obj) vs handler.handle(obj)",
        "us/msg",
        baseline_name="direct call",
        higher_is_better=False,
    )
    overhead = Row(
        "4", "bus overhead per message (bus - direct)", "us/msg", higher_is_better=False, target=("max", TARGET_US)
    )
    for rep in range(ctx.repeat):
        ctx.log(f"  4 repetition {rep + 1}/{ctx.repeat}")
        figures = Worker(ctx, "inprocess", ["--iterations", iterations, "--blocks", 10]).wait(300)
        per_call.framework.append(figures["bus_us"])
        per_call.baseline.append(figures["direct_us"])
        overhead.framework.append(figures["overhead_us"])
        result.raw.append({"repetition": rep + 1, **figures})
    result.rows += [per_call, overhead]
    return result
