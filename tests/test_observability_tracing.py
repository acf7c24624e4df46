"""OpenTelemetry tracing: one trace follows a command from service A, handled in B, and the event it caused,
handled in C (in-process over memory and embedded transports, and over RabbitMQ), with the trace context in the
headers an Ecotone service with its OpenTelemetry module reads and writes."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.propagate import get_global_textmap
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from container_messaging import DistributedBus, MessagingContainer
from container_messaging.observability.tracing import CARRIER_HEADER, TracingMiddleware

from conftest import forget_endpoint, transport_section

HANDLERS = """
from container_messaging import DistributedBus, Headers, command_handler, distributed, event_handler

class Billing:
    def __init__(self, bus: DistributedBus) -> None:
        self.bus = bus
        self.headers = []

    @distributed
    @command_handler("billing.changeDetails")
    def change(self, command: dict, headers: Headers) -> None:
        self.headers.append(dict(headers))
        self.bus.convert_and_publish_event("billing.detailsWereChanged", command)

    @distributed
    @command_handler("billing.fail")
    def fail(self, command: dict) -> None:
        raise RuntimeError("failed on purpose")

class Tickets:
    def __init__(self) -> None:
        self.seen = []

    @distributed
    @event_handler("billing.detailsWereChanged")
    def on_changed(self, event: dict, headers: Headers) -> None:
        self.seen.append((event, dict(headers)))
"""

RUN = {"handled_message_limit": 1, "execution_time_limit": 20_000}


class System:
    """Three services (user -> billing -> ticket), one container each, sharing one tracer provider."""

    def __init__(
        self,
        build: Callable[[str, bool], MessagingContainer],
        provider: TracerProvider,
        exporter: InMemorySpanExporter,
    ) -> None:
        self.provider = provider
        self.exporter = exporter
        self.user = build("user", True)
        self.billing = build("billing", True)
        self.ticket = build("ticket", True)
        self.build = build

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _system(
    kind: str,
    tmp_path: Path,
    make_module: Callable[[str, str], str],
    distribution: dict[str, str],
    tracing: tuple[TracerProvider, InMemorySpanExporter],
) -> Iterator[System]:
    provider, exporter = tracing
    module = make_module(f"traced_{distribution['queue_prefix'].strip('_')}", HANDLERS)
    built: list[MessagingContainer] = []

    def build(service: str, traced: bool) -> MessagingContainer:
        container = MessagingContainer.from_dict(
            {
                "service_name": service,
                "scan": [module],
                "transport": transport_section(kind, tmp_path),
                "distribution": distribution,
                "recoverability": {"immediate_retries": 0, "delayed_retries": []},
            },
            middleware=[TracingMiddleware(provider)] if traced else [],
        )
        built.append(container)
        return container

    system = System(build, provider, exporter)
    system.billing.setup()
    system.ticket.setup()
    try:
        yield system
    finally:
        for container in built:
            for service in ("billing", "ticket"):
                if container.settings.service_name == service:
                    forget_endpoint(container, container.topology.queue(service))
            container.close()


@pytest.fixture(params=["memory", "embedded", "rabbitmq"])
def system(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    make_module: Callable[[str, str], str],
    distribution: dict[str, str],
    tracing: tuple[TracerProvider, InMemorySpanExporter],
) -> Iterator[System]:
    yield from _system(request.param, tmp_path, make_module, distribution, tracing)


@pytest.fixture
def memory_system(
    tmp_path: Path,
    make_module: Callable[[str, str], str],
    distribution: dict[str, str],
    tracing: tuple[TracerProvider, InMemorySpanExporter],
) -> Iterator[System]:
    yield from _system("memory", tmp_path, make_module, distribution, tracing)


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, f"{name!r}: {[span.name for span in spans]}"
    return found[0]


def _parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _handler(system: System, cls: str) -> Any:
    return system.billing.get(next(h.owner for h in system.billing.routes.handlers if h.owner.__name__ == cls))


def test_one_trace_follows_a_command_from_a_to_b_and_its_event_to_c(system: System) -> None:
    """The command's publish in A, its processing and handling in B, the event B's handler publishes, and its
    processing and handling in C are spans of one trace, each the child of the one before, with the kinds and
    messaging attributes of OpenTelemetry's semantic conventions."""
    system.user.get(DistributedBus).convert_and_send_command("billing", "billing.changeDetails", {"personId": "7"})
    assert system.billing.run("billing", **RUN).handled == 1
    assert system.ticket.run("ticket", **RUN).handled == 1

    spans = system.spans()
    send = _one(spans, "publish billing.changeDetails")
    process_b = _one(spans, "process billing.changeDetails")
    handle_b = _one(spans, next(s.name for s in spans if s.name.startswith("handle ") and "change" in s.name))
    publish_event = _one(spans, "publish billing.detailsWereChanged")
    process_c = _one(spans, "process billing.detailsWereChanged")
    handle_c = _one(spans, next(s.name for s in spans if s.name.startswith("handle ") and "on_changed" in s.name))
    chain = [send, process_b, handle_b, publish_event, process_c, handle_c]

    assert len(spans) == 6
    assert {span.context.trace_id for span in chain} == {send.context.trace_id}
    assert send.parent is None
    for parent, child in itertools.pairwise(chain):
        assert _parent_of(child) == parent.context.span_id, f"{child.name} is not a child of {parent.name}"
    assert [span.kind for span in chain] == [
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.INTERNAL,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.INTERNAL,
    ]

    system_name = {"memory://": "memory", "embedded://": "embedded"}.get(system.user.transport.description, "rabbitmq")
    command_headers = _handler(system, "Billing").headers[0]
    assert send.attributes["messaging.system"] == system_name
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.destination.name"] == system.user.topology.exchange
    assert send.attributes["messaging.message.id"] == command_headers["id"]
    assert process_b.attributes["messaging.operation.type"] == "process"
    assert process_b.attributes["messaging.destination.name"] == system.billing.topology.queue("billing")
    assert process_b.attributes["messaging.message.id"] == command_headers["id"]
    # one conversation: the correlationId is the command's id all along
    assert {
        span.attributes["messaging.message.conversation_id"] for span in (send, process_b, publish_event, process_c)
    } == {command_headers["id"]}
    assert all(span.status.status_code is not StatusCode.ERROR for span in chain)


