"""``MessagingContainer``: the messaging application, a facade over one dependency-injector container.

Building it reads the settings, scans the handler modules, and registers the buses, the converter, the transport,
the deduplication store, the distributed bus and every handler class as providers in one ``DynamicContainer``
(``container.di``); resolution by type (``container.get(CommandBus)``, constructor injection by type hints) is
:mod:`container_messaging.injection`'s.  Everything is checked when the container is built: a missing dependency
names the class and the parameter.  Building never connects to a broker; ``close()`` closes what was opened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, overload

from dependency_injector import containers, providers

from container_messaging.buses import CommandBus, EventBus, MessageChannels, QueryBus
from container_messaging.config import Settings, load_ini, load_settings, load_yaml, settings_from_dict
from container_messaging.consumer import EndpointConsumer, RunOptions, RunResult
from container_messaging.conversion import Converter
from container_messaging.deadletter import DeadLetter
from container_messaging.deduplication import DeduplicationStore, create_deduplication_store
from container_messaging.distributed import DistributedBus, DistributedDispatcher, DistributedTopology
from container_messaging.errors import ConfigurationError, ContainerError, EndpointError
from container_messaging.injection import Injector
from container_messaging.invocation import Handler, build_handler
from container_messaging.markers import RetryPolicy
from container_messaging.middleware import InstrumentedTransport, Middleware, chain
from container_messaging.observability.health import DEFAULT_TIMEOUT, HealthReport, check_health
from container_messaging.routing import RoutingTable
from container_messaging.scanning import FoundHandler, scan
from container_messaging.transports import BaseTransport, TransportOptions, create_transport

__all__ = ["MessagingContainer"]

log = logging.getLogger("container_messaging.container")

T = TypeVar("T")


class _Closable(Protocol):
    def close(self) -> None: ...


_C = TypeVar("_C", bound=_Closable)


class MessagingContainer:
    """The messaging application: configuration, scanned handlers, buses and transports, wired by type."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        app: Any = None,
        transport: BaseTransport | None = None,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        self.settings = settings or settings_from_dict({})
        s = self.settings
        #: the hooks of :mod:`container_messaging.middleware` (tracing, metrics), None when there are none
        self.middleware = chain(middleware)
        self.di = containers.DynamicContainer()
        self._injector = Injector(self.di)
        self._opened: list[_Closable] = []  # what close() closes: the resources built so far, in order

        self.converter = Converter(
            camel_case=s.conversion.json_keys == "camelCase", forbid_unknown_keys=s.conversion.forbid_unknown_keys
        )
        self.topology = DistributedTopology(s.distribution.exchange, s.distribution.queue_prefix)
        self.routes = RoutingTable()
        transport_provider = self._register_framework(transport)
        if app is not None:
            self._injector.register_container(app)
        # The buses exist before the handlers (they share the routing table, filled below), so a handler's
        # constructor and its method-injected parameters resolve at once, and every error surfaces here, at boot.
        self._register_buses(transport_provider)
        self._register_handlers()

    def _register_framework(self, transport: BaseTransport | None) -> Any:
        """The settings, the converter, the transport and the deduplication store; returns the transport's provider."""
        s = self.settings
        if transport is not None:
            self._opened.append(transport)
        transport_provider: Any = (
            providers.Object(transport)
            if transport is not None
            else providers.Singleton(self._open, create_transport, TransportOptions.of(s.transport))
        )
        if self.middleware is not None:  # outermost, around an outbox: the hooks see where the application sends
            transport_provider = providers.Singleton(InstrumentedTransport, transport_provider, self.middleware)
        deduplication_provider = providers.Singleton(
            self._open,
            create_deduplication_store,
            s.deduplication.store,
            window=s.deduplication.window,
            max_entries=s.deduplication.max_entries,
        )
        config = providers.Configuration(strict=True)
        config.from_dict(s.as_dict())  # the URLs stay SecretUrl values: the dict's repr shows no password
        self.di.set_provider("messaging_config", config)
        framework: dict[str, tuple[type | None, Any]] = {
            "messaging_settings": (Settings, providers.Object(s)),
            "messaging_container": (MessagingContainer, providers.Object(self)),
            "converter": (Converter, providers.Object(self.converter)),
            "transport": (BaseTransport, transport_provider),
            "deduplication": (DeduplicationStore, deduplication_provider),
        }
        for name, (tp, provider) in framework.items():
            self._injector.register(name, tp, provider, "the framework")
        return transport_provider

    def _register_buses(self, transport_provider: Any) -> None:
        """The local buses on the routing table, and the distributed bus when there is a service_name."""
        s = self.settings
        buses: dict[str, tuple[type, Any]] = {
            "command_bus": (CommandBus, CommandBus(self.routes)),
            "query_bus": (QueryBus, QueryBus(self.routes)),
            "event_bus": (EventBus, EventBus(self.routes)),
            "message_channels": (MessageChannels, MessageChannels(self.routes)),
        }
        for name, (tp, bus) in buses.items():
            self._injector.register(name, tp, providers.Object(bus), "the framework")
        if s.service_name is None:
            self._injector.refuse(DistributedBus, self._needs_service_name)
            return
        self._injector.register(
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

    def _register_handlers(self) -> None:
        """Scans the configured modules (the configuration file's folder first) and routes every handler found."""
        s = self.settings
        handlers = [self._build_handler(found) for found in scan(s.scan, folders=[s.folder] if s.folder else [])]
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
    def from_yaml(
        cls, path: str | Path, *, app: Any = None, middleware: Sequence[Middleware] = ()
    ) -> MessagingContainer:
        return cls(load_yaml(path), app=app, middleware=middleware)

    @classmethod
    def from_ini(
        cls, path: str | Path, *, app: Any = None, middleware: Sequence[Middleware] = ()
    ) -> MessagingContainer:
        return cls(load_ini(path), app=app, middleware=middleware)

    @classmethod
    def from_config(
        cls, path: str | Path, *, app: Any = None, middleware: Sequence[Middleware] = ()
    ) -> MessagingContainer:
        """By the file's extension: ``.yaml``/``.yml`` or ``.ini``/``.cfg``."""
        return cls(load_settings(path), app=app, middleware=middleware)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        app: Any = None,
        transport: BaseTransport | None = None,
        middleware: Sequence[Middleware] = (),
    ) -> MessagingContainer:
        return cls(settings_from_dict(data), app=app, transport=transport, middleware=middleware)

    def _open(self, factory: Callable[..., _C], *args: Any, **kwargs: Any) -> _C:
        """Builds a resource that ``close()`` must close (called by a Singleton provider: once, on first use)."""
        resource = factory(*args, **kwargs)
        self._opened.append(resource)
        return resource

    def _needs_service_name(self, where: str) -> Exception:
        return ConfigurationError(
            f"{self._source}: service_name: {where} needs DistributedBus, which needs a configured service_name"
        )

    def provider_for(self, tp: Any, where: str) -> Any:
        """The dependency-injector provider of ``tp``; ``where`` names who needs it (see :mod:`.injection`)."""
        return self._injector.provider_for(tp, where)

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
        if not s.scan:  # a sender needs no handlers; a consumer without any would dead-letter all it receives
            log.warning(
                "%s: scan is empty, so endpoint %r has no handlers: the commands and messages it receives go to its "
                "dead letter and its events are dropped; list your handler modules under scan",
                self._source,
                name,
            )
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
            middleware=self.middleware,
        )

    def dead_letter(self, name: str | None = None) -> DeadLetter:
        """The dead letter of endpoint ``name`` (default: this service's): list, show, replay, delete."""
        endpoint = self._check_endpoint(name if name is not None else (self.settings.service_name or ""))
        return DeadLetter(self.transport, self.topology.queue(endpoint), endpoint)

    def health(
        self, endpoint: str | None = None, *, dead_letter_threshold: int | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> HealthReport:
        """Checks the broker, the endpoint's queue and the size of its dead letter (every endpoint when no name)
        within ``timeout`` seconds; more than ``dead_letter_threshold`` dead letters is unhealthy (see
        :mod:`container_messaging.observability.health`). Never raises for a broker that is down: the report says."""
        names = [self._check_endpoint(endpoint)] if endpoint is not None else self.list()
        return check_health(
            self.transport,
            [self.topology.queue(name) for name in names],
            dead_letter_threshold=dead_letter_threshold,
            timeout=timeout,
            queue_exists=self.transport.queue_exists,
        )

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
        for resource in self._opened:
            resource.close()

    def __enter__(self) -> MessagingContainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<MessagingContainer service={self.settings.service_name!r} handlers={len(self.routes.handlers)} "
            f"transport={self.settings.transport.masked_url!r}>"
        )
