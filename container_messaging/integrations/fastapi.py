"""FastAPI (and Starlette) integration: ``pip install 'container-messaging[fastapi]'``.

::

    from fastapi import FastAPI
    from container_messaging.integrations.fastapi import AsyncDistributedBusDep, messaging_lifespan

    app = FastAPI(lifespan=messaging_lifespan("configs/user.yaml"))

    @app.post("/people/{person_id}/billing-details")
    async def change(person_id: str, details: str, bus: AsyncDistributedBusDep) -> None:
        await bus.convert_and_send_command("billing", "billing.changeDetails", {...})

- :func:`messaging_lifespan` (or :func:`messaging` inside an application's own lifespan) builds the container from a
  configuration file, a mapping of the same keys, or a built container; keeps it on ``app.state.messaging``;
  optionally runs endpoints' consumers in background threads; and at shutdown stops them and closes the container.
- :func:`from_messaging` is a ``Depends`` giving any type (or provider name) the container resolves;
  ``DistributedBusDep``, ``CommandBusDep``, ``EventBusDep``, ``QueryBusDep``, their async flavours
  ``AsyncDistributedBusDep``, ``AsyncCommandBusDep``, ``AsyncEventBusDep``, ``AsyncQueryBusDep``, and
  ``MessagingDep`` (the container) are ready-made ``Annotated`` aliases. Resolution happens on the event loop: the
  buses do no I/O when built.
- A ``def`` path operation calls the synchronous buses (they wait for the broker's confirm; FastAPI runs it in a
  worker thread); an ``async def`` one awaits the async buses, which wait for the same confirm without blocking the
  event loop. :func:`run_blocking` is for any other blocking call.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Final, ParamSpec, TypeVar

from container_messaging.integrations import missing_extra

try:
    import anyio
    import anyio.to_thread
    from fastapi import Depends
    from starlette.applications import Starlette
    from starlette.requests import HTTPConnection
except ImportError as exc:
    raise missing_extra("fastapi", "FastAPI", exc) from exc

from container_messaging.buses import AsyncCommandBus, AsyncEventBus, AsyncQueryBus, CommandBus, EventBus, QueryBus
from container_messaging.container import MessagingContainer
from container_messaging.distributed import AsyncDistributedBus, DistributedBus
from container_messaging.errors import ConfigurationError
from container_messaging.integrations.background import BackgroundConsumer

__all__ = [
    "AsyncCommandBusDep",
    "AsyncDistributedBusDep",
    "AsyncEventBusDep",
    "AsyncQueryBusDep",
    "CommandBusDep",
    "DistributedBusDep",
    "EventBusDep",
    "MessagingConfig",
    "MessagingDep",
    "QueryBusDep",
    "STATE_ATTRIBUTE",
    "from_messaging",
    "get_messaging",
    "messaging",
    "messaging_lifespan",
    "run_blocking",
]

STATE_ATTRIBUTE: Final = "messaging"
"""The container is ``app.state.messaging``."""

MessagingConfig = str | os.PathLike[str] | Mapping[str, Any] | MessagingContainer
"""A configuration file (YAML or INI), a mapping of the same keys, or a container built by the application."""

P = ParamSpec("P")
T = TypeVar("T")


async def run_blocking(call: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Runs ``call(*args, **kwargs)`` (a blocking call) in a worker thread and returns its result.

    For the buses, ``async def`` path operations await the async buses instead (``AsyncDistributedBusDep``...):
    ``await bus.convert_and_send_command(...)`` and ``async with bus.batch():`` wait for the broker's confirm
    without blocking the event loop. This stays for other blocking work (and for bus code written against it).
    """
    return await anyio.to_thread.run_sync(functools.partial(call, *args, **kwargs))


def _build(config: MessagingConfig, app_container: Any) -> MessagingContainer:
    if isinstance(config, MessagingContainer):
        if app_container is not None:
            raise ConfigurationError(
                "messaging config: app_container is for building a container; the MessagingContainer given was "
                "built already (pass MessagingContainer.from_...(..., app=...) instead)"
            )
        return config
    if isinstance(config, str | os.PathLike):
        return MessagingContainer.from_config(os.fspath(config), app=app_container)
    if isinstance(config, Mapping):
        return MessagingContainer.from_dict(config, app=app_container)
    raise ConfigurationError(
        f"messaging config: expected a configuration file path, a mapping of settings or a MessagingContainer, "
        f"got {type(config).__name__}"
    )


