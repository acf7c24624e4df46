"""Middleware: the hook port through which tracing, metrics or anything else watches messages travel.

The core calls these hooks and knows nothing of what is behind them (OpenTelemetry lives in
:mod:`container_messaging.observability`). A :class:`Middleware` has a no-op default for every hook; override the
ones you need and hand instances to the container (``MessagingContainer.from_yaml(path, middleware=[...])``).

==========================  ===================================================================================
hook                        called
==========================  ===================================================================================
``publishing``              around each publish, by :class:`InstrumentedTransport`: to an exchange, or straight
                            to a queue (exchange ``""``: Service Map channels, dead letter replays); yields the
                            message to send (it may add headers, e.g. the trace context)
``consuming``               around a consumer's whole run (e.g. to observe the size of its queue meanwhile)
``receiving``               around the processing of one delivered message, from routing to settling, on the
                            consumer's thread; with ``concurrency`` above 1 other messages are taken and settled
                            meanwhile on that thread, so this hook must not change the thread's current context
                            (OpenTelemetry: start a span, do not make it current)
``handling``                around each run of one handler (each attempt), in the thread or task that runs it,
                            so a context it sets (OpenTelemetry's current span) is the handler's
``settled``                 when the consumer decided something: a handler succeeded, is retried now or later,
                            the message went to the dead letter, was a duplicate or had no subscriber
==========================  ===================================================================================

A context manager hook sees the exception of what it surrounds (and must let it through). Without middleware the
container installs none of this: publishing and consuming cost nothing more.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Any, Final

import attrs

from container_messaging.invocation import Handler
from container_messaging.messages import Message
from container_messaging.transports.base import BaseTransport, OutboundMessage, TransportDecorator

__all__ = [
    "EndpointInfo",
    "InstrumentedTransport",
    "Middleware",
    "MiddlewareChain",
    "Outcome",
    "chain",
    "messaging_system",
]

#: URL scheme -> the ``messaging.system`` of OpenTelemetry's semantic conventions.
_SYSTEMS: Final[Mapping[str, str]] = {
    "pyamqp": "rabbitmq",
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "redis": "redis",
    "rediss": "redis",
    "embedded": "embedded",
    "memory": "memory",
}


def messaging_system(transport: BaseTransport) -> str:
    """The broker kind of ``transport`` (``rabbitmq``, ``redis``, ``embedded``, ``memory``), from its URL scheme."""
    scheme = transport.description.partition("://")[0].lower()
    return _SYSTEMS.get(scheme, scheme or "unknown")


class Outcome(enum.Enum):
    """What the consumer decided, as told to :meth:`Middleware.settled`."""

    #: a handler returned
    HANDLED = "handled"
    #: a handler failed and runs again at once
    RETRIED_NOW = "retried now"
    #: a handler failed; a copy of the message goes back to the queue for a delayed retry
    RETRIED_LATER = "retried later"
    #: a handler (or routing) failed for good; a copy of the message went to the dead letter
    DEAD_LETTERED = "dead-lettered"
    #: a handler failed and ``stop_on_failure`` keeps the message on its queue
    REQUEUED = "requeued"
    #: every handler already handled this message id: skipped
    DUPLICATE = "duplicate"
    #: an event no handler of this endpoint subscribes to: acknowledged and dropped
    DROPPED = "dropped"


@attrs.frozen
class EndpointInfo:
    """The endpoint a consumer hook is about: its name, its queue and dead letter queue, the exchange it is bound
    to, and the broker kind (``system``)."""

    name: str
    queue: str
    dead_letter_queue: str
    exchange: str
    system: str


class Middleware:
    """The hooks, each a no-op by default. Subclass and override what you need; keep each hook cheap, it runs per
    message. A hook must not raise (an exception from a hook is an exception of the publish or the handling)."""

    def publishing(
        self, system: str, exchange: str, message: OutboundMessage
    ) -> AbstractContextManager[OutboundMessage]:
        """Entered around publishing ``message`` to ``exchange`` on a ``system`` broker (``""``: straight to the
        queue named by its ``routing_key``); yields the message to publish (the same, or a copy with headers added:
        ``attrs.evolve(message, headers=...)``)."""
        return nullcontext(message)

    def consuming(self, endpoint: EndpointInfo, queue_size: Callable[[str], int]) -> AbstractContextManager[None]:
        """Entered around a consumer's run; ``queue_size(queue)`` asks the broker how many messages wait in a queue
        (it does I/O: call it from a metrics callback, never per message)."""
        return nullcontext()

    def receiving(self, endpoint: EndpointInfo, message: Message) -> AbstractContextManager[None]:
        """Entered when the consumer takes ``message`` and left when it settles it (choosing its handlers, running
        them, acknowledging or retrying). Not one block of code: other messages may be taken and settled in between
        on the same thread, and the handlers may run on other threads; key any state by the message (``id``)."""
        return nullcontext()

    def handling(self, endpoint: EndpointInfo, handler: Handler, message: Message) -> AbstractContextManager[None]:
        """Entered around one run of ``handler`` on ``message`` (each attempt), in the thread that runs it."""
        return nullcontext()

    def settled(
        self,
        endpoint: EndpointInfo,
        message: Message,
        outcome: Outcome,
        *,
        handler: Handler | None = None,
        attempt: int | None = None,
        error: Exception | None = None,
    ) -> None:
        """The consumer decided ``outcome`` for ``message``: per handler (``handler`` None when no handler could be
        chosen) for HANDLED, RETRIED_NOW, RETRIED_LATER, DEAD_LETTERED and REQUEUED; per message (no handler) for
        DUPLICATE and DROPPED. A failure comes with its ``error`` and its ``attempt`` (counted overall, immediate and
        delayed retries together, as in the logs and the dead letter's ``failure.attempts``). Called on the thread
        that decided: the handler's (HANDLED, RETRIED_NOW) or the consumer's (the others)."""


class MiddlewareChain(Middleware):
    """Several middlewares as one: entered in the order given, left in reverse."""

    def __init__(self, middlewares: Sequence[Middleware]) -> None:
        self.middlewares = tuple(middlewares)

    def __repr__(self) -> str:
        return f"MiddlewareChain({list(self.middlewares)!r})"

    @contextmanager
    def publishing(self, system: str, exchange: str, message: OutboundMessage) -> Iterator[OutboundMessage]:
        with ExitStack() as stack:
            for middleware in self.middlewares:
                message = stack.enter_context(middleware.publishing(system, exchange, message))
            yield message

    @contextmanager
    def consuming(self, endpoint: EndpointInfo, queue_size: Callable[[str], int]) -> Iterator[None]:
        with ExitStack() as stack:
            for middleware in self.middlewares:
                stack.enter_context(middleware.consuming(endpoint, queue_size))
            yield

    @contextmanager
    def receiving(self, endpoint: EndpointInfo, message: Message) -> Iterator[None]:
        with ExitStack() as stack:
            for middleware in self.middlewares:
                stack.enter_context(middleware.receiving(endpoint, message))
            yield

    @contextmanager
    def handling(self, endpoint: EndpointInfo, handler: Handler, message: Message) -> Iterator[None]:
        with ExitStack() as stack:
            for middleware in self.middlewares:
                stack.enter_context(middleware.handling(endpoint, handler, message))
            yield

    def settled(
        self,
        endpoint: EndpointInfo,
        message: Message,
        outcome: Outcome,
        *,
        handler: Handler | None = None,
        attempt: int | None = None,
        error: Exception | None = None,
    ) -> None:
        for middleware in self.middlewares:
            middleware.settled(endpoint, message, outcome, handler=handler, attempt=attempt, error=error)


def chain(middlewares: Sequence[Middleware]) -> Middleware | None:
    """One middleware for ``middlewares``: None when there is none (the core then skips every hook), the one
    itself, or a :class:`MiddlewareChain`. Anything that is not a :class:`Middleware` is a TypeError naming it."""
    for index, middleware in enumerate(middlewares):
        if not isinstance(middleware, Middleware):
            raise TypeError(
                f"middleware[{index}] is a {type(middleware).__name__} ({middleware!r}), not a "
                "container_messaging.middleware.Middleware"
            )
    if not middlewares:
        return None
    if len(middlewares) == 1:
        return middlewares[0]
    return MiddlewareChain(middlewares)


class InstrumentedTransport(TransportDecorator):
    """A transport decorator that runs the ``publishing`` hook around every publish of the transport it wraps;
    everything else goes straight to that transport. Put it outermost (around an outbox, for instance), so the
    hook runs where the application sends and sees the application's context."""

    def __init__(self, inner: BaseTransport, middleware: Middleware) -> None:
        super().__init__(inner)
        self.middleware = middleware
        self.system = messaging_system(inner)

    def __getattr__(self, name: str) -> Any:
        # what an adapter offers beyond the port (e.g. tooling methods) stays reachable
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def publish(self, exchange: str, message: OutboundMessage, *, mandatory: bool) -> None:
        with self.middleware.publishing(self.system, exchange, message) as outbound:
            self.inner.publish(exchange, outbound, mandatory=mandatory)

    def publish_many(self, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> None:
        with ExitStack() as stack:
            outbound = [
                (stack.enter_context(self.middleware.publishing(self.system, exchange, message)), mandatory)
                for message, mandatory in messages
            ]
            self.inner.publish_many(exchange, outbound)

    def send_to_queue(self, queue: str, message: OutboundMessage) -> None:
        # the default exchange ("") with the queue as routing key: Service Map channels, dead letter replays
        with self.middleware.publishing(self.system, "", message) as outbound:
            self.inner.send_to_queue(queue, outbound)
