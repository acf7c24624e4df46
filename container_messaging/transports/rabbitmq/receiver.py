"""The RabbitMQ consumer: py-amqp's deliveries taken without kombu's Consumer, frames read from one large read,
acknowledgements sent in groups (see :class:`RabbitMqReceiver`)."""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable
from typing import Any, Final

import kombu
from amqp.transport import TCPTransport

from container_messaging.errors import TransportError
from container_messaging.transports._kombu_base import KombuDelivery, KombuReceiver, KombuTransport
from container_messaging.transports.rabbitmq.frames import FrameReader

__all__ = ["ACK_EVERY", "DeferredAcks", "RabbitMqDelivery", "RabbitMqReceiver"]

log = logging.getLogger("container_messaging.transport")

#: A consumer sends its acknowledgements in groups of at most this many (fewer with a small prefetch): one
#: ``basic.ack`` frame instead of ten saves about 20 us of CPU per message, a third of the consumer's (BENCHMARKS.md,
#: scenario 8). After a crash (SIGKILL) at most this many handled messages are redelivered; see
#: :class:`RabbitMqReceiver`.
ACK_EVERY: Final = 10

class DeferredAcks:
    """A consumer's acknowledgements, deferred to be sent in groups: which to send, and when.

    Delivery tags count up on a channel. :meth:`acknowledge` defers an acknowledgement and says when ``every`` wait;
    :meth:`flush` gives the ``basic.ack`` frames that send them all: one with ``multiple`` up to the highest deferred
    tag below every unsettled one (received, and neither acknowledged nor requeued: prefetched or in hand), which
    therefore acknowledges no delivery in hand, and one without ``multiple`` for each deferred tag above that one
    (deliveries that finished before an earlier one, at concurrency N)."""

    __slots__ = ("deferred", "every", "unsettled")

    def __init__(self, every: int) -> None:
        self.every = every
        self.unsettled: set[int] = set()
        self.deferred: list[int] = []  # acknowledged by the consumer, not sent yet

    def received(self, tag: int) -> None:
        self.unsettled.add(tag)

    def settled(self, tag: int) -> None:
        """Delivery ``tag`` is settled otherwise (requeued)."""
        self.unsettled.discard(tag)

    def acknowledge(self, tag: int) -> bool:
        """Defers the acknowledgement of ``tag``; whether :meth:`flush` is due (``every`` of them wait)."""
        self.unsettled.discard(tag)
        deferred = self.deferred
        deferred.append(tag)
        return len(deferred) >= self.every

    def flush(self) -> list[tuple[int, bool]]:
        """The ``(delivery tag, multiple)`` of the ``basic.ack`` frames that send every deferred acknowledgement;
        none is deferred afterwards."""
        deferred, self.deferred = self.deferred, []
        if not deferred:
            return []
        lowest = min(self.unsettled) if self.unsettled else None
        if lowest is None:
            return [(max(deferred), True)]
        below = [tag for tag in deferred if tag < lowest]
        frames = [(max(below), True)] if below else []
        return frames + [(tag, False) for tag in deferred if tag > lowest]