def test_the_context_travels_in_ecotones_carrier_header_and_as_plain_w3c_headers(memory_system: System) -> None:
    """The message B receives carries ecotoneTracingCarrier, a JSON object whose traceparent names A's publish
    span, and the same traceparent as a plain header."""
    memory_system.user.get(DistributedBus).convert_and_send_command("billing", "billing.changeDetails", {"p": 1})
    memory_system.billing.run("billing", **RUN)
    headers = _handler(memory_system, "Billing").headers[0]
    send = _one(memory_system.spans(), "publish billing.changeDetails")
    traceparent = f"00-{send.context.trace_id:032x}-{send.context.span_id:016x}-{int(send.context.trace_flags):02x}"
    assert json.loads(headers[CARRIER_HEADER]) == {"traceparent": traceparent}
    assert headers["traceparent"] == traceparent


@pytest.mark.parametrize("as_ecotone", [True, False], ids=["ecotoneTracingCarrier", "traceparent"])
def test_a_trace_started_elsewhere_is_continued(memory_system: System, as_ecotone: bool) -> None:
    """A message sent by a service without this middleware, carrying a trace context the way Ecotone writes it
    (ecotoneTracingCarrier) or only as a plain traceparent header, is processed in that trace, as a child of the
    sender's span."""
    provider = TracerProvider()
    remote = provider.get_tracer("ecotone").start_span("Distributed Bus", kind=SpanKind.PRODUCER)
    carrier: dict[str, str] = {}
    get_global_textmap().inject(carrier, context=trace.set_span_in_context(remote))
    metadata = {CARRIER_HEADER: json.dumps(carrier)} if as_ecotone else {"traceparent": carrier["traceparent"]}
    untraced = memory_system.build("php", False)
    untraced.get(DistributedBus).convert_and_send_command("billing", "billing.changeDetails", {"p": 1}, metadata)
    memory_system.billing.run("billing", **RUN)
    process = _one(memory_system.spans(), "process billing.changeDetails")
    assert process.context.trace_id == remote.get_span_context().trace_id
    assert _parent_of(process) == remote.get_span_context().span_id


@pytest.mark.parametrize("carrier", ["{not json", json.dumps(["a"]), "x" * 10_000, json.dumps({"traceparent": "zz"})])
def test_a_malformed_carrier_starts_a_new_trace_and_the_message_is_still_handled(
    memory_system: System, carrier: str
) -> None:
    """A carrier that is not JSON, not an object, too long or holds a broken traceparent is ignored: the message is
    handled, in a new trace (its processing span has no parent)."""
    untraced = memory_system.build("php", False)
    untraced.get(DistributedBus).convert_and_send_command(
        "billing", "billing.changeDetails", {"p": 1}, {CARRIER_HEADER: carrier}
    )
    assert memory_system.billing.run("billing", **RUN).handled == 1
    assert _one(memory_system.spans(), "process billing.changeDetails").parent is None


