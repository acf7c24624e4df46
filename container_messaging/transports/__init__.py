"""Transports: the port (:mod:`.base`) and its kombu implementations (private modules).

This package is the only place that imports kombu.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from container_messaging.transports.base import (
    BaseTransport,
    Delivery,
    EndpointTopology,
    OutboundMessage,
    Receiver,
    dead_letter_queue,
)

if TYPE_CHECKING:
    from container_messaging.config import TransportSettings

__all__ = [
    "BaseTransport",
    "Delivery",
    "EndpointTopology",
    "OutboundMessage",
    "Receiver",
    "create_transport",
    "dead_letter_queue",
    "reset_memory_transport",
]


def create_transport(settings: TransportSettings) -> BaseTransport:
    """The transport for ``settings.url``; nothing connects until it is used."""
    from container_messaging.transports._kombu import KombuTransport  # noqa: PLC0415 - kombu loads on first use

    return KombuTransport(settings)


def reset_memory_transport() -> None:
    """Empties the process-wide ``memory://`` broker (its queues, exchanges and bindings): call it between tests."""
    from kombu.transport import memory  # noqa: PLC0415

    from container_messaging.transports._kombu import _MemoryDelays  # noqa: PLC0415

    memory.Transport.global_state.clear()
    memory.Channel.queues.clear()
    memory.Channel.events.clear()
    _MemoryDelays.reset()
