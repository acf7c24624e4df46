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
]

#: Every key of this transport starts with it, so that it never meets an application's keys.
PREFIX: Final = "container_messaging"
#: The consumer group of every queue's stream: the consumers of one queue compete in it.
GROUP: Final = "consumers"
#: The owner of released entries (requeued, or left by a receiver that closed): no consumer has that name, and it is
#: never alive, so the next consumer to look takes them.
RELEASED: Final = "(released)"


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
