"""``install``: the outbox's parts, built once and handed to the container.

``install(settings, transport)`` gives an :class:`Outbox`: its ``transport`` (the real one decorated: register it as
the container's transport, so every bus publishes through it), its ``unit_of_work`` (register it by type: the
application begins transactions with it and ``@transactional`` handlers run in it), ``relay()`` (the ``outbox``
endpoint), ``setup()`` (creates the tables), ``check()`` and ``close()``. Nothing connects until it is used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from container_messaging.config import OutboxSettings
from container_messaging.errors import ConfigurationError
from container_messaging.outbox.errors import database_error
from container_messaging.outbox.forwarding import Forwarder
from container_messaging.outbox.inbox import Inbox
from container_messaging.outbox.relay import RELAY_ENDPOINT, OutboxRelay
from container_messaging.outbox.schema import OutboxSchema, open_engine
from container_messaging.outbox.store import OutboxEntry, OutboxStore
from container_messaging.outbox.transport import OutboxTransport
from container_messaging.outbox.unit_of_work import UnitOfWork
from container_messaging.transports.base import BaseTransport

__all__ = ["Outbox", "install"]

_DIALECTS: Final = ("postgresql", "sqlite")

T = TypeVar("T")


class Outbox:
    """The outbox of one container: transport decorator, unit of work, relay, schema."""

    def __init__(
        self,
        settings: OutboxSettings,
        transport: BaseTransport,
        engine: Engine,
        *,
        owns_engine: bool,
        auto_declare: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if engine.dialect.name not in _DIALECTS:
            raise ConfigurationError(
                f"outbox: the database {engine.url.render_as_string(hide_password=True)!r} is "
                f"{engine.dialect.name}; the outbox supports PostgreSQL and SQLite"
            )
        self.settings = settings
        self.engine = engine
        self._owns_engine = owns_engine
        self._clock = clock
        self.schema = OutboxSchema(settings.outbox_table, settings.inbox_table)
        self._store = OutboxStore(self.schema.outbox)
        self._inbox = Inbox(self.schema.inbox)
        self._forwarder = Forwarder(engine, self._store, transport, declare_exchanges=auto_declare, clock=clock)
        self.unit_of_work = UnitOfWork(
            engine,
            self._store,
            self._inbox,
            self._forwarder,
            check_schema=self.schema.check,
            publish_after_commit=settings.publish_after_commit,
            clock=clock,
        )
        self.transport = OutboxTransport(transport, self.unit_of_work)

    def __repr__(self) -> str:
        return (
            f"<Outbox {self.engine.url.render_as_string(hide_password=True)!r} "
            f"tables={self.schema.outbox.name!r},{self.schema.inbox.name!r}>"
        )

    def relay(self, name: str = RELAY_ENDPOINT) -> OutboxRelay:
        """The relay endpoint: ``relay().run(RunOptions(...))``."""
        return OutboxRelay(
            name=name,
            engine=self.engine,
            store=self._store,
            inbox=self._inbox,
            forwarder=self._forwarder,
            settings=self.settings,
            check_schema=self.schema.check,
            clock=self._clock,
        )

    def setup(self) -> None:
        """Creates the outbox and inbox tables and their indexes where missing (idempotent)."""
        self.schema.create(self.engine)

    def check(self) -> None:
        """Raises :class:`~container_messaging.outbox.OutboxSchemaError` when a table is missing."""
        self._on_connection("checking the outbox tables", self.schema.check)

    def pending(self, limit: int = 100) -> list[OutboxEntry]:
        """The oldest messages not published yet, with their attempts and last error."""
        return self._on_connection("reading the outbox", lambda c: self._store.pending(c, limit))

    def pending_count(self) -> int:
        return self._on_connection("counting the outbox", self._store.count_pending)

    def close(self) -> None:
        """Closes the database connections of the engine the outbox created (not an engine it was given, nor the
        transport: the container closes that)."""
        if self._owns_engine:
            self.engine.dispose()

    def _on_connection(self, action: str, read: Callable[[Connection], T]) -> T:
        try:
            with self.engine.connect() as connection:
                return read(connection)
        except SQLAlchemyError as exc:
            raise database_error(action, exc) from exc


def install(
    settings: OutboxSettings, transport: BaseTransport, *, engine: Engine | None = None, auto_declare: bool = True
) -> Outbox:
    """The outbox over the real ``transport``, on ``engine`` (the application's) or on one made from
    ``settings.database_url``; with ``auto_declare``, exchanges are declared before their messages are published."""
    if engine is None:
        return Outbox(
            settings,
            transport,
            open_engine(settings.database_url.reveal()),
            owns_engine=True,
            auto_declare=auto_declare,
        )
    return Outbox(settings, transport, engine, owns_engine=False, auto_declare=auto_declare)
