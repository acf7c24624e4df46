"""Fault tests with real brokers: consumers killed with SIGKILL (also while they wait, frozen with SIGSTOP),
connections cut or blackholed mid-stream, poison and garbage interleaved with good messages, failing handlers, a dead
letter queue that is deleted or refuses copies. Each prints its figures (run pytest with -s to see them; the README's
Reliability table comes from them).

Consumers run as separate OS processes (the ``container-messaging run`` command); their handler appends each
handled message's sequence number to a file with one unbuffered write per line, which survives SIGKILL.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kombu
import psutil
import pytest
import redis

from container_messaging import DistributedBus, MessagingContainer
from container_messaging.errors import TransportError
from container_messaging.transports import OutboundMessage
from container_messaging.transports.redis import keys as redis_keys

from conftest import AMQP_URL, IN_CI, REDIS_URL, forget_endpoint, require_broker
from support.proxy import TcpProxy

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

    @distributed
    @command_handler("fault.fail")
    def fail(self, command: dict) -> None:
        os.write(LOG, b"failed\\n")
        raise RuntimeError("fails on purpose")
"""


class Service:
    """One service's files: its handler module, its config, its handled log; and its consumer processes.

    ``url`` is what the consumers use (maybe through a proxy); ``admin_url`` what the test itself uses to declare
    and clean up (the broker directly)."""

    def __init__(
        self,
        tmp_path: Path,
        unique: str,
        url: str,
        *,
        dedup: str = "memory",
        admin_url: str | None = None,
        transport: dict[str, Any] | None = None,
        recoverability: str = "immediate_retries: 0\n  delayed_retries: []",
    ) -> None:
        self.name = f"fault{unique}"
        self.exchange = f"test.faults.{unique}"
        self.queue = f"distributed_{self.name}"
        self.log = tmp_path / "handled.log"
        modules = tmp_path / "modules"
        modules.mkdir()
        module = f"fault_handlers_{unique}"
        (modules / f"{module}.py").write_text(textwrap.dedent(HANDLERS))
        self._options = {"prefetch_count": 10, "heartbeat": 10, **(transport or {})}
        self._sections = (
            f"distribution:\n  exchange: {self.exchange}\n"
            f"recoverability:\n  {recoverability}\n"
            f"deduplication:\n  store: '{dedup}'\n  window: 600\n"
            f"consumer:\n  max_message_size: 4096\n"
        )
        self.module = module
        self.config = self._config(url)
        self.env = {**os.environ, "FAULT_LOG": str(self.log), "PYTHONPATH": str(modules)}
        self.url = url
        self.admin_url = admin_url or url
        self.runs = 0
        self.consumers: list[Consumer] = []

    def _config(self, url: str) -> Path:
        """The service's configuration file with ``url`` as its transport's URL."""
        path = self.log.with_name(f"service-{len(list(self.log.parent.glob('service*.yaml')))}.yaml")
        options = "".join(f"  {key}: {value}\n" for key, value in self._options.items())
        path.write_text(
            f"service_name: {self.name}\nscan: [{self.module}]\ntransport:\n  url: '{url}'\n{options}{self._sections}"
        )
        return path

    def consumer(self, *extra: str, url: str | None = None) -> Consumer:
        """A consumer process (``url``: another transport URL than the service's, e.g. the broker's own)."""
        self.runs += 1
        config = self.config if url is None else self._config(url)
        consumer = Consumer(
            [sys.executable, "-m", "container_messaging", "--config", str(config), "run", self.name, "-v", *extra],
            self.env,
            self.log.with_name(f"consumer-{self.runs}.log"),
        )
        self.consumers.append(consumer)
        return consumer

    def admin(self) -> MessagingContainer:
        """A container of this service on the broker itself (never through a proxy), to declare and inspect."""
        return MessagingContainer.from_dict(
            {
                "service_name": self.name,
                "transport": {"url": self.admin_url},
                "distribution": {"exchange": self.exchange},
            }
        )

    def setup(self) -> None:
        """Declares the service's queue and bindings directly on the broker (as ``container-messaging setup``)."""
        with self.admin() as container:
            container.setup()

    def container(self, url: str | None = None, **transport: Any) -> MessagingContainer:
        """A sender (it never consumes, so it declares no queue of its own)."""
        return MessagingContainer.from_dict(
            {
                "service_name": f"{self.name}sender",
                "transport": {"url": url or self.admin_url, **transport},
                "distribution": {"exchange": self.exchange},
            }
        )

    def handled(self) -> list[int]:
        if not self.log.exists():
            return []
        return [int(line) for line in self.log.read_text().splitlines() if line.strip().isdigit()]

    def wait_until(self, count: int, process: Consumer, seconds: float = 120) -> None:
        """Waits (bounded) until ``count`` distinct messages were handled."""
        if not self.wait_for(count, process, seconds):
            raise AssertionError(
                f"only {len(set(self.handled()))} of {count} handled after {seconds} s:\n{process.output()[-3000:]}"
            )

    def wait_for(self, count: int, process: Consumer, seconds: float) -> bool:
        """Whether ``count`` distinct messages were handled within ``seconds`` (the consumer must keep running)."""
        deadline = time.monotonic() + seconds
        while len(set(self.handled())) < count:
            if process.poll() is not None:
                raise AssertionError(f"consumer exited early:\n{process.output()}")
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def cleanup(self, delays: tuple[int, ...] = ()) -> None:
        """Ends the consumer processes this test started (a failed test leaves none behind), then removes the
        queues, the dead letter and the exchange from the broker."""
        for consumer in self.consumers:
            if consumer.poll() is None:
                consumer.process.kill()
                consumer.process.wait(timeout=10)
        with self.admin() as container:
            forget_endpoint(container, self.queue, delays)


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


