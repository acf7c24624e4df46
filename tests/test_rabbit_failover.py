"""The RabbitMQ adapter's failover list and refused publishes, against the broker on 127.0.0.1:5672 and ports nobody
listens on: a connection tries every URL of the list once, an error names each URL, a nacked publish (here: to a
queue that is full and has ``x-overflow: reject-publish``) is retried on a new connection, and reported as refused
when it stays so.

The same behaviours on a real three-node cluster, with nodes killed: tests/test_rabbit_cluster.py (``-m cluster``)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kombu
import pytest

from container_messaging.errors import BrokerRefusedError, TransportError
from container_messaging.redaction import mask_url
from container_messaging.transports import OutboundMessage, TransportOptions, create_transport

from support.rabbit_cluster import free_ports

LOGGER = "container_messaging.transport"


def _message() -> OutboundMessage:
    message_id = str(uuid.uuid4())
    return OutboundMessage("billing.changed", b"{}", {"id": message_id}, "application/json", message_id)


def _to(queue: str, message: OutboundMessage) -> OutboundMessage:
    """``message`` addressed to ``queue`` through the default exchange."""
    return OutboundMessage(queue, message.body, message.headers, message.content_type, message.message_id)


def _dead_urls(count: int, password: str = "guest") -> list[str]:
    """URLs of loopback ports nothing listens on: a connection to them is refused at once."""
    return [f"pyamqp://guest:{password}@127.0.0.1:{port}//" for port in free_ports(count)]


def _failover_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().split(": ", 1)[1] for r in caplog.records if "failed, trying" in r.getMessage()]


@pytest.fixture
def queue(amqp_url: str, unique: str) -> Iterator[str]:
    """A durable classic queue on the broker, deleted after the test."""
    name = f"test_failover_{unique}"
    with kombu.Connection(amqp_url) as connection:
        connection.default_channel.queue_declare(name, durable=True, auto_delete=False)
    yield name
    with kombu.Connection(amqp_url) as connection:
        connection.default_channel.queue_delete(name)


# -- failover lists ---------------------------------------------------------------------------------------------------


def test_one_connection_tries_every_url_in_turn_and_then_prefers_the_one_that_answered(
    amqp_url: str, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With two dead URLs before the broker's and no publish retry, one connection tries the three in order and the
    message is confirmed; the next connection goes straight to the URL that answered."""
    dead = _dead_urls(2)
    transport: Any = create_transport(TransportOptions(url=";".join([*dead, amqp_url]), publish_retries=0))
    caplog.set_level(logging.INFO, logger=LOGGER)
    try:
        transport.send_to_queue(queue, _message())
        assert _failover_lines(caplog) == [
            f"{mask_url(dead[0])} failed, trying {mask_url(dead[1])}",
            f"{mask_url(dead[1])} failed, trying {mask_url(amqp_url)}",
        ]
        assert transport.preferred_url == mask_url(amqp_url)

        caplog.clear()
        assert transport.queue_size(queue) == 1
        assert _failover_lines(caplog) == []
    finally:
        transport.close()


def test_when_no_url_answers_one_error_names_each_url_without_its_password() -> None:
    """A failover list of dead URLs is one TransportError naming every URL (password masked) and its failure."""
    dead = _dead_urls(3, password="S3cret-pw")
    transport = create_transport(TransportOptions(url=";".join(dead), publish_retries=0))
    with pytest.raises(TransportError) as caught:
        transport.queue_size("some_queue")
    text = str(caught.value)
    assert type(caught.value) is TransportError
    assert "failed on each of the 3 URLs of the failover list" in text
    assert all(f"{mask_url(url)}: OperationalError: [Errno 111] Connection refused" in text for url in dead), text
    assert "S3cret-pw" not in text


def test_a_node_of_the_list_that_refuses_the_credentials_makes_a_broker_refused_error(amqp_url: str) -> None:
    """A dead URL and the broker with a wrong password: a BrokerRefusedError (never retried) naming both URLs, the
    broker's with ACCESS_REFUSED."""
    wrong = amqp_url.replace("guest:guest@", "guest:Wr0ng-pw@")
    dead = _dead_urls(1)
    transport = create_transport(TransportOptions(url=f"{dead[0]};{wrong}"))
    with pytest.raises(BrokerRefusedError) as caught:
        transport.queue_size("some_queue")
    text = str(caught.value)
    assert f"{mask_url(dead[0])}: OperationalError: [Errno 111] Connection refused" in text
    assert f"{mask_url(wrong)}: " in text
    assert "ACCESS_REFUSED" in text
    assert "Wr0ng-pw" not in text


# -- refused publishes (basic.nack) -----------------------------------------------------------------------------------


@pytest.fixture
def full_queue(amqp_url: str, unique: str) -> Iterator[str]:
    """A queue holding its one allowed message, with ``x-overflow: reject-publish``: RabbitMQ nacks every publish to
    it until it is emptied."""
    name = f"test_full_{unique}"
    with kombu.Connection(amqp_url, transport_options={"confirm_publish": True}) as connection:
        channel = connection.default_channel
        channel.queue_declare(
            name, durable=True, auto_delete=False, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
        )
        kombu.Producer(channel).publish(b"first", routing_key=name)
    yield name
    with kombu.Connection(amqp_url) as connection:
        connection.default_channel.queue_delete(name)


