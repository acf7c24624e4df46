"""Quorum queues (``transport.queue_type: quorum``) through the RabbitMQ adapter, on the broker on 127.0.0.1:5672 (a
quorum queue works on one node; its replication and failover are tested on a three-node cluster in
tests/test_rabbit_cluster.py): which queues become quorum queues, the delivery limit handing a message to the dead
letter queue instead of dropping it, delayed retries, and the error when a queue exists as the other type."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import kombu
import pytest
from amqp.exceptions import PreconditionFailed

from container_messaging.deadletter import DeadLetter
from container_messaging.errors import BrokerRefusedError
from container_messaging.transports import (
    EndpointTopology,
    OutboundMessage,
    TransportOptions,
    create_transport,
    dead_letter_queue,
)
from container_messaging.transports.rabbitmq import delay_queue, queue_arguments


def declared_type(url: str, queue: str, arguments: dict[str, Any] | None = None) -> str:
    """The ``x-queue-type`` ``queue`` was declared with (``none``: not given, a classic queue), read from RabbitMQ's
    refusal to declare it again as a stream queue with its other ``arguments`` (AMQP has no other way to ask)."""
    with kombu.Connection(url) as connection:
        channel = connection.channel()
        with pytest.raises(PreconditionFailed) as refused:
            again = {**(arguments or {}), "x-queue-type": "stream"}
            channel.queue_declare(queue, durable=True, auto_delete=False, arguments=again)
    found = re.search(r"'x-queue-type'.*but current is (?:the value )?(?:'(\w+)'|(none))", str(refused.value))
    assert found is not None, str(refused.value)
    return found.group(1) or found.group(2)


@pytest.fixture
def topology(unique: str) -> EndpointTopology:
    return EndpointTopology(f"test.quorum.{unique}", f"test_quorum_{unique}", ("billing.#",))


@pytest.fixture
def quorum(amqp_url: str, topology: EndpointTopology) -> Iterator[Any]:
    """A RabbitMQ transport with quorum queues and a delivery limit of 2; the endpoint is removed after the test."""
    transport: Any = create_transport(TransportOptions(url=amqp_url, queue_type="quorum", delivery_limit=2))
    yield transport
    transport.remove_endpoint(topology)
    transport.close()


def _message() -> OutboundMessage:
    message_id = str(uuid.uuid4())
    return OutboundMessage("billing.changed", b"{}", {"id": message_id}, "application/json", message_id)


def test_classic_stays_the_default_as_with_ecotone(amqp_url: str, topology: EndpointTopology) -> None:
    """By default the endpoint's queue and its dead letter queue are declared without a queue type: classic queues,
    as an Ecotone service declares them."""
    transport = create_transport(TransportOptions(url=amqp_url))
    try:
        transport.setup_endpoint(topology)
        assert declared_type(amqp_url, topology.queue) == "none"
        assert declared_type(amqp_url, dead_letter_queue(topology.queue)) == "none"
    finally:
        transport.remove_endpoint(topology)
        transport.close()


def test_the_queue_its_dead_letter_queue_and_its_delay_queues_are_quorum_queues(
    amqp_url: str, quorum: Any, topology: EndpointTopology
) -> None:
    """With queue_type quorum, the endpoint's queue, its dead letter queue and the delay queue a delayed retry
    declares are all quorum queues, and the delayed copy comes back to the queue when its time is up."""
    quorum.setup_endpoint(topology)
    quorum.publish(topology.exchange, _message(), mandatory=True)
    with quorum.open_receiver(topology.queue, prefetch_count=1) as receiver:
        delivery = receiver.receive(10)
        assert delivery is not None
        delivery.delayed_copy(300, {"ecotone_retry_number": 1})
        delivery.ack()
        again = receiver.receive(15)
        assert again is not None
        assert again.headers["id"] == delivery.headers["id"]
        assert again.headers["ecotone_retry_number"] == 1
        again.ack()
    options = quorum.options
    dead_letter = dead_letter_queue(topology.queue)
    assert declared_type(amqp_url, topology.queue, queue_arguments(options, topology.queue)) == "quorum"
    assert declared_type(amqp_url, dead_letter, queue_arguments(options, dead_letter, dead_letter=True)) == "quorum"
    delay = queue_arguments(options, topology.queue, delay_ms=300)
    assert declared_type(amqp_url, delay_queue(topology.queue, 300), delay) == "quorum"


def test_a_message_returned_more_often_than_the_delivery_limit_goes_to_the_dead_letter_queue(
    quorum: Any, topology: EndpointTopology
) -> None:
    """A message requeued more than delivery_limit (2) times is moved by RabbitMQ to the endpoint's dead letter
    queue, not dropped: the dead letter lists it, its x-death headers saying why."""
    quorum.setup_endpoint(topology)
    sent = _message()
    quorum.publish(topology.exchange, sent, mandatory=True)
    deliveries = 0
    with quorum.open_receiver(topology.queue, prefetch_count=1) as receiver:
        while (delivery := receiver.receive(2)) is not None:
            deliveries += 1
            delivery.requeue()
    assert deliveries == 3
    dead_letter = dead_letter_queue(topology.queue)
    deadline = time.monotonic() + 10
    while quorum.queue_size(dead_letter) == 0:
        assert time.monotonic() < deadline, "the message never reached the dead letter queue"
        time.sleep(0.05)
    [entry] = DeadLetter(quorum, topology.queue, "billing").list()
    assert entry.message_id == sent.message_id
    assert entry.headers["x-first-death-reason"] == "delivery_limit"
    assert entry.headers["x-first-death-queue"] == topology.queue
    assert entry.reason is None  # not a failure the framework saw: no failure.* headers


def test_listing_a_quorum_dead_letter_queue_many_times_keeps_its_entries(
    quorum: Any, topology: EndpointTopology
) -> None:
    """An entry of a quorum dead letter queue stays after being listed (and returned) 25 times, more than RabbitMQ
    4's default delivery limit of 20."""
    quorum.setup_endpoint(topology)
    dead_letter = dead_letter_queue(topology.queue)
    sent = _message()
    quorum.send_to_queue(dead_letter, sent)
    for _ in range(25):
        with quorum.browse(dead_letter) as entries:
            assert [entry.headers["id"] for entry in entries] == [sent.message_id]
    assert quorum.queue_size(dead_letter) == 1


def test_a_classic_queue_cannot_become_a_quorum_queue_and_the_error_says_what_to_do(
    amqp_url: str, quorum: Any, topology: EndpointTopology
) -> None:
    """Setting up quorum queues where the endpoint's classic queue exists (as after an Ecotone service or an earlier
    classic setup) is a BrokerRefusedError naming the queue, the argument, the setting and the way out."""
    classic = create_transport(TransportOptions(url=amqp_url))
    try:
        classic.setup_endpoint(topology)
    finally:
        classic.close()
    with pytest.raises(BrokerRefusedError) as caught:
        quorum.setup_endpoint(topology)
    text = str(caught.value)
    assert re.search(f"PRECONDITION_FAILED - inequivalent arg '[a-z-]+' for queue '{topology.queue}'", text), text
    assert "transport.queue_type 'quorum' and delivery_limit 2 ask for other arguments" in text
    assert "an Ecotone service declares classic queues" in text
    assert "drain and delete the queue, its dead letter queue and its delay queues" in text
