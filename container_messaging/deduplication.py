"""Deduplication: a consumer skips (and acknowledges) a message whose id it has already handled.

Brokers deliver at least once: a message is redelivered when its acknowledgement is lost (a dropped connection,
a consumer killed after handling but before acking, a visibility timeout that ran out), and a publisher that retries
after a lost confirm may send the same message twice.  The consumer therefore asks a :class:`DeduplicationStore`,
for each handler a message is due to run, whether the key ``f"{endpoint}:{message_id}:{handler}"`` was already
handled (the handler's qualified name: an event's handlers are remembered one by one, so a redelivered event, or the
retry copy of one failed handler, runs only the handlers that have not succeeded yet).  A handler whose key was seen
is skipped; when every handler was, the message is acknowledged without calling any.  After a handler succeeded,
the consumer calls :meth:`DeduplicationStore.remember` with its key.

Window semantics
    A key is remembered for ``window`` seconds from the moment :meth:`~DeduplicationStore.remember` was called (a
    second ``remember`` of the same key restarts its window).  :meth:`~DeduplicationStore.seen` is true while that
    window is open and false from ``remembered_at + window`` on.  At-least-once delivery plus this check gives
    *effectively-once handling within the window*: a redelivery that arrives inside the window is skipped, one that
    arrives later is handled again.

What it cannot guarantee
    * A crash (or a failed ``remember``) between the handler's side effects and ``remember()`` leaves no trace, so
      the redelivered message is handled a second time.  Only a handler that records its side effects and the
      message id in one transaction (or that is idempotent) closes that gap.
    * Two consumers that receive the same message at the same time both see ``seen() == False`` and both handle it:
      the check is not a lock.
    * The memory store is per process and bounded: a duplicate that reaches another process, arrives after a
      restart, or after its key was evicted by ``max_entries`` newer keys, is handled again.  The Redis store is
      shared by every consumer that uses the same server and prefix; the SQLite store by the processes of one host.
    * The window is measured by the store's clock (monotonic for memory, Redis's for Redis, the wall clock for
      SQLite), not by the message's timestamp.

Stores (chosen by :func:`create_deduplication_store` from the ``deduplication.store`` setting):

``none``
    :class:`NoDeduplication`, nothing is remembered.
``memory``
    :class:`MemoryDeduplication`, bounded, per process.
``redis://...`` / ``rediss://...``
    :class:`RedisDeduplication`, one key per handled message with a TTL of the window (needs ``redis``).
``sqlite:///path``
    :class:`SqliteDeduplication`, a WAL-mode SQLite file.  Three slashes then the path, as in SQLAlchemy:
    ``sqlite:///data/dedup.sqlite3`` is relative to the working directory, ``sqlite:////var/lib/x.sqlite3`` is
    absolute.  The file (and its WAL and shared-memory files) is created readable by its owner only (0600), and a
    folder it creates too (0700): the keys name the messages handled.

Building a store never connects or touches the disk: the connection (and the SQLite file and its folders) are made on
first use.  Failures of the Redis and SQLite stores raise :class:`~container_messaging.errors.TransportError` naming
the store (the URL with its password masked) and chaining the original exception.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, Protocol, runtime_checkable

from container_messaging.errors import ConfigurationError, TransportError
from container_messaging.redaction import mask_url

__all__ = [
    "DEFAULT_REDIS_PREFIX",
    "DeduplicationStore",
    "MemoryDeduplication",
    "NoDeduplication",
    "RedisDeduplication",
    "SqliteDeduplication",
    "create_deduplication_store",
    "sqlite_path_from_url",
]

DEFAULT_REDIS_PREFIX: Final = "container_messaging:dedup:"
"""The prefix of every key :class:`RedisDeduplication` writes (unless told otherwise)."""

_SQLITE_SCHEME: Final = "sqlite:///"
_SQLITE_BUSY_TIMEOUT_MS: Final = 5000
_SQLITE_PURGE_INTERVAL: Final = 60.0


@runtime_checkable
class DeduplicationStore(Protocol):
    """What the consumer asks, per handler of a message, with the key ``f"{endpoint}:{message_id}:{handler}"``."""

    def seen(self, key: str) -> bool:
        """Whether ``key`` was remembered within the window."""
        ...

    def remember(self, key: str) -> None:
        """Remember ``key`` for the window; called after the handler succeeded."""
        ...

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


def _check_window(owner: str, window: float) -> float:
    if isinstance(window, bool) or not isinstance(window, int | float) or not math.isfinite(window) or window <= 0:
        raise ConfigurationError(f"{owner}: window must be a number of seconds greater than 0, got {window!r}")
    return float(window)


class NoDeduplication:
    """The ``none`` store: nothing is remembered, every message is handled."""

    def seen(self, key: str) -> bool:
        """Always false."""
        return False

    def remember(self, key: str) -> None:
        """Does nothing."""

    def close(self) -> None:
        """Does nothing."""

    def __repr__(self) -> str:
        return "NoDeduplication()"


class MemoryDeduplication:
    """The ``memory`` store: per process, at most ``max_entries`` keys, O(1) per call, no background thread.

    Keys are kept in the order of their last ``remember``; since the window is the same for all, that is also the
    order in which they expire.  Expired keys are dropped lazily (a ``seen`` of an expired key drops it, each
    ``remember`` drops the expired keys at the front); when the store is full the oldest key is evicted.  ``clock``
    (seconds, monotonic by default) is injectable so tests control time.  Safe to share between threads.
    """

    def __init__(self, window: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = _check_window("MemoryDeduplication", window)
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(f"MemoryDeduplication: max_entries must be an integer >= 1, got {max_entries!r}")
        self._max_entries = max_entries
        self._clock = clock
        self._expires_at: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._sweep_every = min(1.0, window / 10)  # expired keys are dropped at most this often (seen() checks)
        self._next_sweep = 0.0

    @property
    def window(self) -> float:
        """Seconds a key is remembered."""
        return self._window

    @property
    def max_entries(self) -> int:
        """The most keys kept at once."""
        return self._max_entries

    def __len__(self) -> int:
        """The number of keys held, including expired ones not yet dropped."""
        return len(self._expires_at)

    def seen(self, key: str) -> bool:
        """Whether ``key`` was remembered less than ``window`` seconds ago (an expired key is dropped)."""
        now = self._clock()
        with self._lock:
            expires_at = self._expires_at.get(key)
            if expires_at is None:
                return False
            if expires_at > now:
                return True
            del self._expires_at[key]
            return False

    def remember(self, key: str) -> None:
        """Remember ``key`` for ``window`` seconds from now, dropping expired keys and evicting the oldest if full."""
        now = self._clock()
        with self._lock:
            entries = self._expires_at
            entries.pop(key, None)
            if now >= self._next_sweep:
                # Amortised O(1): every key is dropped at most once; the oldest keys expire first.
                self._next_sweep = now + self._sweep_every
                while entries:
                    oldest_key, oldest_expiry = next(iter(entries.items()))
                    if oldest_expiry > now:
                        break
                    del entries[oldest_key]
            while len(entries) >= self._max_entries:
                entries.popitem(last=False)
            entries[key] = now + self._window

    def close(self) -> None:
        """Forget every key."""
        with self._lock:
            self._expires_at.clear()

    def __repr__(self) -> str:
        return (
            f"MemoryDeduplication(window={self._window!r}, max_entries={self._max_entries!r}, "
            f"entries={len(self._expires_at)})"
        )


class RedisDeduplication:
    """A ``redis://`` / ``rediss://`` store shared by every consumer process using the same server and ``prefix``.

    ``remember`` is ``SET prefix+key 1 PX <window in ms, rounded up>`` (Redis expires the key), ``seen`` is
    ``EXISTS prefix+key``.  The client is created on first use (``redis`` is imported then, so this module imports
    without it).  Any Redis failure raises :class:`~container_messaging.errors.TransportError` naming the masked URL,
    with the original exception chained.
    """

    def __init__(
        self, url: str, window: float, prefix: str = DEFAULT_REDIS_PREFIX, *, socket_timeout: float = 5.0
    ) -> None:
        scheme = url.partition("://")[0]
        if scheme not in ("redis", "rediss"):
            raise ConfigurationError(f"RedisDeduplication: expected a redis:// or rediss:// URL, got {mask_url(url)!r}")
        self._url = url
        self._window = _check_window("RedisDeduplication", window)
        self._ttl_ms = max(1, math.ceil(self._window * 1000))
        self._prefix = prefix
        self._socket_timeout = socket_timeout
        self._client: Any = None
        self._errors: tuple[type[Exception], ...] = (OSError,)
        self._lock = threading.Lock()

    @property
    def window(self) -> float:
        """Seconds a key is remembered."""
        return self._window

    @property
    def prefix(self) -> str:
        """The prefix of every Redis key this store writes."""
        return self._prefix

    def _redis(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    import redis  # noqa: PLC0415 - optional dependency, loaded on first use
                except ImportError as exc:
                    raise TransportError(
                        f"the Redis deduplication store {mask_url(self._url)!r} needs the 'redis' package "
                        "(pip install 'container-messaging[redis]')"
                    ) from exc
                self._errors = (redis.RedisError, OSError)
                try:
                    self._client = redis.Redis.from_url(
                        self._url,
                        socket_connect_timeout=self._socket_timeout,
                        socket_timeout=self._socket_timeout,
                    )
                except ValueError as exc:  # the message may quote the URL: it is only chained, never shown
                    raise TransportError(
                        f"the Redis deduplication store URL {mask_url(self._url)!r} is invalid (see the chained error)"
                    ) from exc
            return self._client

    def _failure(self, operation: str, exc: Exception) -> TransportError:
        return TransportError(
            f"the Redis deduplication store {mask_url(self._url)!r} failed during {operation}: "
            f"{type(exc).__name__}: {exc}"
        )

    def seen(self, key: str) -> bool:
        """Whether the key ``prefix + key`` exists (Redis drops it when the window is over)."""
        client = self._redis()
        try:
            return bool(client.exists(self._prefix + key))
        except self._errors as exc:
            raise self._failure("EXISTS", exc) from exc

    def remember(self, key: str) -> None:
        """Set ``prefix + key`` with a time to live of the window."""
        client = self._redis()
        try:
            client.set(self._prefix + key, b"1", px=self._ttl_ms)
        except self._errors as exc:
            raise self._failure("SET", exc) from exc

    def close(self) -> None:
        """Disconnect; a later call connects again."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except self._errors as exc:
                raise self._failure("close", exc) from exc

    def __repr__(self) -> str:
        return f"RedisDeduplication(url={mask_url(self._url)!r}, window={self._window!r}, prefix={self._prefix!r})"


