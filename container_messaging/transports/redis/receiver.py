"""A consumer of one Redis queue: its stream, read in the queue's consumer group under a name of its own.

Reading an entry with ``XREADGROUP`` makes it pending for this consumer in the same step: there is no moment when a
message is neither on the stream nor recorded as held by someone. Acknowledging is ``XACK`` and ``XDEL`` in one
transaction. While the receiver is open, a thread renews its alive key (every quarter of its lifetime); when the
consumer is killed, frozen or cut off, the key expires and the next consumer of the queue to look takes its entries
over, in their place. A requeue or a close releases entries (they go to an owner that is never alive), so they are
taken again at once.

An entry that is not a message (see ``envelope.py``) goes to the dead letter as it is, in the same transaction that
acknowledges it, and the receiver goes on.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import redis

from container_messaging.errors import TransportError
from container_messaging.transports.base import Delivery, Receiver, dead_letter_queue
from container_messaging.transports.redis import envelope, keys, legacy, scripts

if TYPE_CHECKING:
    from container_messaging.transports.redis.adapter import RedisTransport

__all__ = ["ERRORS", "RedisDelivery", "RedisReceiver", "entries_of"]

log = logging.getLogger("container_messaging.transport")

#: What redis-py raises when the server or the connection fails.
ERRORS: Final = (redis.RedisError, OSError)
#: Seconds between two looks for entries of gone consumers and run-out leases.
_CHECK_INTERVAL: Final = 1.0

T = TypeVar("T")


def entries_of(raw: Sequence[Any]) -> list[tuple[str, dict[bytes, bytes]]]:
    """``[[id, [field, value, ...]], ...]`` as a Lua script returns entries, as ``(id, fields)``."""
    entries = []
    for entry_id, flat in raw:
        entries.append((_text(entry_id), {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}))
    return entries


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _order(entry_id: str) -> tuple[int, int]:
    """A stream entry id ``<ms>-<seq>`` as something that sorts as the stream does."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _describe(action: str, subject: object) -> str:
    return action if subject is None else f"{action} {subject!r}"


