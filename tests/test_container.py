"""MessagingContainer: resolution by type and name, singletons, injection, application containers, boot errors."""

from __future__ import annotations

import importlib
import socket
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import containers, providers

from container_messaging import (
    AmbiguousDependencyError,
    CommandBus,
    ConfigurationError,
    ContainerError,
    Converter,
    DistributedBus,
    EventBus,
    MessageChannels,
    MessagingContainer,
    MissingDependencyError,
    QueryBus,
    Settings,
)


def build(*scan: str, app: Any = None, **extra: Any) -> MessagingContainer:
    return MessagingContainer.from_dict({"scan": list(scan), "transport": {"url": "memory://"}, **extra}, app=app)


# -- get by type and by name --------------------------------------------------------------------------------------


def test_framework_objects_by_type_and_by_name() -> None:
    """Buses and framework objects are the same instance whether asked for by type or by reference name."""
    container = build(service_name="container-names")

    for name, cls in [
        ("command_bus", CommandBus),
        ("event_bus", EventBus),
        ("query_bus", QueryBus),
        ("message_channels", MessageChannels),
        ("distributed_bus", DistributedBus),
        ("converter", Converter),
        ("messaging_settings", Settings),
        ("messaging_container", MessagingContainer),
    ]:
        by_type = container.get(cls)
        assert isinstance(by_type, cls), name
        assert container.get(name) is by_type, name
    assert container.get(MessagingContainer) is container
    assert container.get(Settings).service_name == "container-names"


def test_unknown_name_lists_known_names() -> None:
    """Asking for an unknown provider name raises ContainerError naming it and listing known names."""
    container = build()

    with pytest.raises(ContainerError) as info:
        container.get("comand_bus")

    assert "'comand_bus'" in str(info.value)
    assert "command_bus" in str(info.value)


# -- handler singletons and constructor injection ------------------------------------------------------------------


SERVICES = """
from container_messaging import CommandBus, EventBus, command_handler

class BillingRepository:
    def __init__(self) -> None:
        self.saved = []

created = []
handled_by = []

class BillingService:
    def __init__(self, repository: BillingRepository, events: EventBus) -> None:
        created.append(self)
        self.repository = repository
        self.events = events

    @command_handler("billing.changeDetails")
    def change(self, command: dict) -> None:
        handled_by.append(self)
        self.repository.saved.append(command)

class Controller:
    def __init__(self, commands: CommandBus, repository: BillingRepository) -> None:
        self.commands = commands
        self.repository = repository

    def change(self, person_id: str) -> None:
        self.commands.send_with_routing("billing.changeDetails", {"personId": person_id})
"""


def test_handler_instances_are_singletons(make_module) -> None:
    """The instance that handled commands is the one container.get returns, built once."""
    name = make_module("ct_singletons", SERVICES)
    module = importlib.import_module(name)
    container = build(name)
    bus = container.get(CommandBus)

    bus.send_with_routing("billing.changeDetails", {"n": 1})
    bus.send_with_routing("billing.changeDetails", {"n": 2})

    service = container.get(module.BillingService)
    assert module.handled_by == [service, service]
    assert module.created == [service]
    assert container.get(module.BillingService) is service


def test_constructor_injection_by_type_hints(make_module) -> None:
    """A handler class and an arbitrary application class get their constructor arguments by type."""
    name = make_module("ct_constructor_injection", SERVICES)
    module = importlib.import_module(name)
    container = build(name)

    controller = container.get(module.Controller)
    controller.change("123")

    repository = container.get(module.BillingRepository)
    assert controller.commands is container.get(CommandBus)
    assert controller.repository is repository
    assert container.get(module.BillingService).repository is repository
    assert container.get(module.BillingService).events is container.get(EventBus)
    assert repository.saved == [{"personId": "123"}]
    assert container.get(module.Controller) is controller


def test_application_service_gets_distributed_bus(make_module) -> None:
    """An application class taking DistributedBus in __init__ gets the container's distributed bus."""
    name = make_module(
        "ct_distributed_injection",
        """
        from container_messaging import DistributedBus

        class Publisher:
            def __init__(self, bus: DistributedBus) -> None:
                self.bus = bus
        """,
    )
    module = importlib.import_module(name)
    container = build(service_name="ct-publisher")

    assert container.get(module.Publisher).bus is container.get("distributed_bus")


def test_building_does_not_construct_handler_instances(make_module) -> None:
    """Handler classes are instantiated on first use, not when the container is built."""
    name = make_module("ct_lazy_instances", SERVICES)
    module = importlib.import_module(name)

    container = build(name)
    assert module.created == []

    container.get(CommandBus).send_with_routing("billing.changeDetails", {})
    assert len(module.created) == 1