@asynccontextmanager
async def messaging(
    app: Starlette,
    config: MessagingConfig,
    *,
    consumers: Iterable[str] = (),
    app_container: Any = None,
    stop_timeout: float = 30.0,
) -> AsyncIterator[MessagingContainer]:
    """The container for the life of ``app``, for use inside an application's own lifespan::

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with messaging(app, "configs/user.yaml", consumers=["user"]):
                yield

    Builds the container from ``config`` (``app_container``: the application's dependency-injector container, whose
    providers handlers can use) and stores it on ``app.state.messaging``; for each name in ``consumers``, declares the
    endpoint's queue and starts its consumer in a background thread. At the end, stops the consumers (after their
    message in hand, waiting up to ``stop_timeout`` seconds each) and closes the container.
    """
    container = _build(config, app_container)
    started: list[BackgroundConsumer] = []
    state = app.state
    try:
        for name in consumers:
            background = BackgroundConsumer(container, name)
            await run_blocking(container.setup, name)  # bound before the app serves: no event sent meanwhile is missed
            background.start()
            started.append(background)
        setattr(state, STATE_ATTRIBUTE, container)
        yield container
    finally:
        if getattr(state, STATE_ATTRIBUTE, None) is container:
            delattr(state, STATE_ATTRIBUTE)
        with anyio.CancelScope(shield=True):  # a cancelled shutdown still stops the consumers and closes
            for background in started:
                await run_blocking(background.stop, stop_timeout)
            await run_blocking(container.close)


def messaging_lifespan(
    config: MessagingConfig,
    *,
    consumers: Iterable[str] = (),
    app_container: Any = None,
    stop_timeout: float = 30.0,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """A lifespan for ``FastAPI(lifespan=...)`` (or Starlette) that runs :func:`messaging` for the app."""
    names = tuple(consumers)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with messaging(app, config, consumers=names, app_container=app_container, stop_timeout=stop_timeout):
            yield

    return lifespan


def get_messaging(connection: HTTPConnection) -> MessagingContainer:
    """The app's container, from a request or a WebSocket (``MessagingDep`` injects it)."""
    container = getattr(connection.app.state, STATE_ATTRIBUTE, None)
    if not isinstance(container, MessagingContainer):
        raise ConfigurationError(
            f"no messaging container on app.state.{STATE_ATTRIBUTE}: create the app with "
            "FastAPI(lifespan=messaging_lifespan(config)) or enter messaging(app, config) in its lifespan"
        )
    return container


def from_messaging(key: type[T] | str) -> Any:
    """``Depends`` on what the container gives for ``key``: a type (built with constructor injection when nothing
    provides it) or a provider name (``"command_bus"``)::

        def change(controller: UserController = from_messaging(UserController)) -> None: ...
        def change(controller: Annotated[UserController, from_messaging(UserController)]) -> None: ...
    """

    async def resolve(connection: HTTPConnection) -> Any:
        return get_messaging(connection).get(key)

    return Depends(resolve)


MessagingDep = Annotated[MessagingContainer, from_messaging(MessagingContainer)]
DistributedBusDep = Annotated[DistributedBus, from_messaging(DistributedBus)]
CommandBusDep = Annotated[CommandBus, from_messaging(CommandBus)]
EventBusDep = Annotated[EventBus, from_messaging(EventBus)]
QueryBusDep = Annotated[QueryBus, from_messaging(QueryBus)]
AsyncDistributedBusDep = Annotated[AsyncDistributedBus, from_messaging(AsyncDistributedBus)]
AsyncCommandBusDep = Annotated[AsyncCommandBus, from_messaging(AsyncCommandBus)]
AsyncEventBusDep = Annotated[AsyncEventBus, from_messaging(AsyncEventBus)]
AsyncQueryBusDep = Annotated[AsyncQueryBus, from_messaging(AsyncQueryBus)]