@pytest.mark.rabbitmq
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


@pytest.fixture
def proxy(amqp: str) -> Iterator[TcpProxy]:
    running = TcpProxy(_address(amqp))
    yield running
    running.close()


@pytest.mark.rabbitmq
def test_connection_cut_mid_stream_consumer_and_publisher_carry_on(
    amqp: str, tmp_path: Path, unique: str, proxy: TcpProxy
) -> None:
    """The broker connections are cut twice mid-stream (a TCP proxy the test runs): the consumer reconnects and the
    publisher (with confirms) retries; every command is handled, none is lost."""
    proxied = proxy.url(amqp)
    service = Service(tmp_path, unique, proxied, admin_url=amqp)
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


@pytest.mark.rabbitmq
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


@pytest.mark.rabbitmq
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


@pytest.mark.rabbitmq
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


# -- every broker: killed while waiting, killed at random, blackholed ----------------------------------------------


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (6379 if parts.scheme.startswith("redis") else 5672)


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> str:
    """The URL of the broker the test is parametrized with (``redis`` or ``rabbitmq``)."""
    if request.param == "redis":
        return require_broker("Redis", REDIS_URL, 6379)
    return require_broker("RabbitMQ", AMQP_URL, 5672)


BROKERS = [pytest.param("redis", marks=pytest.mark.redis), pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)]


def _waiting(consumer: Consumer, service: Service) -> bool:
    """Whether the consumer process sits in its broker read: on Redis one of its connections is blocked in a read
    command on the server (XREADGROUP, or BRPOP for the former transport); on RabbitMQ the queue has its consumer."""
    if not service.admin_url.startswith("redis"):
        with kombu.Connection(service.admin_url) as connection:
            return int(connection.channel().queue_declare(service.queue, passive=True).consumer_count) > 0
    port = _address(service.admin_url)[1]
    try:
        process = psutil.Process(consumer.process.pid)
        ports = {c.laddr.port for c in process.net_connections("tcp") if c.raddr and c.raddr.port == port}
    except psutil.NoSuchProcess:
        return False
    client = redis.Redis.from_url(service.admin_url)
    try:
        clients = client.client_list()
    finally:
        client.close()
    return any(int(c["addr"].rpartition(":")[2]) in ports and "b" in c["flags"] for c in clients)


