"""The transport port's contract (BaseTransport, Receiver, Delivery): the same tests on every adapter (memory,
embedded, RabbitMQ, Redis), each given by the ``endpoint`` fixture; no test looks at which broker it runs on."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from container_messaging.errors import TransportError, UnroutableMessageError
from container_messaging.transports import (
    Delivery,
    EndpointTopology,
    OutboundMessage,
    Receiver,
    TransportOptions,
    create_transport,
    dead_letter_queue,
)

from conftest import transport_section

WAIT = 10.0  # seconds a test waits for a message that must arrive
DELAY_MS = 300
LONG_DELAY_MS = 60_000  # never due during a test


@attrs.define
class Endpoint:
    """A transport under test with one endpoint (queue bound to ``billing.#`` on a private exchange)."""

    transport: Any
    topology: EndpointTopology
    receivers: list[Receiver] = attrs.Factory(list)

    @property
    def queue(self) -> str:
        return self.topology.queue

    def message(
        self, routing_key: str = "billing.changed", body: bytes = b'{"n": 1}', **headers: Any
    ) -> OutboundMessage:
        message_id = str(uuid.uuid4())
        return OutboundMessage(routing_key, body, {"id": message_id, **headers}, "application/json", message_id)

    def publish(self, message: OutboundMessage, *, mandatory: bool = True) -> OutboundMessage:
        self.transport.publish(self.topology.exchange, message, mandatory=mandatory)
        return message

    def open(self, queue: str | None = None, prefetch_count: int = 10) -> Receiver:
        receiver = self.transport.open_receiver(queue or self.queue, prefetch_count=prefetch_count)
        self.receivers.append(receiver)
        return receiver

    def receive(self, receiver: Receiver, within: float = WAIT) -> Delivery:
        delivery = receiver.receive(within)
        assert delivery is not None, f"nothing arrived on {self.queue!r} within {within} s"
        return delivery

    def wait_until(self, condition: Any, what: str, within: float = WAIT) -> None:
        deadline = time.monotonic() + within
        while not condition():
            assert time.monotonic() < deadline, f"{what}: not within {within} s"
            time.sleep(0.02)


@pytest.fixture
def endpoint(transport_kind: str, tmp_path: Path, unique: str) -> Iterator[Endpoint]:
    options = TransportOptions(**transport_section(transport_kind, tmp_path))
    transport = create_transport(options)
    topology = EndpointTopology(f"test.contract.{unique}", f"test_contract_{unique}", ("billing.#",))
    transport.setup_endpoint(topology)
    built = Endpoint(transport, topology)
    yield built
    for receiver in built.receivers:
        receiver.close()
    transport.remove_endpoint(topology, [DELAY_MS, LONG_DELAY_MS])
    transport.remove_endpoint(EndpointTopology(topology.exchange, topology.queue + "_other", ()), ())
    transport.close()


def test_a_published_message_is_received_with_its_body_headers_and_content_type(endpoint: Endpoint):
    """A message published to the exchange with a bound routing key arrives on the queue as it was sent."""
    sent = endpoint.publish(endpoint.message(body=b'{"personId": "7"}', custom="value", nested={"a": [1, 2]}))
    delivery = endpoint.receive(endpoint.open())
    assert (delivery.body, delivery.content_type, delivery.queue) == (sent.body, "application/json", endpoint.queue)
    assert delivery.headers == dict(sent.headers)
    delivery.ack()


def test_a_deliverys_headers_are_its_own_copy(endpoint: Endpoint):
    """Changing a delivery's headers changes neither the sent message's headers nor a copy it sends afterwards."""
    sent = endpoint.publish(endpoint.message(custom="value"))
    sent_headers = dict(sent.headers)
    receiver = endpoint.open()
    delivery = endpoint.receive(receiver)
    assert delivery.headers is not sent.headers
    delivery.headers["custom"] = "changed by a layer above"
    assert dict(sent.headers) == sent_headers
    delivery.dead_letter_copy({"x-extra": "1"})
    assert "x-extra" not in delivery.headers  # the copy's headers are a new dict
    delivery.ack()


def test_a_mandatory_message_no_queue_receives_is_unroutable(endpoint: Endpoint):
    """Publishing a mandatory message whose routing key no queue is bound to raises UnroutableMessageError naming
    the routing key; without mandatory it is dropped without an error."""
    with pytest.raises(UnroutableMessageError, match=r"'nobody\.listens'"):
        endpoint.publish(endpoint.message("nobody.listens"))
    endpoint.publish(endpoint.message("nobody.listens"), mandatory=False)
    assert endpoint.transport.queue_size(endpoint.queue) == 0


def test_routing_follows_amqp_topic_rules(endpoint: Endpoint):
    """A binding ``billing.#`` takes ``billing`` and ``billing.a.b`` but not ``billingx.a``; ``billing.*`` and
    ``*.one`` take one word only, and a queue gets one copy even when several of its bindings match."""
    other = EndpointTopology(endpoint.topology.exchange, endpoint.queue + "_other", ("billing.*", "*.one"))
    endpoint.transport.setup_endpoint(other)
    endpoint.publish(endpoint.message("billing"))
    endpoint.publish(endpoint.message("billing.a.b"))
    endpoint.publish(endpoint.message("billingx.a"), mandatory=False)
    endpoint.publish(endpoint.message("billing.one"))
    endpoint.wait_until(lambda: endpoint.transport.queue_size(endpoint.queue) == 3, "3 messages on the queue")
    endpoint.wait_until(lambda: endpoint.transport.queue_size(other.queue) == 1, "1 message on the other queue")


def test_an_acknowledged_message_is_gone(endpoint: Endpoint):
    """After ack, the message is no longer on the queue, not even for a new receiver."""
    endpoint.publish(endpoint.message())
    receiver = endpoint.open()
    endpoint.receive(receiver).ack()
    receiver.close()
    assert endpoint.open().receive(0.5) is None
    assert endpoint.transport.queue_size(endpoint.queue) == 0


def test_a_delivery_is_settled_once(endpoint: Endpoint):
    """Acknowledging or requeueing a delivery a second time is a TransportError naming the message."""
    sent = endpoint.publish(endpoint.message())
    delivery = endpoint.receive(endpoint.open())
    delivery.ack()
    assert delivery.settled
    with pytest.raises(TransportError, match=f"{sent.message_id}.*already settled"):
        delivery.requeue()


def test_a_requeued_message_returns_to_its_own_queue_only(endpoint: Endpoint):
    """A requeued message is received again, unchanged, and no other queue bound to its key gets another copy."""
    other = EndpointTopology(endpoint.topology.exchange, endpoint.queue + "_other", ("billing.#",))
    endpoint.transport.setup_endpoint(other)
    sent = endpoint.publish(endpoint.message(custom="value"))
    receiver = endpoint.open()
    endpoint.receive(receiver).requeue()
    again = endpoint.receive(receiver)
    assert (again.body, again.headers) == (sent.body, dict(sent.headers))
    again.ack()
    assert endpoint.transport.queue_size(other.queue) == 1


def test_a_delayed_copy_arrives_after_its_delay_and_waits_meanwhile(endpoint: Endpoint):
    """Delayed copies (original acknowledged) wait for their delay: the short one arrives on the same queue no
    earlier than its delay, with the original and the extra headers (a broker may add its own, as RabbitMQ's
    x-death), while the long one is still counted as waiting."""
    sent = endpoint.publish(endpoint.message(custom="value"))
    receiver = endpoint.open()
    delivery = endpoint.receive(receiver)
    started = time.monotonic()
    delivery.delayed_copy(LONG_DELAY_MS, {"ecotone_retry_number": 2})
    delivery.delayed_copy(DELAY_MS, {"ecotone_retry_number": 1})
    delivery.ack()
    assert endpoint.transport.waiting_for_delay(endpoint.queue) >= 1
    copy = endpoint.receive(receiver)
    assert time.monotonic() - started >= DELAY_MS / 1000 - 0.01
    assert copy.body == sent.body
    assert copy.headers.items() >= {**sent.headers, "ecotone_retry_number": 1}.items()
    copy.ack()
    assert endpoint.transport.waiting_for_delay(endpoint.queue) == 1
    assert receiver.receive(0.3) is None


def test_a_dead_letter_copy_keeps_the_message_with_the_extra_headers(endpoint: Endpoint):
    """A dead letter copy (original acknowledged) is on the dead letter queue with the original body and headers
    plus the extra ones, and the queue is empty."""
    sent = endpoint.publish(endpoint.message(custom="value"))
    delivery = endpoint.receive(endpoint.open())
    delivery.dead_letter_copy({"failure.reason": "poison message"})
    delivery.ack()
    dead_letters = dead_letter_queue(endpoint.queue)
    endpoint.wait_until(lambda: endpoint.transport.queue_size(dead_letters) == 1, "one dead letter")
    with endpoint.transport.browse(dead_letters) as entries:
        assert [(e.body, e.headers) for e in entries] == [
            (sent.body, {**sent.headers, "failure.reason": "poison message"})
        ]
    assert endpoint.transport.queue_size(endpoint.queue) == 0


def test_browse_takes_every_message_and_puts_back_the_unsettled_ones(endpoint: Endpoint):
    """browse yields the ready messages in order; the ones acknowledged inside are gone, the others are back."""
    sent = [endpoint.publish(endpoint.message(n=n)) for n in range(3)]
    endpoint.wait_until(lambda: endpoint.transport.queue_size(endpoint.queue) == 3, "3 messages")
    with endpoint.transport.browse(endpoint.queue) as deliveries:
        taken = list(deliveries)
        assert [d.headers["n"] for d in taken] == [0, 1, 2]
        taken[1].ack()
    with endpoint.transport.browse(endpoint.queue) as deliveries:
        assert [d.headers["id"] for d in deliveries] == [sent[0].message_id, sent[2].message_id]


def test_browsing_or_sizing_a_missing_queue_finds_nothing(endpoint: Endpoint):
    """A queue that was never declared has size 0 and browses as nothing."""
    missing = endpoint.queue + "_never_declared"
    assert endpoint.transport.queue_size(missing) == 0
    with endpoint.transport.browse(missing) as deliveries:
        assert list(deliveries) == []


def test_messages_of_a_receiver_closed_without_settling_are_delivered_again(endpoint: Endpoint):
    """A receiver closed (as by a crash) while holding an unsettled delivery and prefetched ones gives every one of
    them back: the next receiver gets all of them."""
    sent = [endpoint.publish(endpoint.message(n=n)) for n in range(3)]
    first = endpoint.open()
    held = endpoint.receive(first)
    assert held.headers["id"] in {m.message_id for m in sent}
    first.close()
    second = endpoint.open()
    again = [endpoint.receive(second) for _ in sent]
    assert sorted(d.headers["id"] for d in again) == sorted(m.message_id for m in sent)
    for delivery in again:
        delivery.ack()
    assert second.receive(0.3) is None


def test_send_to_queue_bypasses_routing(endpoint: Endpoint):
    """send_to_queue puts a message on the named queue whatever its routing key (as a replay does)."""
    endpoint.transport.send_to_queue(endpoint.queue, endpoint.message("no.binding.matches"))
    assert endpoint.receive(endpoint.open()).body == b'{"n": 1}'


def test_publish_many_publishes_every_message(endpoint: Endpoint):
    """publish_many delivers every message of the batch, in order."""
    messages = [(endpoint.message(n=n), True) for n in range(5)]
    endpoint.transport.publish_many(endpoint.topology.exchange, messages)
    receiver = endpoint.open()
    assert [endpoint.receive(receiver).headers["n"] for _ in messages] == [0, 1, 2, 3, 4]


def test_a_closed_transport_connects_again_on_use(endpoint: Endpoint):
    """After close(), the transport publishes again (connections open on first use)."""
    endpoint.publish(endpoint.message(n=1))
    endpoint.transport.close()
    endpoint.transport.close()  # closing twice is harmless
    endpoint.publish(endpoint.message(n=2))
    receiver = endpoint.open()
    assert [endpoint.receive(receiver).headers["n"] for _ in range(2)] == [1, 2]
