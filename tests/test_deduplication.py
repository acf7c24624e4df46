"""Deduplication stores: memory, none, Redis and SQLite, and the factory that picks one by its store name or URL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from container_messaging.deduplication import (
    DeduplicationStore,
    MemoryDeduplication,
    NoDeduplication,
    RedisDeduplication,
    SqliteDeduplication,
    create_deduplication_store,
    sqlite_path_from_url,
)
from container_messaging.errors import ConfigurationError, TransportError


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --------------------------------------------------------------------------------------------------------------------
# none


def test_none_store_never_reports_a_key_as_seen() -> None:
    """The none store answers False for a key even right after remembering it."""
    store = NoDeduplication()
    store.remember("orders:1")
    assert store.seen("orders:1") is False
    store.close()


# --------------------------------------------------------------------------------------------------------------------
# memory


def test_memory_store_reports_remembered_keys_only() -> None:
    """A remembered key is seen; a key never remembered is not."""
    store = MemoryDeduplication(window=60, max_entries=10, clock=FakeClock())
    store.remember("orders:1")
    assert store.seen("orders:1") is True
    assert store.seen("orders:2") is False


def test_memory_store_forgets_a_key_when_the_window_is_over() -> None:
    """A key is seen until just before remembered_at + window and not seen from then on."""
    clock = FakeClock()
    store = MemoryDeduplication(window=10, max_entries=10, clock=clock)
    store.remember("orders:1")
    clock.advance(9.999)
    assert store.seen("orders:1") is True
    clock.advance(0.001)
    assert store.seen("orders:1") is False
    assert len(store) == 0


def test_memory_store_remembering_again_restarts_the_window() -> None:
    """Remembering a key again makes it seen for a full window from the second remember."""
    clock = FakeClock()
    store = MemoryDeduplication(window=10, max_entries=10, clock=clock)
    store.remember("orders:1")
    clock.advance(8)
    store.remember("orders:1")
    clock.advance(8)
    assert store.seen("orders:1") is True


def test_memory_store_evicts_the_oldest_key_when_full() -> None:
    """With max_entries keys held, remembering one more evicts the oldest and keeps the others."""
    clock = FakeClock()
    store = MemoryDeduplication(window=60, max_entries=3, clock=clock)
    for number in range(1, 4):
        store.remember(f"orders:{number}")
        clock.advance(1)
    store.remember("orders:4")
    assert [store.seen(f"orders:{number}") for number in range(1, 5)] == [False, True, True, True]
    assert len(store) == 3


def test_memory_store_drops_expired_keys_when_remembering() -> None:
    """Remembering a key drops the keys whose window is over, so they do not count against max_entries."""
    clock = FakeClock()
    store = MemoryDeduplication(window=10, max_entries=3, clock=clock)
    store.remember("orders:1")
    store.remember("orders:2")
    clock.advance(5)
    store.remember("orders:3")
    clock.advance(5)
    store.remember("orders:4")
    assert len(store) == 2
    assert store.seen("orders:3") is True
    assert store.seen("orders:4") is True


def test_memory_store_rejects_a_window_that_is_not_positive() -> None:
    """A window of 0 seconds is a ConfigurationError naming the window."""
    with pytest.raises(ConfigurationError, match="window"):
        MemoryDeduplication(window=0, max_entries=10)


def test_memory_store_repr_shows_its_settings() -> None:
    """The repr names the window, the bound and the number of keys held."""
    store = MemoryDeduplication(window=60, max_entries=5)
    store.remember("orders:1")
    assert repr(store) == "MemoryDeduplication(window=60.0, max_entries=5, entries=1)"


# --------------------------------------------------------------------------------------------------------------------
# Redis


@pytest.fixture
def redis_prefix(redis_url: str, unique: str) -> Iterator[str]:
    """A key prefix private to the test; its keys are deleted afterwards."""
    import redis

    prefix = f"test:dedup:{unique}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.mark.redis
def test_redis_store_is_shared_between_instances(redis_url: str, redis_prefix: str) -> None:
    """A key remembered by one store instance is seen by another on the same server and prefix."""
    first = RedisDeduplication(redis_url, window=60, prefix=redis_prefix)
    second = RedisDeduplication(redis_url, window=60, prefix=redis_prefix)
    try:
        assert second.seen("orders:1") is False
        first.remember("orders:1")
        assert second.seen("orders:1") is True
        assert second.seen("orders:2") is False
    finally:
        first.close()
        second.close()


@pytest.mark.redis
def test_redis_store_sets_the_key_ttl_from_the_window(redis_url: str, redis_prefix: str) -> None:
    """Remembering sets the Redis key prefix+key with a PTTL of the window in milliseconds."""
    import redis

    store = RedisDeduplication(redis_url, window=1.5, prefix=redis_prefix)
    client = redis.Redis.from_url(redis_url)
    try:
        store.remember("orders:1")
        ttl = client.pttl(f"{redis_prefix}orders:1")
        assert 1000 < ttl <= 1500
    finally:
        client.close()
        store.close()


@pytest.mark.redis
def test_redis_store_does_not_see_a_key_whose_ttl_ran_out(redis_url: str, redis_prefix: str) -> None:
    """A key Redis no longer holds (deleted, as Redis does when its TTL runs out) is not seen."""
    import redis

    store = RedisDeduplication(redis_url, window=60, prefix=redis_prefix)
    client = redis.Redis.from_url(redis_url)
    try:
        store.remember("orders:1")
        client.delete(f"{redis_prefix}orders:1")  # what Redis does when the TTL runs out
        assert store.seen("orders:1") is False
    finally:
        client.close()
        store.close()


def test_redis_store_unreachable_raises_transport_error_without_the_password() -> None:
    """An unreachable Redis is a TransportError naming the masked URL, with the redis error chained."""
    store = RedisDeduplication("redis://:s3cret@127.0.0.1:1/0", window=60)
    try:
        with pytest.raises(TransportError) as caught:
            store.seen("orders:1")
        assert "redis://:***@127.0.0.1:1/0" in str(caught.value)
        assert "s3cret" not in str(caught.value)
        assert caught.value.__cause__ is not None
        with pytest.raises(TransportError) as caught:
            store.remember("orders:1")
        assert "s3cret" not in str(caught.value)
    finally:
        store.close()


def test_redis_store_construction_does_not_connect() -> None:
    """Building a Redis store for an unreachable server succeeds and its repr masks the password."""
    store = RedisDeduplication("redis://:s3cret@127.0.0.1:1/0", window=60)
    assert repr(store) == (
        "RedisDeduplication(url='redis://:***@127.0.0.1:1/0', window=60.0, prefix='container_messaging:dedup:')"
    )
    store.close()


# --------------------------------------------------------------------------------------------------------------------
# SQLite


def test_sqlite_store_is_shared_between_instances_on_one_file(tmp_path: Path) -> None:
    """A key remembered through one instance is seen through another on the same file, created with its folders."""
    path = tmp_path / "nested" / "folder" / "dedup.sqlite3"
    first = SqliteDeduplication(path, window=60)
    second = SqliteDeduplication(path, window=60)
    try:
        assert second.seen("orders:1") is False
        first.remember("orders:1")
        assert second.seen("orders:1") is True
        assert second.seen("orders:2") is False
        assert path.is_file()
    finally:
        first.close()
        second.close()


def test_sqlite_store_uses_wal_journal(tmp_path: Path) -> None:
    """The SQLite file is in WAL journal mode once the store has been used."""
    path = tmp_path / "dedup.sqlite3"
    store = SqliteDeduplication(path, window=60)
    store.remember("orders:1")
    store.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()


def test_sqlite_store_forgets_a_key_when_the_window_is_over(tmp_path: Path) -> None:
    """A key is seen until just before remembered_at + window and not seen from then on."""
    clock = FakeClock()
    store = SqliteDeduplication(tmp_path / "dedup.sqlite3", window=10, clock=clock)
    try:
        store.remember("orders:1")
        clock.advance(9.5)
        assert store.seen("orders:1") is True
        clock.advance(0.5)
        assert store.seen("orders:1") is False
    finally:
        store.close()


def test_sqlite_store_purges_expired_rows_at_most_every_minute(tmp_path: Path) -> None:
    """Expired rows stay until a remember() at least 60 s after the last purge, which deletes them all."""
    path = tmp_path / "dedup.sqlite3"
    clock = FakeClock()
    store = SqliteDeduplication(path, window=10, clock=clock)

    def keys() -> set[str]:
        with sqlite3.connect(path) as connection:
            rows = connection.execute("SELECT key FROM handled").fetchall()
        connection.close()
        return {row[0] for row in rows}

    try:
        store.remember("orders:1")  # the first remember purges; the next purge is due 60 s later
        clock.advance(30)
        store.remember("orders:2")
        assert keys() == {"orders:1", "orders:2"}
        clock.advance(31)
        store.remember("orders:3")
        assert keys() == {"orders:3"}
    finally:
        store.close()


def test_sqlite_store_construction_does_not_touch_the_disk(tmp_path: Path) -> None:
    """Building a SQLite store creates neither the file nor its folder, and its repr names path and window."""
    path = tmp_path / "missing" / "dedup.sqlite3"
    store = SqliteDeduplication(path, window=60)
    assert not path.parent.exists()
    assert repr(store) == f"SqliteDeduplication(path={str(path)!r}, window=60.0)"
    store.close()


def test_sqlite_store_failure_is_a_transport_error(tmp_path: Path) -> None:
    """A file that cannot be opened (its parent is a regular file) raises TransportError naming the path."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    store = SqliteDeduplication(blocker / "dedup.sqlite3", window=60)
    with pytest.raises(TransportError, match="blocker") as caught:
        store.remember("orders:1")
    assert caught.value.__cause__ is not None
    store.close()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///dedup.sqlite3", "dedup.sqlite3"),
        ("sqlite:///data/dedup.sqlite3", "data/dedup.sqlite3"),
        ("sqlite:////tmp/x.db", "/tmp/x.db"),
    ],
)
def test_sqlite_url_gives_the_path_after_three_slashes(url: str, path: str) -> None:
    """sqlite:///path is relative and sqlite:////path absolute, as in SQLAlchemy."""
    assert sqlite_path_from_url(url) == path


