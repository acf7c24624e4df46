"""The in-process buses: ``CommandBus``, ``QueryBus``, ``EventBus`` and ``MessageChannels`` (Ecotone's gateways,
in snake_case). They run the local handlers at once, in the caller's thread; nothing crosses a transport.

Their async flavours (``AsyncCommandBus``, ``AsyncQueryBus``, ``AsyncEventBus``) are for code on an event loop:
a coroutine handler is awaited on the caller's loop, a plain one runs in a worker thread (``asyncio.to_thread``, in
a copy of the caller's context), so the loop is never blocked. The synchronous buses await a coroutine handler on a
loop of their own for the call, or raise an error naming it on a thread that runs a loop (see
:mod:`container_messaging.invocation`).

Every message sent from inside a handler keeps the handled message's ``correlationId`` and user metadata and gets
``parentId`` = the handled message's id (see :meth:`container_messaging.messages.Message.create`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from container_messaging.errors import NoHandlerError
from container_messaging.invocation import Handler, current_message
from container_messaging.markers import HandlerKind
from container_messaging.messages import MediaType, Message
from container_messaging.routing import RoutingTable

__all__ = [
    "AsyncCommandBus",
    "AsyncEventBus",
    "AsyncQueryBus",
    "CommandBus",
    "EventBus",
    "MessageChannels",
    "QueryBus",
]


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _message(payload: Any, media_type: str, metadata: Mapping[str, Any] | None) -> Message:
    return Message.create(payload, media_type, metadata, current_message.get())


async def _call_async(handler: Handler, message: Message) -> Any:
    """A coroutine handler awaited on the running loop; a plain one in a worker thread (the loop is not blocked)."""
    if handler.is_coroutine:
        return await handler.call_async(message)
    return await asyncio.to_thread(handler, message)


class _GatewayBus:
    _kind: HandlerKind

    def __init__(self, routes: RoutingTable) -> None:
        self._routes = routes

    def _by_class(self, payload: object) -> Handler:
        handler = self._routes.by_class(self._kind, type(payload))
        if handler is None:
            raise NoHandlerError(f"no {self._kind.value} handler for class {_name(type(payload))}")
        return handler

    def _by_key(self, routing_key: str) -> Handler:
        handler = self._routes.by_key(self._kind, routing_key)
        if handler is None:
            raise NoHandlerError(f"no {self._kind.value} handler for routing key {routing_key!r}")
        return handler

    def _send(self, payload: object, metadata: Mapping[str, Any] | None) -> Any:
        return self._by_class(payload)(_message(payload, MediaType.PYTHON_OBJECT, metadata))

    def _send_with_routing(
        self, routing_key: str, payload: Any, media_type: str, metadata: Mapping[str, Any] | None
    ) -> Any:
        return self._by_key(routing_key)(_message(payload, media_type, metadata))

    async def _send_async(self, payload: object, metadata: Mapping[str, Any] | None) -> Any:
        return await _call_async(self._by_class(payload), _message(payload, MediaType.PYTHON_OBJECT, metadata))

    async def _send_with_routing_async(
        self, routing_key: str, payload: Any, media_type: str, metadata: Mapping[str, Any] | None
    ) -> Any:
        return await _call_async(self._by_key(routing_key), _message(payload, media_type, metadata))


class CommandBus(_GatewayBus):
    """Sends a command to its one handler, by the command's class or by routing key."""

    _kind = HandlerKind.COMMAND

    def send(self, command: object, metadata: Mapping[str, Any] | None = None) -> Any:
        """Runs the handler of ``command``'s class (or of a base class) and returns its result."""
        return self._send(command, metadata)

    def send_with_routing(
        self,
        routing_key: str,
        command: Any = None,
        media_type: str = MediaType.PYTHON_OBJECT,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """Runs the handler of ``routing_key`` with ``command`` (of ``media_type``) and returns its result."""
        return self._send_with_routing(routing_key, command, media_type, metadata)


class QueryBus(_GatewayBus):
    """Sends a query to its one handler and returns the handler's result."""

    _kind = HandlerKind.QUERY

    def send(self, query: object, metadata: Mapping[str, Any] | None = None) -> Any:
        """The result of the handler of ``query``'s class (or of a base class)."""
        return self._send(query, metadata)

    def send_with_routing(
        self,
        routing_key: str,
        query: Any = None,
        media_type: str = MediaType.PYTHON_OBJECT,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """The result of the handler of ``routing_key`` for ``query`` (of ``media_type``)."""
        return self._send_with_routing(routing_key, query, media_type, metadata)


class EventBus:
    """Publishes an event to every handler of its class or routing key (zero or more)."""

    def __init__(self, routes: RoutingTable) -> None:
        self._routes = routes

    def publish(self, event: object, metadata: Mapping[str, Any] | None = None) -> None:
        """Runs every handler of ``event``'s class and of its base classes."""
        message = _message(event, MediaType.PYTHON_OBJECT, metadata)
        for handler in self._routes.events_for_class(type(event)):
            handler(message)

    def publish_with_routing(
        self,
        routing_key: str,
        event: Any = None,
        media_type: str = MediaType.PYTHON_OBJECT,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Runs every handler whose key (an Ecotone glob) matches ``routing_key``."""
        message = _message(event, media_type, metadata)
        for handler in self._routes.events_for_key(routing_key):
            handler(message)


class AsyncCommandBus(_GatewayBus):
    """:class:`CommandBus` for code on an event loop: ``await bus.send(command)``."""

    _kind = HandlerKind.COMMAND

    async def send(self, command: object, metadata: Mapping[str, Any] | None = None) -> Any:
        """Runs the handler of ``command``'s class (or of a base class) and returns its result."""
        return await self._send_async(command, metadata)

    async def send_with_routing(
        self,
        routing_key: str,
        command: Any = None,
        media_type: str = MediaType.PYTHON_OBJECT,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """Runs the handler of ``routing_key`` with ``command`` (of ``media_type``) and returns its result."""
        return await self._send_with_routing_async(routing_key, command, media_type, metadata)


class AsyncQueryBus(_GatewayBus):
    """:class:`QueryBus` for code on an event loop: ``await bus.send(query)``."""

    _kind = HandlerKind.QUERY

    async def send(self, query: object, metadata: Mapping[str, Any] | None = None) -> Any:
        """The result of the handler of ``query``'s class (or of a base class)."""
        return await self._send_async(query, metadata)

    async def send_with_routing(
        self,
        routing_key: str,
        query: Any = None,
        media_type: str = MediaType.PYTHON_OBJECT,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """The result of the handler of ``routing_key`` for ``query`` (of ``media_type``)."""
        return await self._send_with_routing_async(routing_key, query, media_type, metadata)


class AsyncEventBus:
    """:class:`EventBus` for code on an event loop: the handlers run one after the other, as there."""

    def __init__(self, routes: RoutingTable) -> None:
        self._routes = routes

    async def publish(self, event: object, metadata: Mapping[str, Any] | None = None) -> None:
        """Runs every handler of ``event``'s class and of its base classes."""
        message = _message(event, MediaType.PYTHON_OBJECT, metadata)
        for handler in self._routes.events_for_class(type(event)):
            await _call_async(handler, message)

    async def publish_with_routing(
        self,
        routing_key: str,
        event: Any = None,
        media_type: str = MediaType.PYTHON_OBJECT,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Runs every handler whose key (an Ecotone glob) matches ``routing_key``."""
        message = _message(event, media_type, metadata)
        for handler in self._routes.events_for_key(routing_key):
            await _call_async(handler, message)


class MessageChannels:
    """Named channels, each consumed by one ``@service_activator``."""

    def __init__(self, routes: RoutingTable) -> None:
        self._routes = routes

    def send(
        self,
        channel: str,
        payload: Any,
        media_type: str = MediaType.PYTHON_OBJECT,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """Runs the service activator of ``channel`` with ``payload`` and returns its result."""
        handler = self._routes.channel(channel)
        if handler is None:
            raise NoHandlerError(f"no service activator for channel {channel!r}")
        return handler(_message(payload, media_type, metadata))
