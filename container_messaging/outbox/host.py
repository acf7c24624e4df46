"""Transactions a host framework owns (Django's ``transaction.atomic()``), joined by the outbox.

A :class:`HostTransaction` tells the unit of work whether the framework has a transaction open in this context, on
which connection, and runs a callback after that transaction commits. Given one
(:meth:`~container_messaging.outbox.UnitOfWork.follow`), the unit of work writes what is sent inside the framework's
transaction to the outbox on the framework's own connection, so it commits or rolls back with the framework's
writes, and publishes it after the framework's commit.

:class:`BorrowedConnections` gives SQLAlchemy connections over DBAPI connections the framework owns (its own
connection, in its own transaction): SQLAlchemy never commits, rolls back or closes them; the framework does.
"""

from __future__ import annotations

import contextvars
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import Connection, create_engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from container_messaging.outbox.errors import OutboxError, database_error

__all__ = ["BorrowedConnections", "HostTransaction"]


class HostTransaction(Protocol):
    """A database transaction opened and committed by the application's framework."""

    def connection(self) -> Connection | None:
        """The connection of the framework's transaction open in this context, or None when none is open."""
        ...

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Runs ``callback`` after the framework's open transaction commits (never when it rolls back)."""
        ...


class _Borrowed:
    """A DBAPI connection lent to SQLAlchemy: everything passes through but commit, rollback and close, which are the
    owner's."""

    def __init__(self, dbapi_connection: Any) -> None:
        self._dbapi_connection = dbapi_connection

    def commit(self) -> None:
        """The owner commits."""

    def rollback(self) -> None:
        """The owner rolls back."""

    def close(self) -> None:
        """The owner closes."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dbapi_connection, name)


class BorrowedConnections:
    """SQLAlchemy connections (dialect of ``dialect_url``, e.g. ``postgresql+psycopg://`` or ``sqlite://``) over the
    DBAPI connections of a framework, one per owner (the framework's per-thread connection object)."""

    def __init__(self, dialect_url: str) -> None:
        self._lending: contextvars.ContextVar[Any] = contextvars.ContextVar("borrowed_connection")
        try:
            # NullPool: each connect() calls the creator (it lends the connection in hand) and nothing is pooled;
            # no reset on return: the transaction is the owner's.
            # PostgreSQL: no hstore lookup (it wants the driver's own connection class; the outbox has no hstore).
            options = {"use_native_hstore": False} if dialect_url.startswith("postgresql") else {}
            self._engine = create_engine(
                dialect_url, creator=self._lend, poolclass=NullPool, pool_reset_on_return=None, **options
            )
        except (ImportError, SQLAlchemyError) as exc:
            raise OutboxError(f"the outbox cannot use the framework's {dialect_url!r} connections: {exc}") from exc
        self._connections: weakref.WeakKeyDictionary[Any, tuple[Any, Connection, weakref.finalize[[], Any]]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<BorrowedConnections {self._engine.dialect.name}>"

    def _lend(self) -> _Borrowed:
        return _Borrowed(self._lending.get())

    def connection(self, owner: object, dbapi_connection: Any) -> Connection:
        """The SQLAlchemy connection over ``dbapi_connection`` (``owner``'s current one), made on first use and kept
        while ``owner`` lives and keeps that DBAPI connection (closing it gives nothing back to the owner)."""
        with self._lock:
            kept = self._connections.get(owner)
        if kept is not None:
            if kept[0] is dbapi_connection:
                return kept[1]
            kept[2]()  # the owner reconnected: forget the old one
        token = self._lending.set(dbapi_connection)
        try:
            connection = self._engine.connect()
        except SQLAlchemyError as exc:
            raise database_error("using the framework's database connection for the outbox", exc) from exc
        finally:
            self._lending.reset(token)
        with self._lock:
            self._connections[owner] = (dbapi_connection, connection, weakref.finalize(owner, connection.close))
        return connection
