"""The inbox: which handler already handled which message id, written in the handler's own transaction.

Recording is an insert that does nothing on a conflict: on PostgreSQL a second transaction recording the same
``(message_id, handler)`` waits for the first and then finds it, so two deliveries of one message never both run
the handler's transaction to its commit.
"""

from __future__ import annotations

from sqlalchemy import Connection, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite

__all__ = ["Inbox"]


class Inbox:
    """Reads and writes the inbox table on the connection (and transaction) it is given."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def record(self, connection: Connection, message_id: str, handler: str, now: float) -> bool:
        """Records that ``handler`` handles ``message_id``; False when it already had (nothing is written)."""
        values = {"message_id": message_id, "handler": handler, "handled_at": now}
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(self.table).values(values).on_conflict_do_nothing()
        return connection.execute(statement.returning(self.table.c.message_id)).first() is not None

    def handled(self, connection: Connection, message_id: str, handler: str) -> bool:
        c = self.table.c
        query = select(c.message_id).where(c.message_id == message_id, c.handler == handler)
        return connection.execute(query).first() is not None

    def delete_before(self, connection: Connection, cutoff: float) -> int:
        """Forgets the records older than ``cutoff``; returns how many."""
        return connection.execute(delete(self.table).where(self.table.c.handled_at < cutoff)).rowcount