class _OnRetry(logging.Handler):
    """Runs ``action`` when the adapter logs that an attempt failed and it reconnects (in the publishing thread,
    before the back-off), and keeps the lines it saw."""

    def __init__(self, action: Callable[[], None]) -> None:
        super().__init__(logging.INFO)
        self.action = action
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "reconnecting" in record.getMessage():
            self.lines.append(record.getMessage())
            self.action()


@pytest.fixture
def on_retry() -> Iterator[Callable[[Callable[[], None]], _OnRetry]]:
    logger = logging.getLogger(LOGGER)
    handlers: list[_OnRetry] = []
    level = logger.level

    def install(action: Callable[[], None]) -> _OnRetry:
        handler = _OnRetry(action)
        handlers.append(handler)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        return handler

    yield install
    for handler in handlers:
        logger.removeHandler(handler)
    logger.setLevel(level)


def _purge(amqp_url: str, queue: str) -> Callable[[], None]:
    def purge() -> None:
        with kombu.Connection(amqp_url) as connection:
            connection.default_channel.queue_purge(queue)

    return purge


def test_a_nacked_publish_is_retried_and_confirmed_once_the_broker_takes_it(
    amqp_url: str, full_queue: str, on_retry: Callable[[Callable[[], None]], _OnRetry]
) -> None:
    """A publish the broker nacks is a TransportError saying so (not py-amqp's MessageNacked), retried on a new
    connection after a back-off; once the queue has room the retry is confirmed and the message is on the queue."""
    transport = create_transport(TransportOptions(url=amqp_url, publish_retries=2))
    retries = on_retry(_purge(amqp_url, full_queue))
    sent = _message()
    try:
        transport.send_to_queue(full_queue, sent)
        assert len(retries.lines) == 1
        assert "attempt 1 of 3" in retries.lines[0]
        assert "the broker refused the message (basic.nack)" in retries.lines[0]
        with transport.browse(full_queue) as deliveries:
            assert [delivery.headers["id"] for delivery in deliveries] == [sent.message_id]
    finally:
        transport.close()


def test_a_publish_nacked_on_every_attempt_is_an_error_saying_the_broker_refused_it(
    amqp_url: str, full_queue: str
) -> None:
    """When the broker nacks every attempt, the TransportError names the message and says the broker refused it."""
    transport = create_transport(TransportOptions(url=amqp_url, publish_retries=1))
    sent = _message()
    try:
        with pytest.raises(TransportError) as caught:
            transport.send_to_queue(full_queue, sent)
        assert type(caught.value) is TransportError
        assert sent.message_id in str(caught.value)
        assert "after 2 attempt(s)" in str(caught.value)
        assert "the broker refused the message (basic.nack)" in str(caught.value)
        assert transport.queue_size(full_queue) == 1
    finally:
        transport.close()


def test_nacked_messages_of_a_batch_are_published_again_until_confirmed(
    amqp_url: str, full_queue: str, on_retry: Callable[[Callable[[], None]], _OnRetry]
) -> None:
    """In a confirmed batch to a full queue, the nacked messages (and only they) are published again after each
    retry's back-off, until every message was confirmed once; each retry says which messages were refused."""
    transport = create_transport(TransportOptions(url=amqp_url, publish_retries=5))
    taken: list[str] = []

    def take_and_purge() -> None:  # the queue keeps one message: keep it, make room for the next
        with kombu.Connection(amqp_url) as connection:
            while (message := connection.default_channel.basic_get(full_queue, no_ack=True)) is not None:
                headers = message.properties.get("application_headers") or {}
                taken.append(headers.get("id") or bytes(message.body).decode())

    retries = on_retry(take_and_purge)
    batch = [_message() for _ in range(3)]
    try:
        transport.publish_many("", [(_to(full_queue, m), True) for m in batch])
        take_and_purge()
        assert taken == ["first", *(m.message_id for m in batch)]
        assert len(retries.lines) == 3
        assert all("(basic.nack)" in line for line in retries.lines)
    finally:
        transport.close()


def test_a_batch_still_nacked_after_the_retries_names_the_refused_and_the_confirmed(
    amqp_url: str, full_queue: str
) -> None:
    """When nacks outlast the retries, the batch's TransportError lists the confirmed messages apart from those the
    broker refused."""
    transport = create_transport(TransportOptions(url=amqp_url, publish_retries=1))
    batch = [_message() for _ in range(2)]
    try:
        with pytest.raises(TransportError) as caught:
            transport.publish_many("", [(_to(full_queue, m), True) for m in batch])
        text = str(caught.value)
        assert "confirmed []" in text
        assert f"refused by the broker (nack) {[m.message_id for m in batch]}" in text
    finally:
        transport.close()
