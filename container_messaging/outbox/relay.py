"""The relay: the ``outbox`` endpoint, which publishes whatever the outbox holds, oldest first.

Messages are normally published right after their commit, by the process that committed them; the relay publishes
what that did not (the process died, the broker was down) and what was written with ``publish_after_commit`` off.
Each message keeps its id. Rows are claimed with row locks (:mod:`.store`), so several relays (and the committing
processes) never publish one row at the same time. The relay also deletes sent messages and inbox records older than
the retention window.

``run(options)`` takes the same options as an endpoint consumer (``handled_message_limit`` counts published
messages); a broker or database that cannot be reached is waited for with back-off; SIGINT/SIGTERM stop it after
the batch in hand (a second signal stops at once; the batch is published again by the next run).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Final

import attrs
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from container_messaging.config import OUTBOX_ENDPOINT as RELAY_ENDPOINT
from container_messaging.config import OutboxSettings
from container_messaging.consumer import RunOptions, RunResult
from container_messaging.errors import BrokerRefusedError, TransportError
from container_messaging.outbox.errors import OutboxDatabaseError, database_error
from container_messaging.outbox.forwarding import Forwarder
from container_messaging.outbox.inbox import Inbox
from container_messaging.outbox.store import OutboxStore
from container_messaging.process import rss_megabytes, stopping_on_signals

__all__ = ["OutboxRelay", "RELAY_ENDPOINT", "Retention"]

log = logging.getLogger("container_messaging.outbox")

_BACK_OFF: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_CLEAN_EVERY: Final = 60.0
_CLEAN_BATCH: Final = 10_000


@attrs.frozen
class Retention:
    """What one cleaning deleted: sent outbox rows and inbox records older than the retention window."""

    sent_messages: int
    inbox_records: int


@attrs.define
class _Counts:
    published: int = 0
    failed: int = 0
    reconnects: int = 0


class OutboxRelay:
    """Publishes the outbox's pending messages until a limit, a signal or (optionally) a failure stops it."""

    def __init__(
        self,
        *,
        name: str,
        engine: Engine,
        store: OutboxStore,
        inbox: Inbox,
        forwarder: Forwarder,
        settings: OutboxSettings,
        check_schema: Callable[[Connection], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._engine = engine
        self._store = store
        self._inbox = inbox
        self._forwarder = forwarder
        self._settings = settings
        self._check_schema = check_schema
        self._clock = clock
        self._stop_reason: str | None = None
        self._wake = threading.Event()

    def __repr__(self) -> str:
        return f"<OutboxRelay {self.name!r} table={self._store.table.name!r}>"

    def stop(self, reason: str = "stopped") -> None:
        """Asks the loop to stop after the batch in hand (safe from a signal handler or another thread)."""
        self._stop_reason = reason
        self._wake.set()

    def description(self, options: RunOptions | None = None) -> str:
        """The start banner of :meth:`run` with ``options``: what it relays, where to, and its limits."""
        limits = ", ".join((options or RunOptions()).limits()) or "none (until SIGINT or SIGTERM)"
        return (
            f"{self.name}: relaying the outbox table {self._store.table.name!r} "
            f"(batches of {self._settings.relay_batch_size})\n  {'limits':<12} {limits}"
        )

    def relay_once(self) -> int:
        """Publishes one batch of due messages; returns how many were published."""
        return self._forwarder.forward(limit=self._settings.relay_batch_size).published

    def clean(self) -> Retention:
        """Deletes sent messages and inbox records older than ``retention``."""
        cutoff = self._clock() - self._settings.retention
        try:
            with self._engine.connect() as connection:
                sent = 0
                while True:
                    with connection.begin():
                        deleted = self._store.delete_sent_before(connection, cutoff, _CLEAN_BATCH)
                    sent += deleted
                    if deleted < _CLEAN_BATCH:
                        break
                with connection.begin():
                    records = self._inbox.delete_before(connection, cutoff)
        except SQLAlchemyError as exc:
            raise database_error(f"deleting old rows of {self._store.table.name!r}", exc) from exc
        if sent or records:
            log.info("outbox: deleted %d sent message(s) and %d inbox record(s) past the retention", sent, records)
        return Retention(sent, records)

    def run(self, options: RunOptions | None = None) -> RunResult:
        options = options or RunOptions()
        self._stop_reason = None
        self._wake.clear()
        try:
            with self._engine.connect() as connection:
                self._check_schema(connection)
        except SQLAlchemyError as exc:
            raise database_error("checking the outbox tables", exc) from exc
        deadline = time.monotonic() + options.execution_time_limit / 1000 if options.execution_time_limit else None
        counts = _Counts()
        log.info("endpoint %r relaying the outbox table %r", self.name, self._store.table.name)
        with self._signals():
            self._loop(options, counts, deadline)
        result = RunResult(
            self.name, counts.published, counts.failed, self._stop_reason or "stopped", reconnects=counts.reconnects
        )
        log.info(
            "endpoint %r stopped: %s (published %d, failed %d, reconnects %d)",
            self.name,
            result.stop_reason,
            result.handled,
            result.failed,
            result.reconnects,
        )
        return result

    def _loop(self, options: RunOptions, counts: _Counts, deadline: float | None) -> None:
        failures_in_a_row = 0
        next_clean = 0.0
        while self._stop_reason is None:
            if deadline is not None and time.monotonic() >= deadline:
                self._stop_reason = "execution time limit reached"
                break
            limit = self._settings.relay_batch_size
            if options.handled_message_limit is not None:
                limit = min(limit, options.handled_message_limit - counts.published)
            try:
                if time.monotonic() >= next_clean:
                    self.clean()
                    next_clean = time.monotonic() + _CLEAN_EVERY
                forwarded = self._forwarder.forward(limit=limit)
            except BrokerRefusedError:
                raise  # the broker refused us for good (credentials, vhost): waiting cannot help
            except (TransportError, OutboxDatabaseError) as exc:
                failures_in_a_row += 1
                counts.failed += 1
                if options.stop_on_failure:
                    log.error("endpoint %r: publishing failed (%s); stop_on_failure", self.name, exc)
                    self._stop_reason = "a publish failed (stop_on_failure)"
                    break
                delay = _BACK_OFF[min(failures_in_a_row, len(_BACK_OFF)) - 1]
                log.warning("endpoint %r: publishing failed (%s); trying again in %.1f s", self.name, exc, delay)
                self._pause(delay, deadline)
                continue
            if failures_in_a_row:
                counts.reconnects += 1
                failures_in_a_row = 0
            counts.published += forwarded.published
            counts.failed += forwarded.failed
            self._check_limits(options, counts, forwarded.failed)
            if self._stop_reason is None and forwarded.claimed < limit:
                if options.finish_when_no_messages:
                    self._stop_reason = "no more messages"
                else:
                    self._pause(self._settings.relay_polling_interval, deadline)

    def _check_limits(self, options: RunOptions, counts: _Counts, failed: int) -> None:
        if failed and options.stop_on_failure:
            self._stop_reason = "a publish failed (stop_on_failure)"
        elif options.handled_message_limit is not None and counts.published >= options.handled_message_limit:
            self._stop_reason = "handled message limit reached"
        elif options.memory_limit is not None and rss_megabytes() >= options.memory_limit:
            self._stop_reason = "memory limit reached"

    def _pause(self, seconds: float, deadline: float | None) -> None:
        if deadline is not None:
            seconds = min(seconds, max(0.0, deadline - time.monotonic()))
        self._wake.wait(seconds)

    def _signals(self) -> AbstractContextManager[None]:
        return stopping_on_signals(
            self.stop,
            lambda: self._stop_reason is not None,
            "the current batch",
            "the batch in hand is published again later",
        )