def _freeze_while_waiting(consumer: Consumer, service: Service) -> None:
    """SIGSTOPs ``consumer`` at a moment it sits in its broker read (found so again once frozen; else it is let go
    on and tried again)."""
    deadline = time.monotonic() + 60
    while True:
        if consumer.poll() is not None:
            raise AssertionError(f"consumer exited early:\n{consumer.output()}")
        assert time.monotonic() < deadline, f"the consumer never sat waiting:\n{consumer.output()}"
        if _waiting(consumer, service):
            consumer.send_signal(signal.SIGSTOP)
            if _waiting(consumer, service):
                return
            consumer.send_signal(signal.SIGCONT)
        time.sleep(0.02)


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_a_consumer_killed_while_it_waits_loses_nothing(broker: str, tmp_path: Path, unique: str) -> None:
    """Ten times: a consumer process sits waiting in its broker read, is frozen (SIGSTOP), one command is published
    and the consumer is killed (SIGKILL). A last consumer then handles all ten commands: none is lost."""
    # heartbeat 2: on Redis a killed consumer's alive key expires after 2 s, and its messages are taken over
    options = {"heartbeat": 2, "polling_interval": 1, "visibility_timeout": 5}
    service = Service(tmp_path, unique, broker, transport=options)
    rounds = 10
    try:
        service.setup()
        with service.container() as sender:
            bus = sender.get(DistributedBus)
            for seq in range(rounds):
                consumer = service.consumer()
                _freeze_while_waiting(consumer, service)
                _send(bus, service.name, range(seq, seq + 1))
                consumer.send_signal(signal.SIGKILL)
                consumer.wait(timeout=30)
        last = service.consumer()
        started = time.monotonic()
        service.wait_for(rounds, last, seconds=60)
        recovered_in = time.monotonic() - started
        _stop(last)
        counts = Counter(service.handled())
        lost = rounds - len(counts)
        _report(
            f"SIGSTOP while waiting, one command, SIGKILL x{rounds} ({broker.partition(':')[0]})",
            sent=rounds,
            handled=len(counts),
            lost=lost,
            handled_twice=sum(n - 1 for n in counts.values()),
            all_handled_by_the_last_consumer_within=f"{recovered_in:.1f}s",
        )
        assert lost == 0
        assert set(counts) == set(range(rounds))
    finally:
        service.cleanup()


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_random_kills_lose_nothing(broker: str, tmp_path: Path, unique: str) -> None:
    """5,000 commands published at a steady pace while consumer processes are SIGKILLed at random moments (at least
    12 times, each 0.2 to 1.5 s after it started consuming) and started again: every command is handled, none is
    lost (the duplicates are counted)."""
    rng = random.Random(unique)
    service = Service(tmp_path, unique, broker, transport={"heartbeat": 2, "visibility_timeout": 30})
    total, kills = 5000, 0
    published = threading.Event()
    failures: list[BaseException] = []

    def publish() -> None:
        try:
            with service.container() as sender:
                bus = sender.get(DistributedBus)
                for start in range(0, total, 25):
                    _send(bus, service.name, range(start, min(total, start + 25)))
                    time.sleep(0.1)  # paced over about 20 s: the consumers are killed both working and waiting
        except BaseException as exc:
            failures.append(exc)
        finally:
            published.set()

    try:
        service.setup()
        publisher = threading.Thread(target=publish)
        publisher.start()
        while not published.is_set() or kills < 12:
            consumer = service.consumer()
            deadline = time.monotonic() + 60
            while "consuming queue" not in consumer.output():
                assert consumer.poll() is None and time.monotonic() < deadline, consumer.output()
                time.sleep(0.02)
            time.sleep(rng.uniform(0.2, 1.5))  # the fault injected: a kill at a random moment
            consumer.send_signal(signal.SIGKILL)
            consumer.wait(timeout=30)
            kills += 1
        publisher.join()
        assert not failures, failures
        last = service.consumer()
        service.wait_for(total, last, seconds=120)
        output = _stop(last)
        counts = Counter(service.handled())
        lost = total - len(counts)
        _report(
            f"random SIGKILLs while publishing ({broker.partition(':')[0]})",
            sent=total,
            handled=len(counts),
            lost=lost,
            handled_twice=sum(n - 1 for n in counts.values()),
            kills=kills,
        )
        assert lost == 0, output[-3000:]
    finally:
        service.cleanup()


