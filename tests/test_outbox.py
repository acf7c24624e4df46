"""The outbox and the inbox on real databases (SQLite and PostgreSQL), with the in-process memory broker.

Every test runs on both databases, with its own table names; what reaches the broker is read back from the broker
(queue sizes, received deliveries) or from the recording transport in front of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from outbox_support import RecordingTransport, Service, drop_tables, real_transport
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select, text, update

from container_messaging import (
    ConfigurationError,
    DistributedBus,
    HandlerDefinitionError,
    MessagingContainer,
    RunOptions,
)
from container_messaging.messages import ID
from container_messaging.outbox import (
    OutboxError,
    OutboxSchemaError,
    OutboxSettings,
    UnitOfWork,
)
from container_messaging.outbox.schema import open_engine

SERVICE = "orders"
QUEUE = f"distributed_{SERVICE}"

HANDLERS = """
from typing import Annotated
from sqlalchemy import Connection, text
from container_messaging import DistributedBus, Header, command_handler, distributed, event_handler
from container_messaging.outbox import transactional

RUNS = []

class Orders:
    def __init__(self, bus: DistributedBus) -> None:
        self.bus = bus

    @transactional
    @distributed
    @command_handler("orders.place")
    def place(self, command: dict, connection: Connection, message_id: Annotated[str, Header("id")]) -> None:
        RUNS.append(message_id)
        connection.execute(text(f"INSERT INTO {command['table']} (seq, note) VALUES (:seq, 'placed')"),
                           {"seq": command["seq"]})
        self.bus.publish_event("orders.placed", str(command["seq"]))
        if command.get("fail"):
            raise RuntimeError("the handler failed after its writes")

    @distributed
    @event_handler("orders.placed")
    def placed(self, event: str) -> None:
        pass
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/app.sqlite3"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def settings(database_url: str, unique: str) -> Iterator[OutboxSettings]:
    settings = OutboxSettings(
        enabled=True, database_url=database_url, outbox_table=f"t{unique}_outbox", inbox_table=f"t{unique}_inbox"
    )
    yield settings
    drop_tables(database_url, settings.outbox_table, settings.inbox_table, f"t{unique}_orders")


@pytest.fixture
def recording() -> RecordingTransport:
    return RecordingTransport(real_transport({"url": "memory://"}))


@pytest.fixture
def make_service(
    settings: OutboxSettings, recording: RecordingTransport, make_module: Callable[[str, str], str], unique: str
) -> Iterator[Callable[..., Service]]:
    services: list[Service] = []

    def make(*, setup: bool = True, scan: bool = True, **overrides: Any) -> Service:
        config: dict[str, Any] = {
            "service_name": SERVICE,
            "transport": {"url": "memory://"},
            "recoverability": {"immediate_retries": 0, "delayed_retries": []},
            "deduplication": {"store": "none"},
        }
        if scan:
            config["scan"] = [make_module(f"outbox_handlers_{unique}_{len(services)}", HANDLERS)]
        service = Service(attrs.evolve(settings, **overrides), config, recording)
        services.append(service)
        if setup:
            service.outbox.setup()
            service.container.setup()
        return service

    yield make
    for service in services:
        service.close()


def orders_table(service: Service, unique: str) -> Table:
    table = Table(
        f"t{unique}_orders", MetaData(), Column("seq", Integer), Column("note", String(50)), Column("id", Integer)
    )
    table.metadata.create_all(service.outbox.engine)
    return table


def outbox_rows(service: Service) -> list[Any]:
    table = service.outbox.schema.outbox
    with service.outbox.engine.connect() as connection:
        return list(connection.execute(select(table).order_by(table.c.id)))


def send(service: Service, seq: int, **extra: Any) -> None:
    service.container.get(DistributedBus).convert_and_send_command(
        SERVICE, "orders.place", {"seq": seq, "table": f"t{extra.pop('unique')}_orders", **extra}
    )


# -- settings ------------------------------------------------------------------------------------------------------


