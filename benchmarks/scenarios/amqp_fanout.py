"""Scenario 2: one producer publishes N events; three services (three consumer processes) each receive every one.

Framework: ``publish_event`` and three services with a ``@distributed @event_handler("bench.event.*")``.
Baseline: raw kombu, three queues bound to the topic exchange, three consumer processes. Publisher confirms on
for both (the framework's default). End-to-end: first publish to the last of the three consumers finishing.
"""

from __future__ import annotations

from benchmarks.common import Broker, Context, Row, ScenarioResult, Worker, stop_all, worker_timeout
from benchmarks.payloads import EVENT_KEY, EVENT_PATTERN
from benchmarks.scenarios.amqp_commands import PREFETCH, TARGET_RATIO, rates

SUBSCRIBERS = 3


def framework(ctx: Context, broker: Broker, count: int) -> dict[str, float]:
    services = [ctx.unique("benchsub") for _ in range(SUBSCRIBERS)]
    sender = ctx.unique("benchpub")
    exchange = f"bench.{sender}"
    workers: list[Worker] = []
    timeout = worker_timeout(count * SUBSCRIBERS)
    try:
        consumers = [
            Worker(
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
                    "benchmarks.handlers.events",
                    "--count",
                    count,
                    "--prefetch",
                    PREFETCH,
                    "--timeout",
                    timeout,
                ],
            )
            for service in services
        ]
        workers += consumers
        broker.wait_consumers([f"distributed_{service}" for service in services], workers)
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
                "event",
                "--count",
                count,
                "--confirm",
                "on",
            ],
        )
        workers.append(producer)
        produced = producer.wait(timeout + 30)
        last = max(consumer.wait(timeout + 30)["last"] for consumer in consumers)
    finally:
        stop_all(workers)
        for service in services:
            broker.delete_service(service)
        broker.delete(exchanges=[exchange])
    return rates(count, produced, last)


def baseline(ctx: Context, broker: Broker, count: int) -> dict[str, float]:
    name = ctx.unique("benchkombu")
    exchange = f"bench.{name}"
    queues = [f"bench.{name}.sub{i}" for i in range(SUBSCRIBERS)]
    workers: list[Worker] = []
    timeout = worker_timeout(count * SUBSCRIBERS)
    try:
        consumers = [
            Worker(
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
                    EVENT_PATTERN,
                    "--count",
                    count,
                    "--prefetch",
                    PREFETCH,
                    "--timeout",
                    timeout,
                ],
            )
            for queue in queues
        ]
        workers += consumers
        broker.wait_consumers(queues, workers)
        producer = Worker(
            ctx,
            "kombu_producer",
            [
                "--url",
                ctx.amqp_url,
                "--exchange",
                exchange,
                "--routing-key",
                EVENT_KEY,
                "--kind",
                "event",
                "--routing-header",
                EVENT_KEY,
                "--count",
                count,
                "--confirm",
                "on",
            ],
        )
        workers.append(producer)
        produced = producer.wait(timeout + 30)
        last = max(consumer.wait(timeout + 30)["last"] for consumer in consumers)
    finally:
        stop_all(workers)
        broker.delete(queues=queues, exchanges=[exchange])
    return rates(count, produced, last)


def run(ctx: Context) -> ScenarioResult:
    count = 500 if ctx.quick else 10_000
    result = ScenarioResult("2", f"Event fan-out to {SUBSCRIBERS} services over RabbitMQ (N={count:,}, 4 processes)")
    publish = Row("2", "fan-out x3, confirms on: publish rate", "msgs/s")
    e2e = Row("2", "fan-out x3, confirms on: end-to-end (events/s)", "msgs/s")
    with Broker(ctx.amqp_url) as broker:
        for rep in range(ctx.repeat):
            ctx.log(f"  2 repetition {rep + 1}/{ctx.repeat}")
            fw = framework(ctx, broker, count)
            bl = baseline(ctx, broker, count)
            publish.framework.append(fw["publish_rate"])
            publish.baseline.append(bl["publish_rate"])
            e2e.framework.append(fw["e2e_rate"])
            e2e.baseline.append(bl["e2e_rate"])
            result.raw.append({"repetition": rep + 1, "framework": fw, "baseline": bl})
    result.rows += [publish, e2e]
    result.notes.append(
        "No target is set for fan-out; end-to-end counts events published (each is handled by 3 consumers). "
        f"For comparison with scenario 1's target, a ratio >= {TARGET_RATIO} would be on par."
    )
    return result