@pytest.mark.parametrize("url", ["sqlite://dedup.sqlite3", "sqlite:///"])
def test_sqlite_url_without_a_path_is_a_configuration_error(url: str) -> None:
    """A sqlite URL without three slashes and a path is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="sqlite"):
        sqlite_path_from_url(url)


# --------------------------------------------------------------------------------------------------------------------
# Factory


def test_factory_builds_the_none_store() -> None:
    """store = 'none' gives a NoDeduplication."""
    store = create_deduplication_store("none", window=60, max_entries=10)
    assert isinstance(store, NoDeduplication)


def test_factory_builds_the_memory_store_with_window_and_bound() -> None:
    """store = 'memory' gives a MemoryDeduplication with the settings' window and max_entries."""
    store = create_deduplication_store("memory", window=30, max_entries=7)
    assert isinstance(store, MemoryDeduplication)
    assert (store.window, store.max_entries) == (30.0, 7)


def test_factory_builds_a_redis_store_without_connecting() -> None:
    """A redis:// store gives a RedisDeduplication for an unreachable server without any error."""
    store = create_deduplication_store("redis://:s3cret@127.0.0.1:1/0", window=5, max_entries=10)
    assert isinstance(store, RedisDeduplication)
    assert store.window == 5.0
    assert "s3cret" not in repr(store)


