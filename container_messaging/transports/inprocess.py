"""The in-process transport: the port over an :class:`InProcessBroker`, exchanges and queues in this process's memory.

Every :class:`InProcessTransport` given the same broker reaches the same queues: several containers in one process
(the test system's services) talk through them. Nothing is shared but what the wire would carry: bodies are bytes,
and headers are copied on every hop. Where the framework can tell, the broker behaves as RabbitMQ does:

- a topic exchange routes by AMQP rules, one copy per bound queue; publishing to an exchange never declared is a
  :class:`~container_messaging.errors.TransportError`, and a mandatory message no queue takes is an
  :class:`~container_messaging.errors.UnroutableMessageError` (so is ``send_to_queue`` to a queue that does not
  exist: in memory nothing may vanish);
- a requeued message, and every message a receiver held unsettled when it closed, goes back to the head of its own
  queue, marked redelivered;
- a delayed copy waits, without being held by anyone, until the broker's clock reaches its time; then it joins the
  tail of its queue. The clock is ``time.monotonic`` unless the broker is given another (a test clock, which moves
  only when the test says so).

With ``synchronous=True`` (the test system's), everything happens in the caller's thread: a receiver with nothing
ready returns None at once instead of waiting, since nothing could arrive meanwhile, so a consumer run with
``finish_when_no_messages`` stops the moment its queue is empty. Otherwise ``receive`` waits, as a broker's does, for
a message or the timeout, so consumers may run in other threads.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs

from container_messaging.errors import TransportError, UnroutableMessageError
from container_messaging.messages import ID
from container_messaging.transports._virtual import topic_matches
from container_messaging.transports.base import (
    BaseTransport,
    Delivery,
    EndpointTopology,
    OutboundMessage,
    Receiver,
    dead_letter_queue,
)

__all__ = ["InProcessBroker", "InProcessTransport"]


@attrs.frozen
class _Stored:
    """A message on a queue: what a broker keeps (its headers are never changed; deliveries get copies)."""

    body: bytes = attrs.field(repr=lambda body: f"<{len(body)} bytes>")
    headers: Mapping[str, Any]
    content_type: str | None
    redelivered: bool = False


class InProcessBroker:
    """Exchanges, bindings and queues in memory, shared by the :class:`InProcessTransport` s built on it.

    ``clock`` (seconds) decides when delayed copies are due; ``synchronous`` makes receivers return at once when
    nothing is ready (see the module docstring). Safe to use from several threads.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, synchronous: bool = False) -> None:
        self.clock = clock
        self.synchronous = synchronous
        self._lock = threading.Condition()
        self._exchanges: dict[str, set[tuple[str, str]]] = {}  # exchange -> {(binding key, queue)}
        self._queues: dict[str, deque[_Stored]] = {}
        self._delayed: list[tuple[float, int, str, _Stored]] = []  # a heap of (due, order, queue, message)
        self._order = itertools.count()

    def __repr__(self) -> str:
        with self._lock:
            ready = sum(len(queue) for queue in self._queues.values())
            return (
                f"<InProcessBroker exchanges={len(self._exchanges)} queues={len(self._queues)} ready={ready} "
                f"delayed={len(self._delayed)}>"
            )

    # -- topology --------------------------------------------------------------------------------------------------

    def declare_exchange(self, exchange: str) -> None:
        with self._lock:
            self._exchanges.setdefault(exchange, set())

    def declare_queue(self, queue: str) -> None:
        with self._lock:
            self._queues.setdefault(queue, deque())

    def bind(self, exchange: str, binding_key: str, queue: str) -> None:
        with self._lock:
            self._exchanges.setdefault(exchange, set()).add((binding_key, queue))

    def has_queue(self, queue: str) -> bool:
        with self._lock:
            return queue in self._queues

    def route(self, exchange: str, routing_key: str) -> list[str]:
        """The queues ``exchange`` delivers ``routing_key`` to (AMQP topic rules), each once; a TransportError when
        the exchange was never declared (as RabbitMQ's NOT_FOUND)."""
        with self._lock:
            bindings = self._exchanges.get(exchange)
            if bindings is None:
                raise TransportError(f"no exchange {exchange!r}: declare it first (setup, or a sender's auto_declare)")
            return sorted({queue for key, queue in bindings if topic_matches(key, routing_key)})

    def remove(self, topology: EndpointTopology) -> None:
        """Deletes the endpoint's queue, its dead letter queue, their delayed copies and the exchange."""
        names = {topology.queue, dead_letter_queue(topology.queue)}
        with self._lock:
            for name in names:
                self._queues.pop(name, None)
            self._delayed = [entry for entry in self._delayed if entry[2] not in names]
            heapq.heapify(self._delayed)
            self._exchanges.pop(topology.exchange, None)

    # -- messages --------------------------------------------------------------------------------------------------

    def put(self, queue: str, message: _Stored, *, front: bool = False) -> None:
        """Adds ``message`` to ``queue`` (at the head with ``front``); an UnroutableMessageError when there is no
        such queue."""
        with self._lock:
            ready = self._queues.get(queue)
            if ready is None:
                raise UnroutableMessageError(f"no queue {queue!r} on this in-process broker: set its endpoint up first")
            if front:
                ready.appendleft(message)
            else:
                ready.append(message)
            self._lock.notify_all()

    def put_back(self, queue: str, messages: Iterable[_Stored]) -> None:
        """Returns messages taken from ``queue`` to its head, in the order given, marked redelivered (the queue is
        recreated if it was deleted meanwhile: nothing taken is lost)."""
        with self._lock:
            ready = self._queues.setdefault(queue, deque())
            ready.extendleft(reversed([attrs.evolve(message, redelivered=True) for message in messages]))
            self._lock.notify_all()

    def delay(self, queue: str, message: _Stored, delay_ms: int) -> None:
        """Keeps ``message`` aside until the clock reaches now + ``delay_ms``; then it joins the tail of ``queue``."""
        with self._lock:
            heapq.heappush(self._delayed, (self.clock() + delay_ms / 1000, next(self._order), queue, message))
            self._lock.notify_all()

    def _promote(self) -> None:
        """Moves the delayed copies that are due onto their queues (the lock is held)."""
        now = self.clock()
        while self._delayed and self._delayed[0][0] <= now:
            _due, _order, queue, message = heapq.heappop(self._delayed)
            self._queues.setdefault(queue, deque()).append(message)

    def take(self, queue: str, timeout: float) -> _Stored | None:
        """The message at the head of ``queue``, waiting up to ``timeout`` seconds for one (not when synchronous)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                self._promote()
                ready = self._queues.get(queue)
                if ready:
                    return ready.popleft()
                remaining = deadline - time.monotonic()
                if self.synchronous or remaining <= 0:
                    return None
                if self._delayed:  # wake up when the next delayed copy is due (the clock counts seconds)
                    remaining = min(remaining, max(self._delayed[0][0] - self.clock(), 0.001))
                self._lock.wait(remaining)

    def take_all(self, queue: str) -> list[_Stored]:
        """Every message ready on ``queue``, in order (the queue is left empty)."""
        with self._lock:
            self._promote()
            ready = self._queues.get(queue)
            if not ready:
                return []
            taken = list(ready)
            ready.clear()
            return taken

    def size(self, queue: str) -> int:
        """How many messages are ready on ``queue`` (0 when it does not exist)."""
        with self._lock:
            self._promote()
            return len(self._queues.get(queue, ()))

    def waiting_for_delay(self, queue: str) -> int:
        """How many delayed copies for ``queue`` are not due yet."""
        with self._lock:
            self._promote()
            return sum(1 for entry in self._delayed if entry[2] == queue)


class InProcessTransport(BaseTransport):
    """The transport port on an :class:`InProcessBroker`; ``name`` only labels it (``inprocess://name``)."""

    def __init__(self, broker: InProcessBroker, name: str = "broker") -> None:
        self.broker = broker
        self.description = f"inprocess://{name}"

    def declare_exchange(self, exchange: str) -> None:
        self.broker.declare_exchange(exchange)

    def setup_endpoint(self, topology: EndpointTopology) -> None:
        broker = self.broker
        broker.declare_exchange(topology.exchange)
        broker.declare_queue(topology.queue)
        broker.declare_queue(dead_letter_queue(topology.queue))
        for key in topology.bindings:
            broker.bind(topology.exchange, key, topology.queue)

    def publish(self, exchange: str, message: OutboundMessage, *, mandatory: bool) -> None:
        try:
            queues = self.broker.route(exchange, message.routing_key)
        except TransportError as exc:
            raise TransportError(
                f"publishing to {exchange!r} with routing key {message.routing_key!r} failed on {self.description}: "
                f"{exc}"
            ) from exc
        if not queues:
            if mandatory:
                raise UnroutableMessageError(
                    f"no queue is bound to routing key {message.routing_key!r} on exchange {exchange!r} "
                    f"({self.description}): is the destination service's endpoint set up?"
                )
            return  # as on RabbitMQ: a message nobody subscribed to (an event) is dropped
        stored = _stored(message)
        for queue in queues:
            self.broker.put(queue, stored)

    def send_to_queue(self, queue: str, message: OutboundMessage) -> None:
        self.broker.put(queue, _stored(message))

    def open_receiver(self, queue: str, *, prefetch_count: int) -> Receiver:
        if not self.broker.has_queue(queue):
            raise TransportError(f"consuming queue {queue!r} failed on {self.description}: no such queue")
        return _InProcessReceiver(self.broker, queue)

    @contextmanager
    def browse(self, queue: str) -> Iterator[list[Delivery]]:
        receiver = _InProcessReceiver(self.broker, queue)
        try:
            yield [receiver.hand_out(message) for message in self.broker.take_all(queue)]
        finally:
            receiver.close()  # the unsettled ones go back to the head of the queue, in order

    def queue_size(self, queue: str) -> int:
        return self.broker.size(queue)

    def waiting_for_delay(self, queue: str) -> int:
        """How many delayed retry copies for ``queue`` are not due yet (on the broker's clock)."""
        return self.broker.waiting_for_delay(queue)

    def remove_endpoint(self, topology: EndpointTopology, delays: Iterable[int] = ()) -> None:
        """Deletes the endpoint's queues, delayed copies and exchange (``delays`` is the port's signature: the delays
        of this broker are not queues)."""
        self.broker.remove(topology)

    def close(self) -> None:
        """Nothing to close: the broker lives as long as its owner keeps it (receivers are closed by their users)."""


def _stored(message: OutboundMessage) -> _Stored:
    return _Stored(message.body, copy.deepcopy(dict(message.headers)), message.content_type)


class _InProcessReceiver(Receiver):
    """An open consumer on one queue: it keeps what it handed out until settled; closing gives the rest back."""

    def __init__(self, broker: InProcessBroker, queue: str) -> None:
        self.broker = broker
        self.queue = queue
        self._held: list[_InProcessDelivery] = []
        self._lock = threading.Lock()
        self._closed = False

    def hand_out(self, message: _Stored) -> _InProcessDelivery:
        delivery = _InProcessDelivery(self, message)
        with self._lock:
            self._held.append(delivery)
        return delivery

    def receive(self, timeout: float) -> Delivery | None:
        if self._closed:
            raise TransportError(f"the receiver of queue {self.queue!r} is closed")
        message = self.broker.take(self.queue, timeout)
        return None if message is None else self.hand_out(message)

    def settled(self, delivery: _InProcessDelivery) -> None:
        with self._lock:
            self._held.remove(delivery)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            held, self._held = self._held, []
            for delivery in held:
                delivery.given_back = True
        self.broker.put_back(self.queue, [delivery.message for delivery in held])


class _InProcessDelivery(Delivery):
    def __init__(self, receiver: _InProcessReceiver, message: _Stored) -> None:
        self.message = message
        self.body = message.body
        self.headers = copy.deepcopy(dict(message.headers))
        self.content_type = message.content_type
        self.redelivered = message.redelivered
        self.queue = receiver.queue
        self.given_back = False
        self._receiver = receiver
        self._settled = False

    @property
    def settled(self) -> bool:
        return self._settled

    def _settle(self, action: str) -> None:
        if self._settled or self.given_back:
            why = "was already settled" if self._settled else "went back to its queue when its receiver closed"
            raise TransportError(f"message {self.message.headers.get(ID)!r} {why}; cannot {action} it")
        self._settled = True
        self._receiver.settled(self)

    def ack(self) -> None:
        self._settle("ack")

    def requeue(self) -> None:
        self._settle("requeue")
        self._receiver.broker.put_back(self.queue, [self.message])

    def dead_letter_copy(self, extra_headers: Mapping[str, Any]) -> None:
        self._receiver.broker.put(dead_letter_queue(self.queue), self._copy(extra_headers))

    def delayed_copy(self, delay_ms: int, extra_headers: Mapping[str, Any]) -> None:
        self._receiver.broker.delay(self.queue, self._copy(extra_headers), delay_ms)

    def _copy(self, extra_headers: Mapping[str, Any]) -> _Stored:
        headers = {**copy.deepcopy(dict(self.message.headers)), **copy.deepcopy(dict(extra_headers))}
        return _Stored(self.body, headers, self.content_type)
