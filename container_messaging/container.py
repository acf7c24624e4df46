"""``MessagingContainer``: the application container, built on dependency-injector.

Buses, the converter, the transport, the distributed bus and every scanned handler class are providers in one
``DynamicContainer``. On top of dependency-injector (which resolves by name only) it keeps an index by type, so
``container.get(CommandBus)`` and constructor injection by type hints work. Precedence: explicit providers (the
application container's and the framework's own) win over classes the container builds by itself. Everything is
checked when the container is built: a missing dependency names the class and the parameter. Building never
connects to a broker.
"""

from __future__ import annotations

import inspect
import logging
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar, overload

from dependency_injector import containers, providers

from container_messaging.buses import CommandBus, EventBus, MessageChannels, QueryBus
from container_messaging.config import Settings, load_ini, load_settings, load_yaml, settings_from_dict
from container_messaging.consumer import EndpointConsumer, RunOptions, RunResult
from container_messaging.conversion import Converter
from container_messaging.deadletter import DeadLetter
from container_messaging.deduplication import DeduplicationStore, create_deduplication_store
from container_messaging.distributed import DistributedBus, DistributedDispatcher, DistributedTopology
from container_messaging.errors import (
    AmbiguousDependencyError,
    ConfigurationError,
    ContainerError,
    EndpointError,
    MissingDependencyError,
)
from container_messaging.invocation import Handler, build_handler
from container_messaging.markers import RetryPolicy
from container_messaging.routing import RoutingTable
from container_messaging.scanning import FoundHandler, scan
from container_messaging.transports import BaseTransport, create_transport

__all__ = ["MessagingContainer"]

log = logging.getLogger("container_messaging.container")

T = TypeVar("T")

_NOT_AUTOWIRED: Final = frozenset({"builtins", "typing", "collections.abc", "abc", "types"})


def _type_name(tp: Any) -> str:
    return f"{tp.__module__}.{tp.__qualname__}" if isinstance(tp, type) else repr(tp)


def _provider_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}".replace(".", "_").replace("<", "").replace(">", "")


def _provided_type(provider: Any) -> type | None:
    """The class an explicit dependency-injector provider provides, when it can be told without calling it."""
    candidate: Any = None
    if isinstance(provider, (providers.Factory, providers.BaseSingleton)):
        candidate = provider.cls
    elif isinstance(provider, providers.Object):
        value = provider.provides
        candidate = None if value is None or isinstance(value, type) else type(value)
    elif isinstance(provider, providers.Callable):
        try:
            candidate = typing.get_type_hints(provider.provides).get("return")
        except Exception:
            candidate = None
    elif isinstance(provider, providers.Dependency):
        candidate = provider.instance_of
    if isinstance(candidate, type) and candidate is not object:
        return candidate
    return None


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


