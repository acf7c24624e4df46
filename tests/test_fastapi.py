"""The FastAPI integration: lifespan, dependencies, background consumers, and the example app over real brokers."""

from __future__ import annotations

import importlib
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import containers, providers
from fastapi import FastAPI
from fastapi.testclient import TestClient

from container_messaging import (
    CommandBus,
    ConfigurationError,
    DistributedBus,
    EndpointError,
    EventBus,
    MessagingContainer,
    QueryBus,
)
from container_messaging.integrations import MissingExtraError
from container_messaging.integrations.fastapi import (
    CommandBusDep,
    DistributedBusDep,
    EventBusDep,
    MessagingDep,
    QueryBusDep,
    from_messaging,
    messaging_lifespan,
    run_blocking,
)

from conftest import forget_endpoint, transport_section

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_SECONDS = 20.0


def wait_for(condition: Callable[[], Any], what: str, timeout: float = DEADLINE_SECONDS) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def consumer_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"container-messaging {name}"]


THERMOMETER = """
import threading

from container_messaging import query_handler


class Thermometer:
    def __init__(self) -> None:
        self.threads: list[int] = []

    @query_handler("temperature.current")
    def current(self, query: dict[str, str]) -> str:
        self.threads.append(threading.get_ident())
        return f"21 degrees in {query['city']}"
"""


@pytest.fixture
def thermometer_module(make_module: Callable[[str, str], str]) -> str:
    return make_module(f"web_handlers_{uuid.uuid4().hex[:8]}", THERMOMETER)


@pytest.fixture
def thermometer(thermometer_module: str) -> type:
    """The Thermometer handler class."""
    return importlib.import_module(thermometer_module).Thermometer  # type: ignore[no-any-return]


@pytest.fixture
def local_container(thermometer_module: str) -> Iterator[MessagingContainer]:
    """A container on the memory transport that scans the Thermometer handler."""
    container = MessagingContainer.from_dict(
        {"service_name": "web", "scan": [thermometer_module], "transport": {"url": "memory://"}}
    )
    yield container
    container.close()


def test_importing_without_fastapi_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing the FastAPI integration when fastapi cannot be imported raises MissingExtraError naming the extra."""
    monkeypatch.setitem(sys.modules, "fastapi", None)  # what an absent package looks like to the import system
    monkeypatch.delitem(sys.modules, "container_messaging.integrations.fastapi")
    with pytest.raises(MissingExtraError, match=r"pip install 'container-messaging\[fastapi\]'") as raised:
        importlib.import_module("container_messaging.integrations.fastapi")
    assert isinstance(raised.value, ImportError)
    assert raised.value.name == "fastapi"


def test_dependencies_inject_the_containers_objects_into_sync_and_async_path_operations(
    local_container: MessagingContainer, thermometer: type
) -> None:
    """Every ready-made dependency and from_messaging (by type and by name) give, in def and async def path
    operations, the very objects container.get returns."""
    seen: dict[str, dict[str, Any]] = {}

    app = FastAPI(lifespan=messaging_lifespan(local_container))

    @app.get("/sync")
    def sync_operation(
        distributed: DistributedBusDep,
        commands: CommandBusDep,
        events: EventBusDep,
        queries: QueryBusDep,
        container: MessagingDep,
        handler: Any = from_messaging(thermometer),  # the default style: the annotation is evaluated later
        by_name: Any = from_messaging("command_bus"),
    ) -> None:
        seen["sync"] = dict(locals())

    @app.get("/async")
    async def async_operation(
        distributed: DistributedBusDep,
        commands: CommandBusDep,
        events: EventBusDep,
        queries: QueryBusDep,
        container: MessagingDep,
        handler: Any = from_messaging(thermometer),  # the default style: the annotation is evaluated later
        by_name: Any = from_messaging("command_bus"),
    ) -> None:
        seen["async"] = dict(locals())

    with TestClient(app) as client:
        assert client.get("/sync").status_code == 200
        assert client.get("/async").status_code == 200

    expected = {
        "distributed": local_container.get(DistributedBus),
        "commands": local_container.get(CommandBus),
        "events": local_container.get(EventBus),
        "queries": local_container.get(QueryBus),
        "container": local_container,
        "handler": local_container.get(thermometer),
        "by_name": local_container.get(CommandBus),
    }
    for flavour in ("sync", "async"):
        assert {name: seen[flavour][name] for name in expected} == expected
        for name, value in expected.items():
            assert seen[flavour][name] is value, (flavour, name)


def test_run_blocking_calls_the_bus_in_a_worker_thread_and_returns_its_result(
    local_container: MessagingContainer, thermometer: type
) -> None:
    """An async path operation awaiting run_blocking gets the handler's result, and the handler ran outside the
    event loop's thread."""
    loop_threads: list[int] = []
    app = FastAPI(lifespan=messaging_lifespan(local_container))

    @app.get("/temperature/{city}")
    async def temperature(city: str, queries: QueryBusDep) -> str:
        loop_threads.append(threading.get_ident())
        return await run_blocking(queries.send_with_routing, "temperature.current", {"city": city})

    with TestClient(app) as client:
        response = client.get("/temperature/Lyon")

    assert response.json() == "21 degrees in Lyon"
    handler_threads = local_container.get(thermometer).threads
    assert len(loop_threads) == 1
    assert len(handler_threads) == 1
    assert handler_threads[0] != loop_threads[0]


