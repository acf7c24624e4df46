"""Handler markers: ``@command_handler``, ``@event_handler``, ``@query_handler``, ``@service_activator``,
``@distributed``; sending declarations: ``@sends_command``, ``@publishes``, ``@sends_message``.

They only attach a small frozen spec to the function; importing a module registers nothing, connects nothing and
reads no configuration. The container finds marked functions when it scans the configured modules.
Stacking order does not matter: ``@distributed`` above or below ``@command_handler`` means the same.
Sending declarations change nothing at run time: they say what a function sends, for the AsyncAPI document and the
message-flow graph (``container_messaging.docs``).
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
    "RetryPolicy",
    "SendingDeclaration",
    "command_handler",
    "distributed",
    "event_handler",
    "is_distributed",
    "is_transactional",
    "markers_of",
    "publishes",
    "query_handler",
    "retries",
    "retry_policy_of",
    "sending_declarations_of",
    "sends_command",
    "sends_message",
    "service_activator",
    "transactional",
]

F = TypeVar("F", bound=Callable[..., Any])

TRANSACTIONAL_ATTR: Final = "__container_messaging_transactional__"
MARKERS_ATTR: Final = "__container_messaging_markers__"
DISTRIBUTED_ATTR: Final = "__container_messaging_distributed__"
RETRIES_ATTR: Final = "__container_messaging_retries__"
SENDS_ATTR: Final = "__container_messaging_sends__"


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


def _to_tuple(value: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    return tuple(value)


@attrs.frozen
class RetryPolicy:
    """How often a failing handler is tried again: ``immediate_retries`` at once, then one retry after each of
    ``delayed_retries`` (milliseconds); then the message goes to the dead letter."""

    immediate_retries: int = attrs.field(default=2)
    delayed_retries: tuple[int, ...] = attrs.field(default=(1000, 10000, 60000), converter=_to_tuple)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.immediate_retries, int) or self.immediate_retries < 0:
            raise HandlerDefinitionError(
                f"immediate retries must be a whole number >= 0, got {self.immediate_retries!r}"
            )
        if any(not isinstance(d, int) or isinstance(d, bool) or d <= 0 for d in self.delayed_retries):
            raise HandlerDefinitionError(
                f"delayed retries must be positive milliseconds, got {list(self.delayed_retries)!r}"
            )

    @property
    def attempts(self) -> int:
        """How many times a handler runs at most for one message."""
        return (1 + self.immediate_retries) * (1 + len(self.delayed_retries))


def retries(immediate: int | None = None, delayed: tuple[int, ...] | list[int] | None = None) -> Callable[[F], F]:
    """Overrides the configured recoverability for one handler: ``@retries(immediate=0, delayed=[500, 5000])``.
    What is not given keeps the configured value."""
    override = (immediate, None if delayed is None else tuple(delayed))
    if immediate is not None or delayed is not None:
        RetryPolicy(immediate if immediate is not None else 0, override[1] or ())  # validates now, at import

    def apply(func: F) -> F:
        setattr(_target(func, "retries"), RETRIES_ATTR, override)
        return func

    return apply


def retry_policy_of(func: Any, default: RetryPolicy) -> RetryPolicy:
    """The handler's own policy (``@retries``) merged over ``default``."""
    func = func.__func__ if isinstance(func, (staticmethod, classmethod)) else func
    override: tuple[int | None, tuple[int, ...] | None] | None = getattr(func, RETRIES_ATTR, None)
    if override is None:
        return default
    immediate, delayed = override
    return RetryPolicy(
        default.immediate_retries if immediate is None else immediate,
        default.delayed_retries if delayed is None else delayed,
    )


def markers_of(func: Any) -> tuple[HandlerMarker, ...]:
    """The markers attached to a function (empty when it is not a handler)."""
    func = func.__func__ if isinstance(func, (staticmethod, classmethod)) else func
    markers: tuple[HandlerMarker, ...] = getattr(func, MARKERS_ATTR, ())
    return markers if isinstance(markers, tuple) else ()


def is_distributed(func: Any) -> bool:
    func = func.__func__ if isinstance(func, (staticmethod, classmethod)) else func
    return getattr(func, DISTRIBUTED_ATTR, False) is True


# --------------------------------------------------------------------------------------------------------------------
# Sending declarations: what a function sends (documentation only)


