"""The inbound side of the distributed bus: Ecotone's gate between the wire and the local buses.

- ``command``: must target this service and have a ``@distributed`` command handler for its key; then the local
  command bus runs it.
- ``event``: if a ``@distributed`` event handler matches the key, the event is published on the local event bus
  (every local handler of that key runs, distributed or not). An event nobody here handles is dropped (Ecotone).
- ``message``: must target this service; the ``@distributed`` service activator of the channel handles it.
- anything else is an error. Handlers without ``@distributed`` are never reachable from outside.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from container_messaging.buses import CommandBus, EventBus, MessageChannels
from container_messaging.distributed.topology import PAYLOAD_TYPE, ROUTING_KEY, TARGET_SERVICE, PayloadType
from container_messaging.errors import DistributionError
from container_messaging.markers import HandlerKind
from container_messaging.messages import CONTENT_TYPE, ID, Headers, MediaType, Message
from container_messaging.routing import RoutingTable

__all__ = ["DistributedDispatcher", "Outcome", "inbound_message"]


class Outcome(enum.Enum):
    HANDLED = "handled"
    DROPPED = "dropped"  # an event no distributed handler of this service subscribes to


def inbound_message(body: bytes, headers: Mapping[str, Any], content_type: str | None) -> Message:
    """A message read off the wire: the AMQP content type fills in a missing ``contentType`` header."""
    merged = dict(headers)
    if not merged.get(CONTENT_TYPE):
        merged[CONTENT_TYPE] = content_type or MediaType.OCTET_STREAM
    return Message(body, Headers(merged))


class DistributedDispatcher:
    def __init__(
        self,
        *,
        service_name: str,
        routes: RoutingTable,
        commands: CommandBus,
        events: EventBus,
        channels: MessageChannels,
    ) -> None:
        self._service_name = service_name
        self._routes = routes
        self._commands = commands
        self._events = events
        self._channels = channels
        self._distributed_events = routes.distributed(HandlerKind.EVENT)
        self._event_cache: dict[str, bool] = {}

    def dispatch(self, message: Message) -> Outcome:
        headers = message.headers
        payload_type = headers.get(PAYLOAD_TYPE)
        routing_key = headers.get(ROUTING_KEY)
        where = f"message {headers.get(ID)!r}"
        if not isinstance(routing_key, str) or not routing_key:
            raise DistributionError(f"{where} has no {ROUTING_KEY!r} header; it cannot be routed")
        if payload_type == PayloadType.EVENT:
            if not self._subscribed(routing_key):
                return Outcome.DROPPED
            self._events.dispatch(routing_key, message)
            return Outcome.HANDLED
        if payload_type == PayloadType.COMMAND:
            self._check_target(headers, where, routing_key)
            handler = self._routes.by_key(HandlerKind.COMMAND, routing_key)
            if handler is None or not handler.distributed:
                raise DistributionError(
                    f"There is no Distributed Command Handler registered with routing key: {routing_key} "
                    f"(service {self._service_name!r}, {where})"
                )
            handler(message)
            return Outcome.HANDLED
        if payload_type == PayloadType.MESSAGE:
            self._check_target(headers, where, routing_key)
            handler = self._routes.channel(routing_key)
            if handler is None or not handler.distributed:
                raise DistributionError(
                    f"There is no Distributed Service Activator for channel: {routing_key} "
                    f"(service {self._service_name!r}, {where})"
                )
            handler(message)
            return Outcome.HANDLED
        raise DistributionError(
            f"{where} with routing key {routing_key!r} has unknown {PAYLOAD_TYPE!r} {payload_type!r} "
            "(expected 'command', 'event' or 'message')"
        )

    def _check_target(self, headers: Headers, where: str, routing_key: str) -> None:
        target = headers.get(TARGET_SERVICE)
        if target is not None and target != self._service_name:
            raise DistributionError(
                f"{where} with routing key {routing_key!r} targets service {target!r}, "
                f"but this is service {self._service_name!r}: it was wrongly distributed"
            )

    def _subscribed(self, routing_key: str) -> bool:
        try:
            return self._event_cache[routing_key]
        except KeyError:
            subscribed = any(h in self._distributed_events for h in self._routes.events_for_key(routing_key))
            if len(self._event_cache) > 4096:
                self._event_cache.clear()
            self._event_cache[routing_key] = subscribed
            return subscribed
