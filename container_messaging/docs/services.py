"""What a service receives and sends, read from its configuration: the input of the AsyncAPI document and the graph.

A service is described from its container, built from its configuration file as ``run`` builds it (nothing connects
to a broker): the handlers found by scanning, with their payload types (the first parameter's annotation), the queue
and bindings of Ecotone's topology, and the sending declarations (``@sends_command``, ``@publishes``,
``@sends_message``) found in the same scanned modules.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from container_messaging.container import MessagingContainer
from container_messaging.errors import ConfigurationError
from container_messaging.markers import HandlerKind
from container_messaging.scanning import scan_senders

__all__ = ["ReceivedMessage", "SentMessage", "ServiceDescription", "describe_service", "describe_services"]

#: The kinds of handler a message from another service can reach (queries are never distributed).
_MESSAGE_KINDS = (HandlerKind.COMMAND, HandlerKind.EVENT, HandlerKind.SERVICE_ACTIVATOR)


def _label(owner: type | None, function: Callable[..., Any]) -> str:
    """``Owner.method`` or ``function``: the code's name without its module."""
    name = getattr(function, "__name__", repr(function))
    return f"{owner.__qualname__}.{name}" if owner is not None else name


@attrs.frozen
class ReceivedMessage:
    """One handler of a routing key (a command's, an event's glob, or a service activator's channel)."""

    kind: HandlerKind
    routing_key: str
    payload_type: Any = attrs.field(repr=False)
    handler: str
    label: str
    distributed: bool


@attrs.frozen
class SentMessage:
    """One sending declaration: a command or message to ``destination``, or an event (``destination`` None)."""

    kind: HandlerKind
    routing_key: str
    destination: str | None
    payload_type: Any = attrs.field(repr=False)
    sender: str
    label: str

    @property
    def amqp_routing_key(self) -> str:
        """The routing key it is published with: the destination service, or the event's own key."""
        return self.routing_key if self.destination is None else self.destination


@attrs.frozen
class ServiceDescription:
    """One service: its name, where it was configured, its queue and bindings, and what it receives and sends."""

    name: str
    source: str
    exchange: str
    queue: str
    bindings: tuple[str, ...]
    camel_case: bool
    receives: tuple[ReceivedMessage, ...]
    sends: tuple[SentMessage, ...]


def describe_service(container: MessagingContainer) -> ServiceDescription:
    """The description of the service a container runs (its configuration must name the service)."""
    settings = container.settings
    source = settings.source or "<dict>"
    if settings.service_name is None:
        raise ConfigurationError(f"{source}: service_name: not set; a service needs a name to be described")
    name = settings.service_name
    receives = tuple(
        ReceivedMessage(
            kind=handler.kind,
            routing_key=handler.routing_key,
            payload_type=handler.payload_type,
            handler=handler.name,
            label=_label(handler.owner, handler.function),
            distributed=handler.distributed,
        )
        for handler in container.routes.handlers
        if handler.kind in _MESSAGE_KINDS and handler.routing_key is not None  # routed by class: never distributed
    )
    sends = tuple(
        SentMessage(
            kind=found.declaration.kind,
            routing_key=found.declaration.routing_key,
            destination=found.declaration.destination,
            payload_type=found.declaration.payload_type,
            sender=found.name,
            label=_label(found.owner, found.function),
        )
        for found in scan_senders(settings.scan)
    )
    topology = container.topology.endpoint(name, container.routes)
    return ServiceDescription(
        name=name,
        source=source,
        exchange=topology.exchange,
        queue=topology.queue,
        bindings=topology.bindings,
        camel_case=settings.conversion.json_keys == "camelCase",
        receives=receives,
        sends=sends,
    )


def describe_services(configs: Iterable[str | os.PathLike[str]]) -> tuple[ServiceDescription, ...]:
    """The services of the configuration files, sorted by name; two files of one service name are an error."""
    described: dict[str, ServiceDescription] = {}
    for config in configs:
        with MessagingContainer.from_config(os.fspath(config)) as container:
            service = describe_service(container)
        other = described.get(service.name)
        if other is not None:
            raise ConfigurationError(
                f"{service.source}: service_name: {service.name!r} is also the service of {other.source}; "
                "give each service one configuration file"
            )
        described[service.name] = service
    if not described:
        raise ConfigurationError("no configuration file given: name at least one service's configuration")
    return tuple(described[name] for name in sorted(described))
