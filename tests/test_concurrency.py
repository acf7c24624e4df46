"""Concurrency and asyncio on every transport (memory, embedded, RabbitMQ, Redis): a bus shared by threads,
coroutine handlers, the async buses, concurrent consumption and SIGTERM mid-flight."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from container_messaging import DistributedBus, MessagingContainer, UnroutableMessageError

from conftest import forget_endpoint, transport_section

HANDLERS = """
import asyncio
import threading
import time

from container_messaging import command_handler, distributed, event_handler

RECEIVED = []
THREADS = set()
ATTEMPTS = []


class Handlers:
    @distributed
    @command_handler("load.record")
    def record(self, command: dict) -> None:
        THREADS.add(threading.get_ident())
        RECEIVED.append(command["n"])

    @distributed
    @command_handler("load.slow")
    def slow(self, command: dict) -> None:
        time.sleep(command.get("sleep", 0.05))
        RECEIVED.append(command["n"])

    @distributed
    @command_handler("load.async")
    async def record_async(self, command: dict) -> None:
        await asyncio.sleep(command.get("sleep", 0))
        RECEIVED.append(("async", command["n"]))

    @distributed
    @command_handler("load.asyncFails")
    async def fails_async(self, command: dict) -> None:
        await asyncio.sleep(0)
        ATTEMPTS.append(command["n"])
        raise RuntimeError("coroutine failed on purpose")

    @distributed
    @event_handler("load.happened")
    async def on_happened(self, event: dict) -> None:
        await asyncio.sleep(0)
        RECEIVED.append(("event async", event["n"]))

    @distributed
    @event_handler("load.happened")
    def on_happened_sync(self, event: dict) -> None:
        RECEIVED.append(("event sync", event["n"]))
"""


class Services:
    """One container per service on the transport under test, all scanning one handler module."""

    def __init__(self, kind: str, tmp_path: Path, unique: str, make_module: Callable[[str, str], str]) -> None:
        self.kind, self.tmp_path = kind, tmp_path
        self.distribution = {"exchange": f"test.concurrency.{unique}", "queue_prefix": f"test_{unique}_"}
        self.module_name = make_module(f"concurrency_{uuid.uuid4().hex[:8]}", HANDLERS)
        self.module: Any = __import__(self.module_name)
        self.containers: list[MessagingContainer] = []

    def container(self, service_name: str, **sections: Any) -> MessagingContainer:
        container = MessagingContainer.from_dict(
            {
                "service_name": service_name,
                "scan": [self.module_name],
                "transport": transport_section(self.kind, self.tmp_path),
                "distribution": self.distribution,
                "recoverability": {"immediate_retries": 0, "delayed_retries": []},
                **sections,
            }
        )
        self.containers.append(container)
        return container

    def close(self) -> None:
        for container in self.containers:
            queue = container.topology.queue(container.settings.service_name or "")
            forget_endpoint(container, queue)
            container.close()


@pytest.fixture
def services(transport_kind: str, tmp_path: Path, unique: str, make_module: Callable[[str, str], str]) -> Any:
    built = Services(transport_kind, tmp_path, unique, make_module)
    yield built
    built.close()


def test_sixteen_threads_sending_through_one_bus_each_message_arrives_exactly_once(services: Services) -> None:
    """16 threads x 100 commands through one DistributedBus: no error, and the consumer gets each exactly once."""
    worker, sender = services.container("worker"), services.container("sender")
    worker.setup()
    bus = sender.get(DistributedBus)

    def send(thread: int) -> None:
        for i in range(100):
            bus.convert_and_send_command("worker", "load.record", {"n": thread * 100 + i})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(send, range(16)))  # re-raises the first error of any thread
    result = worker.run("worker", finish_when_no_messages=True)

    assert Counter(services.module.RECEIVED) == Counter(range(1600))
    assert result.handled == 1600 and result.failed == 0


def test_concurrent_senders_each_learn_only_their_own_failure(services: Services) -> None:
    """Among 16 threads sending at once, only the callers whose command no queue takes get UnroutableMessageError;
    every other command arrives."""
    worker, sender = services.container("worker"), services.container("sender")
    worker.setup()
    bus = sender.get(DistributedBus)

    def send(n: int) -> str:
        destination = "nobody" if n % 4 == 0 else "worker"
        try:
            bus.convert_and_send_command(destination, "load.record", {"n": n})
        except UnroutableMessageError:
            return "unroutable"
        return "sent"

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(send, range(320)))
    worker.run("worker", finish_when_no_messages=True)

    assert [n for n, outcome in enumerate(outcomes) if outcome == "unroutable"] == list(range(0, 320, 4))
    assert sorted(services.module.RECEIVED) == [n for n in range(320) if n % 4]
