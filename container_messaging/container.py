"""``MessagingContainer``: the messaging application, a facade over one dependency-injector container.

Building it reads the settings, scans the handler modules, and registers the buses, the converter, the transport,
the deduplication store, the distributed buses and every handler class as providers in one ``DynamicContainer``
(``container.di``); resolution by type (``container.get(CommandBus)``, constructor injection by type hints) is
:mod:`container_messaging.injection`'s.  Everything is checked when the container is built: a missing dependency
names the class and the parameter.  Building never connects to a broker; ``close()`` closes what was opened.

Endpoints: the AMQP endpoint named after the service (its queue ``distributed_<service>`` on the exchange), when a
distributed bus uses Ecotone's AMQP mode, and each channel the service consumes (``consume``), named after the
channel.  Every transport is created by :func:`_create_transport`: one for ``transport`` and one per other broker
URL a channel lives on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, overload

import attrs
from dependency_injector import containers, providers

from container_messaging.buses import (
    AsyncCommandBus,
    AsyncEventBus,
    AsyncQueryBus,
    CommandBus,
    EventBus,
    MessageChannels,
    QueryBus,
)
from container_messaging.config import (
    DEFAULT_BUS,
    OUTBOX_ENDPOINT,
    OutboxSettings,
    Settings,
    TransportSettings,
    load_ini,
    load_settings,
    load_yaml,
    settings_from_dict,
)
from container_messaging.consumer import Endpoint, EndpointConsumer, RunOptions, RunResult
from container_messaging.conversion import Converter
from container_messaging.deadletter import DeadLetter
from container_messaging.deduplication import DeduplicationStore, create_deduplication_store
from container_messaging.distributed import (
    AsyncDistributedBus,
    DistributedBus,
    DistributedDispatcher,
    DistributedTopology,
)
from container_messaging.distributed.bus import ExchangeRoute, ServiceMapRoute
from container_messaging.distributed.channels import Channel, Channels
from container_messaging.distributed.service_map import ServiceMap
from container_messaging.errors import ConfigurationError, ContainerError, EndpointError
from container_messaging.injection import Injector
from container_messaging.invocation import Handler, build_handler
from container_messaging.markers import RetryPolicy
from container_messaging.middleware import InstrumentedTransport, Middleware, chain
from container_messaging.observability.health import DEFAULT_TIMEOUT, HealthReport, check_health
from container_messaging.routing import RoutingTable
from container_messaging.scanning import FoundHandler, scan
from container_messaging.transports import BaseTransport, EndpointTopology, TransportOptions, create_transport

__all__ = ["MessagingContainer"]

log = logging.getLogger("container_messaging.container")

T = TypeVar("T")


def _create_transport(settings: TransportSettings, url: str | None = None) -> BaseTransport:
    """The one place a transport is created: from the ``transport`` settings, on ``url`` when given (the broker of
    a channel; the other settings are shared)."""
    options = TransportOptions.of(settings)
    return create_transport(options if url is None else attrs.evolve(options, url=url))


def _install_outbox(settings: OutboxSettings, transport: BaseTransport, *, auto_declare: bool) -> Any:
    """The outbox over the real ``transport`` (imported here: the ``outbox`` extra is needed only when enabled)."""
    from container_messaging.outbox import install  # noqa: PLC0415 - SQLAlchemy loads only when the outbox is on

    return install(settings, transport, auto_declare=auto_declare)


def _outbox_transport(outbox: Any) -> BaseTransport:
    transport: BaseTransport = outbox.transport
    return transport


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
            camel_case=s.conversion.json_keys == "camelCase",
            forbid_unknown_keys=s.conversion.forbid_unknown_keys,
            lenient_scalars=s.conversion.scalars == "lenient",
        )
        self.topology = DistributedTopology(s.distribution.exchange, s.distribution.queue_prefix)
        self.routes = RoutingTable()
        self._transports: dict[str, Any] = {}  # broker URL -> its transport's provider (one transport per URL)
        transport_provider = self._register_framework(transport)
        self.channels = Channels(self._channel_list(), self._transport_of, auto_declare=s.transport.auto_declare)
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
            else providers.Singleton(self._open, _create_transport, s.transport)
        )
        if s.outbox.enabled:
            # Every bus publishes through the outbox's transport: inside a unit of work it writes outbox rows.
            outbox_provider = providers.Singleton(
                self._open, _install_outbox, s.outbox, transport_provider, auto_declare=s.transport.auto_declare
            )
            self._register_outbox(outbox_provider)
            transport_provider = providers.Singleton(_outbox_transport, outbox_provider)
        transport_provider = self._instrumented(transport_provider)
        self._transports[s.transport.url] = transport_provider
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

    def _instrumented(self, transport_provider: Any) -> Any:
        """With middleware, the transport's provider wrapped in :class:`InstrumentedTransport`: outermost (around an
        outbox too), so the publishing hook runs where the application sends."""
        if self.middleware is None:
            return transport_provider
        return providers.Singleton(InstrumentedTransport, transport_provider, self.middleware)

    def _register_outbox(self, outbox_provider: Any) -> None:
        """``outbox`` (the :class:`~container_messaging.outbox.Outbox`) and ``unit_of_work`` (by name, and by type:
        the :class:`~container_messaging.outbox.UnitOfWork` that ``@transactional`` handlers run in)."""
        from container_messaging.outbox import Outbox, UnitOfWork  # noqa: PLC0415 - the outbox extra, only when on

        self._injector.register("outbox", Outbox, outbox_provider, "the framework")
        unit_of_work = providers.Singleton(lambda outbox: outbox.unit_of_work, outbox_provider)
        self._injector.register("unit_of_work", UnitOfWork, unit_of_work, "the framework")

    def _channel_list(self) -> list[Channel]:
        """Every channel the settings define, the consumed ones first (in ``consume`` order); a channel without a
        URL lives on ``transport.url``."""
        s = self.settings
        table = s.all_channels()
        order = [*s.consume, *(name for name in table if name not in s.consume)]
        amqp_endpoint = self._amqp_endpoint
        if amqp_endpoint is not None and amqp_endpoint in s.consume:
            raise ConfigurationError(
                f"{self._source}: consume: channel {amqp_endpoint!r} has the name of this service's AMQP endpoint; "
                "rename the channel"
            )
        return [
            Channel(name, table[name].url or s.transport.url, name in s.consume, table[name].stream, s.service_name)
            for name in order
        ]

    def _transport_of(self, url: str) -> BaseTransport:
        """The transport on broker ``url``: the ``transport`` one, or one per other URL (built on first use)."""
        provider = self._transports.get(url)
        if provider is None:
            provider = self._transports[url] = self._instrumented(
                providers.Singleton(self._open, _create_transport, self.settings.transport, url)
            )
        transport: BaseTransport = provider()
        return transport

    def _register_buses(self, transport_provider: Any) -> None:
        """The local buses on the routing table, and the distributed buses when there is a service_name: the
        default one (``distributed_bus``, also by type) and each of ``distributed_buses`` by its name."""
        s = self.settings
        buses: dict[str, tuple[type, Any]] = {
            "command_bus": (CommandBus, CommandBus(self.routes)),
            "query_bus": (QueryBus, QueryBus(self.routes)),
            "event_bus": (EventBus, EventBus(self.routes)),
            "message_channels": (MessageChannels, MessageChannels(self.routes)),
            "async_command_bus": (AsyncCommandBus, AsyncCommandBus(self.routes)),
            "async_query_bus": (AsyncQueryBus, AsyncQueryBus(self.routes)),
            "async_event_bus": (AsyncEventBus, AsyncEventBus(self.routes)),
        }
        for name, (tp, bus) in buses.items():
            self._injector.register(name, tp, providers.Object(bus), "the framework")
        if s.service_name is None:
            self._injector.refuse(DistributedBus, self._needs_service_name)
            self._injector.refuse(AsyncDistributedBus, self._needs_service_name)
            return
        events_mandatory = s.distribution.unsubscribed_events == "error"
        for name, bus_settings in s.buses().items():
            if name != DEFAULT_BUS and name in self.di.providers:
                raise ConfigurationError(
                    f"{self._source}: distributed_buses.{name}: the name is taken by a provider of the framework or "
                    "of the application container; choose another"
                )
            route: Any
            if bus_settings.service_map is None:
                route = providers.Singleton(
                    ExchangeRoute,
                    transport_provider,
                    self.topology.exchange,
                    auto_declare=s.transport.auto_declare,
                    events_mandatory=events_mandatory,
                )
            else:
                service_map = ServiceMap.from_settings(bus_settings.service_map)
                route = providers.Singleton(
                    ServiceMapRoute, service_map, self.channels, events_mandatory=events_mandatory
                )
            provider = providers.Singleton(
                DistributedBus, service_name=s.service_name, converter=self.converter, route=route, name=name
            )
            self._injector.register(name, DistributedBus if name == DEFAULT_BUS else None, provider, "the framework")
            if name == DEFAULT_BUS:
                self._injector.register(
                    "async_distributed_bus",
                    AsyncDistributedBus,
                    providers.Singleton(AsyncDistributedBus, provider),
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

    @property
    def _amqp_endpoint(self) -> str | None:
        """The AMQP endpoint (named after the service, consuming ``distributed_<service>`` on the exchange): there is
        one when a distributed bus uses Ecotone's AMQP mode (the default bus does, without a service map)."""
        s = self.settings
        if s.service_name and any(bus.service_map is None for bus in s.buses().values()):
            return s.service_name
        return None

    def list(self) -> list[str]:
        """The runnable endpoint names: the AMQP endpoint (the service name) when a bus uses the AMQP mode, then each
        channel the service consumes. Send-only channels are not endpoints."""
        amqp = self._amqp_endpoint
        relay = [OUTBOX_ENDPOINT] if self.settings.outbox.enabled else []
        return [*([amqp] if amqp else []), *self.channels.consumed, *relay]

    def _check_endpoint(self, name: str) -> str:
        endpoints = self.list()
        if name not in endpoints:
            available = ", ".join(repr(e) for e in endpoints) or "none: configure service_name or consume"
            raise EndpointError(f"unknown endpoint {name!r} (available: {available})")
        return name

    def _endpoint_parts(self, name: str) -> tuple[BaseTransport, EndpointTopology]:
        """The transport and the topology (queue, bindings) of endpoint ``name``."""
        self._check_endpoint(name)
        if name == OUTBOX_ENDPOINT and self.settings.outbox.enabled:
            raise EndpointError(
                f"endpoint {name!r} is the outbox relay: it has no queue and no dead letter (a message it cannot "
                "publish stays in the outbox table with its error)"
            )
        if name == self._amqp_endpoint:
            return self.transport, self.topology.endpoint(name, self.routes)
        return self.channels.transport(name), self.channels.endpoint(name).topology

    def endpoint(self, name: str) -> Endpoint:
        """The consumer of endpoint ``name`` (its queue, dispatcher, recoverability and deduplication), or the outbox
        relay (``outbox``)."""
        if name == OUTBOX_ENDPOINT and self.settings.outbox.enabled:
            return self.get("outbox").relay(name)  # type: ignore[no-any-return]
        transport, topology = self._endpoint_parts(name)
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
            transport=transport,
            topology=topology,
            dispatcher=DistributedDispatcher(service_name=s.service_name or name, routes=self.routes),
            prefetch_count=s.transport.prefetch_count,
            idle_timeout=max(0.5, 10 * s.transport.polling_interval),
            retry_policy=RetryPolicy(s.recoverability.immediate_retries, s.recoverability.delayed_retries),
            deduplication=self.get(DeduplicationStore),  # type: ignore[type-abstract]
            max_message_size=s.consumer.max_message_size,
            middleware=self.middleware,
        )

    def dead_letter(self, name: str | None = None) -> DeadLetter:
        """The dead letter of endpoint ``name`` (default: the AMQP endpoint, or the only endpoint): list, show,
        replay, delete."""
        if name is None:
            endpoints = self.list()
            name = self._amqp_endpoint or (endpoints[0] if len(endpoints) == 1 else None)
            if name is None:
                available = ", ".join(repr(e) for e in endpoints) or "none: configure service_name or consume"
                raise EndpointError(f"name the endpoint whose dead letter to open (available: {available})")
        transport, topology = self._endpoint_parts(name)
        return DeadLetter(transport, topology.queue, name)

    def health(
        self, endpoint: str | None = None, *, dead_letter_threshold: int | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> HealthReport:
        """Checks each broker, the endpoint's queue and the size of its dead letter (every endpoint when no name)
        within ``timeout`` seconds; more than ``dead_letter_threshold`` dead letters is unhealthy (see
        :mod:`container_messaging.observability.health`). Never raises for a broker that is down: the report says."""
        relay = OUTBOX_ENDPOINT if self.settings.outbox.enabled else None  # a table, not a queue: not checked here
        names = [endpoint] if endpoint is not None else [name for name in self.list() if name != relay]
        brokers: dict[int, tuple[BaseTransport, list[str]]] = {}
        for name in names:
            transport, topology = self._endpoint_parts(name)
            brokers.setdefault(id(transport), (transport, []))[1].append(topology.queue)
        if not brokers:
            brokers[id(self.transport)] = (self.transport, [])
        return check_health(list(brokers.values()), dead_letter_threshold=dead_letter_threshold, timeout=timeout)

    def setup(self, name: str | None = None) -> None:
        """Declares the endpoint's queue and its bindings (the exchange too for the AMQP endpoint; all endpoints
        when no name); idempotent."""
        for endpoint in [name] if name is not None else self.list():
            if endpoint == OUTBOX_ENDPOINT and self.settings.outbox.enabled:
                self.get("outbox").setup()  # the outbox and inbox tables
                continue
            transport, topology = self._endpoint_parts(endpoint)
            transport.setup_endpoint(topology)

    def run(
        self,
        name: str,
        handled_message_limit: int | None = None,
        execution_time_limit: int | None = None,
        memory_limit: int | None = None,
        stop_on_failure: bool = False,
        finish_when_no_messages: bool = False,
        wait_for_broker: float | None = None,
        concurrency: int = 1,
    ) -> RunResult:
        """Consumes endpoint ``name`` until a limit is reached or SIGINT/SIGTERM (Ecotone's ``run``); with
        ``wait_for_broker`` (seconds), waits that long at start for a broker that does not answer yet; with
        ``concurrency`` N, handles up to N messages at once."""
        options = RunOptions(
            handled_message_limit,
            execution_time_limit,
            memory_limit,
            stop_on_failure,
            finish_when_no_messages,
            wait_for_broker,
            concurrency,
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