def test_settings_defaults_and_masked_repr() -> None:
    """The defaults are the embedded SQLite file and the documented names and limits; the repr masks the password."""
    settings = OutboxSettings()
    assert (settings.enabled, settings.database_url) == (False, "sqlite:///.container_messaging/outbox.sqlite3")
    assert (settings.outbox_table, settings.inbox_table) == ("container_messaging_outbox", "container_messaging_inbox")
    assert (settings.relay_batch_size, settings.relay_polling_interval, settings.retention) == (100, 1.0, 604800.0)
    shown = repr(OutboxSettings(database_url="postgresql://app:s3cret@db:5432/app"))
    assert "s3cret" not in shown and "app:***@db" in shown


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("relay_batch_size", 0, "OutboxSettings.relay_batch_size: must be at least 1, got 0"),
        ("retention", -1, "OutboxSettings.retention: must be greater than 0, got -1"),
        ("relay_polling_interval", "1", "OutboxSettings.relay_polling_interval: expected a number"),
        ("outbox_table", "drop table;", "OutboxSettings.outbox_table: must be a table name"),
        ("enabled", "yes", "OutboxSettings.enabled: expected a boolean"),
        ("database_url", "mysql://u:pw@h/d", "OutboxSettings.database_url: expected a PostgreSQL or SQLite URL"),
        ("inbox_table", "container_messaging_outbox", "OutboxSettings.inbox_table: must differ from outbox_table"),
    ],
)
def test_settings_refuse_bad_values_naming_the_key(key: str, value: Any, expected: str) -> None:
    """A bad value is a ConfigurationError that names the key (and never shows a password)."""
    with pytest.raises(ConfigurationError) as caught:
        OutboxSettings(**{key: value})
    assert expected in str(caught.value)
    assert "pw@" not in str(caught.value)


def test_the_core_never_imports_sqlalchemy_and_the_outbox_without_it_names_the_extra() -> None:
    """Importing container_messaging (and building a container) loads no SQLAlchemy; importing the outbox where
    SQLAlchemy is missing is a ConfigurationError saying which extra to install."""
    code = (
        "import sys\n"
        "import container_messaging\n"
        "container_messaging.MessagingContainer.from_dict({'transport': {'url': 'memory://'}})\n"
        "assert 'sqlalchemy' not in sys.modules, 'the core imported SQLAlchemy'\n"
        "sys.modules['sqlalchemy'] = None\n"
        "try:\n"
        "    import container_messaging.outbox\n"
        "except container_messaging.ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install 'container-messaging[outbox]'" in done.stdout


def test_a_missing_database_driver_names_the_extra() -> None:
    """A database URL whose driver is not installed is a ConfigurationError naming the URL (masked) and the
    extra to install."""
    with pytest.raises(ConfigurationError) as caught:
        open_engine("postgresql+asyncpg://app:s3cret@127.0.0.1/app")
    assert "container-messaging[outbox]" in str(caught.value) and "app:***@" in str(caught.value)
    assert "s3cret" not in str(caught.value)


# -- schema --------------------------------------------------------------------------------------------------------


def test_missing_schema_is_a_clear_error_at_first_use_and_setup_is_idempotent(
    make_service: Callable[..., Service], settings: OutboxSettings
) -> None:
    """Before setup, the first unit of work and the relay fail naming the missing tables and the setup step;
    setup creates them, twice without harm, and then both work."""
    service = make_service(setup=False, scan=False)
    with pytest.raises(OutboxSchemaError) as caught, service.outbox.unit_of_work.begin():
        pass
    assert f"table {settings.outbox_table!r} does not exist" in str(caught.value)
    assert "setup" in str(caught.value)
    with pytest.raises(OutboxSchemaError, match=settings.inbox_table):
        service.outbox.relay().run(RunOptions(finish_when_no_messages=True))
    service.outbox.setup()
    service.outbox.setup()
    service.outbox.check()
    with service.outbox.unit_of_work.begin() as connection:
        assert connection.execute(text("SELECT 1")).scalar_one() == 1


# -- the unit of work ----------------------------------------------------------------------------------------------


def test_messages_sent_in_a_unit_of_work_wait_for_the_commit_then_are_published_and_marked_sent(
    make_service: Callable[..., Service], recording: RecordingTransport, unique: str
) -> None:
    """Inside the unit of work a command and an event are rows in the outbox, in the application's transaction, and
    nothing is on the broker; after the commit both are published (with their ids) and marked sent."""
    service = make_service()
    orders = orders_table(service, unique)
    bus = service.container.get(DistributedBus)
    with service.outbox.unit_of_work.begin() as connection:
        connection.execute(orders.insert().values(seq=1, note="new"))
        send(service, 1, unique=unique)
        bus.publish_event("orders.placed", "1")
        in_transaction = connection.execute(select(func.count()).select_from(service.outbox.schema.outbox))
        assert in_transaction.scalar_one() == 2
        assert recording.published == [] and service.real.queue_size(QUEUE) == 0
    rows = outbox_rows(service)
    assert [row.message_id for row in rows] == recording.published
    assert all(row.sent_at is not None for row in rows)
    assert service.real.queue_size(QUEUE) == 2


def test_a_rolled_back_unit_of_work_sends_nothing(
    make_service: Callable[..., Service], recording: RecordingTransport, unique: str
) -> None:
    """When the block raises, the application's writes and the outbox rows roll back together: nothing is
    published."""
    service = make_service()
    orders = orders_table(service, unique)
    with pytest.raises(RuntimeError, match="changed my mind"), service.outbox.unit_of_work.begin() as connection:
        connection.execute(orders.insert().values(seq=1))
        send(service, 1, unique=unique)
        raise RuntimeError("changed my mind")
    with service.outbox.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(orders)).scalar_one() == 0
    assert outbox_rows(service) == []
    assert recording.published == [] and service.real.queue_size(QUEUE) == 0


