"""Fault tests of the outbox and the inbox with real processes on PostgreSQL and RabbitMQ.

A sender process commits orders and sends one command per order through the framework's DistributedBus inside a
unit of work; a consumer process (``EndpointConsumer``) handles them in a ``@transactional`` handler that writes a
row to a ``handled`` table through its connection. Processes are started and SIGKILLed by PID at chosen points (the
worker module below reads its kill points from the environment; the package knows nothing of them); the relay runs
in the test. Each test prints its figures (pytest -s): sent (orders committed), delivered (deliveries the consumer
received), handled (rows committed by the handler), lost, handled twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
from outbox_support import drop_tables, real_transport
from sqlalchemy import text

from container_messaging import MessagingContainer, RunOptions
from container_messaging.outbox import OutboxSettings, install

pytestmark = pytest.mark.rabbitmq

WORKER = """
import json
import os
import signal
import sys

from dependency_injector import containers, providers
from sqlalchemy import Connection, text

from container_messaging import DistributedBus, MessagingContainer, command_handler, distributed
from container_messaging.outbox import OutboxSettings, install, transactional
from container_messaging.transports import BaseTransport, Receiver

E = os.environ


def log(name, seq):
    fd = os.open(E[name], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{seq}\\n".encode())  # one unbuffered write per line: survives SIGKILL
    os.close(fd)


def seq_of(message):
    return json.loads(message.body)["seq"]


def kill_here():
    os.kill(os.getpid(), signal.SIGKILL)


class Work:
    @transactional
    @distributed
    @command_handler("fault.order")
    def order(self, command: dict, connection: Connection) -> None:
        log("RUNS_LOG", command["seq"])
        connection.execute(text(f"INSERT INTO {E['HANDLED_TABLE']} (seq) VALUES (:seq)"), {"seq": command["seq"]})
        if command["seq"] == int(E.get("KILL_IN_HANDLER", "-1")) and not os.path.exists(E["KILL_MARK"]):
            open(E["KILL_MARK"], "w").close()
            kill_here()  # inside the handler's transaction, before its commit


class Faulty(BaseTransport):
    '''The real transport, with the test's kill points around publishing and a log of what the consumer receives.'''

    def __init__(self, inner):
        self.inner, self.description = inner, inner.description
        self.kill_seq, self.kill_when = int(E.get("KILL_SEQ", "-1")), E.get("KILL_WHEN", "")

    def _publishing(self, messages, publish):
        hit = any(seq_of(m) == self.kill_seq for m in messages)
        if hit and self.kill_when == "before_publish":
            kill_here()  # the unit of work committed; nothing is published
        publish()
        if hit and self.kill_when == "after_publish":
            kill_here()  # published; the outbox row is not marked sent

    def publish(self, exchange, message, *, mandatory):
        self._publishing([message], lambda: self.inner.publish(exchange, message, mandatory=mandatory))

    def publish_many(self, exchange, messages):
        self._publishing([m for m, _ in messages], lambda: self.inner.publish_many(exchange, messages))

    def open_receiver(self, queue, *, prefetch_count):
        return Logged(self.inner.open_receiver(queue, prefetch_count=prefetch_count))

    def declare_exchange(self, exchange): self.inner.declare_exchange(exchange)
    def setup_endpoint(self, topology): self.inner.setup_endpoint(topology)
    def send_to_queue(self, queue, message): self.inner.send_to_queue(queue, message)
    def browse(self, queue): return self.inner.browse(queue)
    def queue_size(self, queue): return self.inner.queue_size(queue)
    def close(self): self.inner.close()


class Logged(Receiver):
    def __init__(self, inner):
        self.inner = inner

    def receive(self, timeout):
        delivery = self.inner.receive(timeout)
        if delivery is not None:
            log("DELIVERIES_LOG", seq_of(delivery))
        return delivery

    def close(self):
        self.inner.close()


def build(service, scan):
    transport = {"url": E["AMQP_URL"], "publish_retries": 0, "connect_timeout": 2}
    real = MessagingContainer.from_dict({"transport": transport}).transport
    settings = OutboxSettings(
        enabled=True, database_url=E["DATABASE_URL"], outbox_table=E["OUTBOX_TABLE"], inbox_table=E["INBOX_TABLE"]
    )
    outbox = install(settings, Faulty(real))
    app = containers.DynamicContainer()
    app.unit_of_work = providers.Object(outbox.unit_of_work)
    config = {
        "service_name": service,
        "scan": scan,
        "transport": transport,
        "distribution": {"exchange": E["EXCHANGE"]},
        "deduplication": {"store": "none"},  # the inbox alone keeps handling once
        "recoverability": {"immediate_retries": 0, "delayed_retries": [200]},
    }
    return outbox, MessagingContainer.from_dict(config, transport=outbox.transport, app=app)


class Rollback(Exception):
    pass


def send():
    outbox, container = build(E["SERVICE"] + "sender", [])
    bus = container.get(DistributedBus)
    for seq in range(int(E["COUNT"])):
        try:
            with outbox.unit_of_work.begin() as connection:
                connection.execute(text(f"INSERT INTO {E['ORDERS_TABLE']} (seq) VALUES (:seq)"), {"seq": seq})
                bus.convert_and_send_command(E["SERVICE"], "fault.order", {"seq": seq})
                if E.get("ROLLBACK_ODD") and seq % 2:
                    raise Rollback()
        except Rollback:
            pass
    container.close()
    outbox.close()


def consume():
    outbox, container = build(E["SERVICE"], [E["WORKER_MODULE"]])
    print(container.run(E["SERVICE"]), flush=True)
    container.close()
    outbox.close()


if __name__ == "__main__":
    {"send": send, "consume": consume}[sys.argv[1]]()
"""


class RefusingProxy:
    """A loopback port in front of RabbitMQ: while down nothing listens there (connections are refused, as by a
    broker that is down); ``up()`` starts forwarding every connection to the broker."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        probe = socket.create_server(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def up(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._spawn(self._accept, self._server)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            upstream = socket.create_connection(self._target)
            self._sockets += [client, upstream]
            self._spawn(self._pipe, client, upstream)
            self._spawn(self._pipe, upstream, client)

    @staticmethod
    def _pipe(source: socket.socket, destination: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                destination.sendall(data)
        for sock in (source, destination):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


class System:
    """One test's sender, consumer, tables, queue and logs; counts what happened."""

    def __init__(self, tmp_path: Path, unique: str, amqp_url: str, postgres_url: str) -> None:
        self.tmp = tmp_path
        self.service = f"outboxfault{unique}"
        self.exchange = f"test.outbox.{unique}"
        self.amqp_url, self.database_url = amqp_url, postgres_url
        self.tables = {name: f"t{unique}_{name}" for name in ("outbox", "inbox", "orders", "handled")}
        modules = tmp_path / "modules"
        modules.mkdir()
        self.module = f"outbox_fault_worker_{unique}"
        (modules / f"{self.module}.py").write_text(textwrap.dedent(WORKER))
        self.env = {
            **os.environ,
            "PYTHONPATH": str(modules),
            "WORKER_MODULE": self.module,
            "AMQP_URL": amqp_url,
            "DATABASE_URL": postgres_url,
            "EXCHANGE": self.exchange,
            "SERVICE": self.service,
            "OUTBOX_TABLE": self.tables["outbox"],
            "INBOX_TABLE": self.tables["inbox"],
            "ORDERS_TABLE": self.tables["orders"],
            "HANDLED_TABLE": self.tables["handled"],
            "RUNS_LOG": str(tmp_path / "runs.log"),
            "DELIVERIES_LOG": str(tmp_path / "deliveries.log"),
            "KILL_MARK": str(tmp_path / "killed"),
        }
        self.processes: list[subprocess.Popen[bytes]] = []
        self.roles: list[str] = []
        self.settings = OutboxSettings(
            enabled=True,
            database_url=postgres_url,
            outbox_table=self.tables["outbox"],
            inbox_table=self.tables["inbox"],
        )
        self.outbox = install(self.settings, real_transport({"url": amqp_url}))
        self.outbox.setup()
        with self.outbox.engine.begin() as connection:
            for name in ("orders", "handled"):
                connection.execute(text(f"CREATE TABLE {self.tables[name]} (seq integer NOT NULL)"))
        with MessagingContainer.from_dict(
            {"service_name": self.service, "transport": {"url": amqp_url}, "distribution": {"exchange": self.exchange}}
        ) as container:
            container.setup()  # the consumer's queue exists before anything is sent

    def start(self, role: str, **env: str) -> subprocess.Popen[bytes]:
        output = (self.tmp / f"{role}-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, str(self.tmp / "modules" / f"{self.module}.py"), role],
            env={**self.env, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        self.roles.append(role)
        return process

    def output(self, process: subprocess.Popen[bytes]) -> str:
        index = self.processes.index(process)
        return (self.tmp / f"{self.roles[index]}-{index}.log").read_text()

    def relay(self, **options: Any) -> Any:
        return self.outbox.relay().run(RunOptions(finish_when_no_messages=True, **options))

    def column(self, table: str) -> list[int]:
        with self.outbox.engine.connect() as connection:
            return list(connection.execute(text(f"SELECT seq FROM {self.tables[table]}")).scalars())

    def log(self, name: str) -> Counter[int]:
        path = self.tmp / name
        return Counter(int(line) for line in path.read_text().split()) if path.exists() else Counter()

    def wait(self, condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            for process, role in zip(self.processes, self.roles, strict=True):
                if role == "consume" and process.poll() not in (None, -signal.SIGKILL):
                    raise AssertionError(f"a consumer exited ({process.returncode}):\n{self.output(process)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {seconds} s waiting for {what}")
            time.sleep(0.05)

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        assert process.returncode == 0, self.output(process)

    def figures(self, title: str) -> dict[str, int]:
        sent, handled, delivered = (
            Counter(self.column("orders")),
            Counter(self.column("handled")),
            self.log("deliveries.log"),
        )
        figures = {
            "sent": len(sent),
            "delivered": sum(delivered.values()),
            "handled": len(handled),
            "lost": len(set(sent) - set(handled)),
            "handled_twice": sum(1 for n in handled.values() if n > 1),
            "handler_runs": sum(self.log("runs.log").values()),
        }
        print(f"\n[outbox fault] {title}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
        return figures

    def cleanup(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        self.outbox.close()
        drop_tables(self.database_url, *self.tables.values())
        connection = kombu.Connection(self.amqp_url)
        try:
            channel = connection.channel()
            for queue in (f"distributed_{self.service}", f"distributed_{self.service}.dead_letter"):
                channel.queue_delete(queue)
            for delay in (200,):
                channel.queue_delete(f"distributed_{self.service}.delay.{delay}")
            channel.exchange_delete(self.exchange)
        finally:
            connection.release()


@pytest.fixture
def system(tmp_path: Path, unique: str, amqp_url: str, postgres_url: str) -> Iterator[System]:
    running = System(tmp_path, unique, amqp_url, postgres_url)
    yield running
    running.cleanup()


def test_sigkill_after_the_commit_and_before_the_publish_the_relay_delivers(system: System) -> None:
    """The sender is SIGKILLed after order 10's transaction committed and before its command was published: the
    command waits in the outbox, the relay publishes it, and it is handled once; nothing is lost."""
    consumer = system.start("consume")
    sender = system.start("send", COUNT="20", KILL_SEQ="10", KILL_WHEN="before_publish")
    assert sender.wait(timeout=60) == -signal.SIGKILL
    assert sorted(system.column("orders")) == list(range(11))
    system.wait(lambda: len(set(system.column("handled"))) == 10, "orders 0-9 to be handled")
    assert system.outbox.pending_count() == 1
    relayed = system.relay()
    system.wait(lambda: len(set(system.column("handled"))) == 11, "order 10 to be handled")
    system.stop(consumer)
    figures = system.figures("SIGKILL after commit, before publish")
    assert relayed.handled == 1 and system.outbox.pending_count() == 0
    assert figures == {"sent": 11, "delivered": 11, "handled": 11, "lost": 0, "handled_twice": 0, "handler_runs": 11}


def test_sigkill_after_the_publish_and_before_marking_sent_is_delivered_twice_and_handled_once(
    system: System,
) -> None:
    """The sender is SIGKILLed after order 10's command was published and before its outbox row was marked sent:
    the relay publishes it again (same id), the consumer receives it twice and the inbox lets it be handled once."""
    consumer = system.start("consume")
    sender = system.start("send", COUNT="20", KILL_SEQ="10", KILL_WHEN="after_publish")
    assert sender.wait(timeout=60) == -signal.SIGKILL
    system.wait(lambda: len(set(system.column("handled"))) == 11, "orders 0-10 to be handled")
    assert system.outbox.pending_count() == 1
    relayed = system.relay()
    system.wait(lambda: system.log("deliveries.log")[10] == 2, "order 10's second delivery")
    system.stop(consumer)
    figures = system.figures("SIGKILL after publish, before marked sent")
    assert relayed.handled == 1
    assert system.log("deliveries.log")[10] == 2 and system.log("runs.log")[10] == 1
    assert figures == {"sent": 11, "delivered": 12, "handled": 11, "lost": 0, "handled_twice": 0, "handler_runs": 11}


def test_rolled_back_units_of_work_send_nothing(system: System) -> None:
    """Every odd order's unit of work rolls back after sending its command: only the 10 committed orders' commands
    reach the broker; nothing is left in the outbox or on the queue."""
    consumer = system.start("consume")
    sender = system.start("send", COUNT="20", ROLLBACK_ODD="1")
    assert sender.wait(timeout=60) == 0, system.output(sender)
    system.wait(lambda: len(system.column("handled")) == 10, "the 10 committed orders to be handled")
    system.stop(consumer)
    figures = system.figures("rollback")
    assert system.relay().handled == 0 and system.outbox.pending_count() == 0
    assert sorted(system.log("deliveries.log")) == list(range(0, 20, 2))
    assert system.outbox.transport.queue_size(f"distributed_{system.service}") == 0
    assert figures == {"sent": 10, "delivered": 10, "handled": 10, "lost": 0, "handled_twice": 0, "handler_runs": 10}


class _Failures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "publishing failed" in record.getMessage():
            self.seen.set()


def test_broker_down_at_commit_the_messages_wait_and_go_out_when_it_is_back(system: System) -> None:
    """The sender reaches the broker through a port that refuses connections: its 10 units of work commit, the
    commands wait in the outbox; the relay, started while the broker is still down, backs off, and once the port
    forwards again it publishes them; all are handled once."""
    proxy = RefusingProxy(("127.0.0.1", 5672))
    proxied = system.amqp_url.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
    assert proxied != system.amqp_url
    failures = _Failures()
    logging.getLogger("container_messaging.outbox").addHandler(failures)
    relay_outbox = install(system.settings, real_transport({"url": proxied, "publish_retries": 0}))
    relay = relay_outbox.relay()
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(relay.run(RunOptions(execution_time_limit=120_000))))
    consumer = system.start("consume")
    worker.start()
    try:
        sender = system.start("send", COUNT="10", AMQP_URL=proxied)
        assert sender.wait(timeout=120) == 0, system.output(sender)
        assert sorted(system.column("orders")) == list(range(10))
        assert failures.seen.wait(timeout=60), "the relay never tried the broker while it was down"
        assert system.outbox.pending_count() == 10 and system.column("handled") == []
        proxy.up()
        system.wait(lambda: len(set(system.column("handled"))) == 10, "the 10 commands to be handled")
    finally:
        relay.stop()
        worker.join(timeout=60)
        logging.getLogger("container_messaging.outbox").removeHandler(failures)
        relay_outbox.close()
        proxy.close()
    system.stop(consumer)
    figures = system.figures("broker down at commit")
    assert results[0].handled == 10 and results[0].failed >= 1 and results[0].reconnects >= 1
    assert figures == {"sent": 10, "delivered": 10, "handled": 10, "lost": 0, "handled_twice": 0, "handler_runs": 10}


def test_sigkill_inside_a_transactional_handler_rolls_back_and_the_redelivery_is_handled_once(
    system: System,
) -> None:
    """The consumer is SIGKILLed inside the handler of order 5, after its write and before its commit: the write is
    rolled back, the broker redelivers the message to the restarted consumer, and order 5 is handled once."""
    first = system.start("consume", KILL_IN_HANDLER="5")
    sender = system.start("send", COUNT="10")
    assert sender.wait(timeout=60) == 0, system.output(sender)
    assert first.wait(timeout=60) == -signal.SIGKILL
    assert 5 not in system.column("handled")
    second = system.start("consume")
    system.wait(lambda: len(set(system.column("handled"))) == 10, "the 10 orders to be handled")
    system.stop(second)
    figures = system.figures("SIGKILL inside a transactional handler")
    assert system.log("runs.log")[5] == 2 and system.log("deliveries.log")[5] == 2
    # The messages the killed consumer had received but not started are delivered again (not run twice).
    assert figures["sent"] == 10 and figures["delivered"] >= 11 and figures["handler_runs"] == 11
    assert figures["lost"] == 0 and figures["handled_twice"] == 0 and figures["handled"] == 10
