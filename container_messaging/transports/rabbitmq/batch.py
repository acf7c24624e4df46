"""What the broker said about messages published together (one sender's ``publish_many``, or several senders' in
one group), across attempts, and how the encoded frames reach the socket."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs

from container_messaging.errors import TransportError
from container_messaging.transports.base import OutboundMessage

__all__ = ["Batch", "WRITE_CHUNK", "raise_for_nacks", "write_frames"]

#: Encoded frames are written in chunks of about this many bytes.
WRITE_CHUNK: Final = 256 * 1024

def write_frames(connection: Any, data: bytearray) -> None:
    """Writes encoded frames on py-amqp's ``connection`` (its transport's ``write``: the whole buffer, bounded by the
    write timeout) and tells its heartbeat that something was sent, as py-amqp's own frame writer does."""
    if data:
        connection.transport.write(data)
        connection.bytes_sent += 1


def raise_for_nacks(batch: Batch, description: str) -> None:
    """A retryable TransportError when the broker refused (nacked) messages of the batch in this attempt: RabbitMQ
    may go on nacking on the channel that was refused, so the retry publishes them again on a new connection."""
    if batch.nacked:
        raise TransportError(
            f"the broker refused {len(batch.nacked)} of {len(batch.messages)} messages (basic.nack) on {description}: "
            f"{batch.ids(batch.nacked)}"
        )


@attrs.define
class Batch:
    """What the broker said so far about the messages of one batch, across attempts (by index): one
    ``publish_many``, or the requests of several callers published together (group commit)."""

    messages: list[tuple[str, OutboundMessage, bool]]  # (exchange, message, mandatory)
    sent: set[int] = attrs.Factory(set)
    confirmed: set[int] = attrs.Factory(set)
    #: refused by the broker (nack) in the latest attempt; published again by the next one
    nacked: set[int] = attrs.Factory(set)
    returned: list[tuple[str, str]] = attrs.Factory(list)  # (routing key, message id)
    #: delivery tag -> index, for the publishes of the current attempt the broker has not confirmed yet
    unconfirmed: dict[int, int] = attrs.Factory(dict)
    #: the messages of each sender, when the batch is several senders' (group commit): a sender with a message the
    #: wire cannot carry is left out with its error (``refused``) and the others are published; a batch of one
    #: sender (no ``senders``) is refused whole instead
    senders: list[range] = attrs.Factory(list)
    refused: dict[int, Exception] = attrs.Factory(dict)

    @classmethod
    def of(cls, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> Batch:
        return cls([(exchange, message, mandatory) for message, mandatory in messages])

    def add(self, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> range:
        """Adds one sender's messages; their indexes."""
        start = len(self.messages)
        self.messages += [(exchange, message, mandatory) for message, mandatory in messages]
        return range(start, len(self.messages))

    def pending(self) -> list[int]:
        """The messages the broker has not confirmed (the nacked ones included), but those the wire cannot carry."""
        return [i for i in range(len(self.messages)) if i not in self.confirmed and i not in self.refused]

    def on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, self.confirmed)

    def on_nack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, self.nacked)

    def _settle(self, tag: int, multiple: bool, into: set[int]) -> None:
        for done in [t for t in self.unconfirmed if t <= tag] if multiple else [tag]:
            if done in self.unconfirmed:
                into.add(self.unconfirmed.pop(done))

    def ids(self, indexes: Iterable[int]) -> list[str]:
        return [self.messages[i][1].message_id for i in sorted(indexes)]

    def report(self, among: range | None = None) -> str:
        """Which messages (of ``among``: default all) the broker confirmed, which may or may not have reached it,
        which were never sent."""
        among = among if among is not None else range(len(self.messages))
        returned_ids = [message_id for _, message_id in self.returned if message_id in self.ids(among)]
        pending = [i for i in self.pending() if i in among]
        confirmed = [i for i in self.ids(self.confirmed & set(among)) if i not in returned_ids]
        nacked = self.nacked & set(among)
        unknown = [i for i in pending if i in self.sent and i not in nacked]
        unsent = [i for i in pending if i not in self.sent]
        return (
            f"Of the batch of {len(among)}: confirmed {confirmed}; "
            + (f"refused by the broker (nack) {self.ids(nacked)}; " if nacked else "")
            + f"not confirmed (may or may not have reached the broker) {self.ids(unknown)}; not sent {self.ids(unsent)}"
            + (f"; returned (no queue bound) {returned_ids}" if returned_ids else "")
        )
