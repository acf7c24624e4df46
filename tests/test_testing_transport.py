"""The in-process transport (container_messaging.transports.inprocess): the port's behaviour on an InProcessBroker, as
the test system uses it (synchronous, on a test clock) and as threads may (waiting for messages in real time)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from container_messaging import DistributedBus, MessagingContainer, TransportError, UnroutableMessageError
from container_messaging.testing import TestClock
from container_messaging.transports import EndpointTopology, OutboundMessage, dead_letter_queue
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


def test_a_published_message_arrives_as_sent_with_headers_of_its_own() -> None:
    """A published message arrives with its body, content type and headers; changing the delivery's headers changes
    neither the sent message's nor a copy made afterwards."""
    t = transport()
    sent = message(nested={"a": [1, 2]})
    t.publish("exchange", sent, mandatory=True)
    delivery = t.open_receiver("queue", prefetch_count=1).receive(0)
    assert delivery is not None
    assert (delivery.body, delivery.content_type, delivery.headers, delivery.queue) == (
        sent.body,
        "application/json",
        dict(sent.headers),
        "queue",
    )
    delivery.headers["nested"]["a"].append(3)
    assert sent.headers["nested"] == {"a": [1, 2]}
    delivery.dead_letter_copy({"failure.reason": "poison message"})
    delivery.ack()
    with t.browse(dead_letter_queue("queue")) as entries:
        assert [entry.headers for entry in entries] == [{**sent.headers, "failure.reason": "poison message"}]


def test_routing_follows_amqp_topic_rules_one_copy_per_queue() -> None:
    """``billing.#`` takes ``billing`` and ``billing.a.b`` but not ``billingx.a``; ``billing.*`` and ``*.one`` take
    one word; a queue with two matching bindings gets one copy."""
    t = transport()
    t.setup_endpoint(EndpointTopology("exchange", "other", ("billing.*", "*.one")))
    for key in ("billing", "billing.a.b", "billing.one"):
        t.publish("exchange", message(key), mandatory=True)
    t.publish("exchange", message("billingx.a"), mandatory=False)
    assert (t.queue_size("queue"), t.queue_size("other")) == (3, 1)


def test_what_no_queue_takes_is_refused_or_dropped_as_on_rabbitmq() -> None:
    """A mandatory message no queue is bound for is an UnroutableMessageError naming its key (without mandatory it is
    dropped); publishing to an exchange never declared is a TransportError naming it."""
    t = transport()
    with pytest.raises(UnroutableMessageError, match=r"routing key 'nobody\.listens' on exchange 'exchange'"):
        t.publish("exchange", message("nobody.listens"), mandatory=True)
    t.publish("exchange", message("nobody.listens"), mandatory=False)
    assert t.queue_size("queue") == 0
    with pytest.raises(TransportError, match="no exchange 'missing': declare it first"):
        t.publish("missing", message(), mandatory=False)


def test_send_to_queue_bypasses_routing_and_refuses_a_missing_queue() -> None:
    """send_to_queue puts a message on the named queue whatever its key; a queue that does not exist is an
    UnroutableMessageError (in memory nothing may vanish)."""
    t = transport()
    t.send_to_queue("queue", message("no.binding.matches"))
    assert t.queue_size("queue") == 1
    with pytest.raises(UnroutableMessageError, match="no queue 'nowhere'"):
        t.send_to_queue("nowhere", message())


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


def test_browse_gives_back_what_it_did_not_settle_in_order() -> None:
    """browse lists the ready messages in order; those acknowledged inside are gone, the others are back in order."""
    t = transport()
    for n in range(3):
        t.publish("exchange", message(n=n), mandatory=True)
    with t.browse("queue") as deliveries:
        assert [d.headers["n"] for d in deliveries] == [0, 1, 2]
        deliveries[1].ack()
    with t.browse("queue") as deliveries:
        assert [d.headers["n"] for d in deliveries] == [0, 2]
    with t.browse("never_declared") as deliveries:
        assert deliveries == []


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
