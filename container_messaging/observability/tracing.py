"""OpenTelemetry tracing: a span per publish (PRODUCER), per processed message (CONSUMER) and per handler run
(INTERNAL), following OpenTelemetry's messaging semantic conventions, parent and child across services.

The trace context travels in the message's headers as an Ecotone service with its OpenTelemetry module writes and
reads it: the header ``ecotoneTracingCarrier`` holds the propagator's fields as a JSON object
(``{"traceparent": "00-...", "tracestate": "..."}``). The same fields are also written as plain headers
(``traceparent``, ``tracestate``), which other OpenTelemetry instrumentations read; on receipt the carrier header wins,
and a message with only the plain headers is continued too. A malformed or oversized carrier starts a new trace
(it never fails the message).

So one trace shows a command leaving service A (``publish billing.changeDetails``), processed in B
(``process billing.changeDetails`` and ``handle BillingService.change``), the event that handler published, and its
processing in C. Spans go to the tracer provider given, or to the global one (``opentelemetry-instrument``, or
``trace.set_tracer_provider``); the propagator is the one given, or the global one (W3C trace context and baggage
unless configured otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

import attrs

from container_messaging.observability import missing_otel

try:
    from opentelemetry import propagate, trace
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
except ImportError as exc:  # pragma: no cover - exercised by test_observability's extra test in a subprocess
    raise missing_otel("tracing", exc) from exc

from container_messaging.distributed.topology import PAYLOAD_TYPE, ROUTING_KEY, SOURCE_SERVICE, TARGET_SERVICE
from container_messaging.invocation import Handler
from container_messaging.messages import CORRELATION_ID, ID, PARENT_ID, Message
from container_messaging.middleware import EndpointInfo, Middleware, Outcome
from container_messaging.transports.base import OutboundMessage

__all__ = ["CARRIER_HEADER", "TRACER_NAME", "TracingMiddleware"]

#: The header Ecotone's OpenTelemetry module keeps the trace context in (a JSON object of the propagator's fields).
CARRIER_HEADER: Final = "ecotoneTracingCarrier"
#: The instrumentation scope of every span this module starts.
TRACER_NAME: Final = "container_messaging"
#: A carrier longer than this is ignored (a new trace starts): the header comes off the wire.
MAX_CARRIER: Final = 8192

#: The outcomes that make a processing span's status an error.
_FAILED: Final = frozenset({Outcome.RETRIED_LATER, Outcome.DEAD_LETTERED, Outcome.REQUEUED})


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _common(system: str, headers: Mapping[str, Any]) -> dict[str, Any]:
    """The semantic conventions' attributes a message's headers give (those it has, each a string)."""
    attributes: dict[str, Any] = {"messaging.system": system}
    for attribute, header in (
        ("messaging.message.id", ID),
        ("messaging.message.conversation_id", CORRELATION_ID),
        ("container_messaging.parent_id", PARENT_ID),
        ("container_messaging.routing_key", ROUTING_KEY),
        ("container_messaging.payload_type", PAYLOAD_TYPE),
        ("container_messaging.source_service", SOURCE_SERVICE),
        ("container_messaging.target_service", TARGET_SERVICE),
    ):
        value = _text(headers.get(header))
        if value is not None:
            attributes[attribute] = value[:255]
    return attributes


class TracingMiddleware(Middleware):
    """Traces publishing, processing and handling (see the module's documentation). Hand it to the container:
    ``MessagingContainer.from_yaml(path, middleware=[TracingMiddleware()])``."""

    def __init__(
        self, tracer_provider: TracerProvider | None = None, propagator: TextMapPropagator | None = None
    ) -> None:
        self._tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)
        self._propagator = propagator
        # id(message) -> its processing span, while the consumer processes it (handlers may run on other threads)
        self._processing: dict[int, Span] = {}

    def __repr__(self) -> str:
        return f"TracingMiddleware(propagator={self._propagator!r})"

    @property
    def propagator(self) -> TextMapPropagator:
        """The propagator given, else the global one (looked up on each use, so it may be configured later)."""
        return self._propagator if self._propagator is not None else propagate.get_global_textmap()

    # -- the hooks ---------------------------------------------------------------------------------------------------

    @contextmanager
    def publishing(self, system: str, exchange: str, message: OutboundMessage) -> Iterator[OutboundMessage]:
        """A PRODUCER span, child of the current context (a handler's span when a handler publishes), whose context
        is written into the message's headers. It is not made current, so a batch's spans are siblings."""
        headers = message.headers
        attributes = _common(system, headers)
        attributes.update(
            {
                "messaging.operation.type": "send",
                "messaging.operation.name": "publish",
                "messaging.destination.name": exchange or message.routing_key,  # "": straight to a queue
                "messaging.message.body.size": len(message.body),
            }
        )
        if system == "rabbitmq":
            attributes["messaging.rabbitmq.destination.routing_key"] = message.routing_key
        key = _text(headers.get(ROUTING_KEY)) or message.routing_key
        span = self._tracer.start_span(f"publish {key}", kind=SpanKind.PRODUCER, attributes=attributes)
        with _ending(span):
            carrier: dict[str, str] = {}
            self.propagator.inject(carrier, context=trace.set_span_in_context(span))
            traced = {**headers, **carrier, CARRIER_HEADER: json.dumps(carrier, separators=(",", ":"))}
            yield attrs.evolve(message, headers=traced)

    @contextmanager
    def receiving(self, endpoint: EndpointInfo, message: Message) -> Iterator[None]:
        """The CONSUMER span of processing one message, child of the context its headers carry. It is not made
        current (the consumer takes other messages meanwhile, and runs handlers on other threads): the handlers'
        spans name it as their parent."""
        parent = self.propagator.extract(self._carrier(message.headers))
        attributes = _common(endpoint.system, message.headers)
        attributes.update(
            {
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": endpoint.queue,
                "messaging.consumer.group.name": endpoint.name,
                "container_messaging.endpoint": endpoint.name,
            }
        )
        key = _text(message.headers.get(ROUTING_KEY)) or endpoint.queue
        span = self._tracer.start_span(
            f"process {key[:255]}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        self._processing[id(message)] = span
        try:
            with _ending(span):
                yield
        finally:
            self._processing.pop(id(message), None)

    @contextmanager
    def handling(self, endpoint: EndpointInfo, handler: Handler, message: Message) -> Iterator[None]:
        """An INTERNAL span per handler run (each attempt), child of the message's processing span and current
        while the handler runs (on its thread or task): what it publishes is its child. A handler's exception is
        recorded and the span's status is an error."""
        attributes = {
            "container_messaging.endpoint": endpoint.name,
            "container_messaging.handler": handler.name,
            "container_messaging.handler_kind": handler.kind.value,
            "code.function.name": handler.name,
        }
        message_id = _text(message.headers.get(ID))
        if message_id is not None:
            attributes["messaging.message.id"] = message_id[:255]
        processing = self._processing.get(id(message))
        parent = trace.set_span_in_context(processing) if processing is not None else None
        with self._tracer.start_as_current_span(
            f"handle {handler.name}", context=parent, kind=SpanKind.INTERNAL, attributes=attributes
        ):
            yield

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
        """An event on the processing span (``handled``, ``retried later``, ``dead-lettered``, ...); a failure that
        was not handled in the end makes its status an error."""
        span = self._processing.get(id(message))
        if span is None or not span.is_recording():
            return
        event: dict[str, Any] = {}
        if attempt is not None:
            event["container_messaging.attempt"] = attempt
        if handler is not None:
            event["container_messaging.handler"] = handler.name
        if error is not None:
            event["error.type"] = f"{type(error).__module__}.{type(error).__qualname__}"
            event["exception.message"] = str(error)[:1024]
        span.add_event(outcome.value, event)
        if outcome in _FAILED:
            span.set_attribute("container_messaging.outcome", outcome.value)
            if error is not None:
                span.set_attribute("error.type", event["error.type"])
            span.set_status(Status(StatusCode.ERROR, outcome.value))

    # -- reading the carrier ---------------------------------------------------------------------------------------

    def _carrier(self, headers: Mapping[str, Any]) -> dict[str, str]:
        """The propagator's fields: from ``ecotoneTracingCarrier`` when it is a JSON object of strings, else from
        the plain headers of the same names."""
        raw = headers.get(CARRIER_HEADER)
        if isinstance(raw, bytes | str) and len(raw) <= MAX_CARRIER:
            try:
                decoded = json.loads(raw)
            except ValueError:
                decoded = None
            if isinstance(decoded, dict):
                return {k: v for k, v in decoded.items() if isinstance(k, str) and isinstance(v, str)}
        fields = self.propagator.fields
        return {k: v for k in fields if isinstance(v := headers.get(k), str) and len(v) <= MAX_CARRIER}


@contextmanager
def _ending(span: Span) -> Iterator[None]:
    """Ends ``span`` on exit; an exception is recorded and makes its status an error."""
    try:
        yield
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:1024]))
        raise
    finally:
        span.end()