def test_a_failing_handler_records_its_exception_and_a_dead_lettered_message_is_an_error(memory_system: System) -> None:
    """The handler span of a handler that raised has an error status and the exception as an event; the processing
    span of a message that went to the dead letter has an error status and a 'dead-lettered' event."""
    memory_system.user.get(DistributedBus).convert_and_send_command("billing", "billing.fail", {"p": 1})
    assert memory_system.billing.run("billing", **RUN).failed == 1
    spans = memory_system.spans()
    handle = next(span for span in spans if span.name.startswith("handle ") and "fail" in span.name)
    process = _one(spans, "process billing.fail")
    assert handle.status.status_code is StatusCode.ERROR
    assert [event.attributes["exception.type"] for event in handle.events if event.name == "exception"] == [
        "RuntimeError"
    ]
    assert process.status.status_code is StatusCode.ERROR
    assert [event.name for event in process.events] == ["dead-lettered"]
    assert process.events[0].attributes["error.type"] == "builtins.RuntimeError"


def test_messages_published_in_one_batch_get_sibling_spans(memory_system: System) -> None:
    """Two events published in one batch get a publish span each, both children of the same parent (not of each
    other), and each message carries its own span's context."""
    bus = memory_system.user.get(DistributedBus)
    tracer = memory_system.provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request, bus.batch():
        bus.convert_and_publish_event("billing.detailsWereChanged", {"n": 1})
        bus.convert_and_publish_event("billing.detailsWereChanged", {"n": 2})
    publishes = [span for span in memory_system.spans() if span.name == "publish billing.detailsWereChanged"]
    assert len(publishes) == 2
    assert {_parent_of(span) for span in publishes} == {request.get_span_context().span_id}


def test_one_trace_follows_a_command_and_its_event_through_service_map_channels(
    make_module: Callable[[str, str], str], tracing: tuple[TracerProvider, InMemorySpanExporter], unique: str
) -> None:
    """With Service Map channels (messages put straight on a queue, no exchange), the command from A, its handling
    in B, the event B publishes and its handling in C are still one trace, each span the child of the one before."""
    provider, exporter = tracing
    module = make_module(f"mapped_{unique}", HANDLERS)
    billing_channel, ticket_channel = f"billing_{unique}", f"ticket_{unique}"
    service_map = {
        "channels": {billing_channel: None, ticket_channel: None},
        "commands": {"billing": billing_channel, "ticket": ticket_channel},
        "events": [{"channel": ticket_channel, "subscription_keys": ["billing.*"]}],
    }

    def build(service: str, consume: list[str]) -> MessagingContainer:
        return MessagingContainer.from_dict(
            {
                "service_name": service,
                "scan": [module],
                "transport": {"url": "memory://"},
                "service_map": service_map,
                "consume": consume,
            },
            middleware=[TracingMiddleware(provider)],
        )

    user, billing, ticket = build("user", []), build("billing", [billing_channel]), build("ticket", [ticket_channel])
    try:
        billing.setup()
        ticket.setup()
        user.get(DistributedBus).convert_and_send_command("billing", "billing.changeDetails", {"personId": "7"})
        assert billing.run(billing_channel, **RUN).handled == 1
        assert ticket.run(ticket_channel, **RUN).handled == 1
    finally:
        for container in (user, billing, ticket):
            container.close()
    spans = list(exporter.get_finished_spans())
    send = _one(spans, "publish billing.changeDetails")
    publish_event = _one(spans, "publish billing.detailsWereChanged")
    chain = [
        send,
        _one(spans, "process billing.changeDetails"),
        next(s for s in spans if s.name.startswith("handle ") and "change" in s.name),
        publish_event,
        _one(spans, "process billing.detailsWereChanged"),
        next(s for s in spans if s.name.startswith("handle ") and "on_changed" in s.name),
    ]
    assert {span.context.trace_id for span in spans} == {send.context.trace_id}
    for parent, child in itertools.pairwise(chain):
        assert _parent_of(child) == parent.context.span_id, f"{child.name} is not a child of {parent.name}"
    assert (send.attributes["messaging.destination.name"], publish_event.attributes["messaging.destination.name"]) == (
        billing_channel,
        ticket_channel,
    )