def test_outside_a_unit_of_work_messages_go_straight_to_the_broker(
    make_service: Callable[..., Service], recording: RecordingTransport, unique: str
) -> None:
    """Without an open unit of work the outbox transport passes through: published at once, no outbox row."""
    service = make_service()
    send(service, 1, unique=unique)
    assert len(recording.published) == 1 and service.real.queue_size(QUEUE) == 1
    assert outbox_rows(service) == []


def test_a_batch_inside_a_unit_of_work_is_written_to_the_outbox_and_the_exchange_is_declared_later(
    make_service: Callable[..., Service], recording: RecordingTransport, unique: str
) -> None:
    """DistributedBus.batch() inside a unit of work writes its messages as outbox rows (published after the commit,
    in order); the exchange the bus asked for inside the unit of work is declared before its next direct send."""
    service = make_service()
    declared: list[str] = []
    original = recording.declare_exchange

    def declare(exchange: str) -> None:
        declared.append(exchange)
        original(exchange)

    recording.declare_exchange = declare  # type: ignore[method-assign]
    bus = service.container.get(DistributedBus)
    with service.outbox.unit_of_work.begin(), bus.batch():
        for seq in range(3):
            send(service, seq, unique=unique)
    assert declared == ["ecotone.distributed"]  # by the publish after the commit
    assert [row.message_id for row in outbox_rows(service)] == recording.published and len(recording.published) == 3
    send(service, 3, unique=unique)  # outside: straight to the broker, the owed exchange declared first
    assert declared == ["ecotone.distributed", "ecotone.distributed"]
    assert service.real.queue_size(QUEUE) == 4


def test_nested_units_of_work_join_the_outer_one(make_service: Callable[..., Service], unique: str) -> None:
    """A begin() inside an open unit of work gives the same connection; its messages commit with the outer one."""
    service = make_service()
    uow = service.outbox.unit_of_work
    with uow.begin() as outer:
        with uow.begin() as inner:
            assert inner is outer
            send(service, 1, unique=unique)
        assert service.real.queue_size(QUEUE) == 0
    assert service.real.queue_size(QUEUE) == 1