def test_two_containers_have_separate_singletons(make_module) -> None:
    """Each container builds its own handler instances."""
    name = make_module("ct_separate_singletons", SERVICES)
    module = importlib.import_module(name)

    first, second = build(name), build(name)

    assert first.get(module.BillingService) is not second.get(module.BillingService)
    assert first.get(module.BillingRepository) is not second.get(module.BillingRepository)


# -- the application's container -------------------------------------------------------------------------------------


APP_MODULE = """
from container_messaging import command_handler

class Repo:
    def name(self) -> str:
        return "auto-built"

class InMemoryRepo(Repo):
    def name(self) -> str:
        return "in-memory"

class Mailer:
    def __init__(self, sender: str) -> None:
        self.sender = sender

used = []

class Service:
    def __init__(self, repo: Repo, label: str = "auto") -> None:
        self.repo = repo
        self.label = label

    @command_handler("app.handle")
    def handle(self, command: dict, repo: Repo, mailer: Mailer) -> None:
        used.append((self, repo, mailer))
"""


def test_app_container_providers_by_name_and_type_take_precedence(make_module) -> None:
    """The app container's providers resolve by name and provided type, and win over auto-built classes."""
    name = make_module("ct_app_container", APP_MODULE)
    module = importlib.import_module(name)

    class AppContainer(containers.DeclarativeContainer):
        repo = providers.Singleton(module.InMemoryRepo)
        mailer = providers.Factory(module.Mailer, sender="noreply@example.org")

    app = AppContainer()
    container = build(name, app=app)
    container.get(CommandBus).send_with_routing("app.handle", {})

    repo = app.repo()
    assert container.get("repo") is repo
    assert container.get(module.InMemoryRepo) is repo
    assert container.get(module.Repo) is repo
    service, injected_repo, mailer = module.used[0]
    assert injected_repo is repo
    assert service.repo is repo
    assert isinstance(mailer, module.Mailer)
    assert mailer.sender == "noreply@example.org"


def test_app_provider_for_a_handler_class_wins(make_module) -> None:
    """An app provider of a handler class supplies the instance that handles messages."""
    name = make_module("ct_app_handler_provider", APP_MODULE)
    module = importlib.import_module(name)
    app = containers.DynamicContainer()
    app.repo = providers.Singleton(module.InMemoryRepo)
    app.mailer = providers.Singleton(module.Mailer, sender="x")
    app.service = providers.Singleton(module.Service, repo=app.repo, label="from-app")

    container = build(name, app=app)
    container.get(CommandBus).send_with_routing("app.handle", {})

    service = module.used[0][0]
    assert service is app.service()
    assert service.label == "from-app"
    assert container.get(module.Service) is service


def test_app_object_provider_by_name() -> None:
    """A value provided by the app container is available by its provider name."""
    container = build(app=_app_with(settings_url=providers.Object("https://example.org")))

    assert container.get("settings_url") == "https://example.org"


def _app_with(**named: Any) -> containers.DynamicContainer:
    app = containers.DynamicContainer()
    for key, provider in named.items():
        setattr(app, key, provider)
    return app


def test_two_explicit_providers_for_one_type_name_both(make_module) -> None:
    """Two app providers of the same class fail the build with AmbiguousDependencyError naming both."""
    name = make_module("ct_ambiguous_same", APP_MODULE)
    module = importlib.import_module(name)
    app = _app_with(
        primary_repo=providers.Singleton(module.InMemoryRepo),
        replica_repo=providers.Singleton(module.InMemoryRepo),
    )

    with pytest.raises(AmbiguousDependencyError) as info:
        build(app=app)

    message = str(info.value)
    assert "'primary_repo'" in message
    assert "'replica_repo'" in message
    assert f"{name}.InMemoryRepo" in message


def test_two_explicit_subclass_providers_for_a_base_name_both(make_module) -> None:
    """A handler asking for a base class provided by two app subclasses fails the build naming both providers."""
    name = make_module(
        "ct_ambiguous_base",
        """
        from container_messaging import command_handler

        class Repo: ...
        class SqlRepo(Repo): ...
        class MemoryRepo(Repo): ...

        class Service:
            def __init__(self, repo: Repo) -> None:
                self.repo = repo

            @command_handler("ambiguous.handle")
            def handle(self, command: dict) -> None: ...
        """,
    )
    module = importlib.import_module(name)
    app = _app_with(sql=providers.Singleton(module.SqlRepo), memory=providers.Singleton(module.MemoryRepo))

    with pytest.raises(AmbiguousDependencyError) as info:
        build(name, app=app)

    message = str(info.value)
    assert "'sql'" in message
    assert "'memory'" in message
    assert "'repo'" in message
    assert f"{name}.Service" in message


