"""The inbound side of the distributed bus: Ecotone's gate between the wire and the local handlers.

- ``command``: must target this service and have a ``@distributed`` command handler for its key; that handler runs.
- ``event``: if a ``@distributed`` event handler matches the key, every local handler of that key runs
  (distributed or not). An event nobody here handles is dropped (Ecotone).
- ``message``: must target this service; the ``@distributed`` service activator of the channel handles it.
- anything else is an error. Handlers without ``@distributed`` are never reachable from outside.

Header values from the wire are checked before they are used: a routing key must be text of at most
``MAX_ROUTING_KEY`` characters (an event's key is matched against globs: a bounded key keeps that cheap), and a
message claiming the in-process media type ``application/x-python-object`` is refused. Values quoted in errors
are bounded (:func:`container_messaging.bounds.shown`).

The dispatcher only chooses the handlers (:meth:`DistributedDispatcher.targets`); running them, with retries, is
the consumer's and :mod:`container_messaging.recoverability`'s business.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from container_messaging.bounds import MAX_ROUTING_KEY, shown
from container_messaging.distributed.topology import PAYLOAD_TYPE, ROUTING_KEY, TARGET_SERVICE, PayloadType
from container_messaging.errors import DistributionError, UnsupportedMediaTypeError
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

__all__ = ["DistributedDispatcher", "Subscription", "inbound_message"]


def inbound_message(body: bytes, headers: Mapping[str, Any], content_type: str | None) -> Message:
    """A message read off the wire, with its own copy of ``headers`` (never changed): the AMQP content type fills
    in a missing ``contentType`` header, and a message without an ``id`` (written by hand by a non-Ecotone
    application) gets one, as Ecotone gives it."""
    if headers.get(CONTENT_TYPE) and headers.get(ID):
        return Message(body, Headers(headers))
    own = dict(headers)
    if not own.get(CONTENT_TYPE):
        own[CONTENT_TYPE] = content_type or MediaType.OCTET_STREAM
    if not own.get(ID):
        own[ID] = new_message_id()
    return Message(body, Headers.adopt(own))


def _where(headers: Headers) -> str:
    return f"message {shown(headers.get(ID))}"


@attrs.frozen
class Subscription:
    """What an endpoint consumes for: a handler (its name and kind: ``command``, ``event`` or
    ``service_activator``) and the routing key or channel it is reached by."""

    kind: str
    key: str
    handler: str

    def __str__(self) -> str:
        return f"{self.kind} {self.key} -> {self.handler}"


class DistributedDispatcher:
    def __init__(self, *, service_name: str, routes: RoutingTable) -> None:
        self._service_name = service_name
        self._routes = routes

    def subscriptions(self) -> tuple[Subscription, ...]:
        """The distributed handlers reachable from outside, with their routing keys and channels."""
        return tuple(
            Subscription(handler.kind.value, handler.routing_key or "", handler.name)
            for kind in (HandlerKind.COMMAND, HandlerKind.EVENT, HandlerKind.SERVICE_ACTIVATOR)
            for handler in self._routes.distributed(kind)
        )

    def targets(self, message: Message) -> tuple[Handler, ...]:
        """The handlers that must run for ``message`` (empty: an event nobody here subscribes to, to be dropped).

        Raises :class:`DistributionError` when the message breaks Ecotone's rules, and
        :class:`UnsupportedMediaTypeError` when it claims the in-process media type.
        """
        headers = message.headers
        payload_type = headers.get(PAYLOAD_TYPE)
        routing_key = headers.get(ROUTING_KEY)
        if not isinstance(routing_key, str) or not routing_key:
            if routing_key is None:
                raise DistributionError(f"{_where(headers)} has no {ROUTING_KEY!r} header; it cannot be routed")
            raise DistributionError(f"{_where(headers)} has header {ROUTING_KEY!r} = {shown(routing_key)}: not a key")
        if len(routing_key) > MAX_ROUTING_KEY:
            raise DistributionError(
                f"{_where(headers)} has a {ROUTING_KEY!r} header of {len(routing_key)} characters "
                f"({shown(routing_key)}); at most {MAX_ROUTING_KEY} are accepted"
            )
        content_type = headers.get(CONTENT_TYPE)
        if content_type != MediaType.APPLICATION_JSON and MediaType.base(str(content_type)) == MediaType.PYTHON_OBJECT:
            raise UnsupportedMediaTypeError(
                f"{_where(headers)} with routing key {routing_key!r} claims content type "
                f"{MediaType.PYTHON_OBJECT!r}: that media type is in-process only and is refused from a transport"
            )
        if payload_type == PayloadType.EVENT:
            handlers = self._events(routing_key)
            only = headers.get(TARGET_HANDLER)
            if only is None:
                return handlers
            targeted = tuple(h for h in handlers if h.name == only)
            if not targeted:  # a retry or replay for a handler this service no longer has: never a silent drop
                raise DistributionError(
                    f"{_where(headers)} with routing key {routing_key!r} is addressed to handler {shown(only)}, which "
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
            f"{_where(headers)} with routing key {routing_key!r} has unknown {PAYLOAD_TYPE!r} {shown(payload_type)} "
            "(expected 'command', 'event' or 'message')"
        )

    def _check_target(self, headers: Headers, routing_key: str) -> None:
        target = headers.get(TARGET_SERVICE)
        if target is not None and target != self._service_name:
            raise DistributionError(
                f"{_where(headers)} with routing key {routing_key!r} targets service {shown(target)}, "
                f"but this is service {self._service_name!r}: it was wrongly distributed"
            )

    def _events(self, routing_key: str) -> tuple[Handler, ...]:
        """Every local handler of the key when a distributed one subscribes to it; else none (the routing table
        caches the lookup per key)."""
        handlers = self._routes.events_for_key(routing_key)
        for handler in handlers:
            if handler.distributed:
                return handlers
        return ()