class RedisReceiver(Receiver):
    """An open consumer of ``queue`` (see the module docstring).

    With ``stream``, it reads that stream instead, in consumer group ``group``, and acknowledges with ``XACK`` alone
    (other groups may still read the entry): that is a service's reader of an event stream (``streams.py``). Its
    delayed copies and dead letters still go to ``queue``'s.
    """

    def __init__(
        self,
        transport: RedisTransport,
        queue: str,
        prefetch_count: int,
        *,
        stream: str | None = None,
        group: str = keys.GROUP,
    ) -> None:
        self.transport = transport
        self.queue = queue
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.dead: TransportError | None = None
        self._stream = stream or keys.queue_key(queue)
        self._group = group
        self._shared = stream is not None  # entries other groups read too: never deleted, no delayed copies moved in
        self._dead_letters = keys.queue_key(dead_letter_queue(queue))
        self._delayed = keys.delayed_key(queue)
        self._alive = keys.alive_key(queue, self.consumer)
        self._room = max(1, prefetch_count)
        self._liveness_ms = transport.liveness_ms
        self._step = transport.step
        self._buffer: deque[RedisDelivery] = deque()
        self._held: dict[str, RedisDelivery] = {}  # handed out, not settled yet
        self._cursor = "0-0"
        self._next_maintenance = 0.0
        self._next_check = 0.0
        self._closed = threading.Event()
        # each reply within connect_timeout (after the time a read asked to block for): a consumer notices a
        # connection that stopped answering, and stops on a signal, within seconds
        self._client = transport.new_connection(read_timeout=transport.options.connect_timeout + self._step)
        self._maintain_script = self._client.register_script(scripts.MAINTAIN)
        self._delay_script = self._client.register_script(scripts.DELAY)
        self._leave_script = self._client.register_script(scripts.LEAVE)
        try:
            self.call("consuming queue", queue, self._open)
        except BaseException:
            self._client.close()
            raise
        self._keeper = threading.Thread(target=self._keep_alive, name=f"alive-{queue}", daemon=True)
        self._keeper.start()

    def _open(self) -> None:
        self._client.set(self._alive, b"1", px=self._liveness_ms)  # alive before it holds anything
        try:
            self._client.xgroup_createconsumer(self._stream, self._group, self.consumer)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc) or "requires the key to exist" in str(exc):
                raise TransportError(
                    f"consuming queue {self.queue!r} failed on {self.transport.description}: there is no such queue "
                    "(container-messaging setup declares it)"
                ) from exc
            raise

    def call(self, action: str, subject: object, operation: Callable[..., T], *args: Any) -> T:
        """``operation(*args)``; a broker error becomes a TransportError and the receiver is never used again (what
        it holds is released by Redis's clock: its alive key expires). ``action`` and ``subject`` (e.g. a message
        id) only make the error message."""
        if self.dead is not None:
            raise TransportError(
                f"{_describe(action, subject)}: the connection was lost earlier ({self.dead}); the message stays on "
                "the broker and is delivered again"
            )
        try:
            return operation(*args)
        except TransportError as exc:
            self.dead = exc
            raise
        except Exception as error:
            mapped = self.transport.broker_error(_describe(action, subject), error, ERRORS)
            if mapped is None:
                raise  # not the broker's: a bug, the receiver stays usable
            self.dead = mapped
            raise mapped from error

    def _keep_alive(self) -> None:
        """Renews the alive key until the receiver closes. A failure is logged once per run of failures and never
        ends the thread: a key not renewed only means the consumer's messages are taken over by another one."""
        warned = False
        while not self._closed.wait(self._liveness_ms / 4000):
            try:
                self._client.set(self._alive, b"1", px=self._liveness_ms)
                warned = False
            except Exception as exc:  # the client may also be closing under it
                if not warned and not self._closed.is_set():
                    log.warning("consumer %s of %r could not renew its alive key: %s", self.consumer, self.queue, exc)
                    warned = True

    # -- receiving -------------------------------------------------------------------------------------------------

    def receive(self, timeout: float) -> Delivery | None:
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if now >= self._next_maintenance:  # due even with entries at hand: released ones go before them
                self.call("consuming queue", self.queue, self._maintain, now)
            if self._buffer:
                break
            remaining = deadline - now
            if remaining <= 0:
                return None
            self.call(
                "consuming queue", self.queue, self._read, min(remaining, self._step, self._next_maintenance - now)
            )
        delivery = self._buffer.popleft()
        self._held[delivery.entry_id] = delivery
        return delivery

    def _maintain(self, now: float) -> None:
        check = now >= self._next_check
        self._next_maintenance = now + self._step
        if check:
            self._next_check = now + _CHECK_INTERVAL
        cursor, claimed, legacy_waiting = self._maintain_script(
            keys=[
                self._stream,
                "" if self._shared else self._delayed,
                self._dead_letters,
                keys.legacy_list_key(self.queue),
            ],
            args=[
                self._group,
                self.consumer,
                keys.alive_prefix(self.queue),
                int(self.transport.options.visibility_timeout * 1000),
                max(1, self._room - len(self._buffer)),
                "1" if check else "0",
                self._cursor,
            ],
        )
        self._cursor = _text(cursor)
        self._take(entries_of(claimed))
        if legacy_waiting:  # a sender of an earlier version pushed onto the former list: onto the stream with it
            legacy.drain_list(self._client, self.queue)

    def _read(self, seconds: float) -> None:
        response = self._client.xreadgroup(
            self._group,
            self.consumer,
            {self._stream: ">"},
            count=max(1, self._room - len(self._buffer)),
            block=max(1, int(seconds * 1000)),  # never 0: that would block for ever
        )
        for _stream, entries in response or ():
            self._take([(_text(entry_id), fields) for entry_id, fields in entries])

    def _take(self, entries: Sequence[tuple[str, Mapping[bytes, bytes]]]) -> None:
        buffered = {delivery.entry_id for delivery in self._buffer}
        for entry_id, fields in entries:
            if entry_id in self._held or entry_id in buffered:
                continue  # ours already (a lease this consumer ran out itself)
            try:
                message = envelope.decode(fields)
            except envelope.MalformedEntryError as exc:
                self._bury(entry_id, fields, str(exc))
                continue
            self._buffer.append(RedisDelivery(self, entry_id, message))
        if len(self._buffer) > 1:  # a taken-over or released entry goes before the newer ones it finds there
            self._buffer = deque(sorted(self._buffer, key=lambda delivery: _order(delivery.entry_id)))

    def _bury(self, entry_id: str, fields: Mapping[bytes, bytes], reason: str) -> None:
        """Moves a malformed entry to the dead letter as it is, acknowledging it in the same transaction."""
        log.error(
            "entry %s of queue %r is not a message (%s): moved to the dead letter as it is",
            entry_id,
            self.queue,
            reason,
        )
        entry = envelope.encode(envelope.malformed(entry_id, fields, reason))
        pipe = self._client.pipeline(transaction=True).xadd(self._dead_letters, entry)
        self._acknowledge(pipe, entry_id).execute()

    def _acknowledge(self, pipe: Any, entry_id: str) -> Any:
        """Adds the acknowledgement of ``entry_id`` to ``pipe``: ``XACK``, and ``XDEL`` unless other groups read the
        stream too."""
        pipe.xack(self._stream, self._group, entry_id)
        return pipe if self._shared else pipe.xdel(self._stream, entry_id)

    # -- settling (for RedisDelivery) ------------------------------------------------------------------------------

    def settle(self, delivery: RedisDelivery, action: str, operation: Callable[[str], None]) -> None:
        self.call(action, delivery.headers.get("id"), operation, delivery.entry_id)
        self._held.pop(delivery.entry_id, None)

    def ack(self, entry_id: str) -> None:
        self._acknowledge(self._client.pipeline(transaction=True), entry_id).execute()

    def release(self, entry_id: str) -> None:
        """Gives the entry to the released owner, in its place; this consumer looks for released entries next."""
        self._client.xclaim(self._stream, self._group, keys.RELEASED, 0, [entry_id], justid=True)
        self._next_maintenance = self._next_check = 0.0

    def dead_letter(self, message: envelope.Envelope) -> None:
        self._client.xadd(self._dead_letters, envelope.encode(message))

    def delay(self, delay_ms: int, message: envelope.Envelope) -> None:
        self._delay_script(keys=[self._delayed], args=[delay_ms, envelope.delayed_member(envelope.encode(message))])

    # -- closing ---------------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._keeper.join(timeout=1.0)
        if self.dead is None:
            try:
                self.call("closing the consumer of", self.queue, self._leave)
            except TransportError:
                log.warning(
                    "closing the consumer of %r failed; what it held goes to another consumer when its alive key "
                    "expires",
                    self.queue,
                    exc_info=True,
                )
        else:
            self.transport.abandon(self._alive)
        self._buffer.clear()
        self._held.clear()
        self._client.close()

    def _leave(self) -> None:
        self._leave_script(keys=[self._stream, self._alive], args=[self._group, self.consumer, keys.RELEASED])


