"""Coroutine handlers outside consumers: the in-process buses (sync and async flavours), and what is refused at boot."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from container_messaging import (
    AsyncCommandBus,
    AsyncEventBus,
    AsyncQueryBus,
    CommandBus,
    HandlerDefinitionError,
    MessagingContainer,
)
from container_messaging.errors import MessageHandlingError

HANDLERS = """
import asyncio
import threading

import attrs

from container_messaging import CommandBus, command_handler, event_handler, query_handler

SEEN = []


@attrs.frozen
class Double:
    n: int


class Handlers:
    def __init__(self, commands: CommandBus) -> None:
        self.commands = commands

    @command_handler("async.double")
    async def double(self, command: Double) -> int:
        await asyncio.sleep(0)
        return command.n * 2

    @command_handler("async.nested")
    async def nested(self, command: dict) -> int:
        return self.commands.send_with_routing("async.double", Double(1))

    @query_handler("sync.where")
    def where(self, query: dict) -> int:
        return threading.get_ident()

    @event_handler("async.happened")
    async def on_async(self, event: dict) -> None:
        SEEN.append("async")

    @event_handler("async.happened")
    def on_sync(self, event: dict) -> None:
        SEEN.append("sync")
"""


@pytest.fixture
def container(make_module: Callable[[str, str], str]) -> Any:
    module = make_module("asyncio_handlers_module", HANDLERS)
    with MessagingContainer.from_dict({"scan": [module]}) as built:
        yield built


def test_the_sync_command_bus_awaits_a_coroutine_handler_outside_any_loop(container: MessagingContainer) -> None:
    """CommandBus.send of a command whose handler is async def returns the coroutine's result, not a coroutine."""
    module = __import__("asyncio_handlers_module")
    assert container.get(CommandBus).send_with_routing("async.double", module.Double(21)) == 42


def test_the_async_buses_await_coroutines_and_run_plain_handlers_off_the_loop(container: MessagingContainer) -> None:
    """On an event loop, AsyncCommandBus awaits a coroutine handler, AsyncQueryBus runs a plain handler in another
    thread than the loop's, and AsyncEventBus reaches both kinds of event handler."""
    module = __import__("asyncio_handlers_module")

    async def app() -> tuple[int, int, int]:
        doubled = await container.get(AsyncCommandBus).send_with_routing("async.double", module.Double(4))
        where = await container.get(AsyncQueryBus).send_with_routing("sync.where", {})
        await container.get(AsyncEventBus).publish_with_routing("async.happened", {})
        return doubled, where, threading.get_ident()

    doubled, handler_thread, loop_thread = asyncio.run(app())
    assert doubled == 8
    assert handler_thread != loop_thread
    assert sorted(module.SEEN) == ["async", "sync"]
    assert container.get("async_command_bus") is container.get(AsyncCommandBus)


def test_a_sync_bus_on_a_running_loop_refuses_a_coroutine_handler_naming_it(container: MessagingContainer) -> None:
    """A coroutine handler reached through the sync CommandBus from a coroutine is an error naming the handler and
    pointing to the async buses (it cannot be awaited without blocking the loop)."""
    module = __import__("asyncio_handlers_module")

    async def app() -> None:
        container.get(CommandBus).send_with_routing("async.double", module.Double(1))

    with pytest.raises(MessageHandlingError, match=r"Handlers\.double is a coroutine function.*AsyncCommandBus"):
        asyncio.run(app())


def test_an_async_generator_handler_is_refused_at_boot(make_module: Callable[[str, str], str]) -> None:
    """An async generator handler (async def with yield) is a boot error naming it: nothing would run its body."""
    module = make_module(
        "async_generator_module",
        """
from container_messaging import command_handler

class Handlers:
    @command_handler("gen.run")
    async def run(self, command: dict):
        yield command
""",
    )
    with pytest.raises(HandlerDefinitionError, match=r"Handlers\.run is an async generator"):
        MessagingContainer.from_dict({"scan": [module]})