def _wait_until_quiet(service: Service, consumer: Consumer) -> None:
    """Waits (bounded) until ``consumer`` handled nothing for a second: it waits on its dead connection."""
    deadline = time.monotonic() + 30
    count, since = len(service.handled()), time.monotonic()
    while time.monotonic() - since < 1.0:
        assert consumer.poll() is None and time.monotonic() < deadline, consumer.output()
        time.sleep(0.1)
        if len(service.handled()) != count:
            count, since = len(service.handled()), time.monotonic()


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_sigterm_stops_a_consumer_on_a_blackholed_connection_within_seconds(
    broker: str, tmp_path: Path, unique: str
) -> None:
    """Mid-stream, the consumer's connection goes through a proxy that stops forwarding without closing anything;
    once the consumer has gone quiet, SIGTERM stops the process within a few seconds (connect_timeout 2), exit code
    0, and a fresh consumer on the broker handles every command: none is lost."""
    proxy = TcpProxy(_address(broker))
    # On Redis, heartbeat 2 lets a fresh consumer take the stopped one's messages over after 2 s. On RabbitMQ the
    # heartbeat stays long, so that it is the bounded waits, not missed heartbeats, that free the consumer.
    options = {"connect_timeout": 2, "heartbeat": 2 if broker.startswith("redis") else 30}
    service = Service(tmp_path, unique, proxy.url(broker), admin_url=broker, transport=options)
    total = 300
    try:
        service.setup()
        with service.container() as sender:
            _send(sender.get(DistributedBus), service.name, range(total))
        consumer = service.consumer()
        service.wait_until(50, consumer)
        proxy.blackhole()
        _wait_until_quiet(service, consumer)
        started = time.monotonic()
        consumer.send_signal(signal.SIGTERM)
        try:
            output = consumer.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 60 s after SIGTERM:\n{consumer.output()[-3000:]}") from None
        stop_seconds = time.monotonic() - started
        proxy.close()  # RabbitMQ sees the connection end and gives its unacknowledged messages back
        fresh = service.consumer(url=broker)
        service.wait_for(total, fresh, seconds=60)
        _stop(fresh)
        counts = Counter(service.handled())
        lost = total - len(counts)
        _report(
            f"blackholed connection, then SIGTERM ({broker.partition(':')[0]})",
            sent=total,
            handled=len(counts),
            lost=lost,
            handled_twice=sum(n - 1 for n in counts.values()),
            stopped_after_sigterm_in=f"{stop_seconds:.1f}s",
            exit_code=consumer.returncode,
        )
        assert consumer.returncode == 0, output[-3000:]
        assert stop_seconds < 8, output[-3000:]
        assert lost == 0
    finally:
        proxy.close()
        service.cleanup()


@pytest.mark.parametrize(
    ("broker", "outcome"),
    [
        # RabbitMQ: the message was written, its confirm never came
        pytest.param("rabbitmq", "may or may not have reached the broker", marks=pytest.mark.rabbitmq),
        # Redis: the routing read got no answer, so the message was never written
        pytest.param("redis", "not sent", marks=pytest.mark.redis),
    ],
    indirect=["broker"],
)
def test_a_publish_on_a_blackholed_connection_fails_within_its_bounds(
    broker: str, outcome: str, tmp_path: Path, unique: str
) -> None:
    """A sender whose connection stops answering gets a TransportError within a few seconds (connect_timeout 1,
    reply_timeout 1, one retry) that says what is known of the message; before the blackhole a publish worked."""
    proxy = TcpProxy(_address(broker))
    service = Service(tmp_path, unique, proxy.url(broker), admin_url=broker)
    try:
        service.setup()
        bounds = {"connect_timeout": 1, "reply_timeout": 1, "publish_retries": 1}
        with service.container(proxy.url(broker), **bounds) as sender:
            bus = sender.get(DistributedBus)
            _send(bus, service.name, range(1))
            proxy.blackhole()
            started = time.monotonic()
            with pytest.raises(TransportError) as caught:
                _send(bus, service.name, range(1, 2))
            seconds = time.monotonic() - started
        _report(
            f"publish on a blackholed connection ({broker.partition(':')[0]})",
            failed_after=f"{seconds:.1f}s",
            error=str(caught.value).split(": ", 1)[1][:90],
        )
        assert f"{outcome} after 2 attempt(s)" in str(caught.value)
        assert seconds < 6
    finally:
        proxy.close()
        service.cleanup()


# -- Redis: garbage -----------------------------------------------------------------------------------------------


def _command_headers(target: str, message_id: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "ecotone.distributed.payloadType": "command",
        "ecotone.distributed.routingKey": "fault.work",
        "ecotone.distributed.targetServiceName": target,
        "contentType": "application/json",
    }


def _kombu_envelope(body: bytes, headers: dict[str, Any], *, body_text: str | None = None) -> bytes:
    """A message as kombu's Redis transport (this project's before streams) kept it in its lists."""
    import base64
    import json

    encoded = body_text if body_text is not None else base64.b64encode(body).decode()
    return json.dumps(
        {
            "body": encoded,
            "content-encoding": "binary",
            "content-type": "application/json",
            "headers": headers,
            "properties": {"body_encoding": "base64", "delivery_mode": 2, "priority": 0},
        }
    ).encode()