class RedisDelivery(Delivery):
    """An entry handed out by a :class:`RedisReceiver`; settling it uses the receiver's connection."""

    def __init__(self, receiver: RedisReceiver, entry_id: str, message: envelope.Envelope) -> None:
        self._receiver = receiver
        self._settled = False
        self.entry_id = entry_id
        self.body = message.body
        self.headers = message.headers  # decoded for this delivery alone: never shared
        self.content_type = message.content_type
        self.queue = receiver.queue

    def __repr__(self) -> str:
        return f"<RedisDelivery {self.entry_id} of {self.queue!r} id={self.headers.get('id')!r}>"

    @property
    def settled(self) -> bool:
        return self._settled

    def _settle(self, action: str, operation: Callable[[str], None]) -> None:
        if self._settled:
            raise TransportError(f"message {self.headers.get('id')!r} was already settled; cannot {action} it")
        self._receiver.settle(self, action, operation)
        self._settled = True

    def ack(self) -> None:
        self._settle("ack", self._receiver.ack)

    def requeue(self) -> None:
        self._settle("requeue", self._receiver.release)

    def _copy(self, extra_headers: Mapping[str, Any]) -> envelope.Envelope:
        return envelope.Envelope(self.body, {**self.headers, **extra_headers}, self.content_type)

    def dead_letter_copy(self, extra_headers: Mapping[str, Any]) -> None:
        receiver = self._receiver
        receiver.call("dead-lettering", self.headers.get("id"), receiver.dead_letter, self._copy(extra_headers))

    def delayed_copy(self, delay_ms: int, extra_headers: Mapping[str, Any]) -> None:
        receiver = self._receiver
        receiver.call("delaying", self.headers.get("id"), receiver.delay, delay_ms, self._copy(extra_headers))
