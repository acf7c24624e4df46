"""A service's reader of an event stream: Redis Streams with one consumer group per service.

An event stream channel is one stream (``keys.stream_key``) to which each event is appended once. Every service that
consumes the channel reads it in a consumer group named after the service, so each keeps its own position (kept by
Redis) and its own pending entries: the consumers of one service compete in its group, the groups never do.

A subscription (``keys.subscription_queue``: ``<channel>@<service>``) is read by a :class:`StreamReceiver`, made of
two :class:`~container_messaging.transports.redis.receiver.RedisReceiver` s under the same rules as a queue's
(pending until acknowledged, a dead consumer's entries taken over by the next consumer of the same group, a requeue
keeps the place):

- one on the shared stream, in the service's group, acknowledging with ``XACK`` alone (other groups may still read
  the entry; nothing here deletes or trims the stream: see the README's "Event streams");
- one on the subscription's own queue, where this service's delayed retries and dead letter replays go, so that a
  retry reaches this service only.

A new group starts at the beginning of the stream: a service that subscribes late reads every event the stream
holds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from container_messaging.transports.base import Delivery, Receiver
from container_messaging.transports.redis import keys
from container_messaging.transports.redis.receiver import RedisReceiver

if TYPE_CHECKING:
    from container_messaging.transports.redis.adapter import RedisTransport

__all__ = ["StreamReceiver"]

#: Seconds the reader blocks on the subscription's own queue before it blocks on the shared stream.
_OWN_QUEUE_WAIT = 0.001


class StreamReceiver(Receiver):
    """An open consumer of ``channel``'s stream in group ``group`` (see the module docstring)."""

    def __init__(self, transport: RedisTransport, channel: str, group: str, prefetch_count: int) -> None:
        queue = keys.subscription_queue(channel, group)
        self.queue = queue
        self._step = transport.step
        self._own = RedisReceiver(transport, queue, prefetch_count)
        try:
            self._shared = RedisReceiver(transport, queue, prefetch_count, stream=keys.stream_key(channel), group=group)
        except BaseException:
            self._own.close()
            raise

    def __repr__(self) -> str:
        return f"<StreamReceiver {self.queue!r}>"

    def receive(self, timeout: float) -> Delivery | None:
        """The next entry of the subscription's own queue (retries, replays) or else of the shared stream."""
        deadline = time.monotonic() + timeout
        while True:
            delivery = self._own.receive(_OWN_QUEUE_WAIT) or self._shared.receive(
                max(0.0, min(deadline - time.monotonic(), self._step))
            )
            if delivery is not None or time.monotonic() >= deadline:
                return delivery

    def close(self) -> None:
        try:
            self._shared.close()
        finally:
            self._own.close()