def test_a_command_sent_through_the_outbox_and_published_by_the_relay_continues_the_senders_trace(
    memory_system: System, tmp_path: Path, tracing: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """With the outbox (the relay publishes later, in another run), the publish span is made when the application
    sends inside its unit of work, and the message the relay publishes carries its context: B's processing is its
    child, in the sender's trace."""
    pytest.importorskip("sqlalchemy")
    from container_messaging.outbox import UnitOfWork

    provider, _exporter = tracing
    sender = MessagingContainer.from_dict(
        {
            "service_name": "user",
            "transport": {"url": "memory://"},
            "distribution": {
                "exchange": memory_system.billing.topology.exchange,
                "queue_prefix": memory_system.billing.settings.distribution.queue_prefix,
            },
            "outbox": {
                "enabled": True,
                "database_url": f"sqlite:///{tmp_path / 'outbox.sqlite3'}",
                "publish_after_commit": False,
            },
        },
        middleware=[TracingMiddleware(provider)],
    )
    try:
        sender.setup()
        request = provider.get_tracer("test").start_span("request")
        with trace.use_span(request, end_on_exit=True), sender.get(UnitOfWork).begin():
            sender.get(DistributedBus).convert_and_send_command("billing", "billing.changeDetails", {"p": 1})
        assert sender.run("outbox", handled_message_limit=1, execution_time_limit=10_000).handled == 1
    finally:
        sender.close()
    assert memory_system.billing.run("billing", **RUN).handled == 1
    spans = memory_system.spans()
    send = _one(spans, "publish billing.changeDetails")
    process = _one(spans, "process billing.changeDetails")
    assert _parent_of(send) == request.get_span_context().span_id
    assert _parent_of(process) == send.context.span_id
    assert process.context.trace_id == request.get_span_context().trace_id


ASYNC_HANDLERS = """
import asyncio
from container_messaging import DistributedBus, command_handler, distributed

class AsyncBilling:
    def __init__(self, bus: DistributedBus) -> None:
        self.bus = bus

    @distributed
    @command_handler("billing.asyncChange")
    async def change(self, command: dict) -> None:
        await asyncio.sleep(0.01)
        self.bus.convert_and_publish_event("billing.detailsWereChanged", command)
"""


@pytest.mark.parametrize("concurrency", [1, 4])
def test_with_several_messages_in_hand_each_handler_span_is_the_child_of_its_own_message(
    memory_system: System, make_module: Callable[[str, str], str], concurrency: int
) -> None:
    """With concurrency 4 (worker threads) as with 1, each of several commands has its processing span, its handler
    span is that span's child, and the event the handler published is the handler span's child, each message in
    the trace of its own send."""
    bus = memory_system.user.get(DistributedBus)
    for n in range(6):
        bus.convert_and_send_command("billing", "billing.changeDetails", {"n": n})
    result = memory_system.billing.run(
        "billing", handled_message_limit=6, execution_time_limit=20_000, concurrency=concurrency
    )
    assert result.handled == 6
    spans = memory_system.spans()
    by_id = {span.context.span_id: span for span in spans}
    sends = [span for span in spans if span.name == "publish billing.changeDetails"]
    processes = [span for span in spans if span.name == "process billing.changeDetails"]
    handles = [span for span in spans if span.name.startswith("handle ")]
    events = [span for span in spans if span.name == "publish billing.detailsWereChanged"]
    assert (len(sends), len(processes), len(handles), len(events)) == (6, 6, 6, 6)
    for event in events:
        handle = by_id[_parent_of(event)]
        process = by_id[_parent_of(handle)]
        send = by_id[_parent_of(process)]
        assert (handle in handles, process in processes, send in sends) == (True, True, True)
        assert event.context.trace_id == send.context.trace_id
    assert len({span.context.trace_id for span in sends}) == 6


def test_a_coroutine_handler_is_traced_like_a_plain_one(
    memory_system: System, make_module: Callable[[str, str], str], tracing: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """An async def handler, awaited on the consumer's loop, gets its handler span as the child of the message's
    processing span, and what it publishes is the child of its handler span."""
    provider, exporter = tracing
    module = make_module("traced_async_handlers", ASYNC_HANDLERS)
    billing = MessagingContainer.from_dict(
        {
            "service_name": "billing",
            "scan": [module],
            "transport": {"url": "memory://"},
            "distribution": {
                "exchange": memory_system.billing.topology.exchange,
                "queue_prefix": memory_system.billing.settings.distribution.queue_prefix,
            },
        },
        middleware=[TracingMiddleware(provider)],
    )
    try:
        billing.setup()
        memory_system.user.get(DistributedBus).convert_and_send_command("billing", "billing.asyncChange", {"n": 1})
        assert billing.run("billing", **RUN).handled == 1
    finally:
        billing.close()
    spans = list(exporter.get_finished_spans())
    process = _one(spans, "process billing.asyncChange")
    handle = next(span for span in spans if span.name.startswith("handle ") and "AsyncBilling" in span.name)
    event = _one(spans, "publish billing.detailsWereChanged")
    assert _parent_of(handle) == process.context.span_id
    assert _parent_of(event) == handle.context.span_id