def test_the_applications_own_connection_can_carry_the_unit_of_work(
    make_service: Callable[..., Service], unique: str
) -> None:
    """begin(connection) runs the transaction on the application's connection (its writes and the outbox row commit
    together); a connection with a transaction already in progress is refused with a clear error."""
    service = make_service()
    orders = orders_table(service, unique)
    with service.outbox.engine.connect() as connection:
        with service.outbox.unit_of_work.begin(connection) as inside:
            assert inside is connection
            connection.execute(orders.insert().values(seq=7))
            send(service, 7, unique=unique)
        assert connection.execute(select(orders.c.seq)).scalars().all() == [7]
        connection.commit()
        connection.execute(select(1))  # starts a transaction
        with (
            pytest.raises(OutboxError, match="already has a transaction in progress"),
            service.outbox.unit_of_work.begin(connection),
        ):
            pass
    assert service.real.queue_size(QUEUE) == 1


def test_headers_survive_the_outbox_with_their_types(
    make_service: Callable[..., Service], recording: RecordingTransport
) -> None:
    """Metadata of every allowed type comes out of the outbox as it went in (JSON, never pickle), with the same id."""
    service = make_service(publish_after_commit=False)
    metadata = {"n": 3, "x": 1.5, "ok": True, "none": None, "tags": ["a", 1], "nested": {"k": [True]}}
    with service.outbox.unit_of_work.begin():
        service.container.get(DistributedBus).publish_event("orders.placed", "x", metadata=metadata)
    (entry,) = service.outbox.pending()
    assert {k: entry.message.headers[k] for k in metadata} == metadata
    assert json.loads(outbox_rows(service)[0].headers)[ID] == entry.message.message_id
    service.outbox.relay().run(RunOptions(finish_when_no_messages=True))
    with service.real.browse(QUEUE) as deliveries:
        (delivery,) = list(deliveries)
        assert {k: delivery.headers[k] for k in metadata} == metadata
        assert delivery.headers[ID] == entry.message.message_id
    assert recording.published == [entry.message.message_id]


# -- the relay -----------------------------------------------------------------------------------------------------


def test_the_relay_publishes_what_was_left_oldest_first_keeping_ids(
    make_service: Callable[..., Service], recording: RecordingTransport, unique: str
) -> None:
    """With publishing after the commit off, committed messages wait in the outbox; the relay publishes them in the
    order they were written, with their ids, marks them sent and stops when nothing is left."""
    service = make_service(publish_after_commit=False)
    ids = []
    for seq in range(5):
        with service.outbox.unit_of_work.begin():
            send(service, seq, unique=unique)
        ids.append(service.outbox.pending(10)[-1].message.message_id)
    assert recording.published == [] and service.outbox.pending_count() == 5
    result = service.outbox.relay().run(RunOptions(finish_when_no_messages=True))
    assert (result.endpoint, result.handled, result.failed, result.stop_reason) == ("outbox", 5, 0, "no more messages")
    assert recording.published == ids
    assert service.outbox.pending_count() == 0
    with service.real.browse(QUEUE) as deliveries:
        assert [d.headers[ID] for d in deliveries] == ids


def test_the_relay_stops_at_the_handled_message_limit(make_service: Callable[..., Service], unique: str) -> None:
    """handled_message_limit counts published messages: the relay publishes exactly that many and stops."""
    service = make_service(publish_after_commit=False, relay_batch_size=2)
    with service.outbox.unit_of_work.begin():
        for seq in range(5):
            send(service, seq, unique=unique)
    result = service.outbox.relay().run(RunOptions(handled_message_limit=3))
    assert (result.handled, result.stop_reason) == (3, "handled message limit reached")
    assert service.outbox.pending_count() == 2


