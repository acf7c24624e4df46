"""Scenario 1: distributed command throughput over RabbitMQ, producer and consumer in separate processes.

Framework: ``DistributedBus.send_command`` in a producer process, ``container.run(service, handled_message_limit=N)``
in a consumer process whose handler takes an attrs ``BenchCommand``. Baseline: raw kombu producer and consumer doing
the same work (persistent JSON with headers of the same size, ``json.loads``, the same attrs object, manual ack),
with the same prefetch. Three ways: (a) publisher confirms on, (b) off, (c) the framework's ``bus.batch()`` of 500
with confirms on against the baseline's per-message confirms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.common import Broker, Context, Row, ScenarioResult, Worker, stop_all, worker_timeout
from benchmarks.payloads import COMMAND_KEY

PREFETCH = 100
TARGET_RATIO = 0.85


@dataclass(frozen=True)
class Mode:
    key: str
    label: str
    confirm: bool
    batch: int


MODES = (
    Mode("a", "confirms on", confirm=True, batch=0),
    Mode("b", "confirms off", confirm=False, batch=0),
    Mode("c", "fw bus.batch(500) + confirms vs kombu confirms", confirm=True, batch=500),
)


def rates(count: int, producer: dict[str, Any], last_handled: float) -> dict[str, float]:
    """Publish rate (in the producer) and end-to-end rate (first publish to last message handled)."""
    first, last = producer["first_publish"], producer["last_publish"]
    return {
        "publish_rate": count / (last - first),
        "e2e_rate": count / (last_handled - first),
        "publish_seconds": last - first,
        "e2e_seconds": last_handled - first,
    }


def framework(ctx: Context, broker: Broker, count: int, mode: Mode) -> dict[str, float]:
    service, sender = ctx.unique("benchcmd"), ctx.unique("benchsender")
    exchange = f"bench.{service}"
    workers: list[Worker] = []
    timeout = worker_timeout(count)
    try:
        consumer = Worker(
            ctx,
            "fw_consumer",
            [
                "--url",
                ctx.amqp_url,
                "--service",
                service,
                "--exchange",
                exchange,
                "--scan",
                "benchmarks.handlers.commands",
                "--count",
                count,
                "--prefetch",
                PREFETCH,
                "--timeout",
                timeout,
            ],
        )
        workers.append(consumer)
        broker.wait_consumers([f"distributed_{service}"], workers)
        producer = Worker(
            ctx,
            "fw_producer",
            [
                "--url",
                ctx.amqp_url,
                "--service",
                sender,
                "--exchange",
                exchange,
                "--kind",
                "command",
                "--destination",
                service,
                "--count",
                count,
                "--batch",
                mode.batch,
                "--confirm",
                "on" if mode.confirm else "off",
            ],
        )
        workers.append(producer)
        produced = producer.wait(timeout + 30)
        consumed = consumer.wait(timeout + 30)
    finally:
        stop_all(workers)
        broker.delete_service(service, exchange)
    return rates(count, produced, consumed["last"])


def baseline(ctx: Context, broker: Broker, count: int, mode: Mode) -> dict[str, float]:
    name = ctx.unique("benchkombu")
    exchange, queue = f"bench.{name}", f"bench.{name}.queue"
    workers: list[Worker] = []
    timeout = worker_timeout(count)
    try:
        consumer = Worker(
            ctx,
            "kombu_consumer",
            [
                "--url",
                ctx.amqp_url,
                "--queue",
                queue,
                "--exchange",
                exchange,
                "--binding",
                name,
                "--count",
                count,
                "--prefetch",
                PREFETCH,
                "--timeout",
                timeout,
            ],
        )
        workers.append(consumer)
        broker.wait_consumers([queue], workers)
        producer = Worker(
            ctx,
            "kombu_producer",
            [
                "--url",
                ctx.amqp_url,
                "--exchange",
                exchange,
                "--routing-key",
                name,
                "--kind",
                "command",
                "--routing-header",
                COMMAND_KEY,
                "--target",
                name,
                "--mandatory",
                "--count",
                count,
                "--confirm",
                "on" if mode.confirm else "off",
            ],
        )
        workers.append(producer)
        produced = producer.wait(timeout + 30)
        consumed = consumer.wait(timeout + 30)
    finally:
        stop_all(workers)
        broker.delete(queues=[queue], exchanges=[exchange])
    return rates(count, produced, consumed["last"])


def run(ctx: Context) -> ScenarioResult:
    count = 1_000 if ctx.quick else 20_000
    result = ScenarioResult("1", f"Distributed commands over RabbitMQ (N={count:,}, prefetch {PREFETCH}, 2 processes)")
    with Broker(ctx.amqp_url) as broker:
        for mode in MODES:
            publish = Row(f"1{mode.key}", f"({mode.key}) {mode.label}: publish rate", "msgs/s")
            e2e = Row(
                f"1{mode.key}",
                f"({mode.key}) {mode.label}: end-to-end",
                "msgs/s",
                target=("ratio", TARGET_RATIO),
            )
            for rep in range(ctx.repeat):
                ctx.log(f"  1({mode.key}) repetition {rep + 1}/{ctx.repeat}")
                fw = framework(ctx, broker, count, mode)
                bl = baseline(ctx, broker, count, mode)
                publish.framework.append(fw["publish_rate"])
                publish.baseline.append(bl["publish_rate"])
                e2e.framework.append(fw["e2e_rate"])
                e2e.baseline.append(bl["e2e_rate"])
                result.raw.append({"mode": mode.key, "repetition": rep + 1, "framework": fw, "baseline": bl})
            result.rows += [publish, e2e]
    result.notes.append(
        "(c) compares the framework's pipelined confirms (one wait per 500) with kombu's per-message confirms "
        "(kombu's confirm_publish waits for each ack): it measures what bus.batch() buys, not framework overhead."
    )
    return result
