"""The dead letter: messages that failed for good, kept on the broker with their failure's details.

Each endpoint's dead letter is the durable queue ``<endpoint queue>.dead_letter``. An entry is the original message
(body and headers) plus ``failure.*`` headers: the error class and message, a traceback summary, the endpoint, the
handler, the reason (poison message or retries exhausted), the time and the attempt count. Entries are identified
by the original message id (the ``id`` header). Replaying an entry sends it back to the queue of the endpoint it
failed in, with its original headers (the retry count starts again). An event whose handlers failed separately has
one entry per handler, all with the event's id: replay and delete act on all of them.
"""

from __future__ import annotations

import base64
import builtins
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs

from container_messaging.distributed.topology import PAYLOAD_TYPE, PayloadType
from container_messaging.errors import DeadLetterError
from container_messaging.messages import ID, RETRY_NUMBER, TARGET_HANDLER, FailureHeader
from container_messaging.transports.base import BaseTransport, Delivery, OutboundMessage, dead_letter_queue

__all__ = ["DeadLetter", "DeadLetterEntry"]


def _optional_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@attrs.frozen
class DeadLetterEntry:
    """One failed message: its identity, its failure, and the original body and headers."""

    message_id: str
    endpoint: str
    handler: str | None
    reason: str | None
    error_class: str | None
    error_message: str | None
    trace: str | None = attrs.field(repr=False)
    failed_at: int | None
    first_failed_at: int | None
    attempts: int | None
    routing_key: str | None
    payload_type: str | None
    content_type: str | None
    body: bytes = attrs.field(repr=lambda body: f"<{len(body)} bytes>")
    headers: Mapping[str, Any] = attrs.field(repr=False)

    @classmethod
    def from_delivery(cls, delivery: Delivery, endpoint: str) -> DeadLetterEntry:
        h = delivery.headers
        original = {k: v for k, v in h.items() if k not in FailureHeader.ALL}
        return cls(
            message_id=str(h.get(ID, "")),
            endpoint=str(h.get(FailureHeader.ENDPOINT, endpoint)),
            handler=h.get(FailureHeader.HANDLER),
            reason=h.get(FailureHeader.REASON),
            error_class=h.get(FailureHeader.EXCEPTION_CLASS),
            error_message=h.get(FailureHeader.MESSAGE),
            trace=h.get(FailureHeader.TRACE),
            failed_at=_optional_int(h.get(FailureHeader.TIME)),
            first_failed_at=_optional_int(h.get(FailureHeader.FIRST_TIME)),
            attempts=_optional_int(h.get(FailureHeader.ATTEMPTS)),
            routing_key=h.get("ecotone.distributed.routingKey"),
            payload_type=h.get("ecotone.distributed.payloadType"),
            content_type=delivery.content_type,
            body=delivery.body,
            headers=original,
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view: the body as text when it is UTF-8, else base64 (``body_base64``)."""
        data = attrs.asdict(self, filter=attrs.filters.exclude(attrs.fields(DeadLetterEntry).body))
        data["headers"] = {
            k: v if isinstance(v, str | int | float | bool) or v is None else str(v) for k, v in self.headers.items()
        }
        try:
            data["body"] = self.body.decode()
        except UnicodeDecodeError:
            data["body_base64"] = base64.b64encode(self.body).decode()
        return data


class DeadLetter:
    """The dead letter of one endpoint: ``count``, ``list``, ``get``, ``replay``, ``replay_all``, ``delete``.

    Entries are read from the head of the queue (the transport's ``browse``) and the reading stops as soon as the
    operation has what it needs: ``list(limit)`` reads ``limit`` entries, an operation on one message id reads up
    to that id's entry (the whole queue for an event: its handlers may have failed separately, each with its own
    entry). Where the broker cannot put a message back in place (memory), the transport reads the whole
    queue anyway. What was read and not taken goes back to the queue, in order. Replaying stops at an entry it
    already replayed (one that failed again while it ran), so it always ends.
    """

    def __init__(self, transport: BaseTransport, queue: str, endpoint: str) -> None:
        self._transport = transport
        self._queue = queue
        self._dead_letter_queue = dead_letter_queue(queue)
        self.endpoint = endpoint

    def __repr__(self) -> str:
        return f"<DeadLetter endpoint={self.endpoint!r} queue={self._dead_letter_queue!r}>"

    def count(self) -> int:
        """How many entries the dead letter holds (one question to the broker; nothing is read)."""
        return self._transport.queue_size(self._dead_letter_queue)

    def list(self, limit: int | None = None) -> builtins.list[DeadLetterEntry]:
        """The entries, oldest first (at most ``limit``); the entries stay where they are."""
        with self._transport.browse(self._dead_letter_queue) as deliveries:
            return [DeadLetterEntry.from_delivery(d, self.endpoint) for d in itertools.islice(deliveries, limit)]

    def get(self, message_id: str) -> builtins.list[DeadLetterEntry]:
        """The entries of one message id (several when several handlers of one event failed)."""
        with self._transport.browse(self._dead_letter_queue) as deliveries:
            entries = [DeadLetterEntry.from_delivery(d, self.endpoint) for d in self._of(message_id, deliveries)]
        if not entries:
            raise self._missing(message_id)
        return entries

    def replay(self, message_id: str) -> int:
        """Sends the message back to the endpoint's queue with its original headers; returns the entries replayed."""
        return self._take(message_id, self._send_back)

    def replay_all(self) -> int:
        """Replays every entry; returns how many."""
        return self._take(None, self._send_back)

    def delete(self, message_id: str) -> int:
        """Removes the entries of ``message_id`` for good; returns how many."""
        return self._take(message_id, lambda _delivery: None)

    def _missing(self, message_id: str) -> DeadLetterError:
        return DeadLetterError(f"no dead letter entry with message id {message_id!r} for endpoint {self.endpoint!r}")

    @staticmethod
    def _of(message_id: str, deliveries: Iterable[Delivery]) -> Iterator[Delivery]:
        """The deliveries of ``message_id``: up to its first entry, or to the end of the queue for an event."""
        for delivery in deliveries:
            if str(delivery.headers.get(ID, "")) == message_id:
                yield delivery
                if delivery.headers.get(PAYLOAD_TYPE) != PayloadType.EVENT:
                    return

    def _take(self, message_id: str | None, action: Callable[[Delivery], None]) -> int:
        taken: set[tuple[str, object]] = set()
        with self._transport.browse(self._dead_letter_queue) as deliveries:
            for delivery in deliveries if message_id is None else self._of(message_id, deliveries):
                entry = (str(delivery.headers.get(ID, "")), delivery.headers.get(FailureHeader.HANDLER))
                if entry in taken:  # an entry replayed here that failed again meanwhile: this is where it ends
                    break
                action(delivery)
                delivery.ack()
                taken.add(entry)
        if message_id is not None and not taken:
            raise self._missing(message_id)
        return len(taken)

    def _send_back(self, delivery: Delivery) -> None:
        drop = {*FailureHeader.ALL, RETRY_NUMBER}
        headers = {k: v for k, v in delivery.headers.items() if k not in drop}
        if headers.get(TARGET_HANDLER) is None:
            headers.pop(TARGET_HANDLER, None)
        message = OutboundMessage(
            self._queue,
            delivery.body,
            headers,
            delivery.content_type or "application/octet-stream",
            str(headers.get(ID, "")),
        )
        self._transport.send_to_queue(self._queue, message)
