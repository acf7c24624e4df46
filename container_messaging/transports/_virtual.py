"""Routing for kombu's *virtual* transports (memory, Redis, embedded), done here rather than by kombu.

kombu's virtual transports route imperfectly for this bus: a requeued or restored message is routed again through
the exchange, so an event would be copied once more to every other subscribed service, and its topic matching has
differed between versions. So these adapters route themselves: they read the exchange's bindings, match them with
AMQP topic rules, and put one copy on each matching queue through the default exchange, so a requeue or a restore
returns the message to its own queue only.
"""

from __future__ import annotations

import functools
from typing import Any

import kombu

from container_messaging.errors import UnroutableMessageError
from container_messaging.transports._kombu_base import KombuTransport, publish_kwargs
from container_messaging.transports.base import OutboundMessage

__all__ = ["VirtualTransport", "topic_matches"]


@functools.lru_cache(maxsize=8192)
def topic_matches(binding_key: str, routing_key: str) -> bool:
    """AMQP topic semantics: ``*`` is exactly one word, ``#`` zero or more words."""
    return _match(tuple(binding_key.split(".")), tuple(routing_key.split(".")))


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head = pattern[0]
    if head == "#":
        return _match(pattern[1:], words) or (bool(words) and _match(pattern, words[1:]))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(pattern[1:], words[1:])


class VirtualTransport(KombuTransport):
    """A kombu virtual transport whose exchanges this adapter routes itself (see the module docstring)."""

    def publish_once(self, producer: kombu.Producer, exchange: str, message: OutboundMessage, mandatory: bool) -> None:
        queues = self.route(producer.channel, exchange, message.routing_key)
        if not queues:
            if mandatory:
                raise UnroutableMessageError(self.unroutable(exchange, message.routing_key))
            return
        kwargs = publish_kwargs(message)
        for queue in queues:
            producer.publish(message.body, exchange="", routing_key=queue, **kwargs)

    @staticmethod
    def route(channel: Any, exchange: str, routing_key: str) -> list[str]:
        """The queues ``exchange`` delivers ``routing_key`` to, by AMQP topic rules, each once (the default exchange
        ``""`` delivers to the queue named ``routing_key``)."""
        if not exchange:
            return [routing_key]
        try:
            table = channel.get_table(exchange)
        except KeyError:
            return []
        return sorted({queue for key, _pattern, queue in table if topic_matches(key, routing_key)})
