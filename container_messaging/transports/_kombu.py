"""The kombu adapter: RabbitMQ (``pyamqp://``), Redis (``redis://``), ``memory://`` and the embedded transport.

RabbitMQ routes messages itself (topic exchange, mandatory flag, publisher confirms) and delays retries with a
TTL queue that dead-letters back to the service's queue. kombu's *virtual* transports (memory, Redis, embedded)
route imperfectly for this bus: a requeued or restored message is routed again through the exchange, so an event
would be copied once more to every other subscribed service. For those, this adapter routes itself: it reads the
exchange's bindings, matches them with AMQP topic rules, and puts one copy on each matching queue through the
default exchange, so a requeue or a restore returns the message to its own queue. They have no TTL queues either:
the embedded transport delays natively (a ``DELIVER_AT`` header), Redis keeps delayed messages in a sorted set and
memory in a heap, and a consumer moves those that are due onto its queue.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

import kombu
from kombu import Exchange, Queue, binding

from container_messaging.errors import TransportError, UnroutableMessageError
from container_messaging.transports.base import (
    DELIVER_AT,
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
_VIRTUAL_SCHEMES: Final = frozenset({"memory", "embedded", "redis", "rediss"})
_AMQP_SCHEMES: Final = frozenset({"pyamqp", "amqp", "amqps"})
_BROKER_MODULES: Final = frozenset({"kombu", "amqp", "redis", "sqlite3"})
_PROMOTE_EVERY: Final = 0.1  # seconds between moves of due delayed messages (virtual transports)

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


def _publish_kwargs(message: OutboundMessage) -> dict[str, Any]:
    return {
        "headers": message.headers,
        "content_type": message.content_type,
        "content_encoding": "binary",
        "delivery_mode": 2,
        "message_id": message.message_id,
        "retry": False,
    }


class KombuTransport(BaseTransport):
    """A transport over one kombu connection URL; connections open on first use."""

    def __init__(self, settings: TransportSettings) -> None:
        self._settings = settings
        self.scheme = settings.url.split("://", 1)[0].lower()
        self.virtual = self.scheme in _VIRTUAL_SCHEMES
        self.amqp = self.scheme in _AMQP_SCHEMES
        self.embedded = self.scheme == "embedded"
        self.description = settings.masked_url
        self._publisher: kombu.Connection | None = None
        self._producer: kombu.Producer | None = None
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._declared: set[str] = set()
        self._returned: list[Any] = []
        self._published = 0  # publish sequence number on the publisher channel (publisher confirms count them)
        self.delays = _delays_for(self)

    @property
    def settings(self) -> TransportSettings:
        return self._settings

    # -- connections -----------------------------------------------------------------------------------------------

    def new_connection(self) -> kombu.Connection:
        s = self._settings
        options: dict[str, Any] = {}
        if self.virtual:
            options["polling_interval"] = s.polling_interval
        if self.scheme in ("redis", "rediss", "embedded"):
            options["visibility_timeout"] = s.visibility_timeout
        if self.amqp and s.confirm_publish:
            options["confirm_publish"] = True
        if self.embedded:
            from container_messaging.transports._embedded import EmbeddedTransport  # noqa: PLC0415

            options["data_folder"] = str(Path(s.data_folder).resolve())
            return kombu.Connection(transport=EmbeddedTransport, transport_options=options)
        url = "pyamqp" + s.url[len("amqp") :] if self.scheme == "amqp" else s.url
        return kombu.Connection(
            url,
            heartbeat=s.heartbeat if self.amqp else 0,
            connect_timeout=s.connect_timeout,
            ssl=self._ssl_options(),
            transport_options=options,
        )

    def _ssl_options(self) -> Any:
        s = self._settings
        if not s.ssl:
            return None
        custom = s.ssl_ca_certs or s.ssl_certfile or s.ssl_keyfile or not s.ssl_verify
        if not custom:
            return True
        if self.scheme in ("redis", "rediss"):
            return {
                "ssl_cert_reqs": ssl.CERT_REQUIRED if s.ssl_verify else ssl.CERT_NONE,
                "ssl_ca_certs": s.ssl_ca_certs,
                "ssl_certfile": s.ssl_certfile,
                "ssl_keyfile": s.ssl_keyfile,
            }
        return {
            "cert_reqs": ssl.CERT_REQUIRED if s.ssl_verify else ssl.CERT_NONE,
            "ca_certs": s.ssl_ca_certs,
            "certfile": s.ssl_certfile,
            "keyfile": s.ssl_keyfile,
        }

    def errors_of(self, connection: kombu.Connection) -> tuple[type[BaseException], ...]:
        return (OSError, *connection.connection_errors, *connection.channel_errors)

    def guard(self, action: str, errors: tuple[type[BaseException], ...] = (OSError,)) -> _Guard:
        """Maps broker and socket errors to :class:`TransportError` naming the action and the (masked) URL."""
        return _Guard(self.description, action, errors)

    @contextmanager
    def connection(self, action: str) -> Iterator[Any]:
        """A short-lived connection's channel, for administrative work (declare, size, browse)."""
        connection = self.new_connection()
        try:
            with self.guard(action, self.errors_of(connection)):
                yield connection.channel()
        finally:
            connection.release()

    def _publishing(self) -> kombu.Producer:
        if self._producer is None:
            connection = self.new_connection()
            errors = self.errors_of(connection)
            with self.guard("connecting", errors):
                connection.ensure_connection(max_retries=1, timeout=self._settings.connect_timeout)
                self._producer = kombu.Producer(connection.channel(), on_return=self._on_return if self.amqp else None)
            self._publisher, self._errors = connection, errors
        return self._producer

    def _on_return(self, exception: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self._returned.append(routing_key)

    def _reset_publisher(self) -> None:
        if self._publisher is not None:
            try:
                self._publisher.release()
            except Exception:  # a dead connection may fail to close; it is dropped either way
                log.debug("closing a broken publisher connection failed", exc_info=True)
        self._publisher = self._producer = None
        self._published = 0
        self._declared.clear()

    def _with_retries(self, what: str, operation: Callable[[], None]) -> None:
        """Runs a publishing operation; a lost connection is retried ``publish_retries`` times, then raised."""
        try:
            operation()
        except UnroutableMessageError:
            raise
        except TransportError as exc:
            self._retry(what, operation, exc)

    def _retry(self, what: str, operation: Callable[[], None], failure: TransportError) -> None:
        attempts = self._settings.publish_retries + 1
        for attempt in range(2, attempts + 1):
            self._reset_publisher()
            log.info("%s failed (attempt %d of %d), reconnecting: %s", what, attempt - 1, attempts, failure)
            time.sleep(min(0.2 * 2 ** (attempt - 2), 2.0))
            try:
                operation()
                return
            except UnroutableMessageError:
                raise
            except TransportError as exc:
                failure = exc
        self._reset_publisher()
        raise failure

    # -- topology --------------------------------------------------------------------------------------------------

    def declare_exchange(self, exchange: str) -> None:
        if exchange in self._declared:
            return

        def declare() -> None:
            producer = self._publishing()
            with self.guard(f"declaring exchange {exchange!r}", self._errors):
                Exchange(exchange, "topic", durable=True)(producer.channel).declare()

        self._with_retries(f"declaring exchange {exchange!r}", declare)
        self._declared.add(exchange)

    def setup_endpoint(self, topology: EndpointTopology) -> None:
        with self.connection(f"declaring queue {topology.queue!r}") as channel:
            exchange = Exchange(topology.exchange, "topic", durable=True)
            queue = Queue(
                topology.queue,
                durable=True,
                auto_delete=False,
                bindings=[binding(exchange, routing_key=key) for key in topology.bindings],
            )
            queue(channel).declare()
            Queue(dead_letter_queue(topology.queue), durable=True, auto_delete=False)(channel).declare()

    def queue_size(self, queue: str) -> int:
        with self.connection(f"reading the size of queue {queue!r}") as channel:
            if self.virtual:
                return int(channel._size(queue))
            try:
                return int(channel.queue_declare(queue, passive=True).message_count)
            except Exception as exc:  # NOT_FOUND closes the channel: the queue does not exist
                if getattr(exc, "code", None) == 404:
                    return 0
                raise

    # -- publishing ------------------------------------------------------------------------------------------------

    def publish(self, exchange: str, message: OutboundMessage, *, mandatory: bool) -> None:
        try:
            self._publish_once(exchange, message, mandatory=mandatory)  # the usual case: no closure, no loop
        except UnroutableMessageError:
            raise
        except TransportError as exc:
            self._retry(
                f"publishing {message.message_id}",
                lambda: self._publish_once(exchange, message, mandatory=mandatory),
                exc,
            )

    def _publish_once(self, exchange: str, message: OutboundMessage, *, mandatory: bool) -> None:
        producer = self._publishing()
        with self.guard(f"publishing to {exchange!r} with routing key {message.routing_key!r}", self._errors):
            if self.virtual:
                queues = self.route(producer.channel, exchange, message.routing_key)
                if not queues:
                    if mandatory:
                        raise UnroutableMessageError(self._unroutable(exchange, message.routing_key))
                    return
                kwargs = _publish_kwargs(message)
                for queue in queues:
                    producer.publish(message.body, exchange="", routing_key=queue, **kwargs)
                return
            self._returned.clear()
            self._published += 1
            producer.publish(
                message.body,
                exchange=exchange,
                routing_key=message.routing_key,
                mandatory=mandatory,
                **_publish_kwargs(message),
            )
            if self._returned:
                raise UnroutableMessageError(self._unroutable(exchange, message.routing_key))

    def publish_many(self, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> None:
        if not (self.amqp and self._settings.confirm_publish):
            super().publish_many(exchange, messages)
            return
        self._with_retries(f"publishing a batch of {len(messages)}", lambda: self._publish_batch(exchange, messages))

    def _publish_batch(self, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> None:
        """Publishes every message, then waits once for all their confirms (pipelined publisher confirms)."""
        producer = self._publishing()
        channel = producer.channel
        with self.guard(f"publishing a batch of {len(messages)} to {exchange!r}", self._errors):
            if not channel._confirm_selected:
                channel._confirm_selected = True
                channel.confirm_select()
            first = self._published + 1
            unconfirmed = set(range(first, first + len(messages)))
            nacked: list[int] = []

            def on_ack(tag: int, multiple: bool) -> None:
                if multiple:
                    unconfirmed.difference_update(range(first, tag + 1))
                else:
                    unconfirmed.discard(tag)

            def on_nack(tag: int, multiple: bool) -> None:
                nacked.append(tag)
                on_ack(tag, multiple)

            channel.events["basic_ack"].add(on_ack)
            channel.events["basic_nack"].add(on_nack)
            self._returned.clear()
            try:
                for message, mandatory in messages:
                    amqp_message = channel.prepare_message(
                        message.body,
                        0,
                        message.content_type,
                        "binary",
                        dict(message.headers),
                        {"delivery_mode": 2, "message_id": message.message_id},
                    )
                    self._published += 1
                    channel._basic_publish(
                        amqp_message, exchange=exchange, routing_key=message.routing_key, mandatory=mandatory
                    )
                deadline = time.monotonic() + max(self._settings.connect_timeout, 30.0)
                while unconfirmed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TransportError(
                            f"{len(unconfirmed)} of {len(messages)} publishes were not confirmed "
                            f"by {self.description} in time"
                        )
                    self._publisher.drain_events(timeout=remaining)  # type: ignore[union-attr]
            finally:
                channel.events["basic_ack"].discard(on_ack)
                channel.events["basic_nack"].discard(on_nack)
        if nacked:
            raise TransportError(
                f"the broker refused {len(nacked)} of {len(messages)} messages (nack) on {self.description}"
            )
        if self._returned:
            keys = ", ".join(sorted({repr(key) for key in self._returned}))
            raise UnroutableMessageError(
                f"{len(self._returned)} of {len(messages)} messages were returned: no queue is bound to routing key "
                f"{keys} on exchange {exchange!r} ({self.description}); the others were published"
            )

    def send_to_queue(self, queue: str, message: OutboundMessage) -> None:
        def send() -> None:
            producer = self._publishing()
            with self.guard(f"publishing to queue {queue!r}", self._errors):
                producer.publish(message.body, exchange="", routing_key=queue, **_publish_kwargs(message))

        self._with_retries(f"publishing {message.message_id} to {queue!r}", send)

    def _unroutable(self, exchange: str, routing_key: str) -> str:
        return (
            f"no queue is bound to routing key {routing_key!r} on exchange {exchange!r} ({self.description}): "
            "is the destination service's consumer set up (container-messaging setup / run)?"
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

    @contextmanager
    def browse(self, queue: str) -> Iterator[Iterator[Delivery]]:
        receiver = _KombuReceiver(self, queue, prefetch_count=0, consume=False)
        deliveries: list[Delivery] = []

        def read() -> Iterator[Delivery]:
            while True:
                with receiver.locked(f"reading queue {queue!r}"):
                    message = Queue(queue, no_declare=True)(receiver.channel).get(accept=ACCEPT)
                if message is None:
                    return
                deliveries.append(_KombuDelivery(message, receiver))
                yield deliveries[-1]

        try:
            if self.amqp and not self._queue_exists(receiver, queue):
                yield iter(())  # a queue never declared holds nothing
                return
            # RabbitMQ and the embedded transport put a message back in place: read as the caller asks, so one that
            # stops early leaves the rest unread. The others put back at the tail: read all, so the order stays.
            yield read() if self.amqp or self.embedded else iter(list(read()))
        finally:
            for delivery in deliveries:
                if not delivery.settled:
                    delivery.requeue()
            receiver.close()

    def _queue_exists(self, receiver: _KombuReceiver, queue: str) -> bool:
        try:
            with receiver.locked(f"looking for queue {queue!r}"):
                receiver.channel.queue_declare(queue, passive=True)
        except TransportError as exc:
            if getattr(exc.__cause__, "code", None) == 404:
                receiver.reopen_channel()
                return False
            raise
        return True

    def close(self) -> None:
        self._reset_publisher()


class _Guard:
    """Broker and socket errors become :class:`TransportError` (a plain context manager: it is on the publish
    path)."""

    __slots__ = ("_action", "_description", "_errors")

    def __init__(self, description: str, action: str, errors: tuple[type[BaseException], ...]) -> None:
        self._description = description
        self._action = action
        self._errors = errors

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: Any) -> None:
        if error is None or isinstance(error, TransportError) or not isinstance(error, Exception):
            return
        if isinstance(error, self._errors) or type(error).__module__.split(".")[0] in _BROKER_MODULES:
            raise TransportError(
                f"{self._action} failed on {self._description}: {type(error).__name__}: {error}"
            ) from error


class _KombuDelivery(Delivery):
    __slots__ = ("_message", "_receiver", "_settled", "body", "content_type", "headers", "queue", "redelivered")

    def __init__(self, message: Any, receiver: _KombuReceiver) -> None:
        self._message = message
        self._receiver = receiver
        self._settled = False
        body = message.body
        self.body = body.encode() if isinstance(body, str) else bytes(body)
        self.headers = message.headers or {}  # kombu built this dict for this message: ours, no copy
        self.content_type = message.content_type or None
        self.redelivered = bool(message.delivery_info.get("redelivered", False))
        self.queue = receiver.queue

    @property
    def settled(self) -> bool:
        return self._settled

    def _put_back(self) -> None:
        self._receiver.publish_raw(self, self.queue, self.headers)
        self._message.ack()

    def _settle(self, action: str, operation: Callable[[], None]) -> None:
        if self._settled:
            raise TransportError(f"message {self.headers.get('id')!r} was already settled; cannot {action} it")
        with self._receiver.locked(action, self.headers.get("id")):
            operation()
        self._settled = True

    def ack(self) -> None:
        self._settle("ack", self._message.ack)

    def requeue(self) -> None:
        transport = self._receiver.transport
        if transport.virtual and not transport.embedded:
            self._settle("requeue", self._put_back)
        else:  # RabbitMQ and the embedded transport requeue to the same queue, in place
            self._settle("requeue", self._message.requeue)

    def dead_letter_copy(self, extra_headers: Mapping[str, Any]) -> None:
        queue = dead_letter_queue(self.queue)
        with self._receiver.locked("dead-lettering", self.headers.get("id")):
            self._receiver.publish_raw(self, queue, {**self.headers, **extra_headers})

    def delayed_copy(self, delay_ms: int, extra_headers: Mapping[str, Any]) -> None:
        with self._receiver.locked("delaying", self.headers.get("id")):
            self._receiver.transport.delays.schedule(self._receiver, self, delay_ms, extra_headers)


class _Locked:
    """The receiver's lock and error mapping as a plain context manager (it is on the per-message path)."""

    __slots__ = ("_action", "_receiver", "_subject")

    def __init__(self, receiver: _KombuReceiver, action: str, subject: object) -> None:
        self._receiver = receiver
        self._action = action
        self._subject = subject

    def _describe(self) -> str:
        return self._action if self._subject is None else f"{self._action} {self._subject!r}"

    def __enter__(self) -> None:
        receiver = self._receiver
        receiver._lock.acquire()
        if receiver.dead is not None:
            receiver._lock.release()
            raise TransportError(
                f"{self._describe()}: the connection was lost earlier ({receiver.dead}); the broker keeps the "
                "message for redelivery"
            )

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: Any) -> None:
        receiver = self._receiver
        try:
            if error is None or not isinstance(error, Exception):
                return
            if isinstance(error, TransportError):
                receiver.dead = error
                return
            if isinstance(error, receiver._errors) or type(error).__module__.split(".")[0] in _BROKER_MODULES:
                mapped = TransportError(
                    f"{self._describe()} failed on {receiver.transport.description}: {type(error).__name__}: {error}"
                )
                receiver.dead = mapped
                raise mapped from error
        finally:
            receiver._lock.release()


class _KombuReceiver(Receiver):
    """A consumer on one queue, on its own connection. A lock serialises every use of the connection between the
    consuming thread and the heartbeat thread that keeps an AMQP connection alive while a handler runs long."""

    def __init__(self, transport: KombuTransport, queue: str, prefetch_count: int, *, consume: bool = True) -> None:
        self.transport = transport
        self.queue = queue
        self.dead: TransportError | None = None
        self._buffer: deque[_KombuDelivery] = deque()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._last_promotion = 0.0
        self._connection = transport.new_connection()
        self._errors = transport.errors_of(self._connection)
        with self.locked(f"consuming queue {queue!r}"):
            self._connection.ensure_connection(max_retries=1, timeout=transport.settings.connect_timeout)
            self.channel = self._connection.channel()
            self._producer = kombu.Producer(self.channel)
            if consume:
                self._consumer = kombu.Consumer(
                    self.channel,
                    queues=[Queue(queue, no_declare=True)],
                    on_message=self._on_message,
                    accept=ACCEPT,
                    prefetch_count=prefetch_count,
                    auto_declare=False,
                    no_ack=False,
                )
                self._consumer.consume()
        heartbeat = transport.settings.heartbeat
        if consume and transport.amqp and heartbeat:
            threading.Thread(
                target=self._keep_alive, args=(max(1.0, heartbeat / 4),), name=f"heartbeat-{queue}", daemon=True
            ).start()

    def locked(self, action: str, subject: object = None) -> _Locked:
        """Exclusive use of the connection, broker errors mapped to TransportError; a connection that failed once
        is never used again (no ack is sent for deliveries of a dead channel: the broker redelivers them).
        ``action`` (and ``subject``, e.g. a message id) only make the error message: nothing is formatted unless
        something fails."""
        return _Locked(self, action, subject)

    def reopen_channel(self) -> None:
        """A fresh channel after the broker closed the last one (e.g. NOT_FOUND on a passive declare)."""
        with self._lock:
            self.dead = None
            self.channel = self._connection.channel()
            self._producer = kombu.Producer(self.channel)

    def _keep_alive(self, interval: float) -> None:
        while not self._closed.wait(interval):
            try:
                with self.locked("heartbeat"):
                    self._connection.heartbeat_check()
                    with suppress(TimeoutError):  # read what arrived, the broker's heartbeats included
                        self._connection.drain_events(timeout=0.01)
            except TransportError as exc:
                log.warning("consumer connection of %r lost: %s", self.queue, exc)
                return

    def _on_message(self, message: Any) -> None:
        self._buffer.append(_KombuDelivery(message, self))

    def publish_raw(self, delivery: _KombuDelivery, queue: str, headers: Mapping[str, Any]) -> None:
        self._producer.publish(
            delivery.body,
            exchange="",
            routing_key=queue,
            headers=dict(headers),
            content_type=delivery.content_type or "application/octet-stream",
            content_encoding="binary",
            delivery_mode=2,
            retry=False,
        )

    def receive(self, timeout: float) -> Delivery | None:
        deadline = time.monotonic() + timeout
        promoting = self.transport.virtual and not self.transport.embedded
        while not self._buffer:
            with self.locked("consuming queue", self.queue):
                now = time.monotonic()
                if promoting and now - self._last_promotion >= _PROMOTE_EVERY:
                    self._last_promotion = now
                    self.transport.delays.promote(self)
                step = deadline - now
                if step <= 0:
                    return None
                try:  # in short steps where delayed messages wait to be moved onto the queue
                    self._connection.drain_events(timeout=min(step, _PROMOTE_EVERY) if promoting else step)
                except TimeoutError:
                    continue
        return self._buffer.popleft()

    def close(self) -> None:
        self._closed.set()
        if self.dead is None:
            try:
                # Prefetched deliveries never handed out go back to their own queue (a virtual transport's restore
                # would route them through the exchange again and copy events to other services).
                while self._buffer:
                    delivery = self._buffer.popleft()
                    if self.transport.virtual and not self.transport.embedded:
                        delivery.requeue()
                consumer = getattr(self, "_consumer", None)
                if consumer is not None:
                    with self.locked(f"cancelling the consumer of {self.queue!r}"):
                        consumer.cancel()
            except TransportError:
                log.warning(
                    "closing the consumer of %r failed; the broker redelivers what was not acknowledged",
                    self.queue,
                    exc_info=True,
                )
        with self._lock:
            try:
                self._connection.release()
            except Exception:
                log.debug("releasing the consumer connection of %r failed", self.queue, exc_info=True)


# -- delayed retries, per transport --------------------------------------------------------------------------------


class _Delays:
    """How a transport holds a message back for ``delay_ms`` without keeping it unacknowledged."""

    def schedule(
        self, receiver: _KombuReceiver, delivery: _KombuDelivery, delay_ms: int, extra_headers: Mapping[str, Any]
    ) -> None:
        raise NotImplementedError

    def promote(self, receiver: _KombuReceiver) -> None:
        """Moves the due messages of ``receiver.queue`` onto it (transports that cannot delay by themselves)."""


class _AmqpDelays(_Delays):
    """A durable TTL queue per delay that dead-letters expired messages back to the service's queue."""

    def schedule(
        self, receiver: _KombuReceiver, delivery: _KombuDelivery, delay_ms: int, extra_headers: Mapping[str, Any]
    ) -> None:
        name = f"{delivery.queue}.delay.{delay_ms}"
        Queue(
            name,
            durable=True,
            auto_delete=False,
            queue_arguments={
                "x-message-ttl": delay_ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": delivery.queue,
            },
        )(receiver.channel).declare()
        receiver.publish_raw(delivery, name, {**delivery.headers, **extra_headers})


class _EmbeddedDelays(_Delays):
    """The embedded transport keeps the copy invisible until its ``DELIVER_AT`` time."""

    def schedule(
        self, receiver: _KombuReceiver, delivery: _KombuDelivery, delay_ms: int, extra_headers: Mapping[str, Any]
    ) -> None:
        headers = {**delivery.headers, **extra_headers, DELIVER_AT: time.time() + delay_ms / 1000}
        receiver.publish_raw(delivery, delivery.queue, headers)


def _prepared(receiver: _KombuReceiver, delivery: _KombuDelivery, headers: Mapping[str, Any]) -> dict[str, Any]:
    """The message a virtual channel would store for ``delivery`` on its own queue."""
    channel = receiver.channel
    message: dict[str, Any] = channel.prepare_message(
        delivery.body,
        0,
        delivery.content_type or "application/octet-stream",
        "binary",
        dict(headers),
        {"delivery_mode": 2},
    )
    channel._inplace_augment_message(message, "", delivery.queue)
    return message


class _RedisDelays(_Delays):
    """A sorted set per queue, scored by due time; due messages move to the queue atomically (a Lua script)."""

    _MOVE: ClassVar[str] = """
        local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
        for _, item in ipairs(due) do
            redis.call('ZREM', KEYS[1], item)
            redis.call('LPUSH', KEYS[2], item)
        end
        return #due
    """

    def schedule(
        self, receiver: _KombuReceiver, delivery: _KombuDelivery, delay_ms: int, extra_headers: Mapping[str, Any]
    ) -> None:
        from kombu.utils.json import dumps  # noqa: PLC0415

        message = _prepared(receiver, delivery, {**delivery.headers, **extra_headers})
        due = time.time() + delay_ms / 1000
        # a pooled connection: the channel's own one may be waiting on BRPOP, and replies would mix
        with receiver.channel.conn_or_acquire() as client:
            client.zadd(f"{delivery.queue}.delayed", {dumps(message): due})

    def promote(self, receiver: _KombuReceiver) -> None:
        with receiver.channel.conn_or_acquire() as client:
            client.eval(self._MOVE, 2, f"{receiver.queue}.delayed", receiver.queue, time.time())


class _MemoryDelays(_Delays):
    """A heap per queue, shared by the process like the memory transport itself (``reset`` empties it)."""

    heaps: ClassVar[dict[str, list[tuple[float, int, dict[str, Any]]]]] = {}
    _order: ClassVar[itertools.count[int]] = itertools.count()

    def schedule(
        self, receiver: _KombuReceiver, delivery: _KombuDelivery, delay_ms: int, extra_headers: Mapping[str, Any]
    ) -> None:
        message = _prepared(receiver, delivery, {**delivery.headers, **extra_headers})
        heap = self.heaps.setdefault(delivery.queue, [])
        heapq.heappush(heap, (time.time() + delay_ms / 1000, next(self._order), message))

    def promote(self, receiver: _KombuReceiver) -> None:
        heap = self.heaps.get(receiver.queue)
        now = time.time()
        while heap and heap[0][0] <= now:
            receiver.channel._put(receiver.queue, heapq.heappop(heap)[2])

    @classmethod
    def reset(cls) -> None:
        cls.heaps.clear()


def _delays_for(transport: KombuTransport) -> _Delays:
    if transport.amqp:
        return _AmqpDelays()
    if transport.embedded:
        return _EmbeddedDelays()
    if transport.scheme in ("redis", "rediss"):
        return _RedisDelays()
    return _MemoryDelays()
