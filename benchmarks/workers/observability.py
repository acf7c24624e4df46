"""The cost of the middleware hooks on the publish and the consume path, in one process over the memory transport:
no middleware (the baseline), a no-op ``Middleware`` (the hooks' own cost) and OpenTelemetry tracing and metrics
(SDK providers: spans and readings made, nothing exported), in alternating blocks of N messages each. Times are the
process's CPU time (``time.process_time``), so other work on the machine does not blur them."""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.common import write_result
from benchmarks.handlers.observed import ObservedHandler
from container_messaging import DistributedBus, MessagingContainer
from container_messaging.middleware import Middleware

VARIANTS = ("none", "noop", "otel")


def _middleware(variant: str) -> list[Middleware]:
    if variant == "none":
        return []
    if variant == "noop":
        return [Middleware()]
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from container_messaging.observability import MetricsMiddleware, TracingMiddleware

    return [TracingMiddleware(TracerProvider()), MetricsMiddleware(MeterProvider([InMemoryMetricReader()]))]


def _block(container: MessagingContainer, service: str, count: int) -> tuple[float, float]:
    """Seconds to publish ``count`` commands, then to consume them."""
    send = container.get(DistributedBus).send_command
    clock = time.process_time  # CPU time of this process: what the hooks cost, steady when the machine is busy
    start = clock()
    for _ in range(count):
        send(service, "bench.observed", b"{}", "application/json")
    published = clock() - start
    start = clock()
    result = container.run(service, handled_message_limit=count, execution_time_limit=120_000)
    consumed = clock() - start
    if result.handled != count:
        raise SystemExit(f"{service}: handled {result.handled} of {count} ({result.stop_reason})")
    return published, consumed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, required=True, help="per block and variant")
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)

    containers: dict[str, MessagingContainer] = {}
    for variant in VARIANTS:
        service = f"observed{variant}"
        containers[variant] = container = MessagingContainer.from_dict(
            {
                "service_name": service,
                "scan": ["benchmarks.handlers.observed"],
                "transport": {"url": "memory://", "polling_interval": 0.001},
                "deduplication": {"store": "none"},
            },
            middleware=_middleware(variant),
        )
        container.setup()
        _block(container, service, 500)  # warm-up
    totals: dict[str, dict[str, float]] = {v: {"publish": 0.0, "consume": 0.0} for v in VARIANTS}
    for _ in range(args.blocks):
        for variant in VARIANTS:
            published, consumed = _block(containers[variant], f"observed{variant}", args.messages)
            totals[variant]["publish"] += published
            totals[variant]["consume"] += consumed
    total = args.messages * args.blocks
    figures: dict[str, Any] = {"messages": total}
    for variant in VARIANTS:
        figures[f"{variant}_publish_us"] = totals[variant]["publish"] / total * 1e6
        figures[f"{variant}_consume_us"] = totals[variant]["consume"] / total * 1e6
        handler = containers[variant].get(ObservedHandler)
        if handler.count != 500 + total:
            raise SystemExit(f"{variant}: the handler ran {handler.count} times, expected {500 + total}")
        containers[variant].close()
    write_result(args.result, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
