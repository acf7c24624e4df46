"""Transports: the port (:mod:`.base`), one adapter per broker, and :func:`create_transport`, which picks the adapter
by URL scheme.

=================  ==============================  ==========================================
scheme             adapter                         module
=================  ==============================  ==========================================
pyamqp amqp amqps  :class:`RabbitMqTransport`      ``rabbitmq/`` (through py-amqp)
redis rediss       :class:`RedisTransport`         ``redis/`` (streams, through redis-py)
memory             :class:`MemoryTransport`        ``memory.py``
embedded           :class:`EmbeddedTransport`      ``embedded/`` (adapter and its SQLite broker)
=================  ==============================  ==========================================

Every adapter maps broker errors and retries publishing as ``_broker.py`` says; the kombu ones are built on
``_kombu_base.py`` (connections, the receiver loop), and the Redis one talks to redis-py itself. Memory, embedded and
Redis route exchanges themselves (``_virtual.py``'s topic rules). This package is the only place that imports kombu
and redis-py, and an adapter's module is imported only when a transport of its scheme is created.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Final

from container_messaging.errors import ConfigurationError
from container_messaging.transports.base import (
    BaseTransport,
    Delivery,
    EndpointTopology,
    OutboundMessage,
    Receiver,
    TransportDecorator,
    dead_letter_queue,
)
from container_messaging.transports.options import TransportOptions

__all__ = [
    "ADAPTERS",
    "BaseTransport",
    "Delivery",
    "EndpointTopology",
    "OutboundMessage",
    "Receiver",
    "TransportDecorator",
    "TransportOptions",
    "create_transport",
    "dead_letter_queue",
]

#: URL scheme -> (module of this package, adapter class, the extra that installs what it needs)
ADAPTERS: Final[Mapping[str, tuple[str, str, str | None]]] = {
    "pyamqp": ("rabbitmq.adapter", "RabbitMqTransport", None),
    "amqp": ("rabbitmq.adapter", "RabbitMqTransport", None),
    "amqps": ("rabbitmq.adapter", "RabbitMqTransport", None),
    "redis": ("redis.adapter", "RedisTransport", "redis"),
    "rediss": ("redis.adapter", "RedisTransport", "redis"),
    "memory": ("memory", "MemoryTransport", None),
    "embedded": ("embedded", "EmbeddedTransport", None),
}


def create_transport(options: TransportOptions) -> BaseTransport:
    """The adapter for ``options.url``'s scheme; nothing connects until it is used."""
    try:
        module_name, class_name, extra = ADAPTERS[options.scheme]
    except KeyError:
        raise ConfigurationError(
            f"transport.url: unknown scheme {options.scheme!r} in {options.masked_url!r} "
            f"(known: {', '.join(sorted(ADAPTERS))})"
        ) from None
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ImportError as exc:
        install = f"pip install 'container-messaging[{extra}]'" if extra else "reinstall container-messaging"
        raise ConfigurationError(
            f"the transport for {options.masked_url!r} needs the module {exc.name!r}, which is not installed: {install}"
        ) from exc
    adapter: Callable[[TransportOptions], BaseTransport] = getattr(module, class_name)
    return adapter(options)
