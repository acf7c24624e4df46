"""The RabbitMQ consumer (``RabbitMqReceiver``): its frames, cut out of large reads, and its acknowledgements, sent
in groups (``DeferredAcks``): which ``basic.ack`` frames go out and when, and, on the broker on 127.0.0.1:5672 behind
a proxy a test can cut, that an idle receiver holds nothing handled unacknowledged and that a delivery in hand is
never acknowledged by another's ``multiple`` acknowledgement."""

from __future__ import annotations

import socket
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from amqp.transport import TCPTransport

from container_messaging.transports import EndpointTopology, OutboundMessage, TransportOptions, create_transport
from container_messaging.transports.rabbitmq import DeferredAcks, RabbitMqReceiver
from container_messaging.transports.rabbitmq.frames import FrameReader

from support.proxy import TcpProxy

WAIT = 10.0  # seconds the broker gets to notice a connection that was cut


def test_acknowledgements_wait_until_every_of_them_are_deferred():
    """``acknowledge`` says a flush is due at the ``every``-th deferred acknowledgement, not before; the flush sends
    them as one ``multiple`` acknowledgement when nothing below them is unsettled."""
    acks = DeferredAcks(3)
    for tag in range(1, 6):
        acks.received(tag)
    assert [acks.acknowledge(tag) for tag in (1, 2, 3)] == [False, False, True]
    assert acks.flush() == [(3, True)]
    assert acks.flush() == []


def test_a_multiple_acknowledgement_stops_below_the_lowest_delivery_in_hand():
    """Deliveries that finished out of order are acknowledged one by one above a delivery still in hand, and in one
    ``multiple`` acknowledgement below it; a requeued delivery no longer holds them back."""
    acks = DeferredAcks(10)
    for tag in range(1, 7):
        acks.received(tag)
    for tag in (1, 2, 4, 5):  # 3 and 6 in hand
        acks.acknowledge(tag)
    assert acks.flush() == [(2, True), (4, False), (5, False)]
    acks.acknowledge(6)  # 3 still in hand
    assert acks.flush() == [(6, False)]
    acks.settled(3)  # requeued
    acks.received(7)
    acks.acknowledge(7)
    assert acks.flush() == [(7, True)]


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def test_a_frame_that_stops_halfway_times_out_and_is_read_whole_once_the_rest_arrives():
    """Frames cut from one read come out whole; a frame whose rest does not come within the socket's receive
    timeout raises TimeoutError (no endless retry), and once the rest arrives it is read whole, then the next."""
    ours, broker_end = socket.socketpair()
    with ours, broker_end:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 50_000))  # py-amqp's read_timeout
        transport = TCPTransport("127.0.0.1:5672")
        transport.sock = ours
        transport._setup_transport()
        frames = FrameReader(transport)
        first, second, third = _frame(1, 1, b"method"), _frame(3, 1, b"x" * 1000), _frame(8, 0, b"")
        broker_end.sendall(first + second[:500])
        assert frames.read_frame() == (1, 1, b"method")
        with pytest.raises(TimeoutError):
            frames.read_frame()
        broker_end.sendall(second[500:] + third)
        assert frames.read_frame() == (3, 1, b"x" * 1000)
        assert frames.read_frame() == (8, 0, b"")
        assert not frames.holds()


@pytest.fixture
def broker(amqp_url: str, unique: str) -> Iterator[tuple[Any, EndpointTopology, TcpProxy]]:
    """A RabbitMQ transport with one endpoint, and a proxy to the broker whose connections a test can cut."""
    transport: Any = create_transport(TransportOptions(url=amqp_url))
    topology = EndpointTopology(f"test.acks.{unique}", f"test_acks_{unique}", ("billing.#",))
    transport.setup_endpoint(topology)
    parts = urlsplit(amqp_url)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5672))
    yield transport, topology, proxy
    proxy.close()
    transport.remove_endpoint(topology)
    transport.close()


