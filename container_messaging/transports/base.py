"""The transport port: what the framework needs of a broker, and nothing of kombu.

A transport declares topology, publishes :class:`OutboundMessage` s, and opens a :class:`Receiver` on a queue that
hands out :class:`Delivery` s one at a time. There is one adapter per broker in this package (``rabbitmq/``,
``redis/``, ``memory.py``, ``embedded/``); kombu, redis-py and socket exceptions are mapped to
:class:`~container_messaging.errors.TransportError` at this boundary (a refusal for good, such as bad credentials,
to :class:`~container_messaging.errors.BrokerRefusedError`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import attrs

__all__ = [
    "BaseTransport",
    "Delivery",
    "EndpointTopology",
    "OutboundMessage",
    "Receiver",
    "TransportDecorator",
    "dead_letter_queue",
]


def dead_letter_queue(queue: str) -> str:
    """The queue that keeps the messages of ``queue`` that failed."""
    return f"{queue}.dead_letter"


@attrs.frozen
class OutboundMessage:
    """One message to publish: body bytes, application headers and the AMQP routing key."""

    routing_key: str
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    headers: Mapping[str, Any]
    content_type: str
    message_id: str


@attrs.frozen
class EndpointTopology:
    """A consumer endpoint's queue and the routing keys it is bound to on the exchange."""

    exchange: str
    queue: str
    bindings: tuple[str, ...]


class Delivery(abc.ABC):
    """A message received from a queue; it must be settled exactly once (ack or requeue).

    ``headers`` is this delivery's own dict, copied once from what the broker client decoded: the transport never
    reads or changes it again after handing the delivery out, and copies (dead letter, delay, requeue) are built
    as new dicts.
    """

    body: bytes
    headers: dict[str, Any]
    content_type: str | None
    queue: str

    @abc.abstractmethod
    def ack(self) -> None:
        """Settles the message as handled."""

    @abc.abstractmethod
    def requeue(self) -> None:
        """Puts the message back on the same queue (never re-routed to other queues)."""

    @abc.abstractmethod
    def dead_letter_copy(self, extra_headers: Mapping[str, Any]) -> None:
        """Puts a copy (original body and headers, ``extra_headers`` added) on the queue's dead letter queue.
        Does not settle this delivery: acknowledge it afterwards."""

    @abc.abstractmethod
    def delayed_copy(self, delay_ms: int, extra_headers: Mapping[str, Any]) -> None:
        """Puts a copy back on the same queue, visible after ``delay_ms`` (without holding anything
        unacknowledged meanwhile). Does not settle this delivery: acknowledge it afterwards."""

    @property
    @abc.abstractmethod
    def settled(self) -> bool:
        """Whether ack or requeue already ran."""


class Receiver(abc.ABC):
    """An open consumer on one queue."""

    @abc.abstractmethod
    def receive(self, timeout: float) -> Delivery | None:
        """The next delivery, or None when none arrived within ``timeout`` seconds."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stops consuming; deliveries handed out but not settled go back to their queue."""

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BaseTransport(abc.ABC):
    """The port every transport implements. Nothing connects until a method needs the broker."""

    #: a short name for logs and errors; passwords are never part of it
    description: str

    @abc.abstractmethod
    def declare_exchange(self, exchange: str) -> None:
        """Declares the durable topic exchange (idempotent)."""

    @abc.abstractmethod
    def setup_endpoint(self, topology: EndpointTopology) -> None:
        """Declares the exchange, the durable queue and its bindings (idempotent)."""

    @abc.abstractmethod
    def publish(self, exchange: str, message: OutboundMessage, *, mandatory: bool) -> None:
        """Publishes a persistent message. With ``mandatory``, a message no queue receives raises
        :class:`~container_messaging.errors.UnroutableMessageError` (where the broker can tell)."""

    @abc.abstractmethod
    def open_receiver(self, queue: str, *, prefetch_count: int) -> Receiver:
        """Starts consuming ``queue``; messages are acknowledged only by the caller."""

    def publish_many(self, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> None:
        """Publishes several ``(message, mandatory)`` at once. Transports with publisher confirms wait for all
        confirmations together (one round trip for the batch, not one per message)."""
        for message, mandatory in messages:
            self.publish(exchange, message, mandatory=mandatory)

    @abc.abstractmethod
    def send_to_queue(self, queue: str, message: OutboundMessage) -> None:
        """Publishes a persistent message straight to ``queue`` (the default exchange), e.g. to replay it."""

    @abc.abstractmethod
    def browse(self, queue: str) -> AbstractContextManager[Iterable[Delivery]]:
        """The messages ready on ``queue``, oldest first, taken without acknowledging them. Settle the ones to
        change; on exit the others go back to ``queue``, in their order. Where the broker puts a message back in
        place, they are taken one at a time as the caller iterates: a caller that stops early leaves the rest
        unread."""

    @abc.abstractmethod
    def queue_size(self, queue: str) -> int:
        """How many ready messages ``queue`` holds (0 when it does not exist)."""

    def queue_exists(self, queue: str) -> bool | None:
        """Whether ``queue`` exists, for health checks; None where a queue is no broker object of its own (it comes
        into being with its first message): the default."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Closes every connection this transport opened."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


class TransportDecorator(BaseTransport):
    """A transport that wraps another (``inner``) and passes every call of the port on to it; a decorator overrides
    what it changes (the outbox, publishing; middleware, the publishing hooks)."""

    def __init__(self, inner: BaseTransport) -> None:
        self.inner = inner
        self.description = inner.description

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.inner!r}>"

    def declare_exchange(self, exchange: str) -> None:
        self.inner.declare_exchange(exchange)

    def setup_endpoint(self, topology: EndpointTopology) -> None:
        self.inner.setup_endpoint(topology)

    def publish(self, exchange: str, message: OutboundMessage, *, mandatory: bool) -> None:
        self.inner.publish(exchange, message, mandatory=mandatory)

    def publish_many(self, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> None:
        self.inner.publish_many(exchange, messages)

    def open_receiver(self, queue: str, *, prefetch_count: int) -> Receiver:
        return self.inner.open_receiver(queue, prefetch_count=prefetch_count)

    def send_to_queue(self, queue: str, message: OutboundMessage) -> None:
        self.inner.send_to_queue(queue, message)

    def browse(self, queue: str) -> AbstractContextManager[Iterable[Delivery]]:
        return self.inner.browse(queue)

    def queue_size(self, queue: str) -> int:
        return self.inner.queue_size(queue)

    def queue_exists(self, queue: str) -> bool | None:
        return self.inner.queue_exists(queue)

    def close(self) -> None:
        self.inner.close()
