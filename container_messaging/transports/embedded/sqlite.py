"""The embedded transport's broker: a kombu *virtual* transport kept in one SQLite database file.

Several OS processes on one machine exchange messages through ``<data_folder>/embedded.sqlite3`` with no server
installed::

    Connection(transport=SqliteTransport, transport_options={"data_folder": "/var/lib/app/broker"})

The folder (when this creates it) is owner-only (0700) and so is the database file (0600; SQLite gives its ``-wal``
and ``-shm`` files the database's permissions).

What is stored, and so shared by every process that opens the same folder:

* ``exchanges(name, type)`` and ``bindings(exchange, routing_key, pattern, queue)``: routing works for a publisher
  whose process never declared the exchange or the bindings;
* ``queues(name)``: what ``queue_declare(passive=True)`` checks;
* ``messages``: one row per message *per queue* (a topic or fanout publish inserts one row into each matching
  queue, in one transaction, so either every queue gets its copy or none does).

Delivery is at least once. Taking a message does not delete its row: the row is *leased* to the channel
(``lease_owner`` = ``host:boot:pid-namespace:pid:token``, ``lease_until`` = now + ``visibility_timeout``). Ack and
reject without requeue delete the row; reject with requeue, ``recover`` and the channel's close (unacked messages)
release the lease, which puts the message back at its original place in the same queue only (kombu's default
restore would re-run the exchange routing and copy an event again to every other bound queue). A lease is taken
back from a process that died (SIGKILL, power cut of the process...) as soon as a consumer of that queue sees the
process is gone (same host, pid no longer alive, or the machine rebooted since), and from anyone once
``lease_until`` has passed. A message delivered again has ``delivery_info["redelivered"] = True``.

Transport options (all optional except ``data_folder``):

``data_folder``          folder of the database file (created if missing, owner-only); must be on a local file
                         system.
``polling_interval``     seconds between two polls of an empty queue (default 0.05).
``visibility_timeout``   seconds a taken, unacknowledged message stays invisible to other consumers (default 300);
                         keep it above the longest handler time.
``busy_timeout``         seconds to wait for the database write lock before failing (default 5.0).
``synchronous``          SQLite ``PRAGMA synchronous`` (default ``NORMAL``: committed messages survive the crash of
                         any process; ``FULL`` also survives an OS crash or power loss, at one fsync per commit).
``reclaim_interval``     seconds between two checks, per queue and channel, for leases of dead or expired owners
                         (default 1.0).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from queue import Empty
from typing import Any, Final, NamedTuple

from kombu import exceptions as _kombu_exceptions
from kombu.transport import virtual as _kombu_virtual
from kombu.utils import json as _kombu_json

__all__ = ["DATABASE_FILE_NAME", "SqliteChannel", "SqliteTransport"]

logger = logging.getLogger(__name__)

# kombu ships py.typed but most of it is unannotated: use it as Any here, on purpose.
virtual: Any = _kombu_virtual
ChannelError: Any = _kombu_exceptions.ChannelError
dumps: Any = _kombu_json.dumps
loads: Any = _kombu_json.loads

#: name of the database file inside ``data_folder``
DATABASE_FILE_NAME: Final = "embedded.sqlite3"

_SCHEMA_VERSION: Final = 2

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS exchanges (name TEXT PRIMARY KEY, type TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS bindings ("
    " exchange TEXT NOT NULL, routing_key TEXT NOT NULL, pattern TEXT, queue TEXT NOT NULL,"
    " PRIMARY KEY (exchange, routing_key, queue))",
    "CREATE INDEX IF NOT EXISTS bindings_by_queue ON bindings (queue)",
    "CREATE TABLE IF NOT EXISTS messages ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, payload TEXT NOT NULL,"
    " priority INTEGER NOT NULL DEFAULT 0, lease_owner TEXT NULL, lease_until REAL NULL,"
    " deliveries INTEGER NOT NULL DEFAULT 0, available_at REAL NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, lease_owner, id)",
    f"PRAGMA user_version = {_SCHEMA_VERSION}",
)
#: version 1 databases lack the delayed-delivery column
_MIGRATIONS: Final = {1: ("ALTER TABLE messages ADD COLUMN available_at REAL NOT NULL DEFAULT 0",)}

_SYNCHRONOUS_MODES: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})

_NEXT_READY = (
    "SELECT id, payload, deliveries FROM messages WHERE queue = ? AND lease_owner IS NULL AND available_at <= ?"
    " ORDER BY id LIMIT 1"
)
_READY_CONDITION = "queue = ? AND (lease_owner IS NULL OR lease_until <= ?) AND available_at <= ?"
_RELEASE = "UPDATE messages SET lease_owner = NULL, lease_until = NULL"

# sqlite connections of a parent process, seen in a forked child: never used nor closed there (closing could
# checkpoint or remove the parent's WAL), only kept from the garbage collector.
_INHERITED_CONNECTIONS: list[sqlite3.Connection] = []


class _Lease(NamedTuple):
    """Which row a delivery tag stands for, and the lease that delivery holds on it."""

    row_id: int
    owner: str
    deliveries: int


def _read_first_line(path: str) -> str:
    try:
        with open(path, encoding="ascii") as file:
            return file.readline().strip()
    except (OSError, ValueError):
        return ""


def _pid_namespace() -> str:
    try:
        link = os.readlink("/proc/self/ns/pid")  # e.g. "pid:[4026531836]"
    except OSError:
        return ""
    return "".join(ch for ch in link if ch.isdigit())


def _host_identity() -> tuple[str, str, str]:
    """This machine's name, boot id (empty when unknown) and pid namespace (empty when unknown)."""
    hostname = socket.gethostname().replace(":", "_")
    return hostname, _read_first_line("/proc/sys/kernel/random/boot_id"), _pid_namespace()


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` (of this machine and pid namespace) is running; a zombie counts as dead."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return True  # cannot tell: assume alive, the lease then expires normally
    stat = _read_first_line(f"/proc/{pid}/stat")
    # "<pid> (<comm>) <state> ..."; comm may contain spaces and parentheses, so look after the last ")"
    state = stat.rpartition(")")[2].split()[:1]
    return state not in (["Z"], ["X"])


def _owner_dead(owner: str, identity: tuple[str, str, str]) -> bool:
    """Whether the lease owner ``owner`` is certainly gone (False when this process cannot tell)."""
    parts = owner.rsplit(":", 4)
    if len(parts) != 5:
        return False
    hostname, boot_id, pid_ns, pid_text, _token = parts
    my_hostname, my_boot_id, my_pid_ns = identity
    if hostname != my_hostname:
        return False
    if boot_id and my_boot_id and boot_id != my_boot_id:
        return True  # the machine rebooted since the lease was taken
    if pid_ns != my_pid_ns or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    return not _pid_alive(pid)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _not_found(kind: str, name: str, method: str) -> Exception:
    error: Exception = ChannelError(f"NOT_FOUND - no {kind} {name!r} in the embedded broker", (50, 10), method, "404")
    return error


class SqliteChannel(virtual.Channel):  # type: ignore[misc]
    """A virtual channel whose exchanges, bindings, queues and messages live in the SQLite database."""

    supports_fanout = True
    do_restore = True

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        transport: SqliteTransport = connection
        self._transport = transport
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._conn_pid = 0
        self._owner = ""
        self._identity = ("", "", "")
        self._last_reclaim: dict[str, float] = {}
        self._no_ack_queues: set[str] = set()
        super().__init__(connection, **kwargs)

    # -- the database ---------------------------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        """This channel's sqlite connection, opened on first use (and again in a forked child)."""
        pid = os.getpid()
        if self._conn is not None and self._conn_pid == pid:
            return self._conn
        if self._conn is not None:
            _INHERITED_CONNECTIONS.append(self._conn)
            self._conn = None
        transport = self._transport
        conn = sqlite3.connect(
            transport.database_path,
            timeout=transport.busy_timeout,
            isolation_level=None,
            check_same_thread=False,  # acks may come from another thread; self._lock serialises every use
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(transport.busy_timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch {transport.database_path} to WAL (got {mode!r})")
            conn.execute(f"PRAGMA synchronous = {transport.synchronous}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < _SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _MIGRATIONS.get(version, ()):
                        conn.execute(statement)
                    for statement in _SCHEMA:
                        conn.execute(statement)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self._identity = _host_identity()
        self._owner = ":".join((*self._identity, str(pid), uuid.uuid4().hex))
        self._conn, self._conn_pid = conn, pid
        self._last_reclaim.clear()
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction (joined when one is already open), committed on success."""
        with self._lock:
            db = self._db()
            if db.in_transaction:
                yield db
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            try:
                db.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            return self._db().execute(sql, params).fetchall()

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with self._lock:
            return self._db().execute(sql, params).rowcount

    @property
    def _leases(self) -> dict[str, _Lease]:
        # kept on the transport: kombu hands a message to the callback registered for its queue on the connection,
        # which may belong to another channel of the same connection than the one that took it.
        return self._transport.leases

    # -- exchanges and bindings -----------------------------------------------------------------------------------

    def _exchange_type(self, exchange: str) -> str | None:
        rows = self._read("SELECT type FROM exchanges WHERE name = ?", (exchange,))
        return str(rows[0][0]) if rows else None

    def exchange_declare(
        self,
        exchange: str | None = None,
        type: str = "direct",
        durable: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        nowait: bool = False,
        passive: bool = False,
    ) -> None:
        """Declares ``exchange`` in the database (idempotent; another type for the same name is refused)."""
        type = type or "direct"
        exchange = exchange or f"amq.{type}"
        if passive:
            if self._exchange_type(exchange) is None:
                raise _not_found("exchange", exchange, "Channel.exchange_declare")
            return
        if type not in self.exchange_types:
            raise ChannelError(f"exchange type {type!r} is not supported by the embedded transport")
        with self._write() as db:
            row = db.execute("SELECT type FROM exchanges WHERE name = ?", (exchange,)).fetchone()
            if row is None:
                db.execute("INSERT INTO exchanges (name, type) VALUES (?, ?)", (exchange, type))
            elif row[0] != type:
                raise virtual.NotEquivalentError(
                    f"Cannot redeclare exchange {exchange!r} of type {row[0]!r} with type {type!r}"
                )

    def exchange_delete(self, exchange: str, if_unused: bool = False, nowait: bool = False) -> None:
        """Deletes ``exchange`` and its bindings (the bound queues and their messages stay)."""
        with self._write() as db:
            if if_unused and db.execute("SELECT 1 FROM bindings WHERE exchange = ? LIMIT 1", (exchange,)).fetchone():
                return
            db.execute("DELETE FROM bindings WHERE exchange = ?", (exchange,))
            db.execute("DELETE FROM exchanges WHERE name = ?", (exchange,))

    def get_exchanges(self) -> list[str]:
        return [str(row[0]) for row in self._read("SELECT name FROM exchanges ORDER BY name")]

    def typeof(self, exchange: str, default: str = "direct") -> Any:
        """The exchange type instance of ``exchange``, as declared by any process."""
        return self.exchange_types[self._exchange_type(exchange) or default]

    def get_table(self, exchange: str) -> list[tuple[str, str | None, str]]:
        """The bindings of ``exchange`` as kombu's ``(routing_key, pattern, queue)`` tuples."""
        rows = self._read(
            "SELECT routing_key, pattern, queue FROM bindings WHERE exchange = ? ORDER BY rowid", (exchange,)
        )
        return [(str(key), pattern, str(queue)) for key, pattern, queue in rows]

    def list_bindings(self) -> Iterator[tuple[str, str, str]]:
        rows = self._read("SELECT queue, exchange, routing_key FROM bindings ORDER BY rowid")
        return iter([(str(q), str(e), str(k)) for q, e, k in rows])

    def queue_bind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Binds ``queue`` to the declared ``exchange`` with ``routing_key`` (idempotent)."""
        exchange = exchange or "amq.direct"
        exchange_type = self._exchange_type(exchange)
        if exchange_type is None:
            raise _not_found("exchange", exchange, "Channel.queue_bind")
        meta = self.exchange_types[exchange_type].prepare_bind(queue, exchange, routing_key, arguments)
        self._queue_bind(exchange, *meta)

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str | None, queue: str) -> None:
        self._execute(
            "INSERT INTO bindings (exchange, routing_key, pattern, queue) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (exchange, routing_key, queue) DO UPDATE SET pattern = excluded.pattern",
            (exchange, routing_key or "", pattern, queue),
        )

    def queue_unbind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._execute(
            "DELETE FROM bindings WHERE exchange = ? AND routing_key = ? AND queue = ?",
            (exchange or "amq.direct", routing_key or "", queue),
        )

    # -- queues ---------------------------------------------------------------------------------------------------

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        self._execute("INSERT OR IGNORE INTO queues (name) VALUES (?)", (queue,))

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return bool(self._read("SELECT 1 FROM queues WHERE name = ?", (queue,)))

    def _size(self, queue: str) -> int:
        """Ready messages of ``queue`` (taken, unacknowledged ones are not counted, as in AMQP)."""
        now = time.time()
        rows = self._read(f"SELECT count(*) FROM messages WHERE {_READY_CONDITION}", (queue, now, now))
        return int(rows[0][0])

    def _purge(self, queue: str) -> int:
        """Deletes the ready messages of ``queue`` (taken, unacknowledged ones stay) and returns their number."""
        now = time.time()
        return self._execute(f"DELETE FROM messages WHERE {_READY_CONDITION}", (queue, now, now))

    def queue_delete(self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any) -> None:
        """Deletes ``queue``, its bindings and all its messages (``if_empty``: only when no message is ready)."""
        with self._write():
            if if_empty and self._size(queue):
                return
            self._delete(queue)

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        with self._write() as db:
            db.execute("DELETE FROM bindings WHERE queue = ?", (queue,))
            db.execute("DELETE FROM messages WHERE queue = ?", (queue,))
            db.execute("DELETE FROM queues WHERE name = ?", (queue,))

    # -- publishing -----------------------------------------------------------------------------------------------

    def basic_publish(self, message: dict[str, Any], exchange: str, routing_key: str, **kwargs: Any) -> Any:
        """Routes and stores ``message`` in one transaction: every matching queue gets its copy, or none does."""
        with self._write():
            return super().basic_publish(message, exchange, routing_key, **kwargs)

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        """Stores one copy, visible at once."""
        self._insert(queue, message, available_at=0.0)

    def put_later(
        self, queue: str, body: bytes, content_type: str, headers: dict[str, Any], available_at: float
    ) -> None:
        """Stores a persistent message on ``queue`` (through the default exchange), invisible until ``available_at``
        (unix seconds): a delayed retry, held without anything unacknowledged."""
        message = self.prepare_message(body, 0, content_type, "binary", headers, {"delivery_mode": 2})
        self._inplace_augment_message(message, "", queue)  # the delivery tag and info kombu's publish adds
        self._insert(queue, message, available_at)

    def _insert(self, queue: str, message: dict[str, Any], available_at: float) -> None:
        self._execute(
            "INSERT INTO messages (queue, payload, priority, available_at) VALUES (?, ?, ?, ?)",
            (queue, dumps(message), self._get_message_priority(message), available_at),
        )

    def waiting_for_delay(self, queue: str) -> int:
        """Messages of ``queue`` that are not visible yet (delayed)."""
        rows = self._read("SELECT count(*) FROM messages WHERE queue = ? AND available_at > ?", (queue, time.time()))
        return int(rows[0][0])

    def _put_fanout(self, exchange: str, message: dict[str, Any], routing_key: str, **kwargs: Any) -> None:
        with self._write():
            for queue in dict.fromkeys(queue for _, _, queue in self.get_table(exchange)):
                self._put(queue, message, **kwargs)

    # -- consuming ------------------------------------------------------------------------------------------------

    def basic_consume(self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        result = super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self._active_queues:
            self._no_ack_queues.discard(queue)
        return result

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """Takes the next message of ``queue`` (deleted at once with ``no_ack``), or returns None."""
        try:
            payload = self._take(queue, auto_ack=no_ack)
        except Empty:
            return None
        message = self.Message(payload, channel=self)
        if not no_ack:
            self.qos.append(message, message.delivery_tag)
        return message

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        return self._take(queue, auto_ack=queue in self._no_ack_queues)

    def _take(self, queue: str, *, auto_ack: bool) -> dict[str, Any]:
        """Leases (or, with ``auto_ack``, deletes) the oldest ready row of ``queue`` and returns its payload."""
        with self._lock:
            try:
                self._maybe_reclaim(queue)
                db = self._db()
                now = time.time()
                if db.execute(_NEXT_READY, (queue, now)).fetchone() is None:  # no write lock for an empty poll
                    raise Empty()
                with self._write() as db:
                    row = db.execute(_NEXT_READY, (queue, now)).fetchone()
                    if row is None:
                        raise Empty()  # taken by another consumer meanwhile
                    row_id, raw, deliveries = row
                    if auto_ack:
                        db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
                    else:
                        db.execute(
                            "UPDATE messages SET lease_owner = ?, lease_until = ?, deliveries = deliveries + 1"
                            " WHERE id = ?",
                            (self._owner, time.time() + self._transport.visibility_timeout, row_id),
                        )
                    owner = self._owner
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                logger.warning("embedded transport: database busy while polling %r; will poll again", queue)
                raise Empty() from exc
        payload: dict[str, Any] = loads(raw)
        properties = payload.setdefault("properties", {})
        tag = uuid.uuid4().hex  # the tag written at publish time is shared by every queue's copy
        properties["delivery_tag"] = tag
        delivery_info = properties.get("delivery_info") or {}
        properties["delivery_info"] = delivery_info
        delivery_info["redelivered"] = deliveries > 0
        if not auto_ack:
            self._leases[tag] = _Lease(row_id, owner, deliveries + 1)
        return payload

    def _maybe_reclaim(self, queue: str) -> None:
        """Releases leases of ``queue`` that expired or whose owner process died (at most every reclaim_interval)."""
        now = time.monotonic()
        if now - self._last_reclaim.get(queue, -math.inf) < self._transport.reclaim_interval:
            return
        db = self._db()
        self._last_reclaim[queue] = now
        wall = time.time()
        holders = db.execute(
            "SELECT lease_owner, min(lease_until) FROM messages WHERE queue = ? AND lease_owner IS NOT NULL"
            " GROUP BY lease_owner",
            (queue,),
        ).fetchall()
        if not holders:
            return
        expired = any(until is None or until <= wall for _, until in holders)
        dead = [owner for owner, _ in holders if _owner_dead(owner, self._identity)]
        if not expired and not dead:
            return
        with self._write() as db:
            if expired:
                db.execute(
                    f"{_RELEASE} WHERE queue = ? AND lease_owner IS NOT NULL"
                    " AND (lease_until IS NULL OR lease_until <= ?)",
                    (queue, wall),
                )
            for owner in dead:
                db.execute(f"{_RELEASE} WHERE queue = ? AND lease_owner = ?", (queue, owner))
        if dead:
            logger.info("embedded transport: took back the leases of dead consumers %s on %r", dead, queue)

    # -- settling -------------------------------------------------------------------------------------------------

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        """Deletes the message's row, then forgets the delivery."""
        lease = self._leases.get(delivery_tag)
        if lease is not None:
            self._execute("DELETE FROM messages WHERE id = ?", (lease.row_id,))
            self._leases.pop(delivery_tag, None)
        super().basic_ack(delivery_tag, multiple=multiple)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """With ``requeue``, puts the message back on its queue only; without, deletes it."""
        if not requeue:
            lease = self._leases.get(delivery_tag)
            if lease is not None:
                self._execute("DELETE FROM messages WHERE id = ?", (lease.row_id,))
                self._leases.pop(delivery_tag, None)
        super().basic_reject(delivery_tag, requeue=requeue)

    def _restore(self, message: Any) -> None:
        """Puts an unacknowledged message back on the queue it was taken from, at its place (lease released)."""
        tag = message.delivery_tag
        lease = self._leases.get(tag)
        if lease is None:
            logger.debug("embedded transport: no lease for delivery %r; nothing to restore", tag)
            return
        self._execute(
            f"{_RELEASE} WHERE id = ? AND lease_owner = ? AND deliveries = ?",
            (lease.row_id, lease.owner, lease.deliveries),
        )
        self._leases.pop(tag, None)

    def _restore_at_beginning(self, message: Any) -> None:
        self._restore(message)

    def close(self) -> None:
        """Closes the channel (unacknowledged messages go back to their queues), then its sqlite connection."""
        try:
            super().close()
        finally:
            with self._lock:
                conn, self._conn = self._conn, None
                if conn is not None and self._conn_pid == os.getpid():
                    conn.close()
                elif conn is not None:
                    _INHERITED_CONNECTIONS.append(conn)


class SqliteTransport(virtual.Transport):  # type: ignore[misc]
    """kombu transport over one SQLite file shared by the processes of one machine (see the module docstring)."""

    Channel = SqliteChannel

    polling_interval = 0.05
    default_port = 0
    driver_type = "embedded"
    driver_name = "embedded"

    implements = virtual.Transport.implements.extend(
        asynchronous=False,
        exchange_type=frozenset(["direct", "topic", "fanout"]),
    )
    #: "database is locked" after busy_timeout counts as a connection error: kombu's ensure()/retry can retry it
    connection_errors = (*virtual.Transport.connection_errors, sqlite3.OperationalError)

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        options = client.transport_options or {}
        data_folder = options.get("data_folder")
        if not data_folder:
            raise ValueError("the embedded transport needs transport_options['data_folder']")
        folder = Path(data_folder)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.database_path: Path = folder / DATABASE_FILE_NAME
        os.close(os.open(self.database_path, os.O_RDWR | os.O_CREAT, 0o600))  # owner-only when it is created here
        self.visibility_timeout: float = _positive(options, "visibility_timeout", 300.0)
        self.busy_timeout: float = _positive(options, "busy_timeout", 5.0)
        self.reclaim_interval: float = float(options.get("reclaim_interval", 1.0))
        synchronous = str(options.get("synchronous", "NORMAL")).upper()
        if synchronous not in _SYNCHRONOUS_MODES:
            raise ValueError(f"transport_options['synchronous'] must be one of {sorted(_SYNCHRONOUS_MODES)}")
        self.synchronous: str = synchronous
        #: delivery tag -> leased row, for every channel of this connection
        self.leases: dict[str, _Lease] = {}

    def driver_version(self) -> str:
        return sqlite3.sqlite_version


def _positive(options: dict[str, Any], name: str, default: float) -> float:
    value = float(options.get(name, default))
    if not value > 0:
        raise ValueError(f"transport_options[{name!r}] must be a positive number of seconds, got {value!r}")
    return value
