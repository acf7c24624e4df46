"""The outbox as a container wires it from configuration: ``outbox.enabled`` in the settings gives the buses the
outbox's transport, ``UnitOfWork`` and ``outbox`` as providers, and the ``outbox`` relay endpoint (list, setup, run)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from container_messaging import DistributedBus, EndpointError, MessagingContainer
from container_messaging.invocation import Transactions
from container_messaging.outbox import Outbox, UnitOfWork

HANDLERS = """
from container_messaging import command_handler, distributed

RECEIVED = []

class Orders:
    @distributed
    @command_handler("orders.place")
    def place(self, command: dict) -> None:
        RECEIVED.append(command)
"""


@pytest.fixture
def make_container(tmp_path: Path, make_module: Callable[[str, str], str], unique: str) -> Iterator[Any]:
    containers: list[MessagingContainer] = []

    def make(**outbox: Any) -> MessagingContainer:
        container = MessagingContainer.from_dict(
            {
                "service_name": "orders",
                "scan": [make_module(f"outbox_container_{unique}_{len(containers)}", HANDLERS)],
                "transport": {"url": "memory://"},
                "outbox": {"enabled": True, "database_url": f"sqlite:///{tmp_path}/app.sqlite3", **outbox},
            }
        )
        containers.append(container)
        return container

    yield make
    for container in containers:
        container.close()


def received(container: MessagingContainer) -> list[Any]:
    handlers = container.routes.handlers
    module = __import__(handlers[0].function.__module__)
    return list(module.RECEIVED)


def test_an_enabled_outbox_is_an_endpoint_and_its_parts_are_providers(make_container: Any) -> None:
    """With outbox.enabled, list() ends with the relay endpoint 'outbox', and the Outbox and its UnitOfWork resolve
    by type and by name (the UnitOfWork is also what @transactional handlers resolve by their Transactions type)."""
    container = make_container()
    assert container.list() == ["orders", "outbox"]
    outbox = container.get(Outbox)
    assert container.get("outbox") is outbox
    assert container.get(UnitOfWork) is outbox.unit_of_work is container.get("unit_of_work")
    assert container.get(Transactions) is outbox.unit_of_work  # type: ignore[type-abstract]
    with pytest.raises(EndpointError, match="outbox relay: it has no queue"):
        container.dead_letter("outbox")


def test_a_message_sent_in_a_rolled_back_unit_of_work_never_leaves(make_container: Any) -> None:
    """setup() creates the outbox tables; a command sent inside a unit of work that rolls back is neither published
    nor left in the outbox, and one sent in a committed unit of work is handled."""
    container = make_container()
    container.setup()
    bus, unit_of_work = container.get(DistributedBus), container.get(UnitOfWork)
    with pytest.raises(RuntimeError), unit_of_work.begin():
        bus.send_command("orders", "orders.place", '{"n": 1}', "application/json")
        raise RuntimeError("the application's transaction fails")
    assert container.get(Outbox).pending_count() == 0
    with unit_of_work.begin():
        bus.send_command("orders", "orders.place", '{"n": 2}', "application/json")
    result = container.run("orders", finish_when_no_messages=True)
    assert (result.handled, received(container)) == (1, [{"n": 2}])


def test_the_relay_endpoint_publishes_what_the_commit_left_behind(make_container: Any) -> None:
    """With publish_after_commit off, a committed message waits in the outbox until run('outbox') relays it; the
    service's endpoint then handles it."""
    container = make_container(publish_after_commit=False)
    container.setup()
    with container.get(UnitOfWork).begin():
        container.get(DistributedBus).send_command("orders", "orders.place", '{"n": 3}', "application/json")
    assert container.get(Outbox).pending_count() == 1
    relayed = container.run("outbox", finish_when_no_messages=True)
    assert (relayed.endpoint, relayed.handled) == ("outbox", 1)
    assert container.get(Outbox).pending_count() == 0
    assert container.run("orders", finish_when_no_messages=True).handled == 1
    assert received(container) == [{"n": 3}]