class MessagingContainer:
    """The messaging application: configuration, scanned handlers, buses and transports, wired by type."""

    def __init__(
        self, settings: Settings | None = None, *, app: Any = None, transport: BaseTransport | None = None
    ) -> None:
        self.settings = settings or settings_from_dict({})
        s = self.settings
        self.di = containers.DynamicContainer()
        self._by_type: dict[type, tuple[str, Any]] = {}
        self._explicit: dict[type, tuple[str, Any]] = {}
        self._building: list[type] = []

        self.converter = Converter(
            camel_case=s.conversion.json_keys == "camelCase", forbid_unknown_keys=s.conversion.forbid_unknown_keys
        )
        self.topology = DistributedTopology(s.distribution.exchange, s.distribution.queue_prefix)
        transport_provider: Any = (
            providers.Object(transport) if transport is not None else providers.Singleton(create_transport, s.transport)
        )
        config = providers.Configuration(strict=True)
        config.from_dict(s.as_dict())
        self.di.set_provider("messaging_config", config)

        framework: dict[str, tuple[type | None, Any]] = {
            "messaging_settings": (Settings, providers.Object(s)),
            "messaging_container": (MessagingContainer, providers.Object(self)),
            "converter": (Converter, providers.Object(self.converter)),
            "transport": (BaseTransport, transport_provider),
            "deduplication": (DeduplicationStore, providers.Singleton(create_deduplication_store, s.deduplication)),
        }
        for name, (tp, provider) in framework.items():
            self._register_explicit(name, tp, provider, "the framework")
        if app is not None:
            self._add_app_container(app)

        # The buses exist before the handlers (they share the routing table, filled below), so a handler's
        # constructor and its method-injected parameters resolve at once, and every error surfaces here, at boot.
        self.routes = RoutingTable()
        buses: dict[str, tuple[type, Any]] = {
            "command_bus": (CommandBus, CommandBus(self.routes)),
            "query_bus": (QueryBus, QueryBus(self.routes)),
            "event_bus": (EventBus, EventBus(self.routes)),
            "message_channels": (MessageChannels, MessageChannels(self.routes)),
        }
        for name, (tp, bus) in buses.items():
            self._register_explicit(name, tp, providers.Object(bus), "the framework")
        if s.service_name is not None:
            self._register_explicit(
                "distributed_bus",
                DistributedBus,
                providers.Singleton(
                    DistributedBus,
                    service_name=s.service_name,
                    transport=transport_provider,
                    converter=self.converter,
                    topology=self.topology,
                    auto_declare=s.transport.auto_declare,
                ),
                "the framework",
            )

        handlers = [self._build_handler(found) for found in scan(s.scan)]
        distributed = [h.name for h in handlers if h.distributed]
        if distributed and s.service_name is None:
            raise ConfigurationError(
                f"{self._source}: service_name: distributed handlers ({', '.join(distributed)}) "
                "need a configured service_name"
            )
        self.routes.extend(handlers)

    # -- construction helpers ----------------------------------------------------------------------------------

    @property
    def _source(self) -> str:
        return self.settings.source or "<dict>"

    @classmethod
    def from_yaml(cls, path: str | Path, *, app: Any = None) -> MessagingContainer:
        return cls(load_yaml(path), app=app)

    @classmethod
    def from_ini(cls, path: str | Path, *, app: Any = None) -> MessagingContainer:
        return cls(load_ini(path), app=app)

    @classmethod
    def from_config(cls, path: str | Path, *, app: Any = None) -> MessagingContainer:
        """By the file's extension: ``.yaml``/``.yml`` or ``.ini``/``.cfg``."""
        return cls(load_settings(path), app=app)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, app: Any = None, transport: BaseTransport | None = None
    ) -> MessagingContainer:
        return cls(settings_from_dict(data), app=app, transport=transport)

    def _register_explicit(self, name: str, tp: type | None, provider: Any, owner: str) -> None:
        if name in self.di.providers:
            raise ContainerError(f"{owner} defines a provider named {name!r}, which is already taken")
        self.di.set_provider(name, provider)
        if tp is None:
            return
        existing = self._explicit.get(tp)
        if existing is not None:
            raise AmbiguousDependencyError(
                f"two explicit providers for {_type_name(tp)}: {existing[0]!r} and {name!r} ({owner}); "
                "keep one, or ask for them by name"
            )
        self._explicit[tp] = (name, provider)
        self._by_type[tp] = (name, provider)

    def _add_app_container(self, app: Any) -> None:
        app_providers = getattr(app, "providers", None)
        if not isinstance(app_providers, Mapping):
            raise ContainerError(f"app must be a dependency-injector container, got {type(app).__name__}")
        for name, provider in app_providers.items():
            if name in self.di.providers:
                raise ContainerError(
                    f"the application container's provider {name!r} clashes with the framework's "
                    f"provider of that name; rename it"
                )
            self._register_explicit(name, _provided_type(provider), provider, "the application container")

    # -- resolution by type ----------------------------------------------------------------------------------------

    def provider_for(self, tp: Any, where: str) -> Any:
        """The provider of ``tp`` (explicit first, then a subclass provided explicitly, then autowired)."""
        tp, _optional = _unwrap_optional(tp)
        found = self._by_type.get(tp)
        if found is not None:
            return found[1]
        if not isinstance(tp, type):
            raise MissingDependencyError(f"no provider for {tp!r}, needed by {where}")
        if getattr(tp, "_is_protocol", False) or inspect.isabstract(tp):
            candidates_of_protocol = self._explicit_subclasses(tp, where)
            if candidates_of_protocol is not None:
                return candidates_of_protocol
            raise MissingDependencyError(
                f"no provider for {_type_name(tp)}, needed by {where}; it is abstract, so provide an implementation "
                "in the application container"
            )
        if tp is DistributedBus:
            raise ConfigurationError(
                f"{self._source}: service_name: {where} needs DistributedBus, which needs a configured service_name"
            )
        found_subclass = self._explicit_subclasses(tp, where)
        if found_subclass is not None:
            return found_subclass
        return self._autowire(tp, where)

    def _explicit_subclasses(self, tp: type, where: str) -> Any:
        """The one explicit provider of a subclass of ``tp`` (None when there is none; an error when several)."""
        try:
            candidates = [(n, p) for t, (n, p) in self._explicit.items() if t is not tp and issubclass(t, tp)]
        except TypeError:  # a Protocol that is not runtime-checkable cannot be matched by subclass
            return None
        if len(candidates) > 1:
            raise AmbiguousDependencyError(
                f"{where} needs {_type_name(tp)}, provided by several explicit providers: "
                + ", ".join(repr(n) for n, _ in candidates)
            )
        if not candidates:
            return None
        self._by_type[tp] = candidates[0]
        return candidates[0][1]

    def _autowire(self, cls: type, where: str) -> Any:
        if cls.__module__ in _NOT_AUTOWIRED or cls.__module__.startswith("container_messaging"):
            raise MissingDependencyError(
                f"no provider for {_type_name(cls)}, needed by {where}; provide it in the application container"
            )
        if cls in self._building:
            chain = " -> ".join(c.__qualname__ for c in [*self._building, cls])
            raise ContainerError(f"circular dependency: {chain}")
        self._building.append(cls)
        try:
            kwargs = self._constructor_injections(cls)
        finally:
            self._building.pop()
        provider = providers.Singleton(cls, **kwargs)
        name = _provider_name(cls)
        if name not in self.di.providers:
            self.di.set_provider(name, provider)
        self._by_type[cls] = (name, provider)
        return provider

    def _constructor_injections(self, cls: type) -> dict[str, Any]:
        init = cls.__init__  # type: ignore[misc]
        if init is object.__init__:
            return {}
        try:
            hints = typing.get_type_hints(init)
            params = list(inspect.signature(init).parameters.values())[1:]
        except Exception as exc:
            raise ContainerError(f"cannot read the constructor of {_type_name(cls)}: {exc}") from exc
        kwargs: dict[str, Any] = {}
        for param in params:
            if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            where = f"parameter {param.name!r} of {_type_name(cls)}"
            annotation = hints.get(param.name)
            if annotation is None:
                if param.default is inspect.Parameter.empty:
                    raise MissingDependencyError(f"{where} has no type annotation, so it cannot be injected")
                continue
            try:
                kwargs[param.name] = self.provider_for(annotation, where)
            except MissingDependencyError:
                if param.default is not inspect.Parameter.empty:
                    continue  # the constructor's default applies
                if not _unwrap_optional(annotation)[1]:
                    raise
                kwargs[param.name] = providers.Object(None)  # ``T | None`` with nothing providing T
        return kwargs

    def _build_handler(self, found: FoundHandler) -> Handler:
        instance = None
        if found.owner is not None:
            instance = self.provider_for(found.owner, f"the handler class of {found.name}")
        return build_handler(found, converter=self.converter, resolve=self.provider_for, instance=instance)

    # -- public API ------------------------------------------------------------------------------------------------

    @overload
    def get(self, key: type[T]) -> T: ...
    @overload
    def get(self, key: str) -> Any: ...
    def get(self, key: Any) -> Any:
        """An object by type (built with constructor injection if nothing provides it) or by provider name."""
        if isinstance(key, str):
            provider = self.di.providers.get(key)
            if provider is None:
                known = ", ".join(sorted(n for n in self.di.providers if not n.startswith("_")))
                raise ContainerError(f"no provider named {key!r} (known: {known})")
            return provider()
        return self.provider_for(key, "container.get()")()

    def wire(self, *, modules: Iterable[Any] | None = None, packages: Iterable[Any] | None = None) -> None:
        """dependency-injector's wiring: ``@inject`` + ``Provide["command_bus"]`` in those modules."""
        self.di.wire(modules=modules, packages=packages)

    def unwire(self) -> None:
        self.di.unwire()

    @property
    def transport(self) -> BaseTransport:
        transport: BaseTransport = self.di.providers["transport"]()
        return transport

    def list(self) -> list[str]:
        """The runnable endpoint names: the service name (it consumes its distributed queue)."""
        return [self.settings.service_name] if self.settings.service_name else []

    def _check_endpoint(self, name: str) -> str:
        endpoints = self.list()
        if name not in endpoints:
            available = ", ".join(repr(e) for e in endpoints) or "none: configure service_name"
            raise EndpointError(f"unknown endpoint {name!r} (available: {available})")
        return name

    def endpoint(self, name: str) -> EndpointConsumer:
        """The consumer of endpoint ``name`` (its queue, dispatcher, recoverability and deduplication)."""
        self._check_endpoint(name)
        s = self.settings
        return EndpointConsumer(
            name=name,
            transport=self.transport,
            topology=self.topology.endpoint(name, self.routes),
            dispatcher=DistributedDispatcher(service_name=name, routes=self.routes),
            prefetch_count=s.transport.prefetch_count,
            idle_timeout=max(0.5, 10 * s.transport.polling_interval),
            retry_policy=RetryPolicy(s.recoverability.immediate_retries, s.recoverability.delayed_retries),
            deduplication=self.get(DeduplicationStore),  # type: ignore[type-abstract]
            max_message_size=s.consumer.max_message_size,
        )

    def dead_letter(self, name: str | None = None) -> DeadLetter:
        """The dead letter of endpoint ``name`` (default: this service's): list, show, replay, delete."""
        endpoint = self._check_endpoint(name if name is not None else (self.settings.service_name or ""))
        return DeadLetter(self.transport, self.topology.queue(endpoint), endpoint)

    def setup(self, name: str | None = None) -> None:
        """Declares the exchange and the endpoint's queue and bindings (all endpoints when no name); idempotent."""
        for endpoint in [name] if name is not None else self.list():
            self._check_endpoint(endpoint)
            self.transport.setup_endpoint(self.topology.endpoint(endpoint, self.routes))

    def run(
        self,
        name: str,
        handled_message_limit: int | None = None,
        execution_time_limit: int | None = None,
        memory_limit: int | None = None,
        stop_on_failure: bool = False,
        finish_when_no_messages: bool = False,
        wait_for_broker: float | None = None,
    ) -> RunResult:
        """Consumes endpoint ``name`` until a limit is reached or SIGINT/SIGTERM (Ecotone's ``run``); with
        ``wait_for_broker`` (seconds), waits that long at start for a broker that does not answer yet."""
        options = RunOptions(
            handled_message_limit,
            execution_time_limit,
            memory_limit,
            stop_on_failure,
            finish_when_no_messages,
            wait_for_broker,
        )
        return self.endpoint(name).run(options)

    def close(self) -> None:
        """Closes the transport's and the deduplication store's connections (those that were ever opened)."""
        for name in ("transport", "deduplication"):
            provider = self.di.providers[name]
            if isinstance(provider, providers.Singleton) and not _singleton_created(provider):
                continue
            provider().close()

    def __enter__(self) -> MessagingContainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<MessagingContainer service={self.settings.service_name!r} handlers={len(self.routes.handlers)} "
            f"transport={self.settings.transport.masked_url!r}>"
        )


def _singleton_created(provider: Any) -> bool:
    try:
        return provider._storage is not None
    except AttributeError:
        return True
