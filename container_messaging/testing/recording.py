"""Recording: a transport decorator that notes what one service publishes and what its endpoint receives.

:class:`RecordingTransport` wraps any transport (the in-process one, or a real broker's) and delegates every
operation to it. A message is recorded as *sent* once the inner transport published it (a refused or unroutable
message was not sent); a delivery is recorded as *received* when its consumer settles it, with the
:class:`~container_messaging.testing.recorded.Outcome` (or as returned, when its receiver closed without settling
it). Dead letter browsing and replays (``send_to_queue``) are administration, not traffic: they are not recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import attrs

from container_messaging.conversion import Converter
from container_messaging.messages import FailureHeader
from container_messaging.testing.recorded import Outcome, RecordedMessage, RecordedMessages
from container_messaging.transports.base import (
    BaseTransport,
    Delivery,
    EndpointTopology,
    OutboundMessage,
    Receiver,
)

__all__ = ["Recorder", "RecordingTransport"]


@attrs.frozen
class _Entry:
    body: bytes
    headers: Mapping[str, Any]
    content_type: str | None
    outcome: Outcome | None = None
    failure: Mapping[str, Any] | None = None


class Recorder:
    """The messages one service sent and received, in order (safe to append from several threads)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._sent: list[_Entry] = []
        self._received: list[_Entry] = []

    def __repr__(self) -> str:
        return f"<Recorder {self.service!r} sent={len(self._sent)} received={len(self._received)}>"

    def note_sent(self, messages: Sequence[OutboundMessage]) -> None:
        entries = [_Entry(m.body, dict(m.headers), m.content_type) for m in messages]
        with self._lock:
            self._sent.extend(entries)

    def note_received(self, entry: _Entry) -> None:
        with self._lock:
            self._received.append(entry)

    @property
    def received_count(self) -> int:
        """How many deliveries were recorded as received so far."""
        with self._lock:
            return len(self._received)

    def sent(self, converter: Converter) -> RecordedMessages:
        """What was sent, as :class:`RecordedMessages` whose payloads ``converter`` converts."""
        with self._lock:
            entries = list(self._sent)
        return self._records(entries, converter)

    def received(self, converter: Converter, since: int = 0) -> RecordedMessages:
        """What was received (from the ``since``-th delivery on)."""
        with self._lock:
            entries = self._received[since:]
        return self._records(entries, converter)

    def _records(self, entries: list[_Entry], converter: Converter) -> RecordedMessages:
        return RecordedMessages(
            RecordedMessage.of(
                self.service, e.body, e.headers, e.content_type, converter, outcome=e.outcome, failure=e.failure
            )
            for e in entries
        )

    def clear(self) -> None:
        with self._lock:
            self._sent.clear()
            self._received.clear()


class RecordingTransport(BaseTransport):
    """``inner``, with what passes through it noted in ``recorder``."""

    def __init__(self, inner: BaseTransport, recorder: Recorder) -> None:
        self.inner = inner
        self.recorder = recorder
        self.description = inner.description

    def declare_exchange(self, exchange: str) -> None:
        self.inner.declare_exchange(exchange)

    def setup_endpoint(self, topology: EndpointTopology) -> None:
        self.inner.setup_endpoint(topology)

    def publish(self, exchange: str, message: OutboundMessage, *, mandatory: bool) -> None:
        self.inner.publish(exchange, message, mandatory=mandatory)
        self.recorder.note_sent([message])

    def publish_many(self, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> None:
        """Publishes through the inner transport's batch; recorded when the whole batch was published."""
        self.inner.publish_many(exchange, messages)
        self.recorder.note_sent([message for message, _mandatory in messages])

    def send_to_queue(self, queue: str, message: OutboundMessage) -> None:
        self.inner.send_to_queue(queue, message)

    def open_receiver(self, queue: str, *, prefetch_count: int) -> Receiver:
        return _RecordingReceiver(self.inner.open_receiver(queue, prefetch_count=prefetch_count), self.recorder)

    def browse(self, queue: str) -> AbstractContextManager[Iterable[Delivery]]:
        return self.inner.browse(queue)

    def queue_size(self, queue: str) -> int:
        return self.inner.queue_size(queue)

    def close(self) -> None:
        self.inner.close()


class _RecordingReceiver(Receiver):
    def __init__(self, inner: Receiver, recorder: Recorder) -> None:
        self._inner = inner
        self._recorder = recorder
        self._held: list[_RecordingDelivery] = []

    def receive(self, timeout: float) -> Delivery | None:
        delivery = self._inner.receive(timeout)
        if delivery is None:
            return None
        recording = _RecordingDelivery(delivery, self._settled)
        self._held.append(recording)
        return recording

    def _settled(self, delivery: _RecordingDelivery, outcome: Outcome) -> None:
        self._held.remove(delivery)
        self._recorder.note_received(delivery.entry(outcome))

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            held, self._held = self._held, []
            for delivery in held:
                self._recorder.note_received(delivery.entry(Outcome.RETURNED))


class _RecordingDelivery(Delivery):
    """A delivery whose settlement is noted; it shares the inner delivery's headers dict (a consumer may read and
    adopt it), and keeps a copy of the headers as they arrived for the record."""

    def __init__(self, inner: Delivery, settled: Callable[[_RecordingDelivery, Outcome], None]) -> None:
        self._inner = inner
        self._on_settled = settled
        self._arrived = dict(inner.headers)
        self._copies: list[Outcome] = []
        self._failure: Mapping[str, Any] | None = None
        self.body = inner.body
        self.headers = inner.headers
        self.content_type = inner.content_type
        self.queue = inner.queue

    @property
    def settled(self) -> bool:
        return self._inner.settled

    def entry(self, outcome: Outcome) -> _Entry:
        return _Entry(self.body, self._arrived, self.content_type, outcome, self._failure)

    def ack(self) -> None:
        self._inner.ack()
        outcome = Outcome.ACKNOWLEDGED
        if Outcome.DEAD_LETTERED in self._copies:
            outcome = Outcome.DEAD_LETTERED
        elif Outcome.RETRIED_LATER in self._copies:
            outcome = Outcome.RETRIED_LATER
        self._on_settled(self, outcome)

    def requeue(self) -> None:
        self._inner.requeue()
        self._on_settled(self, Outcome.REQUEUED)

    def dead_letter_copy(self, extra_headers: Mapping[str, Any]) -> None:
        self._inner.dead_letter_copy(extra_headers)
        self._copies.append(Outcome.DEAD_LETTERED)
        if self._failure is None:
            self._failure = {k: v for k, v in extra_headers.items() if k in FailureHeader.ALL}

    def delayed_copy(self, delay_ms: int, extra_headers: Mapping[str, Any]) -> None:
        self._inner.delayed_copy(delay_ms, extra_headers)
        self._copies.append(Outcome.RETRIED_LATER)
