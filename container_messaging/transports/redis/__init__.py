"""Redis (``redis://``, ``rediss://``): streams with consumer groups, through redis-py.

Each queue is a stream (``container_messaging:queue:<queue>``, see ``keys.py``) read in one consumer group; the
consumers of a queue compete in it, each under a name of its own. What the transport guarantees, and how:

- **Nothing is lost between taking and acknowledging.** ``XREADGROUP`` hands an entry out and records it as pending
  for that consumer in one step; an acknowledgement is ``XACK`` and ``XDEL`` in one transaction. A consumer killed
  at any moment (even blocked in its read) leaves its entries pending, never gone.
- **A dead consumer's messages come back.** A consumer renews an alive key while it runs (``transport.heartbeat``
  seconds of life, renewed four times as often; ``visibility_timeout`` when heartbeat is 0). Once it expires, the
  next consumer of the queue takes the dead one's entries over, in their place. An entry held longer than
  ``visibility_timeout`` is taken over too, as the embedded transport does.
- **Requeue keeps the place.** A requeued entry, or one a closing receiver still held, goes to an owner that is
  never alive: the next consumer takes it at once.
- **Delays.** A delayed copy waits in a sorted set per queue, scored by Redis's clock; consumers of the queue move
  the due ones onto the stream with a Lua script (one step: never both, never neither).
- **Routing.** An exchange is a set of bindings ``[binding key, queue]``; publishing reads them, matches AMQP topic
  rules (``_virtual.py``) and adds one entry per matching queue; several queues or a batch are one transaction.
  A mandatory message no queue receives is an UnroutableMessageError, as on RabbitMQ.
- **Garbage never stops a consumer.** An entry that is not a message goes to the dead letter as it is, with the
  reason (``envelope.py``).
- **Every wait is bounded** by ``connect_timeout``: connecting, the TLS handshake, each reply (after the time a
  consumer asked to block for): Redis answers at once, or not at all. So a consumer on a dead connection notices
  it, and stops on a signal, within seconds.
- **Upgrading** from the kombu-based transport of earlier versions: setting an endpoint up moves the messages left
  in kombu's lists onto the streams (``legacy.py``).

Redis Cluster is not supported (a publish to several queues is one transaction over their keys).
"""

from __future__ import annotations

from typing import Any

__all__ = ["RedisTransport"]


def __getattr__(name: str) -> Any:
    # The adapter imports redis-py (the ``redis`` extra): loaded on first use, so that the package's key names
    # (``keys.py``, which the Service Map's channels use) never need it.
    if name == "RedisTransport":
        from container_messaging.transports.redis.adapter import RedisTransport  # noqa: PLC0415

        return RedisTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