def _publish(transport: Any, topology: EndpointTopology, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    for message_id in ids:
        message = OutboundMessage("billing.changed", b"{}", {"id": message_id}, "application/json", message_id)
        transport.publish(topology.exchange, message, mandatory=True)
    return ids


def _proxied_receiver(proxy: TcpProxy, amqp_url: str, queue: str) -> RabbitMqReceiver:
    """A receiver (prefetch 10: acknowledgements sent by 5) whose connection goes through ``proxy``."""
    transport: Any = create_transport(TransportOptions(url=proxy.url(amqp_url)))
    receiver = transport.open_receiver(queue, prefetch_count=10)
    assert isinstance(receiver, RabbitMqReceiver)
    return receiver


def _crash(receiver: RabbitMqReceiver, proxy: TcpProxy, transport: Any, queue: str) -> None:
    """Cuts the receiver's connection without a goodbye, as a killed process would, once the broker answered a
    request sent after everything before it on the channel; returns when the broker has let go of its consumer
    (what it held unacknowledged is back on the queue by then)."""
    receiver.exclusively("asking the broker", None, receiver.channel.basic_qos, 0, 10, False)
    proxy.cut()
    deadline = time.monotonic() + WAIT
    while _consumers(transport, queue):
        assert time.monotonic() < deadline, f"the broker still sees a consumer on {queue!r} after {WAIT} s"
        time.sleep(0.02)
    receiver.close()


def _consumers(transport: Any, queue: str) -> int:
    with transport.connection("counting consumers") as channel:
        return int(channel.queue_declare(queue, passive=True).consumer_count)


def _ids_on(transport: Any, queue: str) -> list[str]:
    with transport.browse(queue) as deliveries:
        return [delivery.headers["id"] for delivery in deliveries]


def test_an_idle_receiver_has_sent_every_acknowledgement(amqp_url: str, broker: tuple[Any, EndpointTopology, TcpProxy]):
    """Fewer acknowledgements than a group are sent before the receiver waits on an empty queue: after a crash
    none of the handled messages comes back."""
    transport, topology, proxy = broker
    _publish(transport, topology, 3)
    receiver = _proxied_receiver(proxy, amqp_url, topology.queue)
    for _ in range(3):
        delivery = receiver.receive(WAIT)
        assert delivery is not None
        delivery.ack()
    assert receiver.receive(0.2) is None
    _crash(receiver, proxy, transport, topology.queue)
    assert _ids_on(transport, topology.queue) == []


def test_out_of_order_acknowledgements_leave_the_delivery_in_hand_unacknowledged(
    amqp_url: str, broker: tuple[Any, EndpointTopology, TcpProxy]
):
    """The second and third deliveries acknowledged (and sent: the receiver waited) while the first is in hand:
    after a crash the first one alone is back on the queue."""
    transport, topology, proxy = broker
    ids = _publish(transport, topology, 3)
    receiver = _proxied_receiver(proxy, amqp_url, topology.queue)
    first, second, third = (receiver.receive(WAIT) for _ in range(3))
    assert first is not None and second is not None and third is not None
    assert [first.headers["id"], second.headers["id"], third.headers["id"]] == ids
    third.ack()
    second.ack()
    assert receiver.receive(0.2) is None
    _crash(receiver, proxy, transport, topology.queue)
    assert _ids_on(transport, topology.queue) == [ids[0]]


def test_messages_of_every_size_arrive_whole_and_in_order(
    amqp_url: str, broker: tuple[Any, EndpointTopology, TcpProxy]
):
    """Small messages many to a read, and bodies larger than a read and than a frame (split by the broker), mixed,
    arrive with their exact bodies and headers, in the order they were published."""
    transport, topology, proxy = broker
    sizes = [2, 70_000, *([10] * 50), 300_000, *([100] * 50), 131_072, 5]
    sent = []
    for n, size in enumerate(sizes):
        message_id = str(uuid.uuid4())
        body = bytes([n % 256]) * size
        sent.append((body, {"id": message_id, "n": n}))
        transport.publish(
            topology.exchange,
            OutboundMessage("billing.changed", body, {"id": message_id, "n": n}, "application/json", message_id),
            mandatory=True,
        )
    receiver = _proxied_receiver(proxy, amqp_url, topology.queue)
    received = []
    for _ in sizes:
        delivery = receiver.receive(WAIT)
        assert delivery is not None, f"{len(received)} of {len(sizes)} arrived"
        received.append((delivery.body, delivery.headers))
        delivery.ack()
    receiver.close()
    assert received == sent