def test_broker_down_at_commit_the_messages_wait_and_the_relay_sends_them_when_it_is_back(
    make_service: Callable[..., Service], recording: RecordingTransport, unique: str
) -> None:
    """The broker is down when the unit of work commits: the commit stands, the messages wait in the outbox (the
    application gets no error); a relay running meanwhile backs off and publishes them once the broker is back."""
    service = make_service()
    recording.down = True
    with service.outbox.unit_of_work.begin():
        send(service, 1, unique=unique)
        send(service, 2, unique=unique)
    assert service.outbox.pending_count() == 2 and service.real.queue_size(QUEUE) == 0
    refused_at_commit = recording.refused
    assert refused_at_commit >= 1  # the publish after the commit was tried
    relay = service.outbox.relay()
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(relay.run(RunOptions(execution_time_limit=30_000))))
    worker.start()
    try:
        _wait(lambda: recording.refused > refused_at_commit, "the relay to find the broker down")
        recording.down = False
        _wait(lambda: service.outbox.pending_count() == 0, "the relay to publish")
    finally:
        relay.stop()
        worker.join(timeout=30)
    assert results[0].failed >= 1 and results[0].handled == 2 and results[0].reconnects >= 1
    assert service.real.queue_size(QUEUE) == 2


def _wait(condition: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_an_unroutable_command_stays_in_the_outbox_with_its_error_and_does_not_hold_up_the_others(
    make_service: Callable[..., Service], recording: RecordingTransport, unique: str
) -> None:
    """A command to a service without a queue is refused by the broker after the commit: it stays pending with
    its attempt count and error (never silently dropped), and the messages after it are published."""
    service = make_service()
    bus = service.container.get(DistributedBus)
    with service.outbox.unit_of_work.begin():
        bus.send_command("nobody", "x.y", "lost?")
        send(service, 1, unique=unique)
    (stuck,) = service.outbox.pending()
    assert stuck.message.routing_key == "nobody" and stuck.attempts == 1
    assert "UnroutableMessageError" in (stuck.last_error or "")
    assert service.real.queue_size(QUEUE) == 1 and len(recording.published) == 1


def test_two_relays_never_publish_one_message_twice(
    make_service: Callable[..., Service], recording: RecordingTransport, unique: str
) -> None:
    """Two relays running at once over 400 pending messages (row locks: SKIP LOCKED on PostgreSQL, the write lock
    on SQLite) publish every message exactly once between them."""
    service = make_service(publish_after_commit=False, relay_batch_size=20)
    with service.outbox.unit_of_work.begin():
        for seq in range(400):
            send(service, seq, unique=unique)
    relays = [service.outbox.relay(f"relay{n}") for n in range(2)]
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda r=relay: results.append(r.run(RunOptions(finish_when_no_messages=True))))
        for relay in relays
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    counts = Counter(recording.published)
    assert len(counts) == 400 and max(counts.values()) == 1
    assert sum(result.handled for result in results) == 400
    assert service.outbox.pending_count() == 0


def test_retention_deletes_old_sent_messages_and_inbox_records_only(
    make_service: Callable[..., Service], unique: str
) -> None:
    """The relay's cleaning deletes sent messages and inbox records older than the retention window; recent ones
    and pending messages stay."""
    service = make_service(publish_after_commit=False, retention=3600.0)
    with service.outbox.unit_of_work.begin():
        for seq in range(3):
            send(service, seq, unique=unique)
    relay = service.outbox.relay()
    relay.relay_once()
    with service.outbox.unit_of_work.begin():
        send(service, 3, unique=unique)  # pending
    outbox, inbox = service.outbox.schema.outbox, service.outbox.schema.inbox
    old = time.time() - 7200
    with service.outbox.engine.begin() as connection:
        first = connection.execute(select(outbox.c.id).order_by(outbox.c.id)).scalars().first()
        connection.execute(update(outbox).where(outbox.c.id == first).values(sent_at=old, created_at=old))
        connection.execute(
            inbox.insert(),
            [
                {"message_id": "old", "handler": "h", "handled_at": old},
                {"message_id": "new", "handler": "h", "handled_at": time.time()},
            ],
        )
    retention = relay.clean()
    assert (retention.sent_messages, retention.inbox_records) == (1, 1)
    rows = outbox_rows(service)
    assert len(rows) == 3 and first not in [row.id for row in rows]
    assert sum(row.sent_at is None for row in rows) == 1
    with service.outbox.engine.connect() as connection:
        assert connection.execute(select(inbox.c.message_id)).scalars().all() == ["new"]


