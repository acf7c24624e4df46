"""Fault tests against the real RabbitMQ: a consumer killed with SIGKILL, connections cut mid-stream, poison
interleaved with good messages, failing handlers. Each prints its figures (run pytest with -s to see them; the
README's Reliability table comes from them).

Consumers run as separate OS processes (the ``container-messaging run`` command); their handler appends each
handled message's sequence number to a file with one unbuffered write per line, which survives SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest

from container_messaging import DistributedBus, MessagingContainer
from container_messaging.transports import OutboundMessage

from conftest import AMQP_URL, REDIS_URL, require_broker

pytestmark = pytest.mark.rabbitmq

HANDLERS = """
import os
import signal
from container_messaging import command_handler, distributed

LOG = os.open(os.environ["FAULT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
KILL_AT = int(os.environ.get("FAULT_KILL_AT", "-1"))
KILL_MARK = os.environ.get("FAULT_KILL_MARK", "")

import attrs

@attrs.frozen
class Typed:
    seq: int
    person_id: str

class Work:
    @distributed
    @command_handler("fault.typed")
    def typed(self, command: Typed) -> None:
        os.write(LOG, f"{command.seq}\\n".encode())

    @command_handler("fault.local")
    def local(self, command: dict) -> None:
        os.write(LOG, b"local\\n")

    @distributed
    @command_handler("fault.work")
    def work(self, command: dict) -> None:
        os.write(LOG, f"{command['seq']}\\n".encode())
        if command["seq"] == KILL_AT and not os.path.exists(KILL_MARK):
            open(KILL_MARK, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)  # handled, not yet acknowledged: the broker must redeliver it
"""


class Service:
    """One service's files: its handler module, its config, its handled log; and its consumer processes."""

    def __init__(self, tmp_path: Path, unique: str, url: str, *, dedup: str = "memory") -> None:
        self.name = f"fault{unique}"
        self.exchange = f"test.faults.{unique}"
        self.log = tmp_path / "handled.log"
        modules = tmp_path / "modules"
        modules.mkdir()
        module = f"fault_handlers_{unique}"
        (modules / f"{module}.py").write_text(textwrap.dedent(HANDLERS))
        self.config = tmp_path / "service.yaml"
        self.config.write_text(
            f"service_name: {self.name}\nscan: [{module}]\n"
            f"transport:\n  url: '{url}'\n  prefetch_count: 10\n  heartbeat: 10\n"
            f"distribution:\n  exchange: {self.exchange}\n"
            f"recoverability:\n  immediate_retries: 0\n  delayed_retries: []\n"
            f"deduplication:\n  store: '{dedup}'\n  window: 600\n"
            f"consumer:\n  max_message_size: 4096\n"
        )
        self.env = {**os.environ, "FAULT_LOG": str(self.log), "PYTHONPATH": str(modules)}
        self.module = module
        self.url = url
        self.runs = 0
        self.consumers: list[Consumer] = []

    def consumer(self, *extra: str) -> Consumer:
        self.runs += 1
        consumer = Consumer(
            [sys.executable, "-m", "container_messaging", "--config", str(self.config), "run", self.name, "-v", *extra],
            self.env,
            self.log.with_name(f"consumer-{self.runs}.log"),
        )
        self.consumers.append(consumer)
        return consumer

    def setup(self) -> None:
        """Declares the service's queue and bindings directly on the broker (as ``container-messaging setup``)."""
        with MessagingContainer.from_dict(
            {
                "service_name": self.name,
                "transport": {"url": AMQP_URL},
                "distribution": {"exchange": self.exchange},
            }
        ) as container:
            container.setup()

    def container(self, url: str | None = None) -> MessagingContainer:
        """A sender (it never consumes, so it declares no queue of its own)."""
        return MessagingContainer.from_dict(
            {
                "service_name": f"{self.name}sender",
                "transport": {"url": url or self.url},
                "distribution": {"exchange": self.exchange},
            }
        )

    def handled(self) -> list[int]:
        if not self.log.exists():
            return []
        return [int(line) for line in self.log.read_text().splitlines() if line.strip().isdigit()]

    def wait_until(self, count: int, process: Consumer, seconds: float = 120) -> None:
        """Waits (bounded) until ``count`` distinct messages were handled."""
        deadline = time.monotonic() + seconds
        while len(set(self.handled())) < count:
            if process.poll() is not None:
                raise AssertionError(f"consumer exited early:\n{process.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(set(self.handled()))} of {count} handled after {seconds} s")
            time.sleep(0.05)

    def cleanup(self) -> None:
        """Ends the consumer processes this test started (a failed test leaves none behind), then the queues."""
        for consumer in self.consumers:
            if consumer.poll() is None:
                consumer.process.kill()
                consumer.process.wait(timeout=10)
        connection = kombu.Connection(AMQP_URL)
        try:
            channel = connection.channel()
            for queue in (f"distributed_{self.name}", f"distributed_{self.name}.dead_letter"):
                channel.queue_delete(queue)
            channel.exchange_delete(self.exchange)
        finally:
            connection.release()


@pytest.fixture
def amqp(amqp_url: str) -> str:
    return amqp_url


class Consumer:
    """A ``container-messaging run`` process whose output goes to a file (a pipe nobody reads would block it)."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("w") as output:
            self.process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)

    def poll(self) -> int | None:
        return self.process.poll()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float) -> str:
        self.process.wait(timeout=timeout)
        return self.output()


def _stop(consumer: Consumer) -> str:
    if consumer.poll() is None:
        consumer.send_signal(signal.SIGTERM)
    try:
        return consumer.wait(timeout=30)
    except subprocess.TimeoutExpired:
        consumer.process.kill()
        return consumer.wait(timeout=30)


def _report(title: str, **figures: Any) -> None:
    print(f"\n[fault] {title}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def _send(bus: DistributedBus, service: str, seqs: range) -> None:
    for seq in seqs:
        bus.send_command(service, "fault.work", f'{{"seq":{seq}}}', "application/json")


def test_sigkill_mid_stream_loses_nothing(amqp: str, tmp_path: Path, unique: str) -> None:
    """5,000 commands; the consumer is SIGKILLed mid-stream (from outside, then once more from inside a handler,
    after its work and before the acknowledgement) and restarted: every command is handled at least once, none is
    lost, and the duplicates are counted (the deduplication store is a shared Redis)."""
    redis_url = require_broker("Redis", REDIS_URL, 6379)
    service = Service(tmp_path, unique, amqp, dedup=redis_url)
    total = 5000
    try:
        service.setup()
        with service.container() as sender:
            started = time.monotonic()
            _send(sender.get(DistributedBus), service.name, range(total))
            publish_seconds = time.monotonic() - started
        first = service.consumer()
        service.wait_until(total // 3, first)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        handled_before_kill = len(service.handled())
        service.env["FAULT_KILL_AT"] = str(total * 2 // 3)
        service.env["FAULT_KILL_MARK"] = str(tmp_path / "killed")
        second = service.consumer()
        second.wait(timeout=180)
        assert second.returncode == -signal.SIGKILL, "the handler should have killed its consumer"
        third = service.consumer("--finish-when-no-messages")
        output = third.wait(timeout=180)
        assert third.returncode == 0, output
        handled = service.handled()
        counts = Counter(handled)
        lost = total - len(counts)
        duplicates = sum(n - 1 for n in counts.values())
        skipped = _figure(output, "duplicates")
        _report(
            "SIGKILL mid-stream",
            sent=total,
            handled=len(counts),
            lost=lost,
            handled_twice=duplicates,
            skipped_by_deduplication=skipped,
            handled_before_kill=handled_before_kill,
            publish_rate=f"{total / publish_seconds:.0f}/s",
        )
        assert lost == 0
        assert set(counts) == set(range(total))
        assert counts[total * 2 // 3] == 2  # handled, killed before the ack, redelivered and handled again
        assert duplicates <= 11  # besides it, at most the message in hand when the first kill came
    finally:
        service.cleanup()


def _figure(output: str, label: str) -> int:
    """A count from the consumer's summary line (``..., duplicates 7 (...)``), 0 when absent."""
    for line in output.splitlines():
        if ": handled " in line and f"{label} " in line:
            return int(line.split(f"{label} ", 1)[1].split()[0].rstrip(",()"))
    return 0


class TcpProxy:
    """A loopback TCP proxy to RabbitMQ that the test can cut: every open connection is closed at once, new ones
    are accepted again right after (as when a broker connection drops)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._running = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        self.cuts = 0

    def _loop(self) -> None:
        self._server.setblocking(False)
        self._selector.register(self._server, selectors.EVENT_READ, None)
        while self._running:
            for key, _ in self._selector.select(timeout=0.1):
                if key.data is None:
                    client, _ = self._server.accept()
                    upstream = socket.create_connection(self._target)
                    with self._lock:
                        self._pairs.append((client, upstream))
                    self._selector.register(client, selectors.EVENT_READ, upstream)
                    self._selector.register(upstream, selectors.EVENT_READ, client)
                    continue
                source, destination = key.fileobj, key.data
                try:
                    data = source.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        raise ConnectionResetError
                    destination.sendall(data)
                except OSError:
                    self._drop(source, destination)  # type: ignore[arg-type]

    def _drop(self, a: socket.socket, b: socket.socket) -> None:
        for sock in (a, b):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()

    def cut(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self.cuts += 1

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5)
        self.cut()
        self._server.close()


@pytest.fixture
def proxy(amqp: str) -> Iterator[TcpProxy]:
    running = TcpProxy(("127.0.0.1", 5672))
    yield running
    running.close()


def test_connection_cut_mid_stream_consumer_and_publisher_carry_on(
    amqp: str, tmp_path: Path, unique: str, proxy: TcpProxy
) -> None:
    """The broker connections are cut twice mid-stream (a TCP proxy the test runs): the consumer reconnects and the
    publisher (with confirms) retries; every command is handled, none is lost."""
    proxied = amqp.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
    service = Service(tmp_path, unique, proxied)
    total = 2000
    try:
        service.setup()
        consumer = service.consumer()
        with service.container(proxied) as sender:
            bus = sender.get(DistributedBus)
            _send(bus, service.name, range(0, 700))
            service.wait_until(100, consumer)
            proxy.cut()  # publisher and consumer lose their connections
            _send(bus, service.name, range(700, 1400))
            proxy.cut()
            _send(bus, service.name, range(1400, total))
        service.wait_until(total, consumer)
        output = _stop(consumer)
        counts = Counter(service.handled())
        lost = total - len(counts)
        reconnects = _figure(output, "reconnects")
        _report(
            "connection cut twice",
            sent=total,
            handled=len(counts),
            lost=lost,
            handled_twice=sum(n - 1 for n in counts.values()),
            consumer_reconnects=reconnects,
            cuts=proxy.cuts,
        )
        assert consumer.returncode == 0, output
        assert lost == 0
        assert reconnects >= 1, output
    finally:
        service.cleanup()


def test_sigterm_during_a_slow_handler_on_rabbitmq(amqp: str, tmp_path: Path, unique: str) -> None:
    """SIGTERM while a handler runs on RabbitMQ: that message completes and is acknowledged once; the next one
    stays on the queue."""
    folder = tmp_path / "slow"
    folder.mkdir()
    modules = tmp_path / "slowmodules"
    modules.mkdir()
    module = f"slow_{unique}"
    (modules / f"{module}.py").write_text(
        textwrap.dedent("""
        import os, time
        from pathlib import Path
        from container_messaging import command_handler, distributed
        FOLDER = Path(os.environ["SLOW_FOLDER"])
        class Slow:
            @distributed
            @command_handler("slow.work")
            def work(self, payload: str) -> None:
                (FOLDER / "started").write_text(payload)
                deadline = time.monotonic() + 30
                while not (FOLDER / "go").exists():
                    if time.monotonic() > deadline:
                        raise TimeoutError("never told to go")
                    time.sleep(0.01)
                with open(FOLDER / "finished", "a") as finished:
                    finished.write(payload + "\\n")
    """)
    )
    name, exchange = f"slow{unique}", f"test.slow.{unique}"
    config = tmp_path / "slow.yaml"
    config.write_text(
        f"service_name: {name}\nscan: [{module}]\ntransport:\n  url: '{amqp}'\ndistribution:\n  exchange: {exchange}\n"
    )
    env = {**os.environ, "SLOW_FOLDER": str(folder), "PYTHONPATH": str(modules)}
    cli = [sys.executable, "-m", "container_messaging", "--config", str(config)]
    consumer: subprocess.Popen[str] | None = None
    try:
        subprocess.run([*cli, "setup"], env=env, check=True, capture_output=True)
        for payload in ("first", "second"):
            subprocess.run(
                [*cli, "send-command", name, "slow.work", payload, "--content-type", "text/plain"],
                env=env,
                check=True,
                capture_output=True,
            )
        consumer = subprocess.Popen(
            [*cli, "run", name], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + 30
        while not (folder / "started").exists():
            assert consumer.poll() is None and time.monotonic() < deadline, "the handler never started"
            time.sleep(0.01)
        consumer.send_signal(signal.SIGTERM)
        (folder / "go").write_text("")
        output = consumer.communicate(timeout=30)[0]
        assert consumer.returncode == 0, output
        assert (folder / "finished").read_text() == "first\n"
        rest = subprocess.run(
            [*cli, "run", name, "--finish-when-no-messages"], env=env, capture_output=True, text=True, check=True
        )
        _report(
            "SIGTERM during a slow handler",
            in_hand="completed and acknowledged once",
            left_on_queue=rest.stdout.strip(),
        )
        assert f"{name}: handled 1, failed 0 (no more messages)" in rest.stdout
        assert (folder / "finished").read_text() == "first\nsecond\n"
    finally:
        if consumer is not None and consumer.poll() is None:
            consumer.kill()
            consumer.wait(timeout=10)
        connection = kombu.Connection(amqp)
        try:
            channel = connection.channel()
            channel.queue_delete(f"distributed_{name}")
            channel.queue_delete(f"distributed_{name}.dead_letter")
            channel.exchange_delete(exchange)
        finally:
            connection.release()


def test_heartbeats_keep_flowing_while_a_handler_runs_long(amqp: str, tmp_path: Path, unique: str) -> None:
    """A handler that runs for over three heartbeat intervals: the connection stays up (the consumer's heartbeat
    thread answers the broker), the message is acknowledged once and never redelivered."""
    modules = tmp_path / "longmodules"
    modules.mkdir()
    module = f"long_{unique}"
    (modules / f"{module}.py").write_text(
        textwrap.dedent("""
        import time
        from container_messaging import command_handler, distributed
        RUNS = []
        class Long:
            @distributed
            @command_handler("long.work")
            def work(self, payload: str) -> None:
                RUNS.append(payload)
                time.sleep(7)  # the behaviour under test: a handler busy for 3.5 heartbeat intervals
    """)
    )
    sys.path.insert(0, str(modules))
    name, exchange = f"long{unique}", f"test.long.{unique}"
    config = {
        "service_name": name,
        "scan": [module],
        "transport": {"url": amqp, "heartbeat": 2},
        "distribution": {"exchange": exchange},
        "recoverability": {"immediate_retries": 0, "delayed_retries": []},
    }
    try:
        with MessagingContainer.from_dict(config) as container:
            container.setup()
            container.get(DistributedBus).send_command(name, "long.work", "once")
            started = time.monotonic()
            result = container.run(name, handled_message_limit=1)
            seconds = time.monotonic() - started
            size_after = container.transport.queue_size(f"distributed_{name}")
            again = container.run(name, finish_when_no_messages=True)
        runs = sys.modules[module].RUNS
        _report(
            "long handler with heartbeat 2 s",
            handler_seconds=f"{seconds:.1f}",
            runs=len(runs),
            reconnects=result.reconnects,
            left_on_queue=size_after,
        )
        assert (result.handled, result.failed, result.reconnects) == (1, 0, 0)
        assert runs == ["once"]
        assert size_after == 0 and again.handled == 0
    finally:
        sys.path.remove(str(modules))
        sys.modules.pop(module, None)
        connection = kombu.Connection(amqp)
        try:
            channel = connection.channel()
            channel.queue_delete(f"distributed_{name}")
            channel.queue_delete(f"distributed_{name}.dead_letter")
            channel.exchange_delete(exchange)
        finally:
            connection.release()


def test_poison_interleaved_with_good_messages(amqp: str, tmp_path: Path, unique: str) -> None:
    """Every kind of poison message, interleaved with good ones, in a running consumer process: every good one is
    handled, every poison one is in the dead letter with its reason after a single attempt, the consumer runs on."""
    service = Service(tmp_path, unique, amqp)
    target = service.name
    kinds: dict[str, tuple[dict[str, Any], bytes, str]] = {
        "malformed JSON": ({}, b'{"seq": ', "application/json"),
        "missing field": ({}, b'{"seq": 1}', "application/json"),
        "wrong type": ({}, b'{"seq": "1", "personId": "p"}', "application/json"),
        "pickle": ({}, b"\x80\x04\x95\x00\x00\x00", "application/x-python-serialize"),
        "yaml": ({}, b"seq: 1", "application/x-yaml"),
        "unknown payload type": ({"ecotone.distributed.payloadType": "query"}, b"{}", "application/json"),
        "no routing key": ({"ecotone.distributed.routingKey": None}, b"{}", "application/json"),
        "no distributed handler": ({"ecotone.distributed.routingKey": "fault.local"}, b"{}", "application/json"),
        "another service's command": ({"ecotone.distributed.targetServiceName": "shipping"}, b"{}", "application/json"),
        "too large": ({}, b'{"seq": 1, "personId": "%s"}' % (b"x" * 5000), "application/json"),
    }
    good_count, rounds = 500, 20
    poison_ids: dict[str, str] = {}
    try:
        service.setup()
        consumer = service.consumer()
        with service.container() as sender:
            transport, exchange = sender.transport, sender.topology.exchange
            seq = 0
            for round_number in range(rounds):
                for label, (extra, body, content_type) in kinds.items():
                    message_id = f"poison-{round_number}-{label.replace(' ', '-')}"
                    poison_ids[message_id] = label
                    headers = {
                        "id": message_id,
                        "ecotone.distributed.payloadType": "command",
                        "ecotone.distributed.routingKey": "fault.typed",
                        "ecotone.distributed.targetServiceName": target,
                        "contentType": content_type,
                        **extra,
                    }
                    headers = {k: v for k, v in headers.items() if v is not None}
                    transport.publish(
                        exchange, OutboundMessage(target, body, headers, content_type, message_id), mandatory=True
                    )
                    for _ in range(good_count // (rounds * len(kinds)) or 1):
                        sender.get(DistributedBus).send_command(
                            target, "fault.typed", f'{{"seq": {seq}, "personId": "p{seq}"}}', "application/json"
                        )
                        seq += 1
        try:
            service.wait_until(seq, consumer, seconds=30)
        except AssertionError:
            missing = sorted(set(range(seq)) - set(service.handled()))
            raise AssertionError(f"missing {missing[:20]}...\n{_stop(consumer)[-6000:]}") from None
        with MessagingContainer.from_dict(
            {
                "service_name": service.name,
                "transport": {"url": amqp},
                "distribution": {"exchange": service.exchange},
            }
        ) as admin:
            deadline = time.monotonic() + 60
            while len(entries := admin.dead_letter().list()) < len(poison_ids):
                assert time.monotonic() < deadline, f"{len(entries)} of {len(poison_ids)} in the dead letter"
                time.sleep(0.1)
        still_running = consumer.poll() is None
        output = _stop(consumer)
        by_id = {entry.message_id: entry for entry in entries}
        handled = Counter(service.handled())
        _report(
            "poison interleaved",
            good_sent=seq,
            good_handled=len(handled),
            poison_sent=len(poison_ids),
            poison_dead_lettered=len(by_id),
            kinds=len(kinds),
            consumer_still_running=still_running,
        )
        assert still_running, output
        assert set(handled) == set(range(seq)) and all(n == 1 for n in handled.values())
        assert set(by_id) == set(poison_ids)
        assert {(e.reason, e.attempts) for e in by_id.values()} == {("poison message", 1)}
    finally:
        service.cleanup()