@attrs.frozen
class SendingDeclaration:
    """What a function declares it sends: a command to a service, an event, or a message to a service's channel.

    ``kind`` is the kind of handler that receives it (``COMMAND``, ``EVENT`` or ``SERVICE_ACTIVATOR``);
    ``routing_key`` is the command's or event's routing key, or the target channel; ``destination`` is the target
    service (None for events); ``payload_type`` is the payload's type (an attrs class, ``dict``, ``str``, ...).
    """

    kind: HandlerKind
    routing_key: str
    payload_type: Any = attrs.field(default=Any)
    destination: str | None = None


def _declare(declaration: SendingDeclaration, decorator: str) -> Callable[[F], F]:
    _check_key(declaration.routing_key, decorator)
    if declaration.routing_key is None:
        raise HandlerDefinitionError(f"@{decorator}: a routing key is needed")
    if declaration.kind is not HandlerKind.EVENT and (
        not isinstance(declaration.destination, str) or not declaration.destination.strip()
    ):
        raise HandlerDefinitionError(
            f"@{decorator}: destination must be a non-empty service name, got {declaration.destination!r}"
        )
    if isinstance(declaration.payload_type, str):
        raise HandlerDefinitionError(
            f"@{decorator}({declaration.routing_key!r}): the payload type must be a class or a typing form, "
            f"not the string {declaration.payload_type!r}"
        )

    def apply(func: F) -> F:
        if isinstance(func, type):
            raise HandlerDefinitionError(
                f"@{decorator} must decorate the function or method that sends, got the class {func.__qualname__}"
            )
        target = _target(func, decorator)
        existing: tuple[SendingDeclaration, ...] = getattr(target, SENDS_ATTR, ())
        setattr(target, SENDS_ATTR, (*existing, declaration))
        return func

    return apply


def sends_command(destination: str, routing_key: str, payload_type: Any = Any) -> Callable[[F], F]:
    """Declares that the function sends the command ``routing_key`` (a ``payload_type``) to service ``destination``:
    ``@sends_command("billing", "billing.changeDetails", ChangeBillingDetails)``."""
    return _declare(SendingDeclaration(HandlerKind.COMMAND, routing_key, payload_type, destination), "sends_command")


def publishes(routing_key: str, payload_type: Any = Any) -> Callable[[F], F]:
    """Declares that the function publishes the event ``routing_key`` (a ``payload_type``):
    ``@publishes("billing.detailsWereChanged", DetailsWereChanged)``."""
    return _declare(SendingDeclaration(HandlerKind.EVENT, routing_key, payload_type), "publishes")


def sends_message(destination: str, channel: str, payload_type: Any = Any) -> Callable[[F], F]:
    """Declares that the function sends a message (a ``payload_type``) to the channel ``channel`` of service
    ``destination`` (its ``@service_activator(channel)``)."""
    return _declare(
        SendingDeclaration(HandlerKind.SERVICE_ACTIVATOR, channel, payload_type, destination), "sends_message"
    )


def sending_declarations_of(func: Any) -> tuple[SendingDeclaration, ...]:
    """The sending declarations attached to a function (empty when it declares none)."""
    func = func.__func__ if isinstance(func, (staticmethod, classmethod)) else func
    declared: tuple[SendingDeclaration, ...] = getattr(func, SENDS_ATTR, ())
    return declared if isinstance(declared, tuple) else ()


# --------------------------------------------------------------------------------------------------------------------
# Transactions


@overload
def transactional(func: F) -> F: ...
@overload
def transactional(func: None = None) -> Callable[[F], F]: ...
def transactional(func: Any = None) -> Any:
    """Runs the handler inside a database transaction of the outbox's unit of work: its writes (it receives the
    connection through a parameter annotated with the connection's type), the inbox record of the message it handled
    and the messages it sends commit together; a message already in the inbox runs nothing
    (see :mod:`container_messaging.outbox`)."""

    def apply(target: F) -> F:
        setattr(_target(target, "transactional"), TRANSACTIONAL_ATTR, True)
        return target

    return apply if func is None else apply(func)


def is_transactional(func: Any) -> bool:
    func = func.__func__ if isinstance(func, (staticmethod, classmethod)) else func
    return getattr(func, TRANSACTIONAL_ATTR, False) is True
