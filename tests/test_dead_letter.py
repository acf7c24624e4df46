"""The dead letter API on every transport: what each operation reads of the queue, and that nothing read and not
taken leaves the queue or changes its order."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from container_messaging import MessagingContainer
from container_messaging.deadletter import DeadLetter
from container_messaging.distributed.topology import PAYLOAD_TYPE, PayloadType
from container_messaging.messages import ID, FailureHeader
from container_messaging.transports.base import (
    BaseTransport,
    Delivery,
    EndpointTopology,
    OutboundMessage,
    Receiver,
    dead_letter_queue,
)

from conftest import forget_endpoint, transport_section


class CountingTransport(BaseTransport):
    """Delegates to a real transport; counts the deliveries the caller took from ``browse`` and notes how many
    messages the queue still had ready when the first one was taken."""

    def __init__(self, inner: BaseTransport) -> None:
        self.inner = inner
        self.description = inner.description
        self.read = 0
        self.ready_at_first: int | None = None

    def browse(self, queue: str) -> AbstractContextManager[Iterable[Delivery]]:
        @contextmanager
        def counted() -> Iterator[Iterable[Delivery]]:
            with self.inner.browse(queue) as deliveries:
                yield self._counting(queue, deliveries)

        return counted()

    def _counting(self, queue: str, deliveries: Iterable[Delivery]) -> Iterator[Delivery]:
        for delivery in deliveries:
            self.read += 1
            if self.read == 1:
                self.ready_at_first = self.inner.queue_size(queue)
            yield delivery

    def open_receiver(self, queue: str, *, prefetch_count: int) -> Receiver:
        return self.inner.open_receiver(queue, prefetch_count=prefetch_count)

    def declare_exchange(self, exchange: str) -> None:
        self.inner.declare_exchange(exchange)

    def setup_endpoint(self, topology: EndpointTopology) -> None:
        self.inner.setup_endpoint(topology)

    def publish(self, exchange: str, message: OutboundMessage, *, mandatory: bool) -> None:
        self.inner.publish(exchange, message, mandatory=mandatory)

    def publish_many(self, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> None:
        self.inner.publish_many(exchange, messages)

    def send_to_queue(self, queue: str, message: OutboundMessage) -> None:
        self.inner.send_to_queue(queue, message)

    def queue_size(self, queue: str) -> int:
        return self.inner.queue_size(queue)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def billing(
    transport_kind: str, tmp_path: Path, distribution: dict[str, str]
) -> Iterator[tuple[MessagingContainer, CountingTransport, DeadLetter]]:
    """The billing service's container on one transport, and its dead letter read through a CountingTransport."""
    container = MessagingContainer.from_dict(
        {
            "service_name": "billing",
            "transport": transport_section(transport_kind, tmp_path),
            "distribution": distribution,
        }
    )
    container.setup()
    queue = container.topology.queue("billing")
    counting = CountingTransport(container.transport)
    try:
        yield container, counting, DeadLetter(counting, queue, "billing")
    finally:
        forget_endpoint(container, queue)
        container.close()


def put(container: MessagingContainer, message_id: str, payload_type: str = PayloadType.COMMAND, **extra: str) -> None:
    """An entry on billing's dead letter queue, with the failure headers the consumer writes."""
    queue = dead_letter_queue(container.topology.queue("billing"))
    headers: Mapping[str, object] = {
        ID: message_id,
        PAYLOAD_TYPE: payload_type,
        FailureHeader.ENDPOINT: "billing",
        FailureHeader.REASON: "retries exhausted",
        FailureHeader.TIME: int(time.time()),
        FailureHeader.ATTEMPTS: 1,
        **extra,
    }
    container.transport.send_to_queue(
        queue, OutboundMessage(queue, message_id.encode(), headers, "text/plain", message_id)
    )


def ids(dead_letter: DeadLetter) -> list[str]:
    return [entry.message_id for entry in dead_letter.list()]


def test_operations_on_one_command_read_up_to_its_entry(
    billing: tuple[MessagingContainer, CountingTransport, DeadLetter],
) -> None:
    """`get`, `delete` and `replay` of a command's id take entries from the transport only up to its entry; the
    others stay, in order."""
    container, counting, dead_letter = billing
    for number in range(1, 21):
        put(container, f"cmd-{number}")
    assert [entry.message_id for entry in dead_letter.get("cmd-3")] == ["cmd-3"]
    assert counting.read == 3
    counting.read = 0
    assert dead_letter.delete("cmd-2") == 1
    assert counting.read == 2
    counting.read = 0
    assert dead_letter.replay("cmd-4") == 1
    assert counting.read == 3
    assert ids(dead_letter) == ["cmd-1", "cmd-3", *(f"cmd-{n}" for n in range(5, 21))]
    assert container.transport.queue_size(container.topology.queue("billing")) == 1


