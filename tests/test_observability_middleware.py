"""The middleware port: the hooks the core calls (publishing through InstrumentedTransport, consuming, receiving,
handling, settled), in which order, with what, and that a container without middleware installs none of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

from container_messaging import DistributedBus, MessagingContainer
from container_messaging.invocation import Handler
from container_messaging.messages import Message
from container_messaging.middleware import (
    EndpointInfo,
    InstrumentedTransport,
    Middleware,
    MiddlewareChain,
    Outcome,
    chain,
)
from container_messaging.transports.base import OutboundMessage

HANDLERS = """
from container_messaging import Headers, command_handler, distributed, event_handler

class Work:
    def __init__(self) -> None:
        self.flaky_calls = 0
        self.headers = []

    @distributed
    @command_handler("work.flaky")
    def flaky(self, command: dict, headers: Headers) -> None:
        self.headers.append(dict(headers))
        self.flaky_calls += 1
        if self.flaky_calls == 1:
            raise RuntimeError("the first time only")

    @distributed
    @command_handler("work.broken")
    def broken(self, command: dict) -> None:
        raise ValueError("always")

    @distributed
    @event_handler("work.happened")
    def happened(self, event: dict) -> None:
        pass
"""


class Recorder(Middleware):
    """Records every hook call as a tuple; ``tag`` adds a header when publishing."""

    def __init__(self, events: list[tuple[Any, ...]], tag: str = "") -> None:
        self.events = events
        self.tag = tag

    @contextmanager
    def publishing(self, system: str, exchange: str, message: OutboundMessage) -> Iterator[OutboundMessage]:
        self.events.append(("publishing", self.tag, system, message.routing_key))
        yield attrs.evolve(message, headers={**message.headers, f"x-tag-{self.tag}": self.tag}) if self.tag else message
        self.events.append(("published", self.tag))

    @contextmanager
    def consuming(self, endpoint: EndpointInfo, queue_size: Callable[[str], int]) -> Iterator[None]:
        self.events.append(("consuming", endpoint.name, endpoint.queue, endpoint.system))
        yield
        self.events.append(("consumed", endpoint.name))

    @contextmanager
    def receiving(self, endpoint: EndpointInfo, message: Message) -> Iterator[None]:
        self.events.append(("receiving", message.id))
        yield
        self.events.append(("received", message.id))

    @contextmanager
    def handling(self, endpoint: EndpointInfo, handler: Handler, message: Message) -> Iterator[None]:
        self.events.append(("handling", handler.name.rsplit(".", 1)[-1]))
        try:
            yield
        except Exception as exc:
            self.events.append(("handler raised", type(exc).__name__))
            raise
        self.events.append(("handler returned",))

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
        name = handler.name.rsplit(".", 1)[-1] if handler is not None else None
        self.events.append(("settled", outcome, name, attempt, type(error).__name__ if error else None))


@pytest.fixture
def work(make_module: Callable[[str, str], str], tmp_path: Path) -> Callable[..., MessagingContainer]:
    module = make_module("observed_work", HANDLERS)

    def build(middleware: list[Middleware], **recoverability: Any) -> MessagingContainer:
        return MessagingContainer.from_dict(
            {
                "service_name": "work",
                "scan": [module],
                "transport": {"url": "memory://"},
                "recoverability": recoverability or {"immediate_retries": 1, "delayed_retries": []},
            },
            middleware=middleware,
        )

    return build


def _work(container: MessagingContainer) -> Any:
    owner = next(h.owner for h in container.routes.handlers if h.owner is not None)
    return container.get(owner)


def test_without_middleware_the_container_installs_no_hook(work: Callable[..., MessagingContainer]) -> None:
    """A container built without middleware has none and publishes through its transport itself, not a decorator."""
    container = work([])
    assert container.middleware is None
    assert not isinstance(container.transport, InstrumentedTransport)


def test_publishing_hooks_run_in_order_and_what_they_yield_is_sent(work: Callable[..., MessagingContainer]) -> None:
    """Two middlewares' publishing hooks are entered in the order given and left in reverse, each sees the message
    the one before yielded, and the headers they added arrive at the handler."""
    events: list[tuple[Any, ...]] = []
    container = work([Recorder(events, "a"), Recorder(events, "b")])
    container.setup()
    container.get(DistributedBus).convert_and_send_command("work", "work.flaky", {"n": 1})
    assert events == [
        ("publishing", "a", "memory", "work"),
        ("publishing", "b", "memory", "work"),
        ("published", "b"),
        ("published", "a"),
    ]
    container.run("work", handled_message_limit=1, execution_time_limit=10_000)
    headers = _work(container).headers[0]
    assert (headers["x-tag-a"], headers["x-tag-b"]) == ("a", "b")


def test_a_batch_runs_the_publishing_hook_for_each_message(work: Callable[..., MessagingContainer]) -> None:
    """Messages published in one batch each go through the publishing hook, all before the batch is sent."""
    events: list[tuple[Any, ...]] = []
    container = work([Recorder(events)])
    bus = container.get(DistributedBus)
    with bus.batch():
        bus.convert_and_publish_event("work.happened", {"n": 1})
        bus.convert_and_publish_event("work.happened", {"n": 2})
    assert events == [
        ("publishing", "", "memory", "work.happened"),
        ("publishing", "", "memory", "work.happened"),
        ("published", ""),
        ("published", ""),
    ]


def test_the_consumer_calls_the_hooks_around_each_message_handler_and_decision(
    work: Callable[..., MessagingContainer],
) -> None:
    """Around a run: consuming; per message: receiving, then per handler run handling (seeing the exception of a
    failed run) and settled with the decision (retried now, handled, dead-lettered with the overall attempt)."""
    events: list[tuple[Any, ...]] = []
    container = work([Recorder(events)])
    container.setup()
    bus = container.get(DistributedBus)
    bus.convert_and_send_command("work", "work.flaky", {"n": 1})
    bus.convert_and_send_command("work", "work.broken", {"n": 1})
    events.clear()
    result = container.run("work", handled_message_limit=2, execution_time_limit=10_000)
    assert (result.handled, result.failed) == (1, 1)
    queue = container.topology.queue("work")
    ids = [event[1] for event in events if event[0] == "receiving"]
    assert events == [
        ("consuming", "work", queue, "memory"),
        ("receiving", ids[0]),
        ("handling", "flaky"),
        ("handler raised", "RuntimeError"),
        ("settled", Outcome.RETRIED_NOW, "flaky", 1, "RuntimeError"),
        ("handling", "flaky"),
        ("handler returned",),
        ("settled", Outcome.HANDLED, "flaky", None, None),
        ("received", ids[0]),
        ("receiving", ids[1]),
        ("handling", "broken"),
        ("handler raised", "ValueError"),
        ("settled", Outcome.RETRIED_NOW, "broken", 1, "ValueError"),
        ("handling", "broken"),
        ("handler raised", "ValueError"),
        ("settled", Outcome.DEAD_LETTERED, "broken", 2, "ValueError"),
        ("received", ids[1]),
        ("consumed", "work"),
    ]


def test_duplicates_dropped_events_and_routing_failures_are_settled_without_a_handler(
    work: Callable[..., MessagingContainer],
) -> None:
    """A message already handled is settled as a duplicate, an event no handler subscribes to as dropped, and a
    command no handler takes as dead-lettered with no handler, each without a handling hook."""
    events: list[tuple[Any, ...]] = []
    container = work([Recorder(events)], immediate_retries=0, delayed_retries=[])
    container.setup()
    transport = container.transport
    bus = container.get(DistributedBus)
    bus.convert_and_send_command("work", "work.flaky", {"n": 1}, {"id": "0190a000-0000-7000-8000-000000000001"})
    bus.convert_and_send_command("work", "work.flaky", {"n": 1}, {"id": "0190a000-0000-7000-8000-000000000001"})
    container.run("work", handled_message_limit=2, execution_time_limit=10_000)  # the first fails: no retries
    events.clear()
    bus.convert_and_send_command("work", "work.flaky", {"n": 1}, {"id": "0190a000-0000-7000-8000-000000000002"})
    bus.convert_and_send_command("work", "work.flaky", {"n": 1}, {"id": "0190a000-0000-7000-8000-000000000002"})
    bus.convert_and_send_command("work", "work.unknown", {"n": 1})
    # an event of a key this service is not subscribed to, put straight on its queue
    transport.send_to_queue(
        container.topology.queue("work"),
        OutboundMessage(
            "work",
            b"{}",
            {
                "id": "0190a000-0000-7000-8000-000000000003",
                "ecotone.distributed.payloadType": "event",
                "ecotone.distributed.routingKey": "other.event",
                "contentType": "application/json",
            },
            "application/json",
            "0190a000-0000-7000-8000-000000000003",
        ),
    )
    container.run("work", handled_message_limit=4, execution_time_limit=10_000)
    settled = [event[1:] for event in events if event[0] == "settled"]
    assert settled == [
        (Outcome.HANDLED, "flaky", None, None),
        (Outcome.DUPLICATE, None, None, None),
        (Outcome.DEAD_LETTERED, None, 1, "DistributionError"),
        (Outcome.DROPPED, None, None, None),
    ]
    assert [event[1] for event in events if event[0] == "handling"] == ["flaky"]


def test_chain_refuses_what_is_not_a_middleware_and_keeps_one_as_it_is() -> None:
    """chain() is None for no middleware, the middleware itself for one, a MiddlewareChain for more, and a
    TypeError naming the index and the type for anything else."""
    one = Middleware()
    assert chain([]) is None
    assert chain([one]) is one
    assert isinstance(chain([one, Middleware()]), MiddlewareChain)
    with pytest.raises(TypeError, match=r"middleware\[1\] is a str"):
        chain([one, "tracing"])  # type: ignore[list-item]


def test_instrumented_transport_hooks_direct_sends_and_passes_everything_else_through(
    work: Callable[..., MessagingContainer],
) -> None:
    """A send straight to a queue (Service Map channels, replays) runs the publishing hook too and sends what it
    yields; setup, sizes, existence and the adapter's own methods go to the wrapped transport unchanged."""
    events: list[tuple[Any, ...]] = []
    container = work([Recorder(events, "q")])
    transport = container.transport
    assert isinstance(transport, InstrumentedTransport)
    container.setup()
    queue = container.topology.queue("work")
    transport.send_to_queue(queue, OutboundMessage(queue, b"{}", {}, "application/json", "m"))
    assert events == [("publishing", "q", "memory", queue), ("published", "q")]
    assert transport.queue_size(queue) == 1
    with transport.browse(queue) as deliveries:
        assert [delivery.headers.get("x-tag-q") for delivery in deliveries] == ["q"]
    assert transport.description == transport.inner.description == "memory://"
    assert transport.queue_exists(queue) is None
    assert repr(transport) == f"<InstrumentedTransport {transport.inner!r}>"
