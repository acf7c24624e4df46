"""TLS through the RabbitMQ adapter, against a RabbitMQ node of the test's own (tests/support/rabbit_cluster.py) whose
AMQPS listener verifies peers and requires a client certificate: what works, and the error that names each cause.

Run alone with ``pytest -m tls``."""

from __future__ import annotations

import logging
import socket
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from container_messaging.errors import BrokerRefusedError, TransportError
from container_messaging.redaction import mask_url
from container_messaging.transports import OutboundMessage, TransportOptions, create_transport

from support.rabbit_cluster import RabbitNode, free_ports
from support.tls import CertificateFiles, assert_round_trip, make_certificate_authority

pytestmark = pytest.mark.tls


def _message() -> OutboundMessage:
    message_id = str(uuid.uuid4())
    return OutboundMessage("billing.changed", b"{}", {"id": message_id}, "application/json", message_id)


def options(url: str, certificates: CertificateFiles, **changes: Any) -> TransportOptions:
    """The transport options of a client that trusts the test CA and presents the client certificate."""
    values: dict[str, Any] = {
        "ssl_ca_certs": str(certificates.ca),
        "ssl_certfile": str(certificates.client_certificate),
        "ssl_keyfile": str(certificates.client_key),
        "publish_retries": 0,
    }
    values.update(changes)
    return TransportOptions(url=url, **{key: value for key, value in values.items() if value is not ...})


def test_amqps_with_the_ca_and_a_client_certificate_carries_a_message(
    tls_node: RabbitNode, certificates: CertificateFiles, unique: str
) -> None:
    """Over amqps:// with the test CA and the client certificate, a message published through the adapter is
    received and acknowledged."""
    transport: Any = create_transport(options(tls_node.tls_url, certificates))
    assert_round_trip(transport, unique)


def test_a_server_certificate_from_another_ca_is_refused_with_an_error_naming_the_ca_file(
    tls_node: RabbitNode, certificates: CertificateFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client trusting another CA refuses the server: a BrokerRefusedError (a publish is not retried: another try
    cannot help) naming the CA file and the option."""
    wrong = make_certificate_authority(tmp_path, "wrong-ca")
    transport = create_transport(
        options(tls_node.tls_url, certificates, ssl_ca_certs=str(wrong.certificate), publish_retries=3)
    )
    caplog.set_level(logging.INFO, logger="container_messaging.transport")
    with pytest.raises(BrokerRefusedError, match="CERTIFICATE_VERIFY_FAILED") as caught:
        transport.publish("some.exchange", _message(), mandatory=True)
    assert f"the CA file {str(wrong.certificate)!r} (transport.ssl_ca_certs)" in str(caught.value)
    assert not [record for record in caplog.records if "reconnecting" in record.getMessage()]


def test_a_failover_list_checks_each_urls_own_host_name(tls_node: RabbitNode, certificates: CertificateFiles) -> None:
    """With a dead ``amqps://[::1]`` before the node's ``amqps://127.0.0.1``, the connection fails over and verifies
    the node's certificate against 127.0.0.1 (kombu alone would keep checking ::1, the first URL's host, which the
    certificate does not name)."""
    [dead_port] = free_ports(1)
    url = f"amqps://guest:guest@[::1]:{dead_port}//;{tls_node.tls_url}"
    transport: Any = create_transport(options(url, certificates))
    assert transport.queue_size("some_queue_that_does_not_exist") == 0
    assert transport.preferred_url == mask_url(tls_node.tls_url)


def test_verification_off_accepts_a_certificate_of_another_ca(
    tls_node: RabbitNode, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """With ssl_verify false the same client connects (the certificate is not checked)."""
    wrong = make_certificate_authority(tmp_path, "wrong-ca")
    transport = create_transport(
        options(tls_node.tls_url, certificates, ssl_ca_certs=str(wrong.certificate), ssl_verify=False)
    )
    assert transport.queue_size("some_queue_that_does_not_exist") == 0


def test_a_host_name_the_certificate_does_not_name_is_refused(
    tls_node: RabbitNode, certificates: CertificateFiles
) -> None:
    """Reaching the node by a name its certificate was not made for (this machine's name, which resolves to
    127.0.0.1) is refused: the adapter checks the host name, not only the CA."""
    name = socket.gethostname()
    if name == "localhost" or socket.gethostbyname(name) != "127.0.0.1":
        pytest.skip(f"this machine's name {name!r} does not resolve to 127.0.0.1 as another name")
    url = tls_node.tls_url.replace("127.0.0.1", name)
    assert urlsplit(url).hostname == name
    transport = create_transport(options(url, certificates))
    with pytest.raises(TransportError, match="Hostname mismatch"):
        transport.queue_size("some_queue")


def test_a_missing_client_certificate_is_an_error_pointing_at_it(
    tls_node: RabbitNode, certificates: CertificateFiles
) -> None:
    """A client without certificate is refused by the node, and the error asks whether the broker requires one,
    naming the options."""
    transport = create_transport(options(tls_node.tls_url, certificates, ssl_certfile=..., ssl_keyfile=...))
    with pytest.raises(TransportError, match=r"client certificate \(transport\.ssl_certfile, ssl_keyfile\)"):
        transport.queue_size("some_queue")
