"""Scenario 3: the embedded transport (SQLite file, no server) between two processes.

Framework: the same producer and consumer workers as scenario 1 with ``embedded://`` and a fresh data folder.
Baseline: raw kombu's ``filesystem://`` transport (one file per message) with the same polling interval, through
the default exchange (kombu's filesystem transport keeps topic bindings in per-process memory unless given a
control folder; the default exchange needs none). Measured: end-to-end rate of N messages sent while the consumer
runs, per-message latency (handling time minus the send time carried in the body) in that burst and in a run
paced at 100 messages/s (where latency is what polling costs, not a queue building up), and the consume rate of
a backlog published before the consumer starts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.common import Context, Row, ScenarioResult, Worker, remove_tree, stop_all, wait_for, worker_timeout
from benchmarks.payloads import COMMAND_KEY
from benchmarks.scenarios.amqp_commands import PREFETCH, rates

POLLING_INTERVAL = 0.05
#: the consumer signals "ready" just before run() opens its receiver; give it this long to start polling
SETTLE_SECONDS = 0.5
#: messages per second of the paced run (latency without a queue building up: what polling costs)
PACED_RATE = 100.0
BASELINE = "kombu filesystem://"


class _Side:
    """How one side (framework or baseline) starts its producer and consumer on a data folder."""

    def __init__(self, ctx: Context, framework: bool) -> None:
        self.ctx = ctx
        self.framework = framework
        self.folder = ctx.folder(ctx.unique("embedded"))
        self.service = ctx.unique("benchemb")
        self.exchange = f"bench.{self.service}"

    def common(self) -> list[object]:
        url = "embedded://" if self.framework else "filesystem://"
        return ["--url", url, "--data-folder", self.folder, "--polling-interval", POLLING_INTERVAL]

    def setup(self) -> None:
        if self.framework:  # declares the queue and its binding, so the first send is routable
            Worker(self.ctx, "fw_consumer", [*self.consumer_args(1), "--setup-only"]).wait(60)

    def consumer_args(self, count: int) -> list[object]:
        if self.framework:
            return [
                *self.common(),
                "--service",
                self.service,
                "--exchange",
                self.exchange,
                "--scan",
                "benchmarks.handlers.commands",
                "--count",
                count,
                "--prefetch",
                PREFETCH,
                "--timeout",
                worker_timeout(count),
            ]
        return [
            *self.common(),
            "--queue",
            self.service,
            "--count",
            count,
            "--prefetch",
            PREFETCH,
            "--timeout",
            worker_timeout(count),
        ]

    def consumer(self, count: int, *extra: object) -> Worker:
        module = "fw_consumer" if self.framework else "kombu_consumer"
        return Worker(self.ctx, module, [*self.consumer_args(count), *extra])

    def producer(self, count: int, rate: float = 0.0) -> Worker:
        if self.framework:
            args: list[object] = [
                *self.common(),
                "--rate",
                rate,
                "--service",
                self.ctx.unique("benchsender"),
                "--exchange",
                self.exchange,
                "--kind",
                "command",
                "--destination",
                self.service,
                "--count",
                count,
            ]
            return Worker(self.ctx, "fw_producer", args)
        args = [
            *self.common(),
            "--rate",
            rate,
            "--routing-key",
            self.service,
            "--kind",
            "command",
            "--routing-header",
            COMMAND_KEY,
            "--target",
            self.service,
            "--count",
            count,
        ]
        return Worker(self.ctx, "kombu_producer", args)

    def close(self) -> None:
        remove_tree(self.folder)


def live(ctx: Context, framework: bool, count: int, rate: float = 0.0) -> dict[str, Any]:
    """N messages sent while the consumer runs (as fast as possible, or paced at ``rate``): rate and latency."""
    side = _Side(ctx, framework)
    workers: list[Worker] = []
    try:
        side.setup()
        ready = Path(side.folder) / "consumer.ready"
        consumer = side.consumer(count, "--latencies", "--ready", ready)
        workers.append(consumer)
        wait_for(ready.exists, 60, "the embedded consumer to start", workers)
        time.sleep(SETTLE_SECONDS)
        producer = side.producer(count, rate)
        workers.append(producer)
        produced = producer.wait(worker_timeout(count) + 30)
        consumed = consumer.wait(worker_timeout(count) + 30)
    finally:
        stop_all(workers)
        side.close()
    return {
        **rates(count, produced, consumed["last"]),
        "lost": consumed.get("lost", 0),
        "latency_median_ms": consumed["latency_median"] * 1000,
        "latency_p95_ms": consumed["latency_p95"] * 1000,
        "latency_max_ms": consumed["latency_max"] * 1000,
    }


def backlog(ctx: Context, framework: bool, count: int) -> dict[str, Any]:
    """A backlog of N published first, then consumed: the consume rate (first to last message handled)."""
    side = _Side(ctx, framework)
    workers: list[Worker] = []
    try:
        side.setup()
        producer = side.producer(count)
        workers.append(producer)
        produced = producer.wait(worker_timeout(count) + 30)
        consumer = side.consumer(count)
        workers.append(consumer)
        consumed = consumer.wait(worker_timeout(count) + 30)
    finally:
        stop_all(workers)
        side.close()
    seconds = consumed["last"] - consumed["first"]
    return {
        "publish_rate": count / (produced["last_publish"] - produced["first_publish"]),
        "consume_rate": (count - 1) / seconds if seconds > 0 else float("nan"),
        "consume_seconds": seconds,
        "lost": consumed.get("lost", 0),
    }


def run(ctx: Context) -> ScenarioResult:
    count = 200 if ctx.quick else 2_000
    backlogs = (100, 500) if ctx.quick else (1_000, 10_000)
    paced_count = 50 if ctx.quick else 200
    result = ScenarioResult("3", f"Embedded transport, 2 processes (polling {POLLING_INTERVAL} s; baseline {BASELINE})")

    def row(name: str, unit: str, higher: bool = True) -> Row:
        return Row("3", name, unit, baseline_name=BASELINE, higher_is_better=higher)

    e2e = row(f"N={count:,} live: end-to-end", "msgs/s")
    p50 = row(f"N={count:,} live: latency median", "ms", higher=False)
    p95 = row(f"N={count:,} live: latency p95", "ms", higher=False)
    paced50 = row(f"paced {PACED_RATE:g}/s x{paced_count}: latency median", "ms", higher=False)
    paced95 = row(f"paced {PACED_RATE:g}/s x{paced_count}: latency p95", "ms", higher=False)
    backlog_rows = {
        size: (row(f"backlog {size:,}: publish rate", "msgs/s"), row(f"backlog {size:,}: consume rate", "msgs/s"))
        for size in backlogs
    }
    for rep in range(ctx.repeat):
        ctx.log(f"  3 repetition {rep + 1}/{ctx.repeat}")
        raw: dict[str, Any] = {"repetition": rep + 1}
        for framework, label in ((True, "framework"), (False, "baseline")):
            figures = live(ctx, framework, count)
            raw[f"live_{label}"] = figures
            (e2e.framework if framework else e2e.baseline).append(figures["e2e_rate"])
            (p50.framework if framework else p50.baseline).append(figures["latency_median_ms"])
            (p95.framework if framework else p95.baseline).append(figures["latency_p95_ms"])
        for framework, label in ((True, "framework"), (False, "baseline")):
            figures = live(ctx, framework, paced_count, PACED_RATE)
            raw[f"paced_{label}"] = figures
            (paced50.framework if framework else paced50.baseline).append(figures["latency_median_ms"])
            (paced95.framework if framework else paced95.baseline).append(figures["latency_p95_ms"])
        for size, (publish, consume) in backlog_rows.items():
            for framework, label in ((True, "framework"), (False, "baseline")):
                figures = backlog(ctx, framework, size)
                raw[f"backlog_{size}_{label}"] = figures
                (publish.framework if framework else publish.baseline).append(figures["publish_rate"])
                (consume.framework if framework else consume.baseline).append(figures["consume_rate"])
        result.raw.append(raw)
    result.rows += [e2e, p50, p95, paced50, paced95]
    for publish, consume in backlog_rows.values():
        result.rows += [publish, consume]
    lost = {
        f"repetition {rep['repetition']} {name}": figures["lost"]
        for rep in result.raw
        for name, figures in rep.items()
        if isinstance(figures, dict) and figures.get("lost")
    }
    result.notes.append(
        f"kombu filesystem:// lost {sum(lost.values())} message(s) in this run ({', '.join(lost) or 'none'}): "
        "its producer writes each message file in place, so a concurrent consumer can take a file before it is "
        "written, read nothing and delete it (kombu raises JSONDecodeError; the baseline consumer counts these and "
        "goes on). The embedded transport lost none (every run checks the handled count)."
    )
    result.notes.append(
        "kombu's filesystem:// is not equivalent: it has no leases, no redelivery of a crashed consumer's "
        "messages, no topic routing across processes (used here through the default exchange) and lists the whole "
        "folder on every get; it is the only server-less kombu transport that works across processes."
    )
    return result
