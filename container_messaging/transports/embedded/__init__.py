"""The embedded transport: the adapter (:mod:`.adapter`) over a SQLite kombu virtual transport (:mod:`.sqlite`)."""

from __future__ import annotations

from container_messaging.transports.embedded.adapter import EmbeddedTransport
from container_messaging.transports.embedded.sqlite import DATABASE_FILE_NAME, SqliteChannel, SqliteTransport

__all__ = ["DATABASE_FILE_NAME", "EmbeddedTransport", "SqliteChannel", "SqliteTransport"]