def test_app_provider_name_clashing_with_framework_name(make_module) -> None:
    """An app provider named like a framework provider fails the build, naming the clashing name."""
    with pytest.raises(ContainerError, match="'command_bus'"):
        build(app=_app_with(command_bus=providers.Object(object())))


def test_app_must_be_a_container() -> None:
    """Handing in something that is not a dependency-injector container is a ContainerError."""
    with pytest.raises(ContainerError, match="dict"):
        build(app={"repo": object()})


# -- missing dependencies at build ------------------------------------------------------------------------------------


def test_missing_constructor_dependency_fails_at_build(make_module) -> None:
    """A handler class needing an unprovidable type fails the build (not the first message), naming class and param."""
    name = make_module(
        "ct_missing_dependency",
        """
        import abc
        from container_messaging import command_handler

        class PaymentGateway(abc.ABC):
            @abc.abstractmethod
            def charge(self) -> None: ...

        class Billing:
            def __init__(self, gateway: PaymentGateway) -> None:
                self.gateway = gateway

            @command_handler("missing.handle")
            def handle(self, command: dict) -> None: ...
        """,
    )

    with pytest.raises(MissingDependencyError) as info:
        build(name)

    message = str(info.value)
    assert f"{name}.Billing" in message
    assert "'gateway'" in message
    assert f"{name}.PaymentGateway" in message


def test_missing_transitive_dependency_names_the_inner_class(make_module) -> None:
    """A handler's dependency whose own constructor needs an unprovidable int fails the build naming that class."""
    name = make_module(
        "ct_missing_transitive",
        """
        from container_messaging import command_handler

        class Pool:
            def __init__(self, size: int) -> None:
                self.size = size

        class Repository:
            def __init__(self, pool: Pool) -> None:
                self.pool = pool

        class Billing:
            def __init__(self, repository: Repository) -> None:
                self.repository = repository

            @command_handler("missing.transitive")
            def handle(self, command: dict) -> None: ...
        """,
    )

    with pytest.raises(MissingDependencyError) as info:
        build(name)

    assert f"parameter 'size' of {name}.Pool" in str(info.value)
    assert "builtins.int" in str(info.value)


def test_unannotated_constructor_parameter_fails_at_build(make_module) -> None:
    """A handler class constructor parameter without annotation or default fails the build, naming it."""
    name = make_module(
        "ct_unannotated_ctor",
        """
        from container_messaging import command_handler

        class Billing:
            def __init__(self, something) -> None:
                self.something = something

            @command_handler("missing.unannotated")
            def handle(self, command: dict) -> None: ...
        """,
    )

    with pytest.raises(MissingDependencyError, match=rf"'something' of {name}\.Billing"):
        build(name)


def test_constructor_defaults_are_kept_when_unprovidable(make_module) -> None:
    """A constructor parameter with a default whose type is unprovidable keeps its default."""
    name = make_module(
        "ct_ctor_default",
        """
        class Client:
            def __init__(self, retries: int = 3, name="client") -> None:
                self.retries = retries
                self.name = name
        """,
    )
    module = importlib.import_module(name)

    client = build().get(module.Client)

    assert (client.retries, client.name) == (3, "client")


def test_optional_constructor_parameter_without_provider_gets_none(make_module) -> None:
    """An Optional constructor parameter with no default and nothing providing its type receives None."""
    name = make_module(
        "ct_ctor_optional",
        """
        import abc

        class Cache(abc.ABC):
            @abc.abstractmethod
            def get(self, key: str) -> str: ...

        class Client:
            def __init__(self, cache: Cache | None) -> None:
                self.cache = cache
        """,
    )
    module = importlib.import_module(name)

    assert build().get(module.Client).cache is None


def test_protocol_constructor_dependency_fails_with_missing_dependency(make_module) -> None:
    """A handler class needing an unprovided Protocol fails the build with MissingDependencyError naming it."""
    name = make_module(
        "ct_ctor_protocol",
        """
        from typing import Protocol
        from container_messaging import command_handler

        class Repository(Protocol):
            def save(self, item: dict) -> None: ...

        class Billing:
            def __init__(self, repository: Repository) -> None:
                self.repository = repository

            @command_handler("missing.protocol")
            def handle(self, command: dict) -> None: ...
        """,
    )

    with pytest.raises(MissingDependencyError) as info:
        build(name)

    assert f"{name}.Billing" in str(info.value)
    assert "'repository'" in str(info.value)


