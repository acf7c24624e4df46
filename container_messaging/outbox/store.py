"""The outbox table's rows: written in the application's transaction, claimed (locked) for publishing, marked sent.

Claiming marks rows sent and locks them for the claiming transaction, which commits after they were published:
``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`` on PostgreSQL, so two relays never take one row at
once and neither waits for the other; SQLite has no row locks, so the UPDATE takes the database's write lock and
claimers take turns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from sqlalchemy import Connection, Table, delete, func, insert, select, update

from container_messaging.errors import InvalidMessageError
from container_messaging.transports.base import OutboundMessage

__all__ = ["OutboxEntry", "OutboxStore"]


@attrs.frozen
class OutboxEntry:
    """One message in the outbox: where it goes (an exchange, or a queue when ``exchange`` is None) and its state."""

    row_id: int
    exchange: str | None
    queue: str | None
    mandatory: bool
    message: OutboundMessage
    created_at: float
    attempts: int = 0
    last_error: str | None = None
    sent_at: float | None = None

    @property
    def destination(self) -> str:
        return f"exchange {self.exchange!r}" if self.exchange is not None else f"queue {self.queue!r}"


def _headers_json(message: OutboundMessage) -> str:
    try:
        return json.dumps(dict(message.headers), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        culprit = next((key for key, value in message.headers.items() if not _is_json(value)), None)
        raise InvalidMessageError(
            f"message {message.message_id!r}: header {culprit!r} cannot be kept in the outbox "
            f"(headers are stored as JSON: str, int, float, bool, None, lists and dicts of them): {exc}"
        ) from exc


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


class OutboxStore:
    """Reads and writes the outbox table; every method runs on the connection (and transaction) it is given."""

    def __init__(self, table: Table) -> None:
        self.table = table
        c = table.c
        self._columns = (
            c.id,
            c.exchange,
            c.queue,
            c.mandatory,
            c.routing_key,
            c.body,
            c.headers,
            c.content_type,
            c.message_id,
            c.created_at,
            c.attempts,
            c.last_error,
            c.sent_at,
        )

    def add(
        self,
        connection: Connection,
        exchange: str | None,
        queue: str | None,
        messages: Sequence[tuple[OutboundMessage, bool]],
        now: float,
    ) -> list[int]:
        """Writes ``(message, mandatory)`` rows bound for ``exchange`` (or ``queue``); returns their row ids."""
        rows = [
            {
                "message_id": message.message_id,
                "exchange": exchange,
                "queue": queue,
                "routing_key": message.routing_key,
                "mandatory": mandatory,
                "content_type": message.content_type,
                "headers": _headers_json(message),
                "body": message.body,
                "created_at": now,
                "available_at": now,
                "attempts": 0,
            }
            for message, mandatory in messages
        ]
        if len(rows) == 1:
            return [connection.execute(insert(self.table).returning(self.table.c.id), rows[0]).scalar_one()]
        result = connection.execute(insert(self.table).returning(self.table.c.id, sort_by_parameter_order=True), rows)
        return list(result.scalars())

    def claim(
        self, connection: Connection, *, now: float, limit: int, row_ids: Sequence[int] | None = None
    ) -> list[OutboxEntry]:
        """Takes up to ``limit`` pending rows due by ``now`` (only ``row_ids`` when given), oldest first: one
        statement marks them sent and returns them. The mark holds only if the connection's transaction commits, so
        commit after publishing them (a rollback, or a crash, gives them back); meanwhile the rows stay locked."""
        c = self.table.c
        due = c.id.in_(row_ids) if row_ids is not None else c.available_at <= now
        chosen = select(c.id).where(c.sent_at.is_(None), due).order_by(c.id).limit(limit)
        # On SQLite (no row locks) the UPDATE takes the database's write lock: claimers take turns.
        statement = update(self.table).where(c.id.in_(chosen.with_for_update(skip_locked=True)))
        rows = connection.execute(statement.values(sent_at=now).returning(*self._columns))
        return sorted((self._entry(row) for row in rows), key=lambda entry: entry.row_id)

    def mark_failed(self, connection: Connection, entry: OutboxEntry, error: str, retry_at: float) -> None:
        """Records a failed publish of a claimed row: it stays pending, not tried again before ``retry_at``."""
        connection.execute(
            update(self.table)
            .where(self.table.c.id == entry.row_id)
            .values(sent_at=None, attempts=entry.attempts + 1, last_error=error[:4000], available_at=retry_at)
        )

    def delete_sent_before(self, connection: Connection, cutoff: float, limit: int) -> int:
        """Deletes up to ``limit`` rows sent before ``cutoff``; returns how many."""
        c = self.table.c
        doomed = select(c.id).where(c.sent_at < cutoff).order_by(c.id).limit(limit).scalar_subquery()
        return connection.execute(delete(self.table).where(c.id.in_(doomed))).rowcount

    def pending(self, connection: Connection, limit: int) -> list[OutboxEntry]:
        """The oldest ``limit`` rows not sent yet (without locking them)."""
        c = self.table.c
        query = select(*self._columns).where(c.sent_at.is_(None)).order_by(c.id).limit(limit)
        return [self._entry(row) for row in connection.execute(query)]

    def count_pending(self, connection: Connection) -> int:
        c = self.table.c
        return connection.execute(select(func.count()).select_from(self.table).where(c.sent_at.is_(None))).scalar_one()

    @staticmethod
    def _entry(row: Any) -> OutboxEntry:
        headers: Mapping[str, Any] = json.loads(row.headers)
        message = OutboundMessage(row.routing_key, bytes(row.body), headers, row.content_type, row.message_id)
        return OutboxEntry(
            row_id=row.id,
            exchange=row.exchange,
            queue=row.queue,
            mandatory=row.mandatory,
            message=message,
            created_at=row.created_at,
            attempts=row.attempts,
            last_error=row.last_error,
            sent_at=row.sent_at,
        )