def test_list_with_a_limit_reads_only_that_many_and_count_reads_none(
    billing: tuple[MessagingContainer, CountingTransport, DeadLetter],
) -> None:
    """`list(limit=5)` of 20 entries takes 5 from the transport and `count()` takes none; the queue keeps all 20 in
    order."""
    container, counting, dead_letter = billing
    for number in range(1, 21):
        put(container, f"cmd-{number}")
    assert [entry.message_id for entry in dead_letter.list(5)] == [f"cmd-{n}" for n in range(1, 6)]
    assert dead_letter.count() == 20
    assert counting.read == 5
    assert ids(dead_letter) == [f"cmd-{n}" for n in range(1, 21)]


def test_an_event_id_is_looked_for_through_the_whole_queue(
    billing: tuple[MessagingContainer, CountingTransport, DeadLetter],
) -> None:
    """An event's entries (one per failed handler) are all found and deleted, even with other entries between
    them."""
    container, counting, dead_letter = billing
    put(container, "evt-1", PayloadType.EVENT, **{FailureHeader.HANDLER: "first"})
    put(container, "cmd-1")
    put(container, "evt-1", PayloadType.EVENT, **{FailureHeader.HANDLER: "second"})
    put(container, "cmd-2")
    assert [entry.handler for entry in dead_letter.get("evt-1")] == ["first", "second"]
    assert counting.read == 4
    assert dead_letter.delete("evt-1") == 2
    assert ids(dead_letter) == ["cmd-1", "cmd-2"]


def test_an_empty_or_missing_dead_letter_reads_nothing(
    billing: tuple[MessagingContainer, CountingTransport, DeadLetter],
) -> None:
    """An empty dead letter lists nothing and counts 0 without opening a receiver."""
    _, counting, dead_letter = billing
    assert (dead_letter.list(), dead_letter.count(), dead_letter.replay_all()) == ([], 0, 0)
    assert counting.read == 0


#: The transports whose broker puts a message back in place, so browsing can stop early (see BaseTransport.browse).
READ_AS_ASKED = {"rabbitmq", "embedded"}
#: Redis browses without taking anything: its entries stay in place, ready, while they are read.
LEFT_IN_PLACE = {"redis"}


def test_where_the_broker_allows_it_the_entries_not_asked_for_are_never_taken(
    transport_kind: str, billing: tuple[MessagingContainer, CountingTransport, DeadLetter]
) -> None:
    """While `get` holds the first of 20 entries, RabbitMQ and the embedded transport still have the other 19
    ready (nothing more was taken), Redis all 20 (it takes none); memory, which puts back at the tail, took all 20
    to keep the order."""
    container, counting, dead_letter = billing
    for number in range(1, 21):
        put(container, f"cmd-{number}")
    assert [entry.message_id for entry in dead_letter.get("cmd-1")] == ["cmd-1"]
    expected = 19 if transport_kind in READ_AS_ASKED else 20 if transport_kind in LEFT_IN_PLACE else 0
    assert counting.ready_at_first == expected
    assert ids(dead_letter) == [f"cmd-{n}" for n in range(1, 21)]


def test_replay_ends_at_an_entry_it_replayed_that_failed_again(
    billing: tuple[MessagingContainer, CountingTransport, DeadLetter],
) -> None:
    """`replay_all` replays each entry once and ends, although every message it replays fails again at once and
    comes back to the dead letter (as with a consumer running a still broken handler)."""
    container, counting, dead_letter = billing
    for number in range(1, 4):
        put(container, f"cmd-{number}", **{FailureHeader.HANDLER: "billing.Broken.handle"})
    sent: list[str] = []
    real_send = counting.inner.send_to_queue

    def send_and_fail_again(queue: str, message: OutboundMessage) -> None:
        real_send(queue, message)
        sent.append(message.message_id)
        put(container, message.message_id, **{FailureHeader.HANDLER: "billing.Broken.handle"})

    counting.send_to_queue = send_and_fail_again  # type: ignore[method-assign]
    assert dead_letter.replay_all() == 3
    assert sent == ["cmd-1", "cmd-2", "cmd-3"]
    assert ids(dead_letter) == ["cmd-1", "cmd-2", "cmd-3"]