def test_circular_dependency_names_the_chain(make_module) -> None:
    """A constructor cycle raises ContainerError naming every class of the chain."""
    name = make_module(
        "ct_circular",
        """
        from __future__ import annotations

        class Alpha:
            def __init__(self, beta: Beta) -> None: ...

        class Beta:
            def __init__(self, gamma: Gamma) -> None: ...

        class Gamma:
            def __init__(self, alpha: Alpha) -> None: ...
        """,
    )
    module = importlib.import_module(name)
    container = build()

    with pytest.raises(ContainerError, match=r"Alpha -> Beta -> Gamma -> Alpha"):
        container.get(module.Alpha)


def test_circular_handler_dependency_fails_at_build(make_module) -> None:
    """A handler class in a constructor cycle fails the build, naming the chain."""
    name = make_module(
        "ct_circular_handler",
        """
        from __future__ import annotations
        from container_messaging import command_handler

        class Billing:
            def __init__(self, ledger: Ledger) -> None: ...

            @command_handler("circular.handle")
            def handle(self, command: dict) -> None: ...

        class Ledger:
            def __init__(self, billing: Billing) -> None: ...
        """,
    )

    with pytest.raises(ContainerError, match=r"Billing -> Ledger -> Billing"):
        build(name)


# -- service_name and the distributed bus -------------------------------------------------------------------------


def test_distributed_handlers_need_service_name(make_module) -> None:
    """Distributed handlers without a service_name fail the build with ConfigurationError naming them."""
    name = make_module(
        "ct_distributed_no_service",
        """
        from container_messaging import command_handler, distributed

        class Billing:
            @distributed
            @command_handler("billing.changeDetails")
            def change(self, command: dict) -> None: ...
        """,
    )

    with pytest.raises(ConfigurationError) as info:
        build(name)

    assert "service_name" in str(info.value)
    assert f"{name}.Billing.change" in str(info.value)


def test_distributed_bus_needs_service_name() -> None:
    """Asking for DistributedBus without service_name is an error saying service_name is needed."""
    container = build()

    with pytest.raises(ConfigurationError, match="service_name"):
        container.get(DistributedBus)
    with pytest.raises(ContainerError, match="distributed_bus"):
        container.get("distributed_bus")


def test_handler_needing_distributed_bus_without_service_name_fails_at_build(make_module) -> None:
    """A handler class whose constructor takes DistributedBus fails the build without service_name."""
    name = make_module(
        "ct_handler_needs_distributed",
        """
        from container_messaging import DistributedBus, command_handler

        class Forwarder:
            def __init__(self, bus: DistributedBus) -> None:
                self.bus = bus

            @command_handler("forward")
            def forward(self, command: dict) -> None: ...
        """,
    )

    with pytest.raises(ConfigurationError, match=rf"service_name.*'bus' of {name}\.Forwarder"):
        build(name)


def test_build_with_unreachable_broker_does_not_connect() -> None:
    """Building with a pyamqp URL at a closed port succeeds without delay and without error."""
    started = time.monotonic()

    container = MessagingContainer.from_dict(
        {"service_name": "ct-offline", "scan": [], "transport": {"url": "pyamqp://guest:guest@127.0.0.1:1//"}}
    )
    bus = container.get(DistributedBus)
    container.close()

    assert isinstance(bus, DistributedBus)
    assert time.monotonic() - started < 1.0


def test_build_opens_no_connection_to_the_broker() -> None:
    """Building the container and getting the distributed bus make no TCP connection to the broker address."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]

        container = MessagingContainer.from_dict(
            {"service_name": "ct-lazy", "scan": [], "transport": {"url": f"pyamqp://guest:guest@127.0.0.1:{port}//"}}
        )
        container.get("distributed_bus")
        container.close()

        with pytest.raises(BlockingIOError):
            server.accept()


# -- dependency-injector wiring -------------------------------------------------------------------------------------


def test_wiring_provides_buses_by_name(make_module) -> None:
    """@inject with Provide["command_bus"] receives the container's bus after wire, and not after unwire."""
    name = make_module(
        "ct_wiring",
        """
        from dependency_injector.wiring import Provide, inject
        from container_messaging import CommandBus, EventBus

        @inject
        def buses(commands: CommandBus = Provide["command_bus"], events: EventBus = Provide["event_bus"]):
            return commands, events
        """,
    )
    module = importlib.import_module(name)
    container = build()

    container.wire(modules=[module])
    try:
        commands, events = module.buses()
    finally:
        container.unwire()

    assert commands is container.get(CommandBus)
    assert events is container.get(EventBus)
    assert module.buses()[0] is not commands


