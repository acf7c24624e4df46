"""The inbound side of the distributed bus: Ecotone's gate between the wire and the local handlers.

- ``command``: must target this service and have a ``@distributed`` command handler for its key; that handler runs.
- ``event``: if a ``@distributed`` event handler matches the key, every local handler of that key runs
  (distributed or not). An event nobody here handles is dropped (Ecotone).
- ``message``: must target this service; the ``@distributed`` service activator of the channel handles it.
- anything else is an error. Handlers without ``@distributed`` are never reachable from outside.

The dispatcher only chooses the handlers (:meth:`DistributedDispatcher.targets`); running them, with retries, is
the consumer's and :mod:`container_messaging.recoverability`'s business.
"""

from __future__ import annotations

from typing import Any, Final

from container_messaging.distributed.topology import PAYLOAD_TYPE, ROUTING_KEY, TARGET_SERVICE, PayloadType
from container_messaging.errors import DistributionError
from container_messaging.invocation import Handler
from container_messaging.markers import HandlerKind
from container_messaging.messages import (
    CONTENT_TYPE,
    ID,
    TARGET_HANDLER,
    Headers,
    MediaType,
    Message,
    new_message_id,
)
from container_messaging.routing import RoutingTable

__all__ = ["DistributedDispatcher", "inbound_message"]

_CACHE_LIMIT: Final = 4096


def inbound_message(body: bytes, headers: dict[str, Any], content_type: str | None) -> Message:
    """A message read off the wire (its headers dict is adopted, not copied): the AMQP content type fills in a
    missing ``contentType`` header, and a message without an ``id`` (written by hand by a non-Ecotone application)
    gets one, as Ecotone gives it."""
    if not headers.get(CONTENT_TYPE):
        headers[CONTENT_TYPE] = content_type or MediaType.OCTET_STREAM
    if not headers.get(ID):
        headers[ID] = new_message_id()
    return Message(body, Headers.adopt(headers))


def _where(headers: Headers) -> str:
    return f"message {headers.get(ID)!r}"


class DistributedDispatcher:
    def __init__(self, *, service_name: str, routes: RoutingTable) -> None:
        self._service_name = service_name
        self._routes = routes
        self._distributed_events = frozenset(routes.distributed(HandlerKind.EVENT))
        self._event_targets: dict[str, tuple[Handler, ...]] = {}

    def targets(self, message: Message) -> tuple[Handler, ...]:
        """The handlers that must run for ``message`` (empty: an event nobody here subscribes to, to be dropped).

        Raises :class:`DistributionError` when the message breaks Ecotone's rules.
        """
        headers = message.headers
        payload_type = headers.get(PAYLOAD_TYPE)
        routing_key = headers.get(ROUTING_KEY)
        if not isinstance(routing_key, str) or not routing_key:
            raise DistributionError(f"{_where(headers)} has no {ROUTING_KEY!r} header; it cannot be routed")
        if payload_type == PayloadType.EVENT:
            handlers = self._events(routing_key)
            only = headers.get(TARGET_HANDLER)
            if only is None:
                return handlers
            targeted = tuple(h for h in handlers if h.name == only)
            if not targeted:  # a retry or replay for a handler this service no longer has: never a silent drop
                raise DistributionError(
                    f"{_where(headers)} with routing key {routing_key!r} is addressed to handler {only!r}, which "
                    f"service {self._service_name!r} does not have (or no longer subscribes with)"
                )
            return targeted
        if payload_type == PayloadType.COMMAND:
            self._check_target(headers, routing_key)
            handler = self._routes.by_key(HandlerKind.COMMAND, routing_key)
            if handler is None or not handler.distributed:
                raise DistributionError(
                    f"There is no Distributed Command Handler registered with routing key: {routing_key} "
                    f"(service {self._service_name!r}, {_where(headers)})"
                )
            return (handler,)
        if payload_type == PayloadType.MESSAGE:
            self._check_target(headers, routing_key)
            handler = self._routes.channel(routing_key)
            if handler is None or not handler.distributed:
                raise DistributionError(
                    f"There is no Distributed Service Activator for channel: {routing_key} "
                    f"(service {self._service_name!r}, {_where(headers)})"
                )
            return (handler,)
        raise DistributionError(
            f"{_where(headers)} with routing key {routing_key!r} has unknown {PAYLOAD_TYPE!r} {payload_type!r} "
            "(expected 'command', 'event' or 'message')"
        )

    def _check_target(self, headers: Headers, routing_key: str) -> None:
        target = headers.get(TARGET_SERVICE)
        if target is not None and target != self._service_name:
            raise DistributionError(
                f"{_where(headers)} with routing key {routing_key!r} targets service {target!r}, "
                f"but this is service {self._service_name!r}: it was wrongly distributed"
            )

    def _events(self, routing_key: str) -> tuple[Handler, ...]:
        """Every local handler of the key when a distributed one subscribes to it; else none (cached per key)."""
        try:
            return self._event_targets[routing_key]
        except KeyError:
            handlers = self._routes.events_for_key(routing_key)
            subscribed = any(h in self._distributed_events for h in handlers)
            if len(self._event_targets) >= _CACHE_LIMIT:
                self._event_targets.clear()
            targets = self._event_targets[routing_key] = handlers if subscribed else ()
            return targets
