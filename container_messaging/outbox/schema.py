"""The outbox's tables and the database they live in: the ``setup`` step creates them, every use checks them.

The outbox table keeps one row per message sent inside a unit of work, ordered by ``id`` (the relay publishes
oldest first); a row is pending until ``sent_at`` is set. The inbox table keeps ``(message_id, handler)`` for every
message a ``@transactional`` handler handled. Timestamps are unix seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    inspect,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from container_messaging.errors import ConfigurationError
from container_messaging.outbox.errors import OutboxSchemaError, database_error
from container_messaging.redaction import mask_url

__all__ = ["EXTRA_HINT", "OutboxSchema", "open_engine"]

#: How to install what the outbox needs.
EXTRA_HINT: Final = "pip install 'container-messaging[outbox]' (SQLAlchemy 2 and psycopg 3)"

_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite numbers rows only in an INTEGER PRIMARY KEY


def open_engine(url: str) -> Engine:
    """An engine for ``url`` (nothing connects yet): ``postgresql://`` and ``postgres://`` use psycopg 3; a SQLite
    file's folder is created."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"outbox.database_url: not a database URL: {mask_url(url)!r}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        return create_engine(parsed)
    except (ImportError, NoSuchModuleError) as exc:
        raise ConfigurationError(
            f"outbox.database_url: the driver for {mask_url(url)!r} is not installed ({exc}): {EXTRA_HINT}"
        ) from exc


class OutboxSchema:
    """The outbox and inbox tables under their configured names."""

    def __init__(self, outbox_table: str, inbox_table: str) -> None:
        self.metadata = MetaData()
        self.outbox = Table(
            outbox_table,
            self.metadata,
            Column("id", _ID, primary_key=True, autoincrement=True),
            Column("message_id", String(255), nullable=False),
            Column("exchange", String(255), nullable=True),  # None: sent straight to ``queue``
            Column("queue", String(255), nullable=True),
            Column("routing_key", String(255), nullable=False),
            Column("mandatory", Boolean, nullable=False),
            Column("content_type", String(255), nullable=False),
            Column("headers", Text, nullable=False),  # JSON
            Column("body", LargeBinary, nullable=False),
            Column("created_at", Float, nullable=False),
            Column("available_at", Float, nullable=False),  # not tried again before (after a failed publish)
            Column("attempts", Integer, nullable=False, default=0),
            Column("last_error", Text, nullable=True),
            Column("sent_at", Float, nullable=True),
        )
        pending = self.outbox.c.sent_at.is_(None)
        Index(f"{outbox_table}_pending", self.outbox.c.id, postgresql_where=pending, sqlite_where=pending)
        Index(f"{outbox_table}_sent_at", self.outbox.c.sent_at)
        self.inbox = Table(
            inbox_table,
            self.metadata,
            Column("message_id", String(255), primary_key=True),
            Column("handler", String(512), primary_key=True),
            Column("handled_at", Float, nullable=False, index=True),
        )

    def create(self, engine: Engine) -> None:
        """Creates the tables and indexes that do not exist yet (idempotent)."""
        try:
            self.metadata.create_all(engine)
        except SQLAlchemyError as exc:
            raise database_error(f"creating the outbox tables in {_where(engine)}", exc) from exc

    def drop(self, engine: Engine) -> None:
        """Drops both tables (and their rows)."""
        try:
            self.metadata.drop_all(engine)
        except SQLAlchemyError as exc:
            raise database_error(f"dropping the outbox tables in {_where(engine)}", exc) from exc

    def check(self, connection: Connection) -> None:
        """Raises :class:`OutboxSchemaError` naming each table that is missing or lacks a column."""
        try:
            inspector = inspect(connection)
            problems = []
            for table in (self.outbox, self.inbox):
                if not inspector.has_table(table.name):
                    problems.append(f"table {table.name!r} does not exist")
                    continue
                present = {column["name"] for column in inspector.get_columns(table.name)}
                missing = [column.name for column in table.columns if column.name not in present]
                if missing:
                    problems.append(f"table {table.name!r} has no column {', '.join(map(repr, missing))}")
        except SQLAlchemyError as exc:
            raise database_error(f"checking the outbox tables in {_where(connection.engine)}", exc) from exc
        if problems:
            raise OutboxSchemaError(
                f"the outbox schema in {_where(connection.engine)} is not set up: {'; '.join(problems)}; "
                "run the setup step (container-messaging setup, or Outbox.setup())"
            )


def _where(engine: Engine) -> str:
    return repr(engine.url.render_as_string(hide_password=True))
