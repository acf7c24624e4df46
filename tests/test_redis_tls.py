"""Redis over TLS with client certificates, through the Redis adapter: a redis-server of the test's own with a TLS-only
port that verifies clients against the test CA (tests/support/tls.py). The server-side checks (the right CA, a
verification failure naming its cause, TLS to a plain port) are in tests/test_transport_errors.py.

Run alone with ``pytest -m tls``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from container_messaging.errors import TransportError
from container_messaging.transports import TransportOptions, create_transport

from conftest import IN_CI
from support.rabbit_cluster import accepts_connections, free_ports
from support.tls import CertificateFiles, assert_round_trip

pytestmark = pytest.mark.tls

STARTUP_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, certificates: CertificateFiles) -> Iterator[int]:
    """A redis-server whose only port speaks TLS and refuses clients without a certificate of the test CA."""
    server = shutil.which("redis-server")
    if server is None:
        reason = "redis-server is not installed (Debian package redis-server)"
        if IN_CI:
            pytest.fail(f"{reason}: CI=true, so this is a failure, not a skip", pytrace=False)
        warnings.warn(f"SKIPPING REDIS TLS TESTS: {reason}", stacklevel=2)
        sys.stderr.write(f"\n*** SKIPPING REDIS TLS TESTS: {reason} ***\n")
        pytest.skip(reason)
    [port] = free_ports(1)
    files = certificates
    command = [
        server,
        *("--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        *("--tls-cert-file", str(files.server_certificate), "--tls-key-file", str(files.server_key)),
        *("--tls-ca-cert-file", str(files.ca), "--tls-auth-clients", "yes"),
    ]
    folder = tmp_path_factory.mktemp("redis-tls-server")
    process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not accepts_connections(port):
            assert process.poll() is None, f"redis-server exited with code {process.returncode}"
            assert time.monotonic() < deadline, f"redis-server does not listen on {port} after {STARTUP_TIMEOUT} s"
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def options(port: int, certificates: CertificateFiles, **changes: Any) -> TransportOptions:
    """A client that trusts the test CA and presents the client certificate (``...`` removes an option)."""
    values: dict[str, Any] = {
        "ssl_ca_certs": str(certificates.ca),
        "ssl_certfile": str(certificates.client_certificate),
        "ssl_keyfile": str(certificates.client_key),
        "publish_retries": 0,
        "polling_interval": 0.01,
    }
    values.update(changes)
    url = f"rediss://127.0.0.1:{port}/0"
    return TransportOptions(url=url, **{key: value for key, value in values.items() if value is not ...})


def test_rediss_with_a_client_certificate_carries_a_message(
    tls_redis: int, certificates: CertificateFiles, unique: str
) -> None:
    """Over rediss:// with the test CA and the client certificate, a message published through the adapter is
    received and acknowledged."""
    transport: Any = create_transport(options(tls_redis, certificates))
    assert_round_trip(transport, unique)


def test_rediss_without_the_client_certificate_is_an_error_pointing_at_it(
    tls_redis: int, certificates: CertificateFiles
) -> None:
    """A client without certificate is refused by the server within seconds, and the error asks whether the broker
    requires one, naming the options."""
    transport = create_transport(options(tls_redis, certificates, ssl_certfile=..., ssl_keyfile=..., connect_timeout=2))
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"client certificate \(transport\.ssl_certfile, ssl_keyfile\)"):
        transport.queue_size("some_queue")
    assert time.monotonic() - started < 10