@pytest.mark.redis
def test_garbage_on_a_redis_queue_goes_to_the_dead_letter_as_it_is_and_the_consumer_goes_on(
    tmp_path: Path, unique: str
) -> None:
    """Items that are not messages, left in the former transport's list (not JSON, bad base64) and added to the
    queue's stream among good commands while a consumer runs (no body, headers not JSON, not an object, NaN in
    them, a binary content type, a foreign field): every good command is handled (the former list's too), every
    garbage item is in the dead letter with its raw bytes and the reason, and the consumer still runs."""
    url = require_broker("Redis", REDIS_URL, 6379)
    service = Service(tmp_path, unique, url)
    client = redis.Redis.from_url(url)
    stream = redis_keys.queue_key(service.queue)
    legacy_garbage = {b"not json at all": "legacy", _kombu_envelope(b"", {}, body_text="%%% not base64 %%%"): "legacy"}
    stream_garbage = [
        {b"headers": b"{}", b"content_type": b"application/json"},
        {b"body": b"{}", b"headers": b"{not json"},
        {b"body": b"{}", b"headers": b"[1, 2]"},
        {b"body": b"{}", b"headers": b'{"id": NaN}'},
        {b"body": b"{}", b"headers": b"{}", b"content_type": b"\xff\xfe"},
        {b"payload": b'{"seq": 1}'},
    ]
    good = 40
    try:
        for item in legacy_garbage:
            client.lpush(service.queue, item)
        client.lpush(service.queue, _kombu_envelope(b'{"seq": 1000}', _command_headers(service.name, "legacy-good")))
        service.setup()  # moves the former transport's list over
        consumer = service.consumer()
        with service.container() as sender:
            bus = sender.get(DistributedBus)
            for seq in range(good):
                _send(bus, service.name, range(seq, seq + 1))
                if seq % 6 == 0 and seq // 6 < len(stream_garbage):
                    client.xadd(stream, stream_garbage[seq // 6])
        service.wait_until(good + 1, consumer, seconds=30)
        expected = len(legacy_garbage) + len(stream_garbage)
        with service.admin() as admin:
            deadline = time.monotonic() + 30
            while len(entries := admin.dead_letter().list()) < expected:
                assert time.monotonic() < deadline, f"{len(entries)} of {expected} in the dead letter"
                time.sleep(0.1)
        still_running = consumer.poll() is None
        output = _stop(consumer)
        _report(
            "garbage on a Redis queue",
            good_sent=good + 1,
            good_handled=len(set(service.handled())),
            garbage_sent=expected,
            garbage_dead_lettered=len(entries),
            consumer_still_running=still_running,
        )
        assert still_running, output
        assert set(service.handled()) == {*range(good), 1000}
        assert {entry.reason for entry in entries} == {"malformed entry"}
        assert all(entry.error_message for entry in entries)
        raw = {entry.body for entry in entries}
        assert set(legacy_garbage) <= raw
        assert {b"{}"} <= raw  # the body of the entries that had one, as it was
        assert client.llen(service.queue) == 0
    finally:
        client.delete(service.queue)
        client.close()
        service.cleanup()


# -- RabbitMQ: the copies of a failed message ---------------------------------------------------------------------


def _rabbitmqctl(*arguments: str) -> None:
    """Runs rabbitmqctl on the local node (policies); skipped loudly when it is not there or not allowed, except in
    CI."""
    program = shutil.which("rabbitmqctl")
    result = (
        subprocess.run([program, "-q", *arguments], check=False, capture_output=True, text=True, timeout=60)
        if program
        else None
    )
    if result is None or result.returncode:
        message = f"rabbitmqctl {' '.join(arguments[:2])} failed: {result.stderr.strip() if result else 'not found'}"
        if IN_CI:
            pytest.fail(f"{message}: CI=true, so this is a failure, not a skip", pytrace=False)
        sys.stderr.write(f"\n*** SKIPPING: {message} ***\n")
        pytest.skip(message)


class RefusingPolicy:
    """A policy making the queues it names refuse every message (max-length 0, reject-publish: a confirmed publish
    is nacked, an unconfirmed one dropped)."""

    def __init__(self, amqp: str, unique: str) -> None:
        self.name, self.vhost, self.applied = f"refuse-{unique}", urlsplit(amqp).path[1:] or "/", False

    def apply(self, pattern: str) -> None:
        definition = '{"max-length": 0, "overflow": "reject-publish"}'
        _rabbitmqctl("set_policy", "-p", self.vhost, self.name, pattern, definition, "--apply-to", "queues")
        self.applied = True

    def lift(self) -> None:
        if self.applied:
            _rabbitmqctl("clear_policy", "-p", self.vhost, self.name)
            self.applied = False


@pytest.fixture
def refusing_policy(amqp: str, unique: str) -> Iterator[RefusingPolicy]:
    policy = RefusingPolicy(amqp, unique)
    yield policy
    policy.lift()


@pytest.mark.rabbitmq
@pytest.mark.parametrize(
    ("copy", "confirm_publish"), [("dead letter", False), ("dead letter", True), ("delayed retry", False)]
)
def test_a_copy_the_broker_refuses_leaves_the_original_on_its_queue(
    amqp: str, tmp_path: Path, unique: str, refusing_policy: RefusingPolicy, copy: str, confirm_publish: bool
) -> None:
    """While the dead letter queue (or the delay queue) refuses every message, a failed message is never
    acknowledged: it is still on its queue after the consumer ran, with or without publisher confirms; once the
    refusal is lifted, its copy reaches the dead letter (or the delay queue) and the queue is empty."""
    dead = copy == "dead letter"
    service = Service(
        tmp_path,
        unique,
        amqp,
        transport={"confirm_publish": str(confirm_publish).lower()},
        recoverability="immediate_retries: 0\n  delayed_retries: [60000]",
    )
    delay_queue = f"{service.queue}.delay.60000"
    try:
        service.setup()
        refusing_policy.apply(rf"^{service.queue}\.(dead_letter|delay\.60000)$")
        with service.container() as sender:
            if dead:  # poison: a body that does not fit the handler's type goes to the dead letter at once
                sender.get(DistributedBus).send_command(service.name, "fault.typed", '{"seq": "x"}', "application/json")
            else:  # a failing handler: a delayed retry copy
                sender.get(DistributedBus).send_command(service.name, "fault.fail", "{}", "application/json")
        refused = service.consumer("--execution-time-limit", "4000")
        output = refused.wait(timeout=60)
        with service.admin() as admin:
            still_queued = admin.transport.queue_size(service.queue)
            copies = admin.transport.queue_size(dead_letter_queue_name(service) if dead else delay_queue)
        refusing_policy.lift()
        service.consumer("--finish-when-no-messages").wait(timeout=60)
        with service.admin() as admin:
            after = admin.transport.queue_size(service.queue)
            copies_after = admin.transport.queue_size(dead_letter_queue_name(service) if dead else delay_queue)
        _report(
            f"{copy} copy refused (confirm_publish {confirm_publish})",
            on_its_queue_while_refused=still_queued,
            copies_while_refused=copies,
            on_its_queue_after=after,
            copies_after=copies_after,
        )
        assert (still_queued, copies) == (1, 0), output[-3000:]
        assert (after, copies_after) == (0, 1)
    finally:
        service.cleanup(delays=(60000,))


def dead_letter_queue_name(service: Service) -> str:
    return f"{service.queue}.dead_letter"


@pytest.mark.rabbitmq
@pytest.mark.parametrize("confirm_publish", [False, True])
def test_a_dead_letter_queue_deleted_while_the_consumer_runs_is_declared_again(
    amqp: str, tmp_path: Path, unique: str, confirm_publish: bool
) -> None:
    """The dead letter queue is deleted while a consumer process runs; a poison message then still reaches the dead
    letter (the queue is declared again), and the consumer runs on."""
    service = Service(tmp_path, unique, amqp, transport={"confirm_publish": str(confirm_publish).lower()})
    try:
        service.setup()
        consumer = service.consumer()
        deadline = time.monotonic() + 60
        while not _waiting(consumer, service):
            assert consumer.poll() is None and time.monotonic() < deadline, consumer.output()
            time.sleep(0.05)
        with kombu.Connection(amqp) as connection:
            connection.channel().queue_delete(dead_letter_queue_name(service))
        with service.container() as sender:
            sender.get(DistributedBus).send_command(service.name, "fault.typed", '{"seq": "x"}', "application/json")
        with service.admin() as admin:
            deadline = time.monotonic() + 30
            while not (entries := admin.dead_letter().list()):
                assert time.monotonic() < deadline and consumer.poll() is None, consumer.output()
                time.sleep(0.1)
            left = admin.transport.queue_size(service.queue)
        still_running = consumer.poll() is None
        _report(f"dead letter queue deleted (confirm_publish {confirm_publish})", dead_lettered=len(entries))
        assert [entry.reason for entry in entries] == ["poison message"]
        assert left == 0 and still_running
    finally:
        service.cleanup()
