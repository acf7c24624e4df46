"""Shared fixtures: broker URLs (real RabbitMQ and Redis), transport configurations, handler modules on disk, and
for the TLS tests their certificates and a RabbitMQ node with an AMQPS listener."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from container_messaging.transports import EndpointTopology
from container_messaging.transports.memory import MemoryTransport

if TYPE_CHECKING:  # imported in the fixtures: support.rabbit_cluster reads this module's IN_CI
    from support.rabbit_cluster import RabbitNode
    from support.tls import CertificateFiles

AMQP_URL = os.environ.get("CONTAINER_MESSAGING_AMQP_URL", "pyamqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("CONTAINER_MESSAGING_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("CONTAINER_MESSAGING_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TRANSPORTS = ("memory", "embedded", "rabbitmq", "redis")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_broker(name: str, url: str, default_port: int) -> str:
    """The broker's URL; when it is unreachable: a failure in CI, a loud skip elsewhere."""
    if _reachable(url, default_port):
        return url
    message = f"{name} is not reachable at {urlsplit(url).hostname}:{urlsplit(url).port or default_port}"
    if IN_CI:
        pytest.fail(f"{message}: CI=true, so this is a failure, not a skip", pytrace=False)
    warnings.warn(f"SKIPPING {name} TESTS: {message}", stacklevel=2)
    sys.stderr.write(f"\n*** SKIPPING {name} TESTS: {message} ***\n")
    pytest.skip(message)


@pytest.fixture
def amqp_url() -> str:
    return require_broker("RabbitMQ", AMQP_URL, 5672)


@pytest.fixture
def redis_url() -> str:
    return require_broker("Redis", REDIS_URL, 6379)


@pytest.fixture(autouse=True)
def _fresh_memory_broker() -> Iterator[None]:
    MemoryTransport.reset()
    yield
    MemoryTransport.reset()


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL test database (the outbox's tests): a failure in CI, a loud skip elsewhere when unreachable."""
    return require_broker("PostgreSQL", POSTGRES_URL, 5432)


@pytest.fixture
def unique() -> str:
    """A short unique suffix so tests on a shared broker never see each other's queues."""
    return uuid.uuid4().hex[:10]


def transport_section(kind: str, tmp_path: Path) -> dict[str, Any]:
    if kind == "memory":
        return {"url": "memory://"}
    if kind == "embedded":
        return {"url": "embedded://", "data_folder": str(tmp_path / "embedded"), "polling_interval": 0.01}
    if kind == "rabbitmq":
        return {"url": require_broker("RabbitMQ", AMQP_URL, 5672)}
    if kind == "redis":
        return {"url": require_broker("Redis", REDIS_URL, 6379), "polling_interval": 0.01}
    raise ValueError(kind)


@pytest.fixture(params=TRANSPORTS)
def transport_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def distribution(unique: str) -> dict[str, str]:
    """A private exchange and queue prefix per test."""
    return {"exchange": f"test.distributed.{unique}", "queue_prefix": f"test_{unique}_"}


def forget_endpoint(container: Any, queue: str, delays: Iterable[int] = ()) -> None:
    """Removes an endpoint's queues (with its dead letter queue and delayed copies, ``delays`` naming those made by
    other processes), its bindings and the exchange from the broker, so tests on a shared broker leave nothing
    behind."""
    topology = EndpointTopology(container.topology.exchange, queue, ())
    all_delays = {*delays, *container.settings.recoverability.delayed_retries}
    container.transport.remove_endpoint(topology, all_delays)


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], str]]:
    """Writes a handler module (or package, for dotted names) under tmp_path, importable, with a unique name."""
    root = tmp_path / "modules"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    created: list[str] = []

    def make(name: str, source: str) -> str:
        parts = name.split(".")
        folder = root
        for package in parts[:-1]:
            folder = folder / package
            folder.mkdir(exist_ok=True)
            init = folder / "__init__.py"
            if not init.exists():
                init.write_text("")
        (folder / f"{parts[-1]}.py").write_text(textwrap.dedent(source))
        created.append(parts[0])
        return name

    yield make
    for top in created:
        for module in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            del sys.modules[module]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    """A test CA and the server and client certificates it signed (tests/support/tls.py), for one test module."""
    from support.tls import make_certificates

    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory, certificates: CertificateFiles) -> Iterator[RabbitNode]:
    """One RabbitMQ node whose AMQPS listener verifies peers and refuses clients without a certificate."""
    from support.rabbit_cluster import RabbitCluster, require_rabbitmq_server

    require_rabbitmq_server()
    folder = tmp_path_factory.mktemp("rabbit-tls")
    with RabbitCluster(folder, size=1, tls=certificates, require_client_certificate=True) as started:
        sys.stderr.write(f"\n{started!r} with TLS: booted in {started.boot_seconds:.1f} s\n")
        yield started.nodes[0]