def test_factory_builds_a_sqlite_store_without_creating_the_file(tmp_path: Path) -> None:
    """A sqlite:////absolute path gives a SqliteDeduplication on that path, not created yet."""
    path = tmp_path / "sub" / "dedup.sqlite3"
    store = create_deduplication_store(f"sqlite:///{path}", window=5, max_entries=10)
    assert isinstance(store, SqliteDeduplication)
    assert store.path == str(path)
    assert not path.parent.exists()


def test_every_store_satisfies_the_protocol(tmp_path: Path) -> None:
    """Each store class is a DeduplicationStore."""
    stores = [
        NoDeduplication(),
        MemoryDeduplication(window=1, max_entries=1),
        RedisDeduplication("redis://127.0.0.1:1/0", window=1),
        SqliteDeduplication(tmp_path / "x.sqlite3", window=1),
    ]
    assert all(isinstance(store, DeduplicationStore) for store in stores)


def test_sqlite_store_file_and_folders_are_owner_only(tmp_path: Path) -> None:
    """The SQLite store creates its missing folders 0700 and its file (and WAL files) 0600: no group or other access."""
    path = tmp_path / "var" / "dedup" / "store.sqlite3"
    store = SqliteDeduplication(path, window=60)
    try:
        store.remember("orders:1:handler")
        created = [path.parent.parent, path.parent, path, *path.parent.glob("store.sqlite3-*")]
        modes = {p.name: p.stat().st_mode & 0o777 for p in created}
    finally:
        store.close()

    assert modes["var"] == 0o700
    assert modes["dedup"] == 0o700
    assert modes["store.sqlite3"] == 0o600
    assert {mode for name, mode in modes.items() if name.startswith("store.sqlite3-")} <= {0o600}
    assert len(modes) >= 4  # the WAL file exists while the connection is open
