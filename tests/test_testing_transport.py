"""The in-process transport (container_messaging.transports.inprocess) beyond the port's contract (which
tests/test_testing_contract.py runs on it): as the test system uses it (synchronous, on a test clock) and as threads
may (waiting for messages in real time)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from container_messaging import DistributedBus, MessagingContainer, TransportError, UnroutableMessageError
from container_messaging.testing import TestClock
from container_messaging.transports import EndpointTopology, OutboundMessage
from container_messaging.transports.inprocess import InProcessBroker, InProcessTransport

TOPOLOGY = EndpointTopology("exchange", "queue", ("billing.#",))


def message(routing_key: str = "billing.changed", body: bytes = b'{"n": 1}', **headers: Any) -> OutboundMessage:
    message_id = str(uuid.uuid4())
    return OutboundMessage(routing_key, body, {"id": message_id, **headers}, "application/json", message_id)


def transport(clock: TestClock | None = None, *, synchronous: bool = True) -> InProcessTransport:
    broker = InProcessBroker(clock or TestClock(), synchronous=synchronous)
    built = InProcessTransport(broker, "test")
    built.setup_endpoint(TOPOLOGY)
    return built


def test_publishing_to_an_exchange_never_declared_fails_as_on_rabbitmq() -> None:
    """Publishing to an exchange never declared is a TransportError naming it (RabbitMQ's NOT_FOUND), mandatory or
    not."""
    t = transport()
    for mandatory in (True, False):
        with pytest.raises(TransportError, match="no exchange 'missing': declare it first"):
            t.publish("missing", message(), mandatory=mandatory)


def test_send_to_queue_refuses_a_missing_queue() -> None:
    """send_to_queue to a queue that does not exist is an UnroutableMessageError naming it (RabbitMQ would drop the
    message; in memory nothing may vanish)."""
    with pytest.raises(UnroutableMessageError, match="no queue 'nowhere'"):
        transport().send_to_queue("nowhere", message())


def test_requeued_and_unsettled_messages_go_back_to_the_head_of_their_queue() -> None:
    """A requeued delivery, and every delivery a closing receiver still held, is received again first, marked
    redelivered; settling one after its receiver closed is a TransportError."""
    t = transport()
    sent = [message(n=n) for n in range(3)]
    for each in sent:
        t.publish("exchange", each, mandatory=True)
    receiver = t.open_receiver("queue", prefetch_count=10)
    first, second = receiver.receive(0), receiver.receive(0)
    assert first is not None and second is not None
    first.requeue()
    receiver.close()
    again = t.open_receiver("queue", prefetch_count=10)
    redelivered = [again.receive(0) for _ in sent]
    assert [d.headers["n"] for d in redelivered if d is not None] == [1, 0, 2]
    assert [getattr(d, "redelivered", None) for d in redelivered] == [True, True, False]
    with pytest.raises(TransportError, match="went back to its queue when its receiver closed"):
        second.ack()
    with pytest.raises(TransportError, match="already settled"):
        first.ack()


def test_a_delayed_copy_is_due_when_the_clock_reaches_its_time() -> None:
    """A delayed copy waits, counted as waiting, until the broker's clock passes its delay; then it is received with
    the extra headers."""
    clock = TestClock()
    t = transport(clock)
    t.publish("exchange", message(), mandatory=True)
    receiver = t.open_receiver("queue", prefetch_count=1)
    delivery = receiver.receive(0)
    assert delivery is not None
    delivery.delayed_copy(1500, {"ecotone_retry_number": 1})
    delivery.ack()
    assert (receiver.receive(0), t.waiting_for_delay("queue")) == (None, 1)
    clock.advance(1.499)
    assert receiver.receive(0) is None
    clock.advance(0.001)
    copy = receiver.receive(0)
    assert copy is not None and copy.headers["ecotone_retry_number"] == 1
    assert t.waiting_for_delay("queue") == 0


def test_a_synchronous_receiver_returns_at_once_when_nothing_is_ready() -> None:
    """On a synchronous broker, receive with a 30 s timeout on an empty queue returns None without waiting."""
    receiver = transport().open_receiver("queue", prefetch_count=1)
    started = time.monotonic()
    assert receiver.receive(30.0) is None
    assert time.monotonic() - started < 30.0


def test_a_waiting_receiver_gets_a_message_published_by_another_thread() -> None:
    """On a broker that is not synchronous, receive waits until another thread publishes (within its timeout)."""
    t = transport(synchronous=False)
    receiver = t.open_receiver("queue", prefetch_count=1)
    started = threading.Event()

    def publish() -> None:
        started.wait(5)
        t.publish("exchange", message(n=7), mandatory=True)

    publisher = threading.Thread(target=publish)
    publisher.start()
    started.set()
    delivery = receiver.receive(30.0)
    publisher.join(5)
    assert delivery is not None and delivery.headers["n"] == 7


def test_a_container_with_an_in_process_transport_talks_to_another(make_module: Any) -> None:
    """Two containers given transports of one broker exchange a command, consumed by a consumer in another thread."""
    module = make_module(
        f"inprocess_{uuid.uuid4().hex[:8]}",
        """
        from container_messaging import command_handler, distributed
        HANDLED = []
        class Billing:
            @distributed
            @command_handler("billing.change")
            def change(self, command: dict) -> None:
                HANDLED.append(command)
        """,
    )
    broker = InProcessBroker()
    billing = MessagingContainer.from_dict(
        {"service_name": "billing", "scan": [module]}, transport=InProcessTransport(broker, "billing")
    )
    user = MessagingContainer.from_dict({"service_name": "user"}, transport=InProcessTransport(broker, "user"))
    billing.setup()
    consumer = threading.Thread(target=billing.run, args=("billing",), kwargs={"handled_message_limit": 1})
    consumer.start()
    user.get(DistributedBus).send_command("billing", "billing.change", '{"n": 1}', "application/json")
    consumer.join(30)
    assert not consumer.is_alive()
    assert __import__(module).HANDLED == [{"n": 1}]
    assert repr(broker) == "<InProcessBroker exchanges=1 queues=2 ready=0 delayed=0>"


def test_remove_endpoint_deletes_its_queues_and_exchange() -> None:
    """remove_endpoint deletes the queue, its dead letter queue and the exchange: publishing there fails again."""
    t = transport()
    t.publish("exchange", message(), mandatory=True)
    t.remove_endpoint(TOPOLOGY)
    assert t.queue_size("queue") == 0
    with pytest.raises(TransportError, match="no exchange 'exchange'"):
        t.publish("exchange", message(), mandatory=False)
