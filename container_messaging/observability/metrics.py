"""OpenTelemetry metrics: what each endpoint and handler does, through OpenTelemetry's metrics API.

- ``container_messaging.messages.handled`` (counter; endpoint, handler): handler runs that returned;
- ``container_messaging.messages.failed`` (counter; endpoint, handler, error.type): handler runs that raised, each
  attempt counted (``handler`` is ``routing`` when no handler could be chosen);
- ``container_messaging.messages.retried`` (counter; endpoint, handler, retry = ``immediate`` | ``delayed``);
- ``container_messaging.messages.dead_lettered`` (counter; endpoint, handler): copies moved to the dead letter;
- ``container_messaging.messages.skipped`` (counter; endpoint, reason = ``duplicate`` | ``dropped``);
- ``container_messaging.handler.duration`` (histogram, s; endpoint, handler, outcome = ``ok`` | ``error``);
- ``container_messaging.publish.duration`` (histogram, s; messaging.system, messaging.destination.name, outcome);
- ``container_messaging.queue.messages`` (gauge; endpoint, queue): messages ready in the endpoint's queue and in its
  dead letter queue.

``queue.messages`` is the consumer lag as the broker reports it (messages ready in the endpoint's queue, and in its
dead letter queue), read while the endpoint runs, when the metrics are collected (never per message). Readings go to
the meter provider given, or to the global one; export them to Prometheus with ``opentelemetry-exporter-prometheus``
(see README, "Observability").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Final

from container_messaging.observability import missing_otel

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
except ImportError as exc:  # pragma: no cover - exercised by test_observability's extra test in a subprocess
    raise missing_otel("metrics", exc) from exc

from container_messaging.errors import MessagingError
from container_messaging.invocation import Handler
from container_messaging.messages import Message
from container_messaging.middleware import EndpointInfo, Middleware, Outcome
from container_messaging.transports.base import OutboundMessage

__all__ = ["METER_NAME", "MetricsMiddleware"]

log = logging.getLogger("container_messaging.observability.metrics")

#: The instrumentation scope of every instrument of this module.
METER_NAME: Final = "container_messaging"
#: Histogram buckets (seconds) for handler and publish durations: 1 ms to 60 s.
DURATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_ROUTING: Final = "routing"


def _error_type(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__qualname__}"


class _QueueWatch:
    """The queues of the endpoints running now, read when the gauge is collected (one reading per queue)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, tuple[EndpointInfo, Callable[[str], int]]] = {}

    def add(self, endpoint: EndpointInfo, queue_size: Callable[[str], int]) -> None:
        with self._lock:
            self._running[endpoint.name] = (endpoint, queue_size)

    def remove(self, endpoint: EndpointInfo) -> None:
        with self._lock:
            self._running.pop(endpoint.name, None)

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            running = list(self._running.values())
        for endpoint, queue_size in running:
            for queue in (endpoint.queue, endpoint.dead_letter_queue):
                try:
                    size = queue_size(queue)
                except MessagingError as exc:  # a broker that does not answer now gives no reading, not an error
                    log.debug("endpoint %r: the size of queue %r could not be read: %s", endpoint.name, queue, exc)
                    continue
                yield Observation(size, {"endpoint": endpoint.name, "queue": queue})


class MetricsMiddleware(Middleware):
    """Counts and times messages (see the module's documentation). Hand it to the container:
    ``MessagingContainer.from_yaml(path, middleware=[MetricsMiddleware()])``."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = metrics.get_meter(METER_NAME, meter_provider=meter_provider)
        self._handled = meter.create_counter("container_messaging.messages.handled", "1", "handler runs that returned")
        self._failed = meter.create_counter(
            "container_messaging.messages.failed", "1", "handler runs that raised (each attempt counts)"
        )
        self._retried = meter.create_counter(
            "container_messaging.messages.retried", "1", "failed handler runs that are tried again (at once or later)"
        )
        self._dead_lettered = meter.create_counter(
            "container_messaging.messages.dead_lettered", "1", "messages moved to the dead letter, per handler"
        )
        self._skipped = meter.create_counter(
            "container_messaging.messages.skipped", "1", "messages acknowledged without running a handler"
        )
        self._handler_duration = meter.create_histogram(
            "container_messaging.handler.duration",
            "s",
            "how long one handler run took",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._publish_duration = meter.create_histogram(
            "container_messaging.publish.duration",
            "s",
            "how long publishing one message took (until the broker confirmed it, with confirms)",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._queues = _QueueWatch()
        meter.create_observable_gauge(
            "container_messaging.queue.messages",
            [self._queues.observe],
            "1",
            "messages ready in an endpoint's queue and in its dead letter queue, as the broker reports",
        )

    def __repr__(self) -> str:
        return "MetricsMiddleware()"

    @contextmanager
    def publishing(self, system: str, exchange: str, message: OutboundMessage) -> Iterator[OutboundMessage]:
        destination = exchange or message.routing_key  # "": straight to a queue (a Service Map channel)
        attributes = {"messaging.system": system, "messaging.destination.name": destination, "outcome": "ok"}
        started = time.perf_counter()
        try:
            yield message
        except BaseException:
            attributes["outcome"] = "error"
            raise
        finally:
            self._publish_duration.record(time.perf_counter() - started, attributes)

    @contextmanager
    def consuming(self, endpoint: EndpointInfo, queue_size: Callable[[str], int]) -> Iterator[None]:
        self._queues.add(endpoint, queue_size)
        try:
            yield
        finally:
            self._queues.remove(endpoint)

    @contextmanager
    def handling(self, endpoint: EndpointInfo, handler: Handler, message: Message) -> Iterator[None]:
        started = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except Exception as exc:
            outcome = "error"
            self._failed.add(1, {"endpoint": endpoint.name, "handler": handler.name, "error.type": _error_type(exc)})
            raise
        finally:
            self._handler_duration.record(
                time.perf_counter() - started, {"endpoint": endpoint.name, "handler": handler.name, "outcome": outcome}
            )

    def settled(
        self,
        endpoint: EndpointInfo,
        message: Message,
        outcome: Outcome,
        *,
        handler: Handler | None = None,
        attempt: int | None = None,
        error: Exception | None = None,
    ) -> None:
        name = handler.name if handler is not None else _ROUTING
        if handler is None and error is not None:  # no handler could be chosen: a failure no handler run counted
            self._failed.add(1, {"endpoint": endpoint.name, "handler": name, "error.type": _error_type(error)})
        if outcome is Outcome.HANDLED:
            self._handled.add(1, {"endpoint": endpoint.name, "handler": name})
        elif outcome is Outcome.RETRIED_NOW:
            self._retried.add(1, {"endpoint": endpoint.name, "handler": name, "retry": "immediate"})
        elif outcome is Outcome.RETRIED_LATER:
            self._retried.add(1, {"endpoint": endpoint.name, "handler": name, "retry": "delayed"})
        elif outcome is Outcome.DEAD_LETTERED:
            self._dead_lettered.add(1, {"endpoint": endpoint.name, "handler": name})
        elif outcome is Outcome.DUPLICATE:
            self._skipped.add(1, {"endpoint": endpoint.name, "reason": "duplicate"})
        elif outcome is Outcome.DROPPED:
            self._skipped.add(1, {"endpoint": endpoint.name, "reason": "dropped"})