class RabbitMqReceiver(KombuReceiver):
    """A consumer on py-amqp's channel itself: deliveries made straight from py-amqp's messages, frames read from a
    buffer, acknowledgements sent in groups.

    Each of the three makes the consumer's rate (benchmarks, scenario 8): py-amqp's ``basic_consume`` hands each
    message to :meth:`_on_delivery`, which makes the :class:`RabbitMqDelivery` from it (kombu's Consumer would wrap it
    in a kombu Message first); a plain TCP connection cuts its frames out of one large read (:class:`.FrameReader`)
    instead of three system calls per frame, and waits with ``poll`` rather than switching the socket's timeout twice
    per frame; one ``basic.ack`` with ``multiple`` acknowledges several handled messages.

    An acknowledgement is deferred; the deferred ones are sent (:meth:`flush_acks`) when there are ``ack_every``
    (:data:`ACK_EVERY`, at most half the prefetch), before this receiver waits for the network with nothing to read
    (an idle consumer holds nothing handled unacknowledged), before a requeue or a copy goes on the channel, by the
    heartbeat thread (a long handler holds them no longer than a heartbeat interval) and on close. ``multiple``
    covers the deferred tags below the lowest tag not settled yet (prefetched or in hand), so it never acknowledges
    a message in hand; a deferred tag above that one (at concurrency N messages finish out of order) is acknowledged
    on its own. A crash (SIGKILL) loses at most ``ack_every`` acknowledgements: the broker redelivers those messages
    (a persistent deduplication store skips them); deferred acknowledgements of a lost connection are void likewise.
    """

    def __init__(
        self, transport: KombuTransport, queue: str, prefetch_count: int, *, ack_every: int = ACK_EVERY
    ) -> None:
        self._acks = DeferredAcks(max(1, min(ack_every, prefetch_count // 2)) if prefetch_count else ack_every)
        self._consumer_tag: str | None = None
        super().__init__(transport, queue, prefetch_count)

    def _open(self, prefetch_count: int, consume: bool) -> None:
        self.channel = self._connection.channel()
        self.producer = kombu.Producer(self.channel)
        self._amqp = self._connection.connection  # py-amqp's connection
        transport = self._amqp.transport
        self._frames = FrameReader(transport) if isinstance(transport, TCPTransport) else None
        self._on_frame = self._amqp.on_inbound_frame  # py-amqp's frame handler: it dispatches whole methods
        self._ready = _readiness(transport.sock)
        if consume:
            self.channel.basic_qos(0, prefetch_count, False)
            self._consumer_tag = self.channel.basic_consume(self.queue, callback=self._on_delivery)

    def _on_delivery(self, message: Any) -> None:
        tag = message.delivery_info["delivery_tag"]
        self._acks.received(tag)
        self._buffer.append(RabbitMqDelivery(self, tag, message))

    def _wait(self, seconds: float) -> None:
        """Reads what the broker sends until a whole method arrived (a delivery, mostly) or ``seconds`` passed;
        the deferred acknowledgements are sent first whenever there is nothing to read."""
        frames, ready, on_frame = self._frames, self._ready, self._on_frame
        deadline = time.monotonic() + seconds
        while True:
            if not ((frames is not None and frames.holds()) or ready(0.0)):
                if self._acks.deferred:
                    self.flush_acks()
                left = deadline - time.monotonic()
                if left <= 0 or not ready(left):
                    return
            try:
                if frames is not None:  # plain TCP: see FrameReader
                    frame = frames.read_frame()
                else:  # TLS: py-amqp reads with a timeout set on the socket
                    with self._amqp.transport.having_timeout(max(deadline - time.monotonic(), 0.001)):
                        frame = self._amqp.transport.read_frame()
            except TimeoutError:
                return
            if on_frame(frame):
                return

    def acknowledge(self, tag: int) -> None:
        """Acknowledges delivery ``tag`` (from inside :meth:`exclusively`), deferred as the class docstring says."""
        if self._acks.acknowledge(tag):
            self.flush_acks()

    def reject(self, tag: int) -> None:
        """Puts delivery ``tag`` back on its queue (from inside :meth:`exclusively`)."""
        self.flush_acks()
        self._acks.settled(tag)
        self.channel.basic_reject(tag, requeue=True)

    def flush_acks(self) -> None:
        """Sends the deferred acknowledgements (from inside :meth:`exclusively`)."""
        if self._acks.deferred:
            channel = self.channel
            for tag, multiple in self._acks.flush():
                channel.basic_ack(tag, multiple=multiple)

    def _heartbeat(self) -> None:
        if not self._closed.is_set():
            self.flush_acks()
        super()._heartbeat()

    def _cancel_consumer(self) -> None:
        if self._consumer_tag is not None:
            self.channel.basic_cancel(self._consumer_tag)

    def close(self) -> None:
        if self.dead is None and self._acks.deferred and not self._closed.is_set():
            try:
                self.exclusively("acknowledging the handled messages of", self.queue, self.flush_acks)
            except TransportError:
                log.warning("acknowledging the handled messages of %r failed; the broker redelivers them", self.queue)
        super().close()


def _readiness(sock: Any) -> Callable[[float], bool]:
    """``ready(seconds)``: whether ``sock`` has bytes to read (TLS: decrypted bytes it holds count too), waiting up to
    ``seconds`` for them."""
    pending = getattr(sock, "pending", None)
    poller = select.poll() if hasattr(select, "poll") else None  # not on Windows
    if poller is not None:
        poller.register(sock, select.POLLIN)

    def ready(seconds: float) -> bool:
        if pending is not None and pending():
            return True
        if poller is not None:
            return bool(poller.poll(seconds * 1000))
        return bool(select.select([sock], [], [], seconds)[0])

    return ready


class RabbitMqDelivery(KombuDelivery):
    """A message handed over by py-amqp to a :class:`RabbitMqReceiver`, settled through it by delivery tag."""

    def __init__(self, receiver: RabbitMqReceiver, tag: int, message: Any) -> None:
        self._receiver = self._rabbit = receiver
        self._settled = False
        self.tag = tag
        body = message.body
        self.body = body if type(body) is bytes else body.encode() if isinstance(body, str) else bytes(body)
        properties = message.properties
        # py-amqp decoded this dict for this message alone and nothing else keeps it: it is the delivery's own
        self.headers = properties.get("application_headers") or {}
        self.content_type = properties.get("content_type") or None
        self.queue = receiver.queue

    def ack(self) -> None:
        self._settle("ack", self._rabbit.acknowledge, self.tag)

    def requeue(self) -> None:
        self._settle("requeue", self._rabbit.reject, self.tag)
