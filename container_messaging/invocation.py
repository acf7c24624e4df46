"""Invocation: turns a marked function and a :class:`Message` into a call.

Everything is decided once, when the container boots, into a per-handler plan: how the payload is converted to the
first parameter's type, which parameters receive ``Headers`` or one ``Header("name")``, and which are resolved
from the container (method injection, as Ecotone does). A ``@transactional`` handler's plan runs the call inside
the :class:`Transactions` the container provides, and its parameter annotated with their connection type receives
the open transaction's connection. The per-message path only runs the plan.

A coroutine handler (``async def``) is awaited: by a consumer on the event loop it owns (set in
:data:`coroutine_runner` for the run), by the async buses on the caller's loop (:meth:`Handler.call_async`), and by
the synchronous buses outside a consumer on a new event loop for the call (``asyncio.run``), unless the calling
thread runs an event loop already: then the call is an error naming the handler (use the async buses there). What
cannot be awaited correctly is refused at boot: an async generator, a ``@transactional`` coroutine.
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
import inspect
import types
import typing
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Final, Protocol

from container_messaging.errors import (
    HandlerDefinitionError,
    MessageHandlingError,
    MissingDependencyError,
    MissingHeaderError,
)
from container_messaging.markers import HandlerKind, is_transactional
from container_messaging.messages import ID, TYPE_ID, Header, Headers, Message
from container_messaging.scanning import FoundHandler

__all__ = [
    "Handler",
    "PayloadConverter",
    "Transactions",
    "build_handler",
    "coroutine_runner",
    "current_message",
    "handler_failure",
]

#: The message whose handler is running in this context (None outside handlers): the parent of what it sends.
current_message: Final[contextvars.ContextVar[Message | None]] = contextvars.ContextVar(
    "container_messaging_current_message", default=None
)

#: Told ``(handler, message, error)`` when a handler called outside any other handler (by a consumer) raises, before
#: the error propagates; None (the default): nobody is told. The test system sets it to surface a failure at once.
handler_failure: Final[contextvars.ContextVar[Callable[[Handler, Message, Exception], None] | None]] = (
    contextvars.ContextVar("container_messaging_handler_failure", default=None)
)

#: Runs a coroutine to its end on the event loop of the consumer running in this context and returns its result (None
#: outside consumers). A consumer sets it for its run, so coroutine handlers, also those reached through the
#: synchronous buses from a handler, are awaited on the loop it owns rather than on a loop per message.
coroutine_runner: Final[contextvars.ContextVar[Callable[[Coroutine[Any, Any, Any]], Any] | None]] = (
    contextvars.ContextVar("container_messaging_coroutine_runner", default=None)
)

_NOT_ROUTABLE_BY_CLASS: Final = frozenset({str, bytes, dict, list, tuple, set, int, float, bool, object})

ArgGetter = Callable[[Message], Any]


class PayloadConverter(Protocol):
    """What invocation needs of the converter: a per-target conversion plan made once, called with the payload, the
    content type and the message's ``__TypeId__``."""

    def plan(self, target: Any) -> Callable[[Any, str, Any], Any]: ...


Resolver = Callable[[Any, str], Callable[[], Any]]
"""Given a type and a description of who asks, returns a provider (a zero-argument callable) or raises."""


class Transactions(abc.ABC):
    """What a ``@transactional`` handler runs in, resolved from the container by type when the handler is built.

    :class:`container_messaging.outbox.UnitOfWork` implements it on a database: the handler's writes, the inbox
    record of the message and the messages it sends commit together.
    """

    @property
    @abc.abstractmethod
    def connection_type(self) -> type:
        """A handler parameter annotated with this type receives the transaction's connection."""

    @abc.abstractmethod
    def connection(self) -> Any:
        """The connection of the transaction open in this context."""

    @abc.abstractmethod
    def run(self, handler_name: str, message: Message, call: Callable[[Message], Any]) -> Any:
        """Calls ``call(message)`` inside a transaction and returns its result; runs nothing (and returns None) when
        ``handler_name`` already handled this message id."""