# -- configuration files ----------------------------------------------------------------------------------------------


CONFIG_MODULE = """
from container_messaging import command_handler, distributed, event_handler, query_handler

class Billing:
    @distributed
    @command_handler("billing.changeDetails")
    def change(self, command: dict) -> dict:
        return command

    @event_handler("billing.*")
    def audit(self, event: dict) -> None: ...

    @query_handler("billing.get")
    def get(self, query: dict) -> None: ...
"""


def routes_of(container: MessagingContainer) -> list[tuple[str, str | None, str, bool]]:
    return sorted((h.kind.value, h.routing_key, h.name, h.distributed) for h in container.routes.handlers)


def test_yaml_ini_and_config_build_equal_routing(make_module, tmp_path: Path) -> None:
    """from_yaml, from_ini and from_config (by extension) build containers with equal settings and routing."""
    name = make_module("ct_config_files", CONFIG_MODULE)
    yaml_file = tmp_path / "billing.yaml"
    yaml_file.write_text(
        textwrap.dedent(
            f"""\
            service_name: billing-config
            scan:
              - {name}
            transport:
              url: memory://
            conversion:
              json_keys: as_is
            """
        )
    )
    ini_file = tmp_path / "billing.ini"
    ini_file.write_text(
        textwrap.dedent(
            f"""\
            [container_messaging]
            service_name = billing-config
            scan = {name}

            [transport]
            url = memory://

            [conversion]
            json_keys = as_is
            """
        )
    )

    built = [
        MessagingContainer.from_yaml(yaml_file),
        MessagingContainer.from_ini(ini_file),
        MessagingContainer.from_config(yaml_file),
        MessagingContainer.from_config(str(ini_file)),
    ]

    expected = [
        ("command", "billing.changeDetails", f"{name}.Billing.change", True),
        ("event", "billing.*", f"{name}.Billing.audit", False),
        ("query", "billing.get", f"{name}.Billing.get", False),
    ]
    for container in built:
        assert routes_of(container) == expected
        assert container.settings == built[0].settings
        assert container.settings.service_name == "billing-config"
        assert container.settings.conversion.json_keys == "as_is"
        assert container.get(CommandBus).send_with_routing("billing.changeDetails", {"k": 1}) == {"k": 1}


def test_from_yaml_with_app_container(tmp_path: Path) -> None:
    """from_yaml accepts an application container whose providers are then resolvable."""
    config = tmp_path / "app.yaml"
    config.write_text("scan: []\ntransport:\n  url: memory://\n")
    marker = object()

    container = MessagingContainer.from_yaml(config, app=_app_with(marker=providers.Object(marker)))

    assert container.get("marker") is marker


def test_application_container_may_have_its_own_config_provider():
    """An application container's provider named ``config`` (the usual name) is kept and resolvable by that name."""
    from dependency_injector import containers, providers

    class App(containers.DeclarativeContainer):
        config = providers.Configuration()

    app = App()
    app.config.from_dict({"greeting": "hello"})
    container = MessagingContainer.from_dict({"transport": {"url": "memory://"}}, app=app)
    assert container.get("config")["greeting"] == "hello"
    assert container.get("messaging_config")["transport"]["url"] == "memory://"


# -- closing ----------------------------------------------------------------------------------------------------------


class _Recorded:
    """A stand-in transport or deduplication store that records being closed."""

    def __init__(self, kind: str, built: list[str]) -> None:
        self.kind, self.closed = kind, 0
        built.append(kind)

    def close(self) -> None:
        self.closed += 1


def test_close_closes_what_was_opened_and_builds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """close() builds no transport or store that was never used, and closes the ones that were, once per close."""
    built: list[str] = []
    monkeypatch.setattr(
        "container_messaging.container.create_transport", lambda settings: _Recorded("transport", built)
    )
    monkeypatch.setattr(
        "container_messaging.container.create_deduplication_store",
        lambda store, window, max_entries: _Recorded(f"store {store} {window} {max_entries}", built),
    )
    unused = build()
    unused.close()
    assert built == []

    used = build(deduplication={"store": "none", "window": 7, "max_entries": 3})
    transport, store = used.get("transport"), used.get("deduplication")
    used.close()

    assert built == ["transport", "store none 7.0 3"]
    assert (transport.closed, store.closed) == (1, 1)
    assert used.get("transport") is transport  # still the same object: it reconnects on its next use
