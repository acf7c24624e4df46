"""Django's ``transaction.atomic()`` as the outbox's transaction (needs the ``outbox`` extra too).

With the outbox enabled, a message any bus sends inside ``transaction.atomic()`` on the outbox's Django database is
written to the outbox table with Django's own connection, in Django's transaction: a rollback (of the block, or of
a nested block's savepoint) takes it away with the application's rows; Django's commit keeps it, and
``transaction.on_commit`` then publishes it. If the process dies (or the broker fails) between the commit and the
publish, the row waits for the relay, ``manage.py messaging run outbox``. Outside an atomic block (autocommit), a
send goes straight to the broker, as without the outbox.

SQLAlchemy writes the row over Django's DBAPI connection (:class:`~container_messaging.outbox.host.BorrowedConnections`:
it never commits, rolls back nor closes it), so the outbox's one implementation of its table serves Django too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import connections, transaction

from container_messaging.errors import ConfigurationError
from container_messaging.outbox.host import BorrowedConnections

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ["DjangoTransaction"]


def _dialect_url(wrapper: Any, alias: str) -> str:
    """The SQLAlchemy dialect for the DBAPI driver Django uses on ``alias``."""
    if wrapper.vendor == "sqlite":
        return "sqlite://"
    if wrapper.vendor == "postgresql":
        driver = wrapper.Database.__name__.split(".")[0]  # psycopg (3) or psycopg2
        return f"postgresql+{driver}://"
    raise ConfigurationError(
        f"settings.DATABASES[{alias!r}] is {wrapper.vendor}: the outbox supports PostgreSQL and SQLite"
    )


class DjangoTransaction:
    """The atomic blocks of one Django database (``alias``), for :meth:`UnitOfWork.follow`."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._borrowed: BorrowedConnections | None = None

    def __repr__(self) -> str:
        return f"<DjangoTransaction using={self.alias!r}>"

    def connection(self) -> Connection | None:
        """A SQLAlchemy connection over Django's connection when an atomic block is open in this thread, else None."""
        wrapper = connections[self.alias]
        if not wrapper.in_atomic_block:
            return None
        if self._borrowed is None:
            self._borrowed = BorrowedConnections(_dialect_url(wrapper, self.alias))
        wrapper.ensure_connection()
        return self._borrowed.connection(wrapper, wrapper.connection)

    def on_commit(self, callback: Callable[[], None]) -> None:
        """``transaction.on_commit``: after the outermost block commits; an error is logged (the commit stands and
        the rows wait for the relay), not raised into the view."""
        transaction.on_commit(callback, using=self.alias, robust=True)
