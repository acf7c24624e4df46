"""Handler markers: ``@command_handler``, ``@event_handler``, ``@query_handler``, ``@service_activator``,
``@distributed``.

They only attach a small frozen spec to the function; importing a module registers nothing, connects nothing and
reads no configuration. The container finds marked functions when it scans the configured modules.
Stacking order does not matter: ``@distributed`` above or below ``@command_handler`` means the same.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Final, TypeVar, overload

import attrs

from container_messaging.errors import HandlerDefinitionError

__all__ = [
    "HandlerKind",
    "HandlerMarker",
    "command_handler",
    "distributed",
    "event_handler",
    "is_distributed",
    "markers_of",
    "query_handler",
    "service_activator",
]

F = TypeVar("F", bound=Callable[..., Any])

MARKERS_ATTR: Final = "__container_messaging_markers__"
DISTRIBUTED_ATTR: Final = "__container_messaging_distributed__"


class HandlerKind(enum.Enum):
    COMMAND = "command"
    EVENT = "event"
    QUERY = "query"
    SERVICE_ACTIVATOR = "service_activator"


@attrs.frozen
class HandlerMarker:
    """What a marker says about one function: its kind and its routing key (or input channel)."""

    kind: HandlerKind
    routing_key: str | None = None


def _target(obj: Any, decorator: str) -> Callable[..., Any]:
    func = obj.__func__ if isinstance(obj, (staticmethod, classmethod)) else obj
    if not callable(func) or not hasattr(func, "__dict__"):
        raise HandlerDefinitionError(f"@{decorator} must decorate a function or method, got {obj!r}")
    return func


def _mark(obj: F, marker: HandlerMarker, decorator: str) -> F:
    func = _target(obj, decorator)
    existing: tuple[HandlerMarker, ...] = getattr(func, MARKERS_ATTR, ())
    setattr(func, MARKERS_ATTR, (*existing, marker))
    return obj


def _check_key(routing_key: str | None, decorator: str) -> None:
    if routing_key is not None and (not isinstance(routing_key, str) or not routing_key.strip()):
        raise HandlerDefinitionError(f"@{decorator}: routing key must be a non-empty string, got {routing_key!r}")


def _keyed(kind: HandlerKind, decorator: str, routing_key: Any) -> Any:
    if callable(routing_key):  # used bare: @command_handler
        return _mark(routing_key, HandlerMarker(kind), decorator)
    _check_key(routing_key, decorator)

    def apply(func: F) -> F:
        return _mark(func, HandlerMarker(kind, routing_key), decorator)

    return apply


@overload
def command_handler(routing_key: F) -> F: ...
@overload
def command_handler(routing_key: str | None = None) -> Callable[[F], F]: ...
def command_handler(routing_key: Any = None) -> Any:
    """Marks a command handler; without a routing key it is routed by its first parameter's class."""
    return _keyed(HandlerKind.COMMAND, "command_handler", routing_key)


@overload
def event_handler(routing_key: F) -> F: ...
@overload
def event_handler(routing_key: str | None = None) -> Callable[[F], F]: ...
def event_handler(routing_key: Any = None) -> Any:
    """Marks an event handler; the routing key may use ``*`` (any characters, dots included, case-insensitive)."""
    return _keyed(HandlerKind.EVENT, "event_handler", routing_key)


@overload
def query_handler(routing_key: F) -> F: ...
@overload
def query_handler(routing_key: str | None = None) -> Callable[[F], F]: ...
def query_handler(routing_key: Any = None) -> Any:
    """Marks a query handler; its return value is the query's result."""
    return _keyed(HandlerKind.QUERY, "query_handler", routing_key)


def service_activator(input_channel: str) -> Callable[[F], F]:
    """Marks the handler of a named channel (the target of ``DistributedBus.send_message``)."""
    if input_channel is None or callable(input_channel):
        raise HandlerDefinitionError("@service_activator needs an input channel name: @service_activator('channel')")
    _check_key(input_channel, "service_activator")

    def apply(func: F) -> F:
        return _mark(func, HandlerMarker(HandlerKind.SERVICE_ACTIVATOR, input_channel), "service_activator")

    return apply


@overload
def distributed(func: F) -> F: ...
@overload
def distributed(func: None = None) -> Callable[[F], F]: ...
def distributed(func: Any = None) -> Any:
    """Makes a handler reachable from other services through the distributed bus."""

    def apply(target: F) -> F:
        setattr(_target(target, "distributed"), DISTRIBUTED_ATTR, True)
        return target

    return apply if func is None else apply(func)


def markers_of(func: Any) -> tuple[HandlerMarker, ...]:
    """The markers attached to a function (empty when it is not a handler)."""
    func = func.__func__ if isinstance(func, (staticmethod, classmethod)) else func
    markers: tuple[HandlerMarker, ...] = getattr(func, MARKERS_ATTR, ())
    return markers if isinstance(markers, tuple) else ()


def is_distributed(func: Any) -> bool:
    func = func.__func__ if isinstance(func, (staticmethod, classmethod)) else func
    return getattr(func, DISTRIBUTED_ATTR, False) is True
