"""The kombu adapter: RabbitMQ (``pyamqp://``), Redis (``redis://``), ``memory://`` and the embedded transport.

RabbitMQ routes messages itself (topic exchange, mandatory flag, publisher confirms). kombu's *virtual*
transports (memory, Redis, embedded) route imperfectly for this bus: a requeued or restored message is routed again
through the exchange, so an event would be copied once more to every other subscribed service. For those, this
adapter routes itself: it reads the exchange's bindings, matches them with AMQP topic rules, and puts one copy on
each matching queue through the default exchange, so a requeue or a restore returns the message to its own queue.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import kombu
from kombu import Exchange, Queue, binding

from container_messaging.errors import TransportError, UnroutableMessageError
from container_messaging.transports.base import (
    BaseTransport,
    Delivery,
    EndpointTopology,
    OutboundMessage,
    Receiver,
    dead_letter_queue,
)

if TYPE_CHECKING:
    from container_messaging.config import TransportSettings

__all__ = ["KombuTransport", "topic_matches"]

log = logging.getLogger("container_messaging.transport")

#: What consumers accept; kombu never deserializes anything for us (we read raw bodies), this is belt and braces.
ACCEPT: Final = ["application/json", "text/plain", "application/octet-stream", "application/data"]
_PUBLISH_ATTEMPTS: Final = 3
_VIRTUAL_SCHEMES: Final = frozenset({"memory", "embedded", "redis", "rediss"})
_AMQP_SCHEMES: Final = frozenset({"pyamqp", "amqp", "amqps"})

T = TypeVar("T")


@functools.lru_cache(maxsize=8192)
def topic_matches(binding_key: str, routing_key: str) -> bool:
    """AMQP topic semantics: ``*`` is exactly one word, ``#`` zero or more words."""
    return _match(tuple(binding_key.split(".")), tuple(routing_key.split(".")))


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head = pattern[0]
    if head == "#":
        return _match(pattern[1:], words) or (bool(words) and _match(pattern, words[1:]))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(pattern[1:], words[1:])