def test_the_application_containers_providers_are_injectable() -> None:
    """With app_container, a provider of the application's dependency-injector container is what from_messaging
    gives by its name."""

    class Application(containers.DeclarativeContainer):
        greeting = providers.Object("hello from the application")

    app = FastAPI(lifespan=messaging_lifespan({"transport": {"url": "memory://"}}, app_container=Application()))

    @app.get("/")
    async def operation(greeting: Any = from_messaging("greeting")) -> str:
        return str(greeting)

    with TestClient(app) as client:
        assert client.get("/").json() == "hello from the application"


def test_a_dependency_without_the_lifespan_is_an_error_naming_it() -> None:
    """A path operation needing a bus in an app created without the messaging lifespan fails with a
    ConfigurationError that says to use messaging_lifespan."""
    app = FastAPI()

    @app.get("/")
    def operation(bus: DistributedBusDep) -> None: ...

    with (
        TestClient(app) as client,
        pytest.raises(ConfigurationError, match=r"app\.state\.messaging.*messaging_lifespan"),
    ):
        client.get("/")


def test_the_lifespan_stores_the_container_and_closes_it_at_shutdown(
    local_container: MessagingContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the app runs, app.state.messaging is the container; at shutdown the container is closed once and
    removed from app.state."""
    closed: list[bool] = []
    close = local_container.close
    monkeypatch.setattr(local_container, "close", lambda: (closed.append(True), close())[1])
    app = FastAPI(lifespan=messaging_lifespan(local_container))

    with TestClient(app):
        assert app.state.messaging is local_container
        assert closed == []
    assert closed == [True]
    assert not hasattr(app.state, "messaging")


def test_the_lifespan_builds_the_container_from_a_file(tmp_path: Path) -> None:
    """A configuration file path given to messaging_lifespan builds the container with that file's settings."""
    config = tmp_path / "web.yaml"
    config.write_text("service_name: from_file\ntransport:\n  url: memory://\n")
    app = FastAPI(lifespan=messaging_lifespan(str(config)))

    with TestClient(app):
        assert app.state.messaging.settings.service_name == "from_file"
        assert app.state.messaging.settings.source == str(config)


def test_an_unknown_consumer_fails_the_startup_naming_it() -> None:
    """Asking the lifespan to run an endpoint the service does not have fails the app's startup with an
    EndpointError naming it."""
    app = FastAPI(
        lifespan=messaging_lifespan({"service_name": "web", "transport": {"url": "memory://"}}, consumers=["nope"])
    )

    with pytest.raises(EndpointError, match="'nope'"), TestClient(app):
        pass


def test_a_config_of_the_wrong_type_is_a_configuration_error() -> None:
    """Something that is neither a path, a mapping nor a container fails the startup with a ConfigurationError
    naming the type it got."""
    app = FastAPI(lifespan=messaging_lifespan(42))  # type: ignore[arg-type]

    with pytest.raises(ConfigurationError, match="got int"), TestClient(app):
        pass


def test_an_app_container_with_a_built_container_is_a_configuration_error(
    local_container: MessagingContainer,
) -> None:
    """An app_container given with an already built container (which it could not reach) fails the startup with
    a ConfigurationError instead of being ignored."""
    app = FastAPI(lifespan=messaging_lifespan(local_container, app_container=object()))

    with pytest.raises(ConfigurationError, match="app_container is for building a container"), TestClient(app):
        pass


SLOW = """
import threading

from container_messaging import command_handler, distributed


class Slow:
    started = threading.Event()
    release = threading.Event()
    done: list[str] = []

    @distributed
    @command_handler("slow.do")
    def do(self, payload: str) -> None:
        Slow.started.set()
        Slow.release.wait(20)
        Slow.done.append(payload)
"""


def test_shutdown_waits_for_the_background_consumers_message_in_hand(
    make_module: Callable[[str, str], str],
) -> None:
    """At shutdown, the in-app consumer finishes the handler it is running, acknowledges its message (a later run
    finds the queue empty) and its thread ends, before the container is closed."""
    module = make_module(f"slow_handlers_{uuid.uuid4().hex[:8]}", SLOW)
    slow = importlib.import_module(module).Slow
    config = {"service_name": "web", "scan": [module], "transport": {"url": "memory://"}}
    container = MessagingContainer.from_dict(config)
    client = TestClient(FastAPI(lifespan=messaging_lifespan(container, consumers=["web"])))
    client.__enter__()
    shutdown = threading.Thread(target=client.__exit__, args=(None, None, None))
    try:
        container.get(DistributedBus).send_command("web", "slow.do", "job-1", "text/plain")
        assert slow.started.wait(DEADLINE_SECONDS)
        shutdown.start()
        shutdown.join(0.3)
        assert shutdown.is_alive()  # waiting: the handler has not been released yet
    finally:
        slow.release.set()
        if shutdown.ident is None:  # the test failed before the shutdown thread started: shut down here
            client.__exit__(None, None, None)
    shutdown.join(DEADLINE_SECONDS)
    assert not shutdown.is_alive()

    assert slow.done == ["job-1"]
    assert consumer_threads("web") == []
    with MessagingContainer.from_dict(config) as later:
        assert later.run("web", finish_when_no_messages=True).handled == 0


# -- the example app, against the billing example service ----------------------------------------------------------


@pytest.fixture
def examples_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))


