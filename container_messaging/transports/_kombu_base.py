"""What every kombu adapter shares: connections, publishing with retries, and the receiver loop (a consumer on its
own connection handing out one Delivery at a time); broker errors are mapped to TransportError as ``_broker.py``
says.

An adapter (``rabbitmq/``, ``memory.py``, ``embedded/``) subclasses :class:`KombuTransport` and
fills in its hooks: how to connect (:meth:`~KombuTransport.new_connection`), how to publish and route
(:meth:`~KombuTransport.publish_once`), how to requeue, delay and dead-letter a delivery, what counts as a refusal
for good, and what its tests need to see (:meth:`~KombuTransport.waiting_for_delay`,
:meth:`~KombuTransport.remove_endpoint`).
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, ClassVar, Final, TypeVar

import attrs
import kombu
from kombu import Exchange, Queue, binding

from container_messaging.errors import TransportError
from container_messaging.transports._broker import BrokerTransport, causes
from container_messaging.transports.base import (
    Delivery,
    EndpointTopology,
    OutboundMessage,
    Receiver,
    dead_letter_queue,
)
from container_messaging.transports.options import TransportOptions

__all__ = [
    "ACCEPT",
    "KombuDelivery",
    "KombuReceiver",
    "KombuTransport",
    "PublishRequest",
    "causes",
    "not_found",
    "publish_kwargs",
    "publishing",
]

log = logging.getLogger("container_messaging.transport")

#: What consumers accept; kombu never deserializes anything for us (we read raw bodies), this is belt and braces.
ACCEPT: Final = ["application/json", "text/plain", "application/octet-stream", "application/data"]

T = TypeVar("T")


def publish_kwargs(message: OutboundMessage) -> dict[str, Any]:
    """kombu ``Producer.publish`` arguments for a persistent ``message`` (raw bytes, never serialized again)."""
    return {
        "headers": message.headers,
        "content_type": message.content_type,
        "content_encoding": "binary",
        "delivery_mode": 2,
        "message_id": message.message_id,
        "retry": False,
    }


def not_found(error: BaseException) -> bool:
    """Whether the broker answered NOT_FOUND (404): the queue or exchange does not exist."""
    return str(getattr(error, "reply_code", "")) == "404"


def publishing(exchange: str, message: OutboundMessage) -> str:
    """What publishing ``message`` is called in logs and errors."""
    if not exchange:
        return f"publishing message {message.message_id!r} to queue {message.routing_key!r}"
    return f"publishing message {message.message_id!r} to {exchange!r} with routing key {message.routing_key!r}"


def _describe(action: str, subject: object) -> str:
    return action if subject is None else f"{action} {subject!r}"


@attrs.define(eq=False)
class PublishRequest:
    """One caller's messages for the publisher (one ``publish``, ``publish_many`` or ``send_to_queue``), and what
    became of them: ``error`` None once they were all published (confirmed, with publisher confirms).

    Its caller sleeps in :meth:`wait` until the request is finished, or until it is handed the lead of the next
    group (``leads``); a lock of its own per request, so that finishing a group wakes exactly its callers."""

    exchange: str
    messages: Sequence[tuple[OutboundMessage, bool]]  # (message, mandatory)
    done: bool = False
    error: Exception | None = None
    leads: bool = False
    _wake: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._wake.acquire()  # held until the caller may go on: released once by finish or hand_lead

    def wait(self) -> None:
        """Sleeps until :meth:`finish` or :meth:`hand_lead`."""
        self._wake.acquire()

    def finish(self, error: Exception | None) -> None:
        self.done, self.error = True, error
        if not self.leads:  # a leader's own request: its caller is awake, leading
            self._wake.release()

    def hand_lead(self) -> None:
        """Wakes the caller to publish the next group, its own request among it."""
        self.leads = True
        self._wake.release()

    def run(self, publish: Callable[[str, Sequence[tuple[OutboundMessage, bool]]], None]) -> None:
        """Publishes with ``publish(exchange, messages)`` and keeps its outcome for the caller."""
        try:
            publish(self.exchange, self.messages)
        except Exception as error:
            self.finish(error)
        else:
            self.finish(None)


class KombuTransport(BrokerTransport):
    """A transport over one kombu connection URL; connections open on first use.

    The publisher keeps one connection; each receiver and each administrative operation opens its own.

    Publishing is safe from any number of threads (group commit, leader/follower): a caller queues its
    :class:`PublishRequest`; when nobody is publishing, it becomes the leader and publishes every request queued so
    far, in one go (:meth:`publish_group`: with RabbitMQ's confirms, one wait for all of them), tells each its own
    outcome and wakes exactly those callers; the first request queued meanwhile is handed the lead of the next group.
    Nobody else touches the publisher connection meanwhile, and no extra thread is needed.

    Where a group shares one wait for the broker (:meth:`gather_window` above 0), a new leader first gathers: it
    waits, for that long at most, until as many requests are queued as the previous group had. Senders in a loop
    come back a few at a time after their group finished; without gathering the first one back would take the
    lead alone and the others would wait a whole extra round trip behind it (groups of 1, 15, 1, 15...). The size
    to wait for follows the senders: a gathering that ends with fewer sets the next size to what came.
    """

    #: seconds between two calls of :meth:`before_poll` while a receiver waits for messages (None: never called)
    poll_step: ClassVar[float | None] = None
    #: whether :meth:`requeue` puts a message back where it was (else at the tail): then browsing reads lazily
    requeues_in_place: ClassVar[bool] = True

    def __init__(self, options: TransportOptions) -> None:
        super().__init__(options)
        self._publisher: kombu.Connection | None = None
        self._producer: kombu.Producer | None = None
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._declared: set[str] = set()
        #: held by whoever uses the publisher connection (reentrant: the leader of a group calls with_retries)
        self._publisher_lock = threading.RLock()
        self._waiting: list[PublishRequest] = []  # requests not taken by a leader yet
        #: the request whose caller leads (gathers or publishes a group); the others sleep in their requests
        self._leader: PublishRequest | None = None
        self._turn = threading.Condition(threading.Lock())  # guards the three above; a gathering leader waits on it
        self._group_size = 1  # requests in the previous group: how many a gathering leader waits for
        self._gathering = False  # the leader waits on _turn for more requests

    # -- the adapter's hooks ---------------------------------------------------------------------------------------

    @abc.abstractmethod
    def new_connection(self) -> kombu.Connection:
        """A kombu connection (not yet connected) with this broker's options."""

    def consumer_connection(self) -> kombu.Connection:
        """The connection of a receiver: :meth:`new_connection`'s, unless the broker needs other bounds there."""
        return self.new_connection()

    @abc.abstractmethod
    def publish_once(self, producer: kombu.Producer, exchange: str, message: OutboundMessage, mandatory: bool) -> None:
        """One attempt to publish ``message`` (``exchange`` ``""`` addresses the queue named by its routing key);
        raises :class:`UnroutableMessageError` for a mandatory message no queue receives, where the broker can tell."""

    @abc.abstractmethod
    def delay(self, receiver: KombuReceiver, delivery: KombuDelivery, delay_ms: int, headers: dict[str, Any]) -> None:
        """Puts a copy of ``delivery`` with ``headers`` back on its queue, visible after ``delay_ms``."""

    @abc.abstractmethod
    def waiting_for_delay(self, queue: str) -> int:
        """How many delayed copies for ``queue`` wait for their time (for tests and tooling)."""

    def new_producer(self, channel: Any) -> kombu.Producer:
        """The producer of the publisher connection."""
        return kombu.Producer(channel)

    def requeue(self, receiver: KombuReceiver, delivery: KombuDelivery) -> None:
        """Puts ``delivery`` back on its own queue: kombu's requeue (RabbitMQ's own; a virtual transport restores
        through the exchange the message came by, and this package gives virtual queues their messages through the
        default exchange, so that is the message's own queue)."""
        delivery.message.requeue()

    def dead_letter(self, receiver: KombuReceiver, delivery: KombuDelivery, headers: dict[str, Any]) -> None:
        """Puts a copy of ``delivery`` with ``headers`` on its queue's dead letter queue."""
        receiver.send(dead_letter_queue(delivery.queue), delivery.body, headers, delivery.content_type)

    def before_poll(self, receiver: KombuReceiver) -> None:
        """Runs every :attr:`poll_step` seconds while ``receiver`` waits (e.g. to move due delayed messages)."""

    def heartbeat_interval(self) -> float | None:
        """Seconds between two heartbeat checks of a consuming connection (None: no heartbeat thread)."""
        return None

    def gather_window(self) -> float:
        """Seconds a new leader may wait for more requests before it publishes its group (see the class docstring):
        0 where each message is published on its own, without a shared wait for the broker."""
        return 0.0

    def queue_arguments(self, queue: str, *, dead_letter: bool = False) -> dict[str, Any] | None:
        """The broker's arguments for an endpoint's ``queue`` (``dead_letter``: for its dead letter queue); none."""
        return None

    # -- connections and errors ------------------------------------------------------------------------------------

    @staticmethod
    def errors_of(connection: kombu.Connection) -> tuple[type[BaseException], ...]:
        """The exceptions that mean the broker or the connection failed."""
        return (OSError, *connection.connection_errors, *connection.channel_errors)

    @contextmanager
    def connection(self, action: str) -> Iterator[Any]:
        """A short-lived connection's channel, for administrative work (declare, size, browse)."""
        connection = self.new_connection()
        errors = self.connect(connection, action)
        try:
            yield connection.channel()
        except Exception as error:
            self.reraise(action, error, errors)
        finally:
            connection.release()

    def connect(self, connection: kombu.Connection, action: str) -> tuple[type[BaseException], ...]:
        """Connects ``connection`` once (no retry here: publishing and consuming retry at their own level); returns
        its error classes. A failure is a TransportError and the connection is released."""
        errors = self.errors_of(connection)
        try:
            connection.ensure_connection(max_retries=0, timeout=self.options.connect_timeout)
        except Exception as error:
            connection.release()
            self.reraise(action, error, errors)
        return errors

    # -- publishing ------------------------------------------------------------------------------------------------

    def _producer_connected(self) -> kombu.Producer:
        if self._producer is None:
            connection = self.new_connection()
            errors = self.connect(connection, "connecting to publish")
            try:
                self._producer = self.new_producer(connection.channel())
            except Exception as error:
                connection.release()
                self.reraise("opening a channel to publish", error, errors)
            self._publisher, self._errors = connection, errors
        return self._producer

    def reset_publisher(self) -> None:
        """Drops the publisher connection (the next publish connects again)."""
        with self._publisher_lock:
            self._drop_publisher()

    def _drop_publisher(self) -> None:
        if self._publisher is not None:
            try:
                self._publisher.release()
            except Exception:  # a dead connection may fail to close; it is dropped either way
                log.debug("closing a broken publisher connection failed", exc_info=True)
        self._publisher = self._producer = None
        self._declared.clear()

    def with_retries(self, what: str, send: Callable[[kombu.Producer], None]) -> None:
        """Runs ``send`` with the publisher's producer, holding the publisher; see :meth:`_with_retries`."""
        with self._publisher_lock:
            self._with_retries(what, send)

    def _with_retries(self, what: str, send: Callable[[kombu.Producer], None]) -> None:
        """Runs ``send`` with the publisher's producer, connecting first; a lost connection is retried as
        :meth:`~container_messaging.transports._broker.BrokerTransport.retrying` says."""

        def attempt(producer: kombu.Producer) -> None:
            try:
                send(producer)
            except Exception as error:
                self.reraise(what, error, self._errors)

        self.retrying(what, self._producer_connected, attempt)

    def publish(self, exchange: str, message: OutboundMessage, *, mandatory: bool) -> None:
        self.submit(exchange, ((message, mandatory),))

    def publish_many(self, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> None:
        if messages:
            self.submit(exchange, messages)

    def send_to_queue(self, queue: str, message: OutboundMessage) -> None:
        direct = OutboundMessage(queue, message.body, message.headers, message.content_type, message.message_id)
        self.submit("", ((direct, True),))

    def submit(self, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> None:
        """Publishes ``messages`` (from any thread) and returns once they are published, or raises what went wrong
        with them (not with other callers' messages): see the class docstring (group commit). A caller interrupted
        while it waits (a signal's exception) leaves the others going: its request is withdrawn if no leader took it
        yet, and the lead is passed on if it was handed to it."""
        request = PublishRequest(exchange, messages)
        with self._turn:
            self._waiting.append(request)
            if self._leader is None:
                self._leader, request.leads = request, True
            elif self._gathering and len(self._waiting) >= self._group_size:
                self._turn.notify()
        try:
            if not request.leads:
                request.wait()
            if not request.done:  # this caller leads: its own request is among the group it takes
                self._lead()
        finally:
            with self._turn:
                if request in self._waiting:  # interrupted before a leader took it: never published
                    self._waiting.remove(request)
                if self._leader is request:
                    self._leader = self._waiting[0] if self._waiting else None
                    if self._leader is not None:
                        self._leader.hand_lead()
        if request.error is not None:
            raise request.error

    def _lead(self) -> None:
        group: list[PublishRequest] = []
        try:
            group = self._gather()
            with self._publisher_lock:
                self.publish_group(group)
        finally:
            for left in group:  # only when publish_group itself broke (a bug, an interrupt)
                if not left.done:
                    left.finish(TransportError(f"publishing to {left.exchange!r} was interrupted: not sent"))

    def _gather(self) -> list[PublishRequest]:
        """The requests queued so far, once as many as the previous group had are there or the gather window
        passed (at once without a window); the next gathering waits for as many as this one took."""
        window = self.gather_window()
        with self._turn:
            if window > 0 and len(self._waiting) < self._group_size:
                deadline = time.monotonic() + window
                self._gathering = True
                try:
                    while len(self._waiting) < self._group_size and (remaining := deadline - time.monotonic()) > 0:
                        self._turn.wait(remaining)
                finally:
                    self._gathering = False
            group, self._waiting = self._waiting, []
            self._group_size = len(group)
        return group

    def publish_group(self, group: Sequence[PublishRequest]) -> None:
        """Publishes the requests queued meanwhile (the publisher lock is held) and finishes each with its own
        outcome; here one after the other."""
        for request in group:
            request.run(self.publish_request)

    def publish_request(self, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> None:
        """One caller's messages, retried on a lost connection; a failure names what was published and what not."""
        if len(messages) == 1:
            message, mandatory = messages[0]
            self._with_retries(
                publishing(exchange, message),
                lambda producer: self.publish_once(producer, exchange, message, mandatory),
            )
            return
        for index, (message, mandatory) in enumerate(messages):
            try:
                self.publish_request(exchange, ((message, mandatory),))
            except TransportError as exc:
                published = [m.message_id for m, _ in messages[:index]]
                unsent = [m.message_id for m, _ in messages[index + 1 :]]
                raise type(exc)(
                    f"{exc}. Of the batch of {len(messages)}: published {published}; not sent {unsent}"
                ) from exc

    # -- topology --------------------------------------------------------------------------------------------------

    def declare_exchange(self, exchange: str) -> None:
        if exchange in self._declared:
            return
        self.with_retries(
            f"declaring exchange {exchange!r}",
            lambda producer: Exchange(exchange, "topic", durable=True)(producer.channel).declare(),
        )
        self._declared.add(exchange)

    def setup_endpoint(self, topology: EndpointTopology) -> None:
        with self.connection(f"declaring queue {topology.queue!r}") as channel:
            exchange = Exchange(topology.exchange, "topic", durable=True)
            queue = Queue(
                topology.queue,
                durable=True,
                auto_delete=False,
                bindings=[binding(exchange, routing_key=key) for key in topology.bindings],
                queue_arguments=self.queue_arguments(topology.queue),
            )
            queue(channel).declare()
            dead_letter = dead_letter_queue(topology.queue)
            arguments = self.queue_arguments(dead_letter, dead_letter=True)
            Queue(dead_letter, durable=True, auto_delete=False, queue_arguments=arguments)(channel).declare()

    def queue_size(self, queue: str) -> int:
        with self.connection(f"reading the size of queue {queue!r}") as channel:
            try:
                return int(channel.queue_declare(queue, passive=True).message_count)
            except Exception as exc:
                if not_found(exc):
                    return 0
                raise

    def remove_endpoint(self, topology: EndpointTopology, delays: Iterable[int] = ()) -> None:
        """Deletes an endpoint's queue, its dead letter queue and delayed copies, and the exchange, with every
        message in them (for tests and tooling; ``delays`` names delays used by other processes)."""
        with self.connection(f"deleting the queues of {topology.queue!r}") as channel:
            for name in (topology.queue, dead_letter_queue(topology.queue)):
                channel.queue_delete(name)
            channel.exchange_delete(topology.exchange)

    # -- consuming -------------------------------------------------------------------------------------------------

    def open_receiver(self, queue: str, *, prefetch_count: int) -> Receiver:
        return KombuReceiver(self, queue, prefetch_count)

    @contextmanager
    def browse(self, queue: str) -> Iterator[Iterator[Delivery]]:
        receiver = KombuReceiver(self, queue, prefetch_count=0, consume=False)
        deliveries: list[Delivery] = []

        def read() -> Iterator[Delivery]:
            if receiver.queue_exists():
                take = Queue(queue, no_declare=True)(receiver.channel).get
                while (message := receiver.exclusively("reading queue", queue, take, accept=ACCEPT)) is not None:
                    deliveries.append(KombuDelivery(message, receiver))
                    yield deliveries[-1]

        try:
            # Read as the caller asks where a requeue puts a message back in place, so a caller that stops early
            # leaves the rest unread; else read all first, so that putting back at the tail keeps the order.
            yield read() if self.requeues_in_place else iter(list(read()))
        finally:
            for delivery in deliveries:
                if not delivery.settled:
                    delivery.requeue()
            receiver.close()

    def close(self) -> None:
        self.reset_publisher()


class KombuReceiver(Receiver):
    """A consumer on one queue, on its own connection. A lock serialises every use of the connection between the
    consuming thread and the heartbeat thread that keeps an AMQP connection alive while a handler runs long."""

    def __init__(self, transport: KombuTransport, queue: str, prefetch_count: int, *, consume: bool = True) -> None:
        self.transport = transport
        self.queue = queue
        self.dead: TransportError | None = None
        self._buffer: deque[KombuDelivery] = deque()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._last_poll_hook = 0.0
        self._consumer: kombu.Consumer | None = None
        self._connection = transport.consumer_connection()
        self._errors = transport.connect(self._connection, f"consuming queue {queue!r}")
        try:
            self.exclusively("consuming queue", queue, self._open, prefetch_count, consume)
        except BaseException:
            self._connection.release()
            raise
        interval = transport.heartbeat_interval()
        if consume and interval is not None:
            threading.Thread(target=self._keep_alive, args=(interval,), name=f"heartbeat-{queue}", daemon=True).start()

    def _open(self, prefetch_count: int, consume: bool) -> None:
        self.channel = self._connection.channel()
        self.producer = kombu.Producer(self.channel)
        if consume:
            self._consumer = kombu.Consumer(
                self.channel,
                queues=[Queue(self.queue, no_declare=True)],
                on_message=self._on_message,
                accept=ACCEPT,
                prefetch_count=prefetch_count,
                auto_declare=False,
                no_ack=False,
            )
            self._consumer.consume()

    def exclusively(self, action: str, subject: object, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``operation(*args, **kwargs)`` with exclusive use of the connection. Broker errors become a
        TransportError and the connection is never used again (no ack is sent for deliveries of a dead channel: the
        broker redelivers them). ``action`` and ``subject`` (e.g. a message id) only make the error message."""
        with self._lock:
            if self.dead is not None:
                raise TransportError(
                    f"{_describe(action, subject)}: the connection was lost earlier ({self.dead}); the broker keeps "
                    "the message for redelivery"
                )
            try:
                return operation(*args, **kwargs)
            except TransportError as exc:
                self.dead = exc
                raise
            except Exception as error:
                mapped = self.transport.broker_error(_describe(action, subject), error, self._errors)
                if mapped is None:
                    raise  # not the broker's: a bug, the connection stays usable
                self.dead = mapped
                raise mapped from error

    def queue_exists(self) -> bool:
        """Whether the queue exists (asking for a missing one closes an AMQP channel: a fresh one is opened)."""
        try:
            self.exclusively("looking for queue", self.queue, self.channel.queue_declare, self.queue, passive=True)
        except TransportError as exc:
            if exc.__cause__ is None or not not_found(exc.__cause__):
                raise
            with self._lock:
                self.dead = None
                self.channel = self._connection.channel()
                self.producer = kombu.Producer(self.channel)
            return False
        return True

    def _keep_alive(self, interval: float) -> None:
        while not self._closed.wait(interval):
            try:
                self.exclusively("heartbeat", None, self._heartbeat)
            except TransportError as exc:
                log.warning("consumer connection of %r lost: %s", self.queue, exc)
                return

    def _heartbeat(self) -> None:
        if self._closed.is_set():  # closed while this thread waited for the connection: it is gone
            return
        self._connection.heartbeat_check()
        with suppress(TimeoutError):  # read what arrived, the broker's heartbeats included
            self._connection.drain_events(timeout=0.01)

    def _on_message(self, message: Any) -> None:
        self._buffer.append(KombuDelivery(message, self))

    def _cancel_consumer(self) -> None:
        """Stops the broker sending more (from inside :meth:`exclusively`)."""
        if self._consumer is not None:
            self._consumer.cancel()

    def send(
        self, queue: str, body: bytes, headers: Mapping[str, Any], content_type: str | None, **options: Any
    ) -> None:
        """Publishes a persistent message straight to ``queue`` on this receiver's channel (from inside
        :meth:`exclusively`); ``options`` go to kombu's ``Producer.publish`` (``mandatory``, ...)."""
        self.producer.publish(
            body,
            exchange="",
            routing_key=queue,
            headers=headers,
            content_type=content_type or "application/octet-stream",
            content_encoding="binary",
            delivery_mode=2,
            retry=False,
            **options,
        )

    def receive(self, timeout: float) -> Delivery | None:
        if self._buffer:  # prefetched already: no clock, no wait
            return self._buffer.popleft()
        deadline = time.monotonic() + timeout
        while not self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.exclusively("consuming queue", self.queue, self._wait, remaining)
        return self._buffer.popleft()

    def _wait(self, seconds: float) -> None:
        """Reads what the broker sends for up to ``seconds``; a transport with a :attr:`~KombuTransport.poll_step`
        waits in steps of it and runs its :meth:`~KombuTransport.before_poll` hook between them."""
        step = self.transport.poll_step
        if step is not None:
            now = time.monotonic()
            if now - self._last_poll_hook >= step:
                self._last_poll_hook = now
                self.transport.before_poll(self)
            seconds = min(seconds, step)
        with suppress(TimeoutError):
            self._connection.drain_events(timeout=seconds)

    def close(self) -> None:
        self._closed.set()
        if self.dead is None:
            try:
                while self._buffer:  # prefetched, never handed out: back to the queue
                    self._buffer.popleft().requeue()
                self.exclusively("cancelling the consumer of", self.queue, self._cancel_consumer)
            except TransportError:
                log.warning(
                    "closing the consumer of %r failed; the broker redelivers what was not acknowledged",
                    self.queue,
                    exc_info=True,
                )
        with self._lock:
            try:
                if self.dead is None:
                    self._connection.release()
                else:  # no goodbye on a dead connection: it would only wait for an answer that never comes
                    self._connection.collect()
            except Exception:
                log.debug("releasing the consumer connection of %r failed", self.queue, exc_info=True)


class KombuDelivery(Delivery):
    """A kombu message handed out by a :class:`KombuReceiver`; settling it uses the receiver's connection."""

    def __init__(self, message: Any, receiver: KombuReceiver) -> None:
        self.message = message
        self._receiver = receiver
        self._settled = False
        body = message.body
        self.body = body.encode() if isinstance(body, str) else bytes(body)
        self.headers = dict(message.headers or {})  # our own copy: kombu's dict is never shared with the layers above
        self.content_type = message.content_type or None
        self.queue = receiver.queue

    @property
    def settled(self) -> bool:
        return self._settled

    def _settle(self, action: str, operation: Callable[..., None], *args: Any) -> None:
        if self._settled:
            raise TransportError(f"message {self.headers.get('id')!r} was already settled; cannot {action} it")
        self._receiver.exclusively(action, self.headers.get("id"), operation, *args)
        self._settled = True

    def ack(self) -> None:
        self._settle("ack", self.message.ack)

    def requeue(self) -> None:
        self._settle("requeue", self._receiver.transport.requeue, self._receiver, self)

    def dead_letter_copy(self, extra_headers: Mapping[str, Any]) -> None:
        receiver, headers = self._receiver, {**self.headers, **extra_headers}
        receiver.exclusively(
            "dead-lettering", self.headers.get("id"), receiver.transport.dead_letter, receiver, self, headers
        )

    def delayed_copy(self, delay_ms: int, extra_headers: Mapping[str, Any]) -> None:
        receiver, headers = self._receiver, {**self.headers, **extra_headers}
        transport = receiver.transport
        receiver.exclusively("delaying", self.headers.get("id"), transport.delay, receiver, self, delay_ms, headers)
