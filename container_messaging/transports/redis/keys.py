"""The Redis keys of a queue, an exchange and a consumer: one spelling, used by the adapter, the receiver and the
scripts (which get them as arguments)."""

from __future__ import annotations

from typing import Final

__all__ = [
    "GROUP",
    "PREFIX",
    "RELEASED",
    "alive_key",
    "alive_prefix",
    "bindings_key",
    "delayed_key",
    "legacy_delayed_key",
    "legacy_list_key",
    "queue_key",
    "stream_key",
    "subscription_of",
    "subscription_queue",
]

#: Every key of this transport starts with it, so that it never meets an application's keys.
PREFIX: Final = "container_messaging"
#: The consumer group of every queue's stream: the consumers of one queue compete in it.
GROUP: Final = "consumers"
#: The owner of released entries (requeued, or left by a receiver that closed): no consumer has that name, and it is
#: never alive, so the next consumer to look takes them.
RELEASED: Final = "(released)"
#: Joins a stream channel and a consuming service into the queue name of that service's subscription; never part of
#: a channel or service name, so a subscription's queue never meets a queue of another kind.
_SUBSCRIPTION: Final = "@"


def queue_key(queue: str) -> str:
    """The stream that holds ``queue``'s messages: ready ones, and unacknowledged ones (pending in :data:`GROUP`)."""
    return f"{PREFIX}:queue:{queue}"


def delayed_key(queue: str) -> str:
    """The sorted set of delayed copies for ``queue``, scored by due time (ms, Redis's clock)."""
    return f"{PREFIX}:delayed:{queue}"


def bindings_key(exchange: str) -> str:
    """The set of ``exchange``'s bindings, each ``[binding key, queue]`` as JSON."""
    return f"{PREFIX}:bindings:{exchange}"


def alive_prefix(queue: str) -> str:
    """What :func:`alive_key` puts before a consumer's name."""
    return f"{PREFIX}:alive:{queue}:"


def alive_key(queue: str, consumer: str) -> str:
    """The key a consumer of ``queue`` keeps alive while it runs (it expires when the consumer stops answering)."""
    return alive_prefix(queue) + consumer


def legacy_list_key(queue: str) -> str:
    """Where kombu's Redis transport (this project before streams) kept ``queue``'s messages: a list."""
    return queue


def legacy_delayed_key(queue: str) -> str:
    """Where this project kept ``queue``'s delayed copies before streams (kombu's JSON, scored in unix seconds)."""
    return f"{queue}.delayed"


def stream_key(channel: str) -> str:
    """The stream of event stream ``channel``: every event appended once, read by one consumer group per service."""
    return f"{PREFIX}:stream:{channel}"


def subscription_queue(channel: str, group: str) -> str:
    """The queue of service ``group``'s subscription to stream ``channel``: its own entries (delayed retries,
    replays) and, with ``.dead_letter``, its dead letter queue."""
    return f"{channel}{_SUBSCRIPTION}{group}"


def subscription_of(queue: str) -> tuple[str, str] | None:
    """``(channel, group)`` when ``queue`` is a stream subscription's queue (see :func:`subscription_queue`)."""
    channel, separator, group = queue.partition(_SUBSCRIPTION)
    return (channel, group) if separator and channel and group else None