class Handler:
    """A handler ready to run: call it with a :class:`Message` (a coroutine handler is awaited, see the module
    docstring), or await :meth:`call_async` on an event loop."""

    __slots__ = (
        "_call",
        "distributed",
        "function",
        "is_coroutine",
        "kind",
        "name",
        "owner",
        "payload_class",
        "payload_type",
        "routing_key",
    )

    def __init__(
        self,
        *,
        name: str,
        kind: HandlerKind,
        routing_key: str | None,
        payload_class: type | None,
        distributed: bool,
        owner: type | None,
        function: Callable[..., Any],
        call: Callable[[Message], Any],
        payload_type: Any = inspect.Parameter.empty,
    ) -> None:
        self.name = name
        self.kind = kind
        self.routing_key = routing_key
        self.payload_class = payload_class
        self.distributed = distributed
        self.owner = owner
        self.function = function
        #: the payload parameter's annotation (``inspect.Parameter.empty``: none, or the handler takes no payload)
        self.payload_type = payload_type
        #: an ``async def`` handler: its call returns a coroutine to await
        self.is_coroutine = inspect.iscoroutinefunction(function)
        self._call = call

    def __call__(self, message: Message) -> Any:
        if self.is_coroutine:
            return self._await(message)
        token = current_message.set(message)
        try:
            return self._call(message)
        except Exception as exc:
            self._failed(token, message, exc)
            raise
        finally:
            current_message.reset(token)

    async def call_async(self, message: Message) -> Any:
        """The handler's result on the running event loop: a coroutine handler is awaited there; a plain one is
        called (the async buses run plain handlers in a worker thread instead, see :mod:`container_messaging.buses`)."""
        if not self.is_coroutine:
            return self(message)
        token = current_message.set(message)
        try:
            return await self._call(message)
        except Exception as exc:
            self._failed(token, message, exc)
            raise
        finally:
            current_message.reset(token)

    def _await(self, message: Message) -> Any:
        """A coroutine handler called synchronously: awaited on the consumer's loop, or on a loop for this call."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise MessageHandlingError(
                f"handler {self.name} is a coroutine function (async def), called through a synchronous bus from a "
                "thread that runs an event loop, which cannot wait for it without blocking the loop: use the async "
                "buses there (AsyncCommandBus, AsyncEventBus, AsyncQueryBus)"
            )
        runner = coroutine_runner.get()
        if runner is not None:
            return runner(self.call_async(message))
        return asyncio.run(self.call_async(message))

    def _failed(self, token: contextvars.Token[Message | None], message: Message, exc: Exception) -> None:
        observer = handler_failure.get()
        if observer is not None and token.old_value in (None, contextvars.Token.MISSING):
            observer(self, message, exc)

    def __repr__(self) -> str:
        route = self.routing_key if self.routing_key is not None else getattr(self.payload_class, "__qualname__", None)
        flag = ", distributed" if self.distributed else ""
        return f"<Handler {self.kind.value} {route!r} -> {self.name}{flag}>"


def _header_marker(annotation: Any) -> Header | None:
    if typing.get_origin(annotation) is Annotated:
        return next((m for m in annotation.__metadata__ if isinstance(m, Header)), None)
    return None


def _strip_annotated(annotation: Any) -> Any:
    return annotation.__origin__ if typing.get_origin(annotation) is Annotated else annotation


def _header_getter(handler_name: str, param: inspect.Parameter, header: Header) -> ArgGetter:
    name = header.name
    if header.has_default or param.default is not inspect.Parameter.empty:
        default = header.default if header.has_default else param.default
        return lambda message: message.headers.get(name, default)

    def get(message: Message) -> Any:
        try:
            return message.headers[name]
        except KeyError:
            raise MissingHeaderError(
                f"message {message.headers.get(ID)!r} has no header {name!r}, "
                f"needed by parameter {param.name!r} of {handler_name}"
            ) from None

    return get


def _headers(message: Message) -> Headers:
    return message.headers


def build_handler(
    found: FoundHandler, *, converter: PayloadConverter, resolve: Resolver, instance: Callable[[], Any] | None
) -> Handler:
    """Compiles one found handler into a :class:`Handler`; every definition error is raised here, at boot."""
    function, name = found.function, found.name
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as exc:
        raise HandlerDefinitionError(f"cannot read the type hints of handler {name}: {exc}") from exc
    params = list(inspect.signature(function).parameters.values())
    if found.owner is not None:
        params = params[1:]  # self
    _check_callable(name, function)
    transactions = _transactions(name, resolve) if is_transactional(function) else None

    payload_target: Any = None
    has_payload = False
    if params:
        first = params[0]
        first_annotation = hints.get(first.name, inspect.Parameter.empty)
        if first_annotation is not Headers and _header_marker(first_annotation) is None:
            has_payload = True
            payload_target = first_annotation
            params = params[1:]

    getters = _parameter_getters(name, params, hints, resolve, transactions)

    payload_class = _payload_class(found, payload_target, has_payload)
    if found.distributed and found.marker.routing_key is None:
        raise HandlerDefinitionError(
            f"distributed handler {name} needs a routing key: other services address it by key, not by class"
        )
    if found.distributed and found.marker.kind is HandlerKind.QUERY:
        raise HandlerDefinitionError(
            f"handler {name}: queries cannot be distributed (Ecotone distributes commands, events and messages)"
        )

    convert = converter.plan(payload_target) if has_payload else None
    call = _compile(function, instance, convert, getters)
    if transactions is not None:
        call = _in_transaction(transactions, name, call)
    return Handler(
        name=name,
        kind=found.marker.kind,
        routing_key=found.marker.routing_key,
        payload_class=payload_class,
        distributed=found.distributed,
        owner=found.owner,
        function=function,
        call=call,
        payload_type=payload_target if has_payload else inspect.Parameter.empty,
    )


def _check_callable(name: str, function: Callable[..., Any]) -> None:
    """What the framework cannot run correctly is refused at boot, naming the handler."""
    if inspect.isasyncgenfunction(function):
        raise HandlerDefinitionError(
            f"handler {name} is an async generator function (async def with yield): nothing would run its body; "
            "write it as an async def without yield"
        )
    if inspect.iscoroutinefunction(function) and is_transactional(function):
        raise HandlerDefinitionError(
            f"handler {name} is a coroutine function (async def) and @transactional: the outbox's transactions are "
            "synchronous; make the handler a plain function, or drop @transactional"
        )


def _parameter_getters(
    name: str,
    params: list[inspect.Parameter],
    hints: dict[str, Any],
    resolve: Resolver,
    transactions: Transactions | None,
) -> list[tuple[str, ArgGetter, bool]]:
    """How each parameter after the payload gets its argument: ``(name, getter, keyword-only)``."""
    getters: list[tuple[str, ArgGetter, bool]] = []
    for param in params:
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise HandlerDefinitionError(f"handler {name}: parameter {param.name!r} cannot be *args or **kwargs")
        keyword = param.kind is inspect.Parameter.KEYWORD_ONLY
        annotation = hints.get(param.name, inspect.Parameter.empty)
        header = _header_marker(annotation)
        if annotation is Headers:
            getters.append((param.name, _headers, keyword))
        elif header is not None:
            getters.append((param.name, _header_getter(name, param, header), keyword))
        elif transactions is not None and _is_connection(annotation, transactions.connection_type):
            getters.append((param.name, _connection(transactions), keyword))
        elif annotation is inspect.Parameter.empty:
            if param.default is inspect.Parameter.empty:
                raise HandlerDefinitionError(
                    f"handler {name}: parameter {param.name!r} has no type annotation, so nothing can be injected; "
                    "annotate it with Headers, Annotated[T, Header('name')] or a type the container provides"
                )
        else:
            try:
                provider = resolve(annotation, f"parameter {param.name!r} of handler {name}")
            except MissingDependencyError:
                if param.default is not inspect.Parameter.empty:
                    continue  # the Python default applies
                if not _is_optional(annotation):
                    raise
                getters.append((param.name, _none, keyword))  # ``T | None`` and nothing provides T
                continue
            getters.append((param.name, _injected(provider), keyword))
    return getters


def _none(_message: Message) -> None:
    return None


def _transactions(handler_name: str, resolve: Resolver) -> Transactions:
    try:
        provider = resolve(Transactions, f"the @transactional handler {handler_name}")
    except MissingDependencyError as exc:
        raise HandlerDefinitionError(
            f"handler {handler_name} is @transactional, but nothing provides the transactions it runs in: "
            "enable the outbox (container_messaging.outbox) so that its UnitOfWork is in the container"
        ) from exc
    transactions = provider()
    if not isinstance(transactions, Transactions):
        raise HandlerDefinitionError(
            f"handler {handler_name} is @transactional, but the container provides {transactions!r} "
            "for Transactions, which is not one"
        )
    return transactions


def _is_connection(annotation: Any, connection_type: type) -> bool:
    annotation = _strip_annotated(annotation)
    return isinstance(annotation, type) and annotation is not object and issubclass(connection_type, annotation)


def _connection(transactions: Transactions) -> ArgGetter:
    return lambda _message: transactions.connection()


def _in_transaction(
    transactions: Transactions, handler_name: str, call: Callable[[Message], Any]
) -> Callable[[Message], Any]:
    return lambda message: transactions.run(handler_name, message, call)


def _is_optional(annotation: Any) -> bool:
    annotation = _strip_annotated(annotation)
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
        annotation
    )


def _injected(provider: Callable[[], Any]) -> ArgGetter:
    return lambda _message: provider()


def _payload_class(found: FoundHandler, target: Any, has_payload: bool) -> type | None:
    target = _strip_annotated(target)
    routable = (
        isinstance(target, type) and target not in _NOT_ROUTABLE_BY_CLASS and target is not inspect.Parameter.empty
    )
    if found.marker.routing_key is None:
        if found.marker.kind is HandlerKind.SERVICE_ACTIVATOR:
            raise HandlerDefinitionError(f"service activator {found.name} needs an input channel")
        if not has_payload or not routable:
            raise HandlerDefinitionError(
                f"handler {found.name} has no routing key, so it is routed by the class of its first parameter, "
                f"but that parameter is {'missing' if not has_payload else f'annotated {target!r}'}; "
                "give the marker a routing key or annotate the first parameter with a message class"
            )
    return target if routable else None


def _compile(
    function: Callable[..., Any],
    instance: Callable[[], Any] | None,
    convert: Callable[[Any, str, Any], Any] | None,
    getters: list[tuple[str, ArgGetter, bool]],
) -> Callable[[Message], Any]:
    positional = tuple(g for _, g, kw in getters if not kw)
    keywords = tuple((n, g) for n, g, kw in getters if kw)

    def target(message: Message) -> Callable[..., Any]:
        return function.__get__(instance()) if instance is not None else function

    # The common shapes get a call without generic argument building. The payload's conversion gets the message's
    # __TypeId__: it chooses the class when the payload parameter is a base class or a union.
    if instance is not None and convert is not None and not keywords:
        if not positional:
            return lambda m: function(instance(), convert(m.payload, m.content_type, m.headers.get(TYPE_ID)))
        if positional == (_headers,):
            return lambda m: function(instance(), convert(m.payload, m.content_type, m.headers.get(TYPE_ID)), m.headers)

    def call(message: Message) -> Any:
        args = []
        if convert is not None:
            args.append(convert(message.payload, message.content_type, message.headers.get(TYPE_ID)))
        args.extend(g(message) for g in positional)
        kwargs = {n: g(message) for n, g in keywords}
        return target(message)(*args, **kwargs)

    return call
