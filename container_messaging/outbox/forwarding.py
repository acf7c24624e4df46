"""Forwarding: claims outbox rows (marking them sent), publishes them through the real transport and commits the
mark, all in the transaction that locked them. Both the publish right after a commit and the relay use it.

A crash after the publish and before the commit leaves the rows pending: they are published again (at least once;
each keeps its message id, so consumers deduplicate). A message the broker will not route (a command to a service
without a queue) stays pending with its error and is tried again later, one by one, so it never holds up the
others; a broker that cannot be reached ends the forwarding with a :class:`TransportError` and nothing marked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Final

import attrs
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from container_messaging.errors import UnroutableMessageError
from container_messaging.outbox.errors import database_error
from container_messaging.outbox.store import OutboxEntry, OutboxStore
from container_messaging.transports.base import BaseTransport

__all__ = ["Forwarded", "Forwarder", "retry_delay"]

log = logging.getLogger("container_messaging.outbox")

_RETRY_DELAYS: Final = (1.0, 5.0, 30.0, 120.0, 300.0)


def retry_delay(attempts: int) -> float:
    """Seconds before a message whose publish failed ``attempts`` times is tried again."""
    return _RETRY_DELAYS[min(max(attempts, 1), len(_RETRY_DELAYS)) - 1]


@attrs.frozen
class Forwarded:
    """What one forwarding did: rows claimed, published (and marked sent), and kept back by a refused publish."""

    claimed: int
    published: int
    failed: int


class Forwarder:
    """Publishes pending outbox rows; with ``declare_exchanges``, declares each exchange once before using it."""

    def __init__(
        self,
        engine: Engine,
        store: OutboxStore,
        transport: BaseTransport,
        *,
        declare_exchanges: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._store = store
        self._transport = transport
        self._declare = declare_exchanges
        self._declared: set[str] = set()
        self._clock = clock

    def forward(self, *, limit: int, row_ids: Sequence[int] | None = None) -> Forwarded:
        """Publishes up to ``limit`` due rows, oldest first (only ``row_ids`` when given; locked ones are skipped).
        Raises :class:`TransportError` when the broker cannot be reached (nothing is marked sent then)."""
        table = self._store.table.name
        try:
            with self._engine.connect() as connection, connection.begin():
                if connection.dialect.name == "postgresql":
                    # Losing this commit in a database crash only publishes the rows again: no need to wait for it
                    # to reach the disk.
                    connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                now = self._clock()
                entries = self._store.claim(connection, now=now, limit=limit, row_ids=row_ids)
                if not entries:
                    return Forwarded(0, 0, 0)
                published, failures = self._publish(entries)
                for entry, error in failures:
                    delay = retry_delay(entry.attempts + 1)
                    log.error(
                        "outbox: message %r to %s was not published (attempt %d, next in %.0f s): %s",
                        entry.message.message_id,
                        entry.destination,
                        entry.attempts + 1,
                        delay,
                        error,
                    )
                    self._store.mark_failed(connection, entry, f"{type(error).__name__}: {error}", now + delay)
        except SQLAlchemyError as exc:
            raise database_error(f"publishing from the outbox table {table!r}", exc) from exc
        return Forwarded(len(entries), len(published), len(failures))

    def _publish(
        self, entries: list[OutboxEntry]
    ) -> tuple[list[OutboxEntry], list[tuple[OutboxEntry, UnroutableMessageError]]]:
        published: list[OutboxEntry] = []
        failures: list[tuple[OutboxEntry, UnroutableMessageError]] = []
        for group in _groups(entries):
            first = group[0]
            if first.queue is not None and first.exchange is None:
                for entry in group:
                    self._transport.send_to_queue(entry.queue or "", entry.message)
                    published.append(entry)
                continue
            exchange = first.exchange or ""
            self._ensure_exchange(exchange)
            if len(group) > 1:
                try:
                    self._transport.publish_many(exchange, [(entry.message, entry.mandatory) for entry in group])
                    published.extend(group)
                    continue
                except UnroutableMessageError as exc:
                    # Which ones were returned is not known: each is published again alone (the others arrive
                    # twice, with the same message id) to find the refused ones.
                    log.warning("outbox: a batch of %d had unroutable messages (%s); one by one", len(group), exc)
            for entry in group:
                try:
                    self._transport.publish(exchange, entry.message, mandatory=entry.mandatory)
                except UnroutableMessageError as exc:
                    failures.append((entry, exc))
                else:
                    published.append(entry)
        return published, failures

    def _ensure_exchange(self, exchange: str) -> None:
        if self._declare and exchange and exchange not in self._declared:
            self._transport.declare_exchange(exchange)
            self._declared.add(exchange)


def _groups(entries: list[OutboxEntry]) -> Iterator[list[OutboxEntry]]:
    """Consecutive rows with one destination, in order; a row that failed before goes alone (it may fail again)."""
    group: list[OutboxEntry] = []
    for entry in entries:
        if group and (
            entry.attempts
            or group[0].attempts
            or (entry.exchange, entry.queue) != (group[0].exchange, group[0].queue)
            or entry.exchange is None
        ):
            yield group
            group = []
        group.append(entry)
    if group:
        yield group