class SqliteDeduplication:
    """A SQLite file shared by the consumer processes of one host.

    The table is ``handled(key TEXT PRIMARY KEY, expires_at REAL)``; ``remember`` upserts ``expires_at = now +
    window`` and ``seen`` checks ``expires_at > now``, with ``now`` from ``clock`` (the wall clock, ``time.time``, by
    default: the processes sharing the file must agree on it).  Expired rows are deleted during ``remember``, at most
    every ``purge_interval`` seconds.  The file (WAL journal, busy timeout 5000 ms) and its missing parent folders are
    created on first use, owner-only (0600 and 0700).  Failures raise
    :class:`~container_messaging.errors.TransportError` naming the path, with the ``sqlite3`` error chained.  Safe to
    share between threads.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        window: float,
        *,
        clock: Callable[[], float] = time.time,
        purge_interval: float = _SQLITE_PURGE_INTERVAL,
    ) -> None:
        self._path = os.fspath(path)
        if not self._path:
            raise ConfigurationError("SqliteDeduplication: the path must not be empty")
        self._window = _check_window("SqliteDeduplication", window)
        self._clock = clock
        self._purge_interval = purge_interval
        self._next_purge = -math.inf  # the first remember() purges what earlier runs left behind
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        """The SQLite file."""
        return self._path

    @property
    def window(self) -> float:
        """Seconds a key is remembered."""
        return self._window

    def _connect(self) -> sqlite3.Connection:
        # Called with the lock held.
        if self._connection is None:
            if self._path != ":memory:":
                _create_owner_only(self._path)
            connection = sqlite3.connect(
                self._path,
                timeout=_SQLITE_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # autocommit: every statement is its own transaction
                check_same_thread=False,  # guarded by self._lock
            )
            try:
                connection.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = NORMAL")
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS handled (key TEXT PRIMARY KEY, expires_at REAL NOT NULL)"
                )
                connection.execute("CREATE INDEX IF NOT EXISTS handled_expires_at ON handled (expires_at)")
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _failure(self, operation: str, exc: Exception) -> TransportError:
        return TransportError(
            f"the SQLite deduplication store {self._path!r} failed during {operation}: {type(exc).__name__}: {exc}"
        )

    def seen(self, key: str) -> bool:
        """Whether ``key`` has a row whose ``expires_at`` is after now."""
        now = self._clock()
        with self._lock:
            try:
                row = (
                    self._connect()
                    .execute("SELECT 1 FROM handled WHERE key = ? AND expires_at > ?", (key, now))
                    .fetchone()
                )
            except (sqlite3.Error, OSError) as exc:
                raise self._failure("seen", exc) from exc
        return row is not None

    def remember(self, key: str) -> None:
        """Upsert ``key`` to expire ``window`` seconds from now; delete expired rows if the last purge is old."""
        now = self._clock()
        with self._lock:
            try:
                connection = self._connect()
                connection.execute(
                    "INSERT INTO handled (key, expires_at) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at",
                    (key, now + self._window),
                )
                if now >= self._next_purge:
                    connection.execute("DELETE FROM handled WHERE expires_at <= ?", (now,))
                    self._next_purge = now + self._purge_interval
            except (sqlite3.Error, OSError) as exc:
                raise self._failure("remember", exc) from exc

    def close(self) -> None:
        """Close the connection; a later call opens it again."""
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None:
                connection.close()

    def __repr__(self) -> str:
        return f"SqliteDeduplication(path={self._path!r}, window={self._window!r})"


def _create_owner_only(path: str) -> None:
    """Creates the SQLite file readable and writable by its owner only (0600), and its missing folders (0700), before
    SQLite opens it; SQLite gives its ``-wal`` and ``-shm`` files the database file's permissions.  What exists
    already is left as it is."""
    _create_folders(os.path.dirname(os.path.abspath(path)))
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _create_folders(folder: str) -> None:
    # Not os.makedirs(mode=...): that mode applies to the last folder only, the ones above it get the default.
    if os.path.isdir(folder):
        return
    parent = os.path.dirname(folder)
    if parent != folder:
        _create_folders(parent)
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)


def sqlite_path_from_url(url: str) -> str:
    """The file path of a ``sqlite:///path`` URL.

    As in SQLAlchemy: ``sqlite:///a/b.db`` is the relative ``a/b.db``, ``sqlite:////a/b.db`` the absolute ``/a/b.db``.
    """
    if not url.startswith(_SQLITE_SCHEME) or len(url) == len(_SQLITE_SCHEME):
        raise ConfigurationError(
            f"deduplication.store: expected 'sqlite:///relative/path' or 'sqlite:////absolute/path', got {url!r}"
        )
    return url[len(_SQLITE_SCHEME) :]


def create_deduplication_store(store: str, *, window: float, max_entries: int) -> DeduplicationStore:
    """The store ``store`` names (``none``, ``memory``, ``redis://...``, ``sqlite:///path``), remembering keys for
    ``window`` seconds (the memory store at most ``max_entries``); nothing is connected or opened yet."""
    if store == "none":
        return NoDeduplication()
    if store == "memory":
        return MemoryDeduplication(window, max_entries)
    scheme = store.partition("://")[0]
    if scheme in ("redis", "rediss"):
        return RedisDeduplication(store, window)
    if scheme == "sqlite":
        return SqliteDeduplication(sqlite_path_from_url(store), window)
    raise ConfigurationError(
        "deduplication.store: must be 'memory', 'none', a redis:// URL or a sqlite:///path URL, "
        f"got {mask_url(store)!r}"
    )
