"""What the transports say when things go wrong: refusals for good (never retried), lost connections (retried, then
one error saying what is known), TLS problems naming their cause, and owner-only files of the embedded transport."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import subprocess
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from container_messaging.errors import BrokerRefusedError, TransportError, UnroutableMessageError
from container_messaging.transports import EndpointTopology, OutboundMessage, TransportOptions, create_transport
from container_messaging.transports.embedded import DATABASE_FILE_NAME

from conftest import IN_CI

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "Sup3r-S3cret-pw"


def _message() -> OutboundMessage:
    message_id = str(uuid.uuid4())
    return OutboundMessage("billing.changed", b"{}", {"id": message_id}, "application/json", message_id)


def _with_credentials(url: str, user: str, password: str, path: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path if path is None else path, "", ""))


def _retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "reconnecting" in r.getMessage()]


# -- refusals for good --------------------------------------------------------------------------------------------


def test_rabbitmq_bad_credentials_are_refused_at_once(amqp_url: str, caplog: pytest.LogCaptureFixture):
    """A wrong RabbitMQ password is a BrokerRefusedError (ACCESS_REFUSED) on the first attempt, not retried, naming
    the URL without its password."""
    caplog.set_level(logging.INFO, "container_messaging")
    transport = create_transport(TransportOptions(url=_with_credentials(amqp_url, "guest", PASSWORD)))
    with pytest.raises(BrokerRefusedError, match="ACCESS_REFUSED") as caught:
        transport.publish("ecotone.distributed", _message(), mandatory=True)
    assert "guest:***@" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert _retry_lines(caplog) == []


def test_rabbitmq_unknown_vhost_is_refused_for_consumers_and_administration(amqp_url: str, unique: str):
    """An unknown vhost is a BrokerRefusedError (NOT_ALLOWED) when a receiver opens and when a queue is sized."""
    transport = create_transport(TransportOptions(url=_with_credentials(amqp_url, "guest", "guest", f"/nope_{unique}")))
    with pytest.raises(BrokerRefusedError, match="NOT_ALLOWED"):
        transport.open_receiver("some_queue", prefetch_count=1)
    with pytest.raises(BrokerRefusedError, match="NOT_ALLOWED"):
        transport.queue_size("some_queue")


def test_redis_wrong_password_is_refused_at_once(redis_url: str, caplog: pytest.LogCaptureFixture):
    """Redis answering WRONGPASS is a BrokerRefusedError on the first attempt, not retried, without the password."""
    caplog.set_level(logging.INFO, "container_messaging")
    transport = create_transport(TransportOptions(url=_with_credentials(redis_url, "nobody", PASSWORD)))
    started = time.monotonic()
    with pytest.raises(BrokerRefusedError) as caught:
        transport.publish("ecotone.distributed", _message(), mandatory=True)
    assert time.monotonic() - started < 1.5  # neither kombu nor this project waited to retry
    assert PASSWORD not in str(caught.value)
    assert _retry_lines(caplog) == []


# -- lost connections ---------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_broker_is_retried_then_reported_as_not_sent(caplog: pytest.LogCaptureFixture):
    """With nobody listening, a publish is tried publish_retries + 1 times (each retry logged at INFO, no warning),
    then one TransportError says the message was not sent, naming the action and the URL without password."""
    caplog.set_level(logging.INFO, "container_messaging")
    url = f"pyamqp://guest:{PASSWORD}@127.0.0.1:{_closed_port()}//"
    transport = create_transport(TransportOptions(url=url, publish_retries=2, connect_timeout=1))
    message = _message()
    with pytest.raises(TransportError, match="not sent after 3 attempt") as caught:
        transport.publish("ecotone.distributed", message, mandatory=True)
    assert message.message_id in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert len(_retry_lines(caplog)) == 2
    assert all(r.levelno == logging.INFO for r in caplog.records if "reconnecting" in r.getMessage())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_publish_that_failed_after_sending_is_reported_as_unknown(monkeypatch: pytest.MonkeyPatch):
    """When every attempt fails after handing the message to the broker client, the error says the message may or
    may not have reached the broker (not that connecting failed)."""
    transport: Any = create_transport(TransportOptions(url="memory://", publish_retries=1))
    transport.setup_endpoint(EndpointTopology("ecotone.distributed", "some_queue", ("billing.#",)))

    def cut(*args: Any) -> None:
        raise ConnectionResetError("connection reset while waiting for the confirm")

    monkeypatch.setattr(transport, "publish_once", cut)
    with pytest.raises(TransportError, match="may or may not have reached the broker after 2 attempt"):
        transport.publish("ecotone.distributed", _message(), mandatory=True)


def _batch_endpoint(amqp_url: str, unique: str, **options: Any) -> tuple[Any, EndpointTopology]:
    transport = create_transport(TransportOptions(url=amqp_url, **options))
    topology = EndpointTopology(f"test.batch.{unique}", f"test_batch_{unique}", ("billing.#",))
    transport.setup_endpoint(topology)
    return transport, topology


def test_a_failed_batch_names_every_message_by_what_is_known(amqp_url: str, unique: str):
    """A batch the broker breaks off (a message over RabbitMQ's frame size closes the connection) raises one
    TransportError that names every message of the batch under what is known of it."""
    transport, topology = _batch_endpoint(amqp_url, unique, publish_retries=0)
    big = _message()
    big = OutboundMessage(
        big.routing_key, big.body, {"id": big.message_id, "big": "x" * 200_000}, big.content_type, big.message_id
    )
    batch = [(_message(), True), (big, True), (_message(), True)]
    try:
        with pytest.raises(TransportError, match="FRAME_ERROR") as caught:
            transport.publish_many(topology.exchange, batch)
        text = str(caught.value)
        assert "Of the batch of 3: confirmed [" in text
        assert all(message.message_id in text for message, _ in batch)
    finally:
        transport.remove_endpoint(topology)
        transport.close()


def test_a_batch_with_an_unroutable_message_names_it_and_publishes_the_others(amqp_url: str, unique: str):
    """In a confirmed batch, a mandatory message no queue is bound for raises UnroutableMessageError naming its id
    and routing key, and the other messages are on the queue."""
    transport, topology = _batch_endpoint(amqp_url, unique)
    lost = OutboundMessage("nobody.listens", b"{}", {"id": "lost-1"}, "application/json", "lost-1")
    try:
        with pytest.raises(UnroutableMessageError, match=r"1 of 3 messages were returned.*'nobody\.listens'.*lost-1"):
            transport.publish_many(topology.exchange, [(_message(), True), (lost, True), (_message(), True)])
        assert transport.queue_size(topology.queue) == 2
    finally:
        transport.remove_endpoint(topology)
        transport.close()


# -- TLS ----------------------------------------------------------------------------------------------------------


def _need(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        message = f"{program} is not installed"
        if IN_CI:
            pytest.fail(f"{message}: CI=true, so this is a failure, not a skip", pytrace=False)
        pytest.skip(message)
    return found


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start") from None
            time.sleep(0.05)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., int]]:
    """Starts redis-server processes of this test on free loopback ports (with the given arguments); stops them."""
    server = _need("redis-server")
    processes: list[subprocess.Popen[bytes]] = []

    def start(*arguments: str, tls: bool = False) -> int:
        port = _closed_port()
        listen = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
        command = [server, *listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *arguments]
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(process)
        _wait_for_port(port, process)
        return port

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    openssl = _need("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1"]
    subprocess.run(
        [openssl, *request, "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_redis_without_a_password_is_refused_by_a_protected_server(private_redis: Callable[..., int]):
    """A Redis server that requires a password answers NOAUTH to a client without one: a BrokerRefusedError, at
    once (kombu's own connection retry is not used)."""
    port = private_redis("--requirepass", PASSWORD)
    transport = create_transport(TransportOptions(url=f"redis://127.0.0.1:{port}/0"))
    started = time.monotonic()
    with pytest.raises(BrokerRefusedError, match=r"redis://127\.0\.0\.1"):
        transport.queue_size("some_queue")
    assert time.monotonic() - started < 1.5


def _tls_server(private_redis: Callable[..., int], certificate: tuple[Path, Path]) -> int:
    cert, key = certificate
    arguments = ("--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert))
    return private_redis(*arguments, "--tls-auth-clients", "no", tls=True)


def test_rediss_with_the_right_ca_talks_tls(private_redis: Callable[..., int], certificate: tuple[Path, Path]):
    """rediss:// with ssl_ca_certs set to the server's CA publishes and receives over a TLS-only server."""
    port = _tls_server(private_redis, certificate)
    options = TransportOptions(url=f"rediss://127.0.0.1:{port}/0", ssl_ca_certs=str(certificate[0]))
    transport = create_transport(options)
    topology = EndpointTopology("ecotone.distributed", "tls_queue", ("billing.#",))
    transport.setup_endpoint(topology)
    sent = _message()
    transport.publish(topology.exchange, sent, mandatory=True)
    with transport.open_receiver(topology.queue, prefetch_count=1) as receiver:
        delivery = receiver.receive(10)
        assert delivery is not None
        assert delivery.headers["id"] == sent.message_id
        delivery.ack()
    transport.close()


def test_rediss_verification_failure_names_the_cause(private_redis: Callable[..., int], certificate: tuple[Path, Path]):
    """A server certificate the default CAs do not verify is an error saying that TLS verification failed and
    pointing at transport.ssl_ca_certs."""
    port = _tls_server(private_redis, certificate)
    transport = create_transport(TransportOptions(url=f"rediss://127.0.0.1:{port}/0", publish_retries=0))
    with pytest.raises(TransportError, match=r"CERTIFICATE_VERIFY_FAILED.*default CA certificates.*ssl_ca_certs"):
        transport.queue_size("some_queue")


def test_rediss_to_a_plain_redis_port_fails_within_the_connect_timeout(private_redis: Callable[..., int]):
    """A TLS client talking to a server that does not speak TLS gets an error within seconds (both sides would
    otherwise wait for each other forever)."""
    port = private_redis()
    transport = create_transport(TransportOptions(url=f"rediss://127.0.0.1:{port}/0", connect_timeout=1))
    started = time.monotonic()
    with pytest.raises(TransportError, match=f"rediss://127\\.0\\.0\\.1:{port}"):
        transport.queue_size("some_queue")
    assert time.monotonic() - started < 5


# -- files and packaging ------------------------------------------------------------------------------------------


def test_the_embedded_folder_and_database_are_owner_only(tmp_path: Path):
    """A new embedded data folder is created 0700 and its database files (with -wal and -shm) 0600."""
    folder = tmp_path / "broker"
    transport = create_transport(TransportOptions(url="embedded://", data_folder=str(folder)))
    transport.setup_endpoint(EndpointTopology("ecotone.distributed", "some_queue", ("billing.#",)))
    transport.publish("ecotone.distributed", _message(), mandatory=True)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(path.name for path in folder.iterdir())
    assert files == [DATABASE_FILE_NAME, f"{DATABASE_FILE_NAME}-shm", f"{DATABASE_FILE_NAME}-wal"]
    assert {name: stat.S_IMODE(os.stat(folder / name).st_mode) for name in files} == dict.fromkeys(files, 0o600)
    transport.close()


def test_the_redis_extra_installs_what_kombus_redis_transport_imports():
    """The ``redis`` extra lists redis and packaging, and kombu's Redis transport imports in this environment."""
    extras = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {requirement.split(">")[0].split("=")[0].strip() for requirement in extras["redis"]}
    assert {"redis", "packaging"} <= names
    import kombu.transport.redis

    assert kombu.transport.redis.Transport.driver_name == "redis"