@pytest.fixture(params=["embedded", "rabbitmq"])
def services(
    request: pytest.FixtureRequest, tmp_path: Path, distribution: dict[str, str], examples_importable: None
) -> Iterator[tuple[MessagingContainer, dict[str, Any]]]:
    """The billing example service's container and the accounts app's configuration, on one transport."""
    transport = transport_section(str(request.param), tmp_path)
    billing = MessagingContainer.from_dict(
        {"service_name": "billing", "scan": ["examples.billing"], "transport": transport, "distribution": distribution}
    )
    accounts = {
        "service_name": "accounts",
        "scan": ["examples.fastapi_app.handlers"],
        "transport": transport,
        "distribution": distribution,
    }
    billing.setup("billing")
    try:
        yield billing, accounts
    finally:
        for name in ("billing", "accounts"):
            forget_endpoint(billing, f"{distribution['queue_prefix']}{name}")
        billing.close()


def test_the_example_app_sends_the_command_to_billing_and_learns_of_its_event(
    services: tuple[MessagingContainer, dict[str, Any]],
) -> None:
    """A POST to the accounts app sends billing.changeDetails that the billing service handles, and billing's
    event, consumed in the app's background thread, becomes visible through the app's GET."""
    from examples.billing.handlers import BillingRepository
    from examples.fastapi_app.main import create_app

    billing, accounts = services
    app = create_app(accounts, consumers=["accounts"])

    with TestClient(app) as client:
        assert len(consumer_threads("accounts")) == 1
        assert client.get("/people/123/billing-details").status_code == 404

        response = client.post("/people/123/billing-details", json={"billingDetails": "IBAN-0001"})
        assert response.status_code == 202, response.text

        result = billing.run("billing", handled_message_limit=1, execution_time_limit=int(DEADLINE_SECONDS * 1000))
        assert (result.handled, result.failed) == (1, 0)
        assert billing.get(BillingRepository).details == {"123": "IBAN-0001"}

        answer = wait_for(
            lambda: (r := client.get("/people/123/billing-details")).status_code == 200 and r,
            "the accounts consumer to handle billing.detailsWereChanged",
        )
        assert answer.json() == {"personId": "123", "billingDetails": "IBAN-0001"}

    assert consumer_threads("accounts") == []  # stopped at shutdown
