"""Concurrency and asyncio on every transport (memory, embedded, RabbitMQ, Redis): a bus shared by threads,
coroutine handlers, the async buses, concurrent consumption and SIGTERM mid-flight."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from container_messaging import (
    AsyncDistributedBus,
    DistributedBus,
    MessagingContainer,
    UnroutableMessageError,
)

from conftest import forget_endpoint, transport_section

HANDLERS = """
import asyncio
import threading
import time

from container_messaging import command_handler, distributed, event_handler

RECEIVED = []
STARTED = []
THREADS = set()
ATTEMPTS = []
BARRIER = threading.Barrier(4, timeout=20)


class Handlers:
    @distributed
    @command_handler("load.record")
    def record(self, command: dict) -> None:
        THREADS.add(threading.get_ident())
        RECEIVED.append(command["n"])

    @distributed
    @command_handler("load.slow")
    def slow(self, command: dict) -> None:
        STARTED.append(command["n"])
        time.sleep(command.get("sleep", 0.05))
        RECEIVED.append(command["n"])

    @distributed
    @command_handler("load.together")
    def together(self, command: dict) -> None:
        BARRIER.wait()  # passes only when 4 messages are handled at the same time
        RECEIVED.append(command["n"])

    @distributed
    @command_handler("load.togetherAsync")
    async def together_async(self, command: dict) -> None:
        STARTED.append(command["n"])
        while len(STARTED) < 4:  # returns only when 4 coroutines run at the same time
            await asyncio.sleep(0.001)
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


def wait_for(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_coroutine_command_and_event_handlers_run_beside_plain_ones(services: Services) -> None:
    """An async def command handler runs (awaited), and an event reaches its coroutine and its plain handler."""
    worker, sender = services.container("worker"), services.container("sender")
    worker.setup()
    bus = sender.get(DistributedBus)
    bus.convert_and_send_command("worker", "load.async", {"n": 1})
    bus.convert_and_publish_event("load.happened", {"n": 2})
    result = worker.run("worker", finish_when_no_messages=True)

    assert sorted(map(str, services.module.RECEIVED)) == sorted(
        map(str, [("async", 1), ("event async", 2), ("event sync", 2)])
    )
    assert result.handled == 2 and result.failed == 0


def test_a_failing_coroutine_is_retried_and_dead_lettered(services: Services) -> None:
    """A coroutine handler that raises is retried at once, then after a delay, then goes to the dead letter."""
    worker = services.container("worker", recoverability={"immediate_retries": 1, "delayed_retries": [10]})
    sender = services.container("sender")
    worker.setup()
    sender.get(DistributedBus).convert_and_send_command("worker", "load.asyncFails", {"n": 7})
    # two transport messages: the command, then its delayed retry copy
    result = worker.run("worker", handled_message_limit=2, execution_time_limit=20_000)

    assert services.module.ATTEMPTS == [7, 7, 7, 7]  # 2 attempts, then 2 after the delay
    assert (result.retried, result.failed) == (1, 1)
    [entry] = worker.dead_letter().list()
    assert "coroutine failed on purpose" in str(entry)


@pytest.mark.parametrize("route", ["load.together", "load.togetherAsync"])
def test_concurrency_handles_several_messages_at_once(services: Services, route: str) -> None:
    """At concurrency 4, four messages are in their handlers at the same time (threads, or tasks for coroutines):
    the handlers return only then."""
    worker, sender = services.container("worker"), services.container("sender")
    worker.setup()
    with sender.get(DistributedBus).batch():
        for n in range(4):
            sender.get(DistributedBus).convert_and_send_command("worker", route, {"n": n})
    result = worker.run("worker", finish_when_no_messages=True, concurrency=4)

    assert sorted(services.module.RECEIVED) == [0, 1, 2, 3]
    assert result.handled == 4


def test_sigterm_mid_flight_loses_nothing_and_handles_nothing_twice(services: Services) -> None:
    """SIGTERM while 8 messages are in hand: each finishes and is acknowledged, the rest stay on the queue, and a
    second run handles those: every message exactly once."""
    worker, sender = services.container("worker"), services.container("sender")
    worker.setup()
    with sender.get(DistributedBus).batch():
        for n in range(40):
            sender.get(DistributedBus).convert_and_send_command("worker", "load.slow", {"n": n, "sleep": 0.2})
    module = services.module

    def terminate() -> None:
        wait_for(lambda: len(module.STARTED) >= 8)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate)
    killer.start()
    first = worker.run("worker", concurrency=8)
    killer.join()
    handled_first = list(module.RECEIVED)
    left = worker.transport.queue_size(worker.topology.queue("worker"))
    second = worker.run("worker", finish_when_no_messages=True, concurrency=8)

    assert first.stop_reason == "signal SIGTERM"
    assert first.handled == len(handled_first) >= 8
    assert left == 40 - first.handled
    assert Counter(module.RECEIVED) == Counter(range(40))
    assert first.handled + second.handled == 40


def test_handled_message_limit_counts_messages_exactly_at_concurrency(services: Services) -> None:
    """At concurrency 8, a limit of 5 handles exactly 5 messages and leaves the others on the queue."""
    worker, sender = services.container("worker"), services.container("sender")
    worker.setup()
    with sender.get(DistributedBus).batch():
        for n in range(20):
            sender.get(DistributedBus).convert_and_send_command("worker", "load.record", {"n": n})
    result = worker.run("worker", handled_message_limit=5, concurrency=8)

    assert result.handled == 5 and len(services.module.RECEIVED) == 5
    assert worker.transport.queue_size(worker.topology.queue("worker")) == 15


def test_an_asyncio_application_sends_through_the_async_bus(services: Services) -> None:
    """Coroutines on one event loop send 50 commands through AsyncDistributedBus (some in an async batch); each
    arrives once, and the loop keeps running meanwhile."""
    worker, sender = services.container("worker"), services.container("sender")
    worker.setup()
    bus = sender.get(AsyncDistributedBus)
    assert sender.get("async_distributed_bus") is bus

    async def app() -> int:
        ticks = 0
        sending = asyncio.gather(*(bus.convert_and_send_command("worker", "load.record", {"n": n}) for n in range(40)))

        async def batch() -> None:
            async with bus.batch():
                for n in range(40, 50):
                    await bus.convert_and_send_command("worker", "load.record", {"n": n})

        done = asyncio.gather(sending, batch())
        while not done.done():
            ticks += 1
            await asyncio.sleep(0)
        await done
        return ticks

    ticks = asyncio.run(app())
    worker.run("worker", finish_when_no_messages=True)

    assert ticks > 0
    assert Counter(services.module.RECEIVED) == Counter(range(50))