class KombuTransport(BaseTransport):
    """A transport over one kombu connection URL; connections open on first use."""

    def __init__(self, settings: TransportSettings) -> None:
        self._settings = settings
        self.scheme = settings.url.split("://", 1)[0].lower()
        self.virtual = self.scheme in _VIRTUAL_SCHEMES
        self.amqp = self.scheme in _AMQP_SCHEMES
        self.description = settings.masked_url
        self._publisher: kombu.Connection | None = None
        self._producer: kombu.Producer | None = None
        self._declared: set[str] = set()
        self._returned: list[str] = []

    # -- connections -----------------------------------------------------------------------------------------------

    def new_connection(self) -> kombu.Connection:
        s = self._settings
        options: dict[str, Any] = {}
        if self.virtual:
            options["polling_interval"] = s.polling_interval
        if self.amqp and s.confirm_publish:
            options["confirm_publish"] = True
        if self.scheme == "embedded":
            from container_messaging.transports._embedded import EmbeddedTransport  # noqa: PLC0415

            options["data_folder"] = str(Path(s.data_folder).resolve())
            return kombu.Connection(transport=EmbeddedTransport, transport_options=options)
        url = "pyamqp" + s.url[len("amqp") :] if self.scheme == "amqp" else s.url
        return kombu.Connection(
            url,
            heartbeat=s.heartbeat if self.amqp else 0,
            connect_timeout=s.connect_timeout,
            ssl=True if s.ssl else None,
            transport_options=options,
        )

    @contextmanager
    def guard(self, action: str, connection: kombu.Connection | None = None) -> Iterator[None]:
        """Maps broker and socket errors to :class:`TransportError` naming the action and the (masked) URL."""
        errors: tuple[type[BaseException], ...] = (OSError,)
        if connection is not None:
            errors += tuple(connection.connection_errors) + tuple(connection.channel_errors)
        try:
            yield
        except TransportError:
            raise
        except errors as exc:
            raise TransportError(f"{action} failed on {self.description}: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            if type(exc).__module__.split(".")[0] in ("kombu", "amqp", "redis", "sqlite3"):
                raise TransportError(f"{action} failed on {self.description}: {type(exc).__name__}: {exc}") from exc
            raise

    def _publishing(self) -> tuple[kombu.Connection, kombu.Producer]:
        if self._publisher is None or self._producer is None:
            connection = self.new_connection()
            with self.guard("connecting", connection):
                connection.ensure_connection(max_retries=1, timeout=self._settings.connect_timeout)
                self._producer = kombu.Producer(connection.channel(), on_return=self._on_return if self.amqp else None)
            self._publisher = connection
        return self._publisher, self._producer

    def _on_return(self, exception: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self._returned.append(f"{exception}")

    def _reset_publisher(self) -> None:
        if self._publisher is not None:
            try:
                self._publisher.release()
            except Exception:
                log.debug("closing a broken publisher connection failed", exc_info=True)
        self._publisher = self._producer = None
        self._declared.clear()

    # -- topology --------------------------------------------------------------------------------------------------

    def declare_exchange(self, exchange: str) -> None:
        if exchange in self._declared:
            return
        connection, producer = self._publishing()
        with self.guard(f"declaring exchange {exchange!r}", connection):
            Exchange(exchange, "topic", durable=True)(producer.channel).declare()
        self._declared.add(exchange)

    def setup_endpoint(self, topology: EndpointTopology) -> None:
        connection = self.new_connection()
        try:
            with self.guard(f"declaring queue {topology.queue!r}", connection):
                channel = connection.channel()
                exchange = Exchange(topology.exchange, "topic", durable=True)
                queue = Queue(
                    topology.queue,
                    durable=True,
                    auto_delete=False,
                    bindings=[binding(exchange, routing_key=key) for key in topology.bindings],
                )
                queue(channel).declare()
                Queue(dead_letter_queue(topology.queue), durable=True, auto_delete=False)(channel).declare()
        finally:
            connection.release()

    def queue_size(self, queue: str) -> int:
        connection = self.new_connection()
        try:
            with self.guard(f"reading the size of queue {queue!r}", connection):
                channel = connection.channel()
                if self.virtual:
                    return int(channel._size(queue))
                try:
                    return int(channel.queue_declare(queue, passive=True).message_count)
                except tuple(connection.channel_errors):
                    return 0
        finally:
            connection.release()

    # -- publishing ------------------------------------------------------------------------------------------------

    def publish(self, exchange: str, message: OutboundMessage, *, mandatory: bool) -> None:
        last_error: TransportError | None = None
        for attempt in range(_PUBLISH_ATTEMPTS):
            try:
                self._publish_once(exchange, message, mandatory=mandatory)
                return
            except UnroutableMessageError:
                raise
            except TransportError as exc:
                last_error = exc
                log.warning(
                    "publishing %s failed (attempt %d of %d): %s",
                    message.message_id,
                    attempt + 1,
                    _PUBLISH_ATTEMPTS,
                    exc,
                )
                self._reset_publisher()
                time.sleep(0.2 * (attempt + 1))
        assert last_error is not None
        raise last_error

    def _publish_once(self, exchange: str, message: OutboundMessage, *, mandatory: bool) -> None:
        connection, producer = self._publishing()
        with self.guard(f"publishing to {exchange!r} with routing key {message.routing_key!r}", connection):
            if self.virtual:
                queues = self.route(producer.channel, exchange, message.routing_key)
                if not queues:
                    if mandatory:
                        raise UnroutableMessageError(self._unroutable(exchange, message.routing_key))
                    return
                for queue in queues:
                    self._put(producer, "", queue, message)
                return
            self._returned.clear()
            self._put(producer, exchange, message.routing_key, message, mandatory=mandatory)
            if self._returned:
                raise UnroutableMessageError(self._unroutable(exchange, message.routing_key))

    def _unroutable(self, exchange: str, routing_key: str) -> str:
        return (
            f"no queue is bound to routing key {routing_key!r} on exchange {exchange!r} ({self.description}): "
            "is the destination service's consumer set up (container-messaging setup / run)?"
        )

    @staticmethod
    def _put(
        producer: kombu.Producer, exchange: str, routing_key: str, message: OutboundMessage, mandatory: bool = False
    ) -> None:
        producer.publish(
            message.body,
            exchange=exchange,
            routing_key=routing_key,
            headers=dict(message.headers),
            content_type=message.content_type,
            content_encoding="binary",
            delivery_mode=2,
            mandatory=mandatory,
            message_id=message.message_id,
            retry=False,
        )

    @staticmethod
    def route(channel: Any, exchange: str, routing_key: str) -> list[str]:
        """The queues a virtual transport's exchange would deliver to, by AMQP topic rules, one per queue."""
        try:
            table = channel.get_table(exchange)
        except KeyError:
            return []
        return sorted({queue for key, _pattern, queue in table if topic_matches(key, routing_key)})

    # -- consuming -------------------------------------------------------------------------------------------------

    def open_receiver(self, queue: str, *, prefetch_count: int) -> Receiver:
        return _KombuReceiver(self, queue, prefetch_count)

    def close(self) -> None:
        self._reset_publisher()


class _KombuDelivery(Delivery):
    __slots__ = ("_message", "_receiver", "_settled", "body", "content_type", "headers", "queue", "redelivered")

    def __init__(self, message: Any, receiver: _KombuReceiver) -> None:
        self._message = message
        self._receiver = receiver
        self._settled = False
        body = message.body
        self.body = body.encode() if isinstance(body, str) else bytes(body)
        self.headers = dict(message.headers or {})
        self.content_type = message.content_type or None
        self.redelivered = bool(message.delivery_info.get("redelivered", False))
        self.queue = receiver.queue

    def _settle(self, action: str, operation: Callable[[], None]) -> None:
        if self._settled:
            raise TransportError(f"message {self.headers.get('id')!r} was already settled; cannot {action} it")
        self._receiver.run(f"{action} of message {self.headers.get('id')!r}", operation)
        self._settled = True

    def ack(self) -> None:
        self._settle("ack", self._message.ack)

    def requeue(self) -> None:
        if self._receiver.transport.virtual:
            self._settle("requeue", lambda: self._receiver.put_back(self, self.queue, {}))
        else:
            self._settle("requeue", self._message.requeue)

    def dead_letter(self, extra_headers: Mapping[str, Any]) -> None:
        self._settle(
            "dead-lettering", lambda: self._receiver.put_back(self, dead_letter_queue(self.queue), extra_headers)
        )

    @property
    def settled(self) -> bool:
        return self._settled


class _KombuReceiver(Receiver):
    def __init__(self, transport: KombuTransport, queue: str, prefetch_count: int) -> None:
        self.transport = transport
        self.queue = queue
        self._buffer: deque[_KombuDelivery] = deque()
        self._connection = transport.new_connection()
        with transport.guard(f"consuming queue {queue!r}", self._connection):
            self._connection.ensure_connection(max_retries=1, timeout=transport._settings.connect_timeout)
            self._channel = self._connection.channel()
            self._producer = kombu.Producer(self._channel)
            self._consumer = kombu.Consumer(
                self._channel,
                queues=[Queue(queue, no_declare=True)],
                on_message=self._on_message,
                accept=ACCEPT,
                prefetch_count=prefetch_count,
                auto_declare=False,
                no_ack=False,
            )
            self._consumer.consume()

    def _on_message(self, message: Any) -> None:
        self._buffer.append(_KombuDelivery(message, self))

    def run(self, action: str, operation: Callable[[], T]) -> T:
        with self.transport.guard(action, self._connection):
            return operation()

    def put_back(self, delivery: _KombuDelivery, queue: str, extra_headers: Mapping[str, Any]) -> None:
        """Republishes a delivery's original body and headers straight to ``queue``, then acknowledges it."""
        headers = {**delivery.headers, **extra_headers}
        self._producer.publish(
            delivery.body,
            exchange="",
            routing_key=queue,
            headers=headers,
            content_type=delivery.content_type or "application/octet-stream",
            content_encoding="binary",
            delivery_mode=2,
            retry=False,
        )
        delivery._message.ack()

    def receive(self, timeout: float) -> Delivery | None:
        if not self._buffer:
            with self.transport.guard(f"consuming queue {self.queue!r}", self._connection):
                if self.transport.amqp:
                    self._connection.heartbeat_check()
                try:
                    self._connection.drain_events(timeout=timeout)
                except TimeoutError:
                    return None
        return self._buffer.popleft() if self._buffer else None

    def close(self) -> None:
        try:
            # Prefetched deliveries never handed out go back to their own queue (a virtual transport's restore
            # would route them through the exchange again and copy events to other services).
            while self._buffer:
                delivery = self._buffer.popleft()
                if self.transport.virtual:
                    delivery.requeue()
            self._consumer.cancel()
        except TransportError:
            log.warning(
                "closing the consumer of %r failed; the broker redelivers what was not acknowledged",
                self.queue,
                exc_info=True,
            )
        except Exception:
            log.debug("cancelling the consumer of %r failed", self.queue, exc_info=True)
        finally:
            try:
                self._connection.release()
            except Exception:
                log.debug("releasing the consumer connection of %r failed", self.queue, exc_info=True)
