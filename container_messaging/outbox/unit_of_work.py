"""The unit of work: a database transaction that the messages sent inside it join.

``with unit_of_work.begin() as connection:`` opens a transaction on the outbox's database (or on the application's
own connection: ``begin(connection)``). Everything sent inside it through any bus is written to the outbox table on
that connection, so it commits with the application's writes or not at all. After the commit the messages are
published at once, in this process, and marked sent; if that fails (the broker is down, the process dies), they stay
in the outbox and the relay publishes them. A ``begin()`` inside an open unit of work joins it.

Given a framework's transactions (:meth:`UnitOfWork.follow`, e.g. Django's ``transaction.atomic()``), what is sent
inside one of them while no unit of work is open goes to the outbox on the framework's connection, and is published
after the framework's commit.

It is also the :class:`~container_messaging.invocation.Transactions` of ``@transactional`` handlers: the handler runs
in a unit of work whose first write is the inbox record of ``(message id, handler)``; a message already recorded
runs nothing.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from container_messaging.errors import MessagingError
from container_messaging.invocation import Transactions
from container_messaging.messages import ID, Message
from container_messaging.outbox.errors import OutboxError, database_error
from container_messaging.outbox.forwarding import Forwarder
from container_messaging.outbox.host import HostTransaction
from container_messaging.outbox.inbox import Inbox
from container_messaging.outbox.store import OutboxStore
from container_messaging.transports.base import OutboundMessage

__all__ = ["UnitOfWork"]

log = logging.getLogger("container_messaging.outbox")


@attrs.define
class _Work:
    """The unit of work open in one context: its connection and the outbox rows written in it."""

    connection: Connection
    row_ids: list[int] = attrs.Factory(list)


class UnitOfWork(Transactions):
    """Opens transactions whose sent messages commit with them; resolvable from the container by type."""

    def __init__(
        self,
        engine: Engine,
        store: OutboxStore,
        inbox: Inbox,
        forwarder: Forwarder,
        *,
        check_schema: Callable[[Connection], None],
        publish_after_commit: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self._store = store
        self._inbox = inbox
        self._forwarder = forwarder
        self._check_schema = check_schema
        self._schema_checked = False
        self._publish_after_commit = publish_after_commit
        self._clock = clock
        self._current: contextvars.ContextVar[_Work | None] = contextvars.ContextVar("unit_of_work", default=None)
        self._host: HostTransaction | None = None

    def __repr__(self) -> str:
        return f"<UnitOfWork {self.engine.url.render_as_string(hide_password=True)!r}>"

    @contextmanager
    def begin(self, connection: Connection | None = None) -> Iterator[Connection]:
        """A transaction (on a connection of the outbox's engine, or on ``connection``, which must have none in
        progress): committed when the block returns, rolled back when it raises; then what was sent is published."""
        outer = self._current.get()
        if outer is not None:
            if connection is not None and connection is not outer.connection:
                raise OutboxError("a unit of work is already open in this context on another connection")
            yield outer.connection
            return
        if connection is not None and connection.in_transaction():
            raise OutboxError(
                "the connection given to UnitOfWork.begin() already has a transaction in progress: commit or roll "
                "it back first, or write inside begin() only"
            )
        owned = connection is None
        try:
            active = self.engine.connect() if connection is None else connection
        except SQLAlchemyError as exc:
            raise database_error("connecting to the outbox's database", exc) from exc
        work = _Work(active)
        try:
            if not self._schema_checked:
                self._check_schema(active)
                active.rollback()  # the check's reads must not start the application's transaction
                self._schema_checked = True
            token = self._current.set(work)
            try:
                with active.begin():
                    yield active
            finally:
                self._current.reset(token)
        finally:
            if owned:
                active.close()
        if work.row_ids and self._publish_after_commit:
            self._forward(work.row_ids)

    def follow(self, host: HostTransaction | None) -> None:
        """Makes what is sent inside ``host``'s open transaction (when no unit of work is open) part of it: written
        to the outbox on its connection, published after its commit. None stops following."""
        self._host = host

    @property
    def in_progress(self) -> bool:
        """Whether a unit of work, or a followed framework transaction, is open in this context (what is sent now
        goes to the outbox)."""
        return self._current.get() is not None or (self._host is not None and self._host.connection() is not None)

    def write(self, exchange: str | None, queue: str | None, messages: Sequence[tuple[OutboundMessage, bool]]) -> bool:
        """Writes messages bound for ``exchange`` (or straight to ``queue``) to the outbox in the open unit of work
        (or the followed framework transaction); False (nothing written) when none is open in this context."""
        work = self._current.get()
        if work is not None:
            work.row_ids.extend(self._add(work.connection, exchange, queue, messages))
            return True
        host = self._host
        connection = host.connection() if host is not None else None
        if host is None or connection is None:
            return False
        if not self._schema_checked:
            self._check_schema(connection)  # reads only, in the framework's transaction
            self._schema_checked = True
        row_ids = self._add(connection, exchange, queue, messages)
        if self._publish_after_commit:
            # One callback per write: a rolled back savepoint (a nested atomic block) drops it with its rows.
            host.on_commit(lambda: self._forward(row_ids))
        return True

    def _add(
        self,
        connection: Connection,
        exchange: str | None,
        queue: str | None,
        messages: Sequence[tuple[OutboundMessage, bool]],
    ) -> list[int]:
        try:
            return self._store.add(connection, exchange, queue, messages, self._clock())
        except SQLAlchemyError as exc:
            ids = ", ".join(repr(message.message_id) for message, _ in messages)
            raise database_error(f"writing message {ids} to the outbox table {self._store.table.name!r}", exc) from exc

    def _forward(self, row_ids: list[int]) -> None:
        """Publishes what this unit of work committed; a failure leaves it to the relay (the commit stands)."""
        try:
            self._forwarder.forward(limit=len(row_ids), row_ids=row_ids)
        except MessagingError as exc:
            log.warning(
                "outbox: %d committed message(s) were not published now and wait in the outbox for the relay: %s",
                len(row_ids),
                exc,
            )

    # -- Transactions: @transactional handlers -----------------------------------------------------------------

    @property
    def connection_type(self) -> type:
        return Connection

    def connection(self) -> Connection:
        """The connection of the unit of work open in this context."""
        work = self._current.get()
        if work is None:
            raise OutboxError("no unit of work is open in this context: use UnitOfWork.begin()")
        return work.connection

    def run(self, handler_name: str, message: Message, call: Callable[[Message], Any]) -> Any:
        """Runs the handler in a unit of work that first records ``(message id, handler)`` in the inbox; a message
        the inbox already has runs nothing."""
        message_id = message.headers.get(ID)
        with self.begin() as connection:
            if message_id is not None and not self._record(connection, str(message_id), handler_name):
                log.info("outbox: message %r was already handled by %s (inbox); skipped", message_id, handler_name)
                return None
            return call(message)

    def _record(self, connection: Connection, message_id: str, handler_name: str) -> bool:
        try:
            return self._inbox.record(connection, message_id, handler_name, self._clock())
        except SQLAlchemyError as exc:
            raise database_error(
                f"recording message {message_id!r} in the inbox table {self._inbox.table.name!r}", exc
            ) from exc