# -- transactional handlers and the inbox --------------------------------------------------------------------------


def _run_endpoint(service: Service) -> Any:
    return service.container.run(SERVICE, finish_when_no_messages=True)


def _handled(service: Service, unique: str) -> list[int]:
    with service.outbox.engine.connect() as connection:
        return list(connection.execute(text(f"SELECT seq FROM t{unique}_orders ORDER BY seq")).scalars())


def test_a_transactional_handler_commits_its_writes_its_inbox_record_and_what_it_sends_together(
    make_service: Callable[..., Service], unique: str
) -> None:
    """The handler writes through the injected connection and publishes an event: after the consumer ran, its row,
    the inbox record of (message id, handler) and the event (published after the commit) are all there."""
    service = make_service()
    orders_table(service, unique)
    send(service, 1, unique=unique)
    result = _run_endpoint(service)
    assert (result.handled, result.failed) == (2, 0)  # the command, then the event it published
    assert _handled(service, unique) == [1]
    inbox = service.outbox.schema.inbox
    with service.outbox.engine.connect() as connection:
        records = connection.execute(select(inbox.c.message_id, inbox.c.handler)).all()
    (message_id, handler) = records[0]
    assert len(records) == 1 and handler.endswith("Orders.place")
    (event,) = outbox_rows(service)
    assert event.routing_key == "orders.placed" and event.sent_at is not None
    assert json.loads(event.headers)["parentId"] == message_id


def test_a_redelivered_message_already_in_the_inbox_runs_nothing(
    make_service: Callable[..., Service], unique: str
) -> None:
    """The same message (same id) delivered twice: the handler runs once, the second delivery is acknowledged
    without running it, and its writes and sends happen once."""
    service = make_service()
    orders_table(service, unique)
    bus = service.container.get(DistributedBus)
    message_id = "01890a5d-ac96-774b-bcce-b302099a8057"
    for _ in range(2):
        bus.convert_and_send_command(
            SERVICE, "orders.place", {"seq": 5, "table": f"t{unique}_orders"}, metadata={ID: message_id}
        )
    result = _run_endpoint(service)
    module = service.container.routes.handlers[0].function.__module__
    assert [message_id] == sys.modules[module].RUNS
    assert result.failed == 0 and _handled(service, unique) == [5]
    assert sum(row.routing_key == "orders.placed" for row in outbox_rows(service)) == 1


def test_a_failing_transactional_handler_rolls_back_its_writes_record_and_sends(
    make_service: Callable[..., Service], unique: str
) -> None:
    """The handler raises after writing and sending: nothing of it is committed (no row, no inbox record, no
    event), and the message goes to the dead letter (no retries configured)."""
    service = make_service()
    orders_table(service, unique)
    send(service, 9, unique=unique, fail=True)
    result = _run_endpoint(service)
    assert (result.handled, result.failed) == (0, 1)
    assert _handled(service, unique) == []
    with service.outbox.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(service.outbox.schema.inbox)).scalar_one() == 0
    assert outbox_rows(service) == []
    assert service.real.queue_size(f"{QUEUE}.dead_letter") == 1


def test_transactional_without_an_outbox_is_a_boot_error(make_module: Callable[[str, str], str], unique: str) -> None:
    """A @transactional handler in a container without the outbox's unit of work fails when the container is built,
    naming the handler and what to enable."""
    module = make_module(f"outbox_missing_{unique}", HANDLERS)
    with pytest.raises(HandlerDefinitionError, match=r"Orders\.place is @transactional.*enable the outbox"):
        MessagingContainer.from_dict({"service_name": SERVICE, "scan": [module], "transport": {"url": "memory://"}})


def test_the_unit_of_work_is_resolvable_by_type(make_service: Callable[..., Service]) -> None:
    """container.get(UnitOfWork) is the outbox's unit of work (what the application begins transactions with)."""
    service = make_service(scan=False)
    assert service.container.get(UnitOfWork) is service.outbox.unit_of_work
