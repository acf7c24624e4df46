"""Real TLS against RabbitMQ: a RabbitMQ node of the test's own (tests/support/rabbit_cluster.py) with an AMQPS
listener that verifies peers and requires a client certificate, certificates made by tests/support/tls.py.
kombu is used directly (``amqps://``), with the options the package will have to pass; the exceptions asserted here
are the ones the package must turn into clear errors.

Run alone with ``pytest -m tls``."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import kombu
import pytest
from kombu.exceptions import OperationalError

from support.rabbit_cluster import RabbitNode
from support.tls import CertificateFiles, make_certificate_authority

pytestmark = pytest.mark.tls


def tls_options(certificates: CertificateFiles, **changes: Any) -> dict[str, Any]:
    """py-amqp ``ssl`` options that verify the server against the test CA, check its host name (``server_hostname``
    None: kombu fills in the URL's host; without the key the name is not checked) and present the client
    certificate."""
    options: dict[str, Any] = {
        "ca_certs": str(certificates.ca),
        "certfile": str(certificates.client_certificate),
        "keyfile": str(certificates.client_key),
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": None,
    }
    options.update(changes)
    return {key: value for key, value in options.items() if value is not ...}


def connect(node: RabbitNode, options: dict[str, Any]) -> kombu.Connection:
    connection = kombu.Connection(node.tls_url, ssl=options, connect_timeout=5, heartbeat=0)
    connection.ensure_connection(max_retries=0)
    return connection


def test_amqps_with_the_ca_and_a_client_certificate_carries_messages(
    tls_node: RabbitNode, certificates: CertificateFiles, unique: str
) -> None:
    """``amqps://`` with the test CA, host name checking and a client certificate connects over TLS, the node sees
    the client certificate's subject, and a message makes the round trip."""
    queue = kombu.Queue(f"cm_tls_{unique}", routing_key=f"cm_tls_{unique}", auto_delete=False, durable=True)
    connection = connect(tls_node, tls_options(certificates))
    try:
        sock = connection.connection.transport.sock
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        assert sock.context.check_hostname
        assert sock.server_hostname == "127.0.0.1"
        seen = tls_node.ctl_json("list_connections", "ssl", "peer_cert_subject", "peer_cert_issuer")
        assert {"ssl": True, "peer_cert_subject": "CN=container-messaging-tests", "peer_cert_issuer": "CN=ca"} in seen

        channel = connection.default_channel
        queue(channel).declare()
        kombu.Producer(channel).publish({"over": "tls"}, routing_key=queue.routing_key, serializer="json")
        message = queue(channel).get(no_ack=True, accept=["application/json"])
        assert message is not None
        assert message.payload == {"over": "tls"}
        queue(channel).delete()
    finally:
        connection.release()


def test_a_server_certificate_from_another_ca_is_refused(
    tls_node: RabbitNode, certificates: CertificateFiles, tmp_path: Path
) -> None:
    """A client trusting another CA refuses the server: kombu raises OperationalError caused by
    ssl.SSLCertVerificationError, "certificate verify failed: self-signed certificate in certificate chain"."""
    wrong = make_certificate_authority(tmp_path, "wrong-ca")
    with pytest.raises(OperationalError) as caught:
        connect(tls_node, tls_options(certificates, ca_certs=str(wrong.certificate)))
    cause = caught.value.__cause__
    assert isinstance(cause, ssl.SSLCertVerificationError)
    assert cause.verify_message == "self-signed certificate in certificate chain"


def test_a_server_certificate_for_another_host_name_is_refused(
    tls_node: RabbitNode, certificates: CertificateFiles
) -> None:
    """A client expecting another host name refuses the server's certificate (made for 127.0.0.1 / localhost):
    OperationalError caused by ssl.SSLCertVerificationError, "Hostname mismatch"."""
    with pytest.raises(OperationalError) as caught:
        connect(tls_node, tls_options(certificates, server_hostname="broker.example.org"))
    cause = caught.value.__cause__
    assert isinstance(cause, ssl.SSLCertVerificationError)
    assert cause.verify_message.startswith("Hostname mismatch")


@pytest.mark.parametrize(
    ("version", "outcomes"),
    [
        (ssl.TLSVersion.TLSv1_3, {"TLSV13_ALERT_CERTIFICATE_REQUIRED", "EOF"}),
        (ssl.TLSVersion.TLSv1_2, {"SSLV3_ALERT_HANDSHAKE_FAILURE"}),
    ],
    ids=["TLSv1.3", "TLSv1.2"],
)
def test_a_client_without_certificate_is_refused_by_the_server(
    tls_node: RabbitNode, certificates: CertificateFiles, version: ssl.TLSVersion, outcomes: set[str]
) -> None:
    """The node (fail_if_no_peer_cert) refuses a client that presents no certificate: OperationalError caused by
    ssl.SSLError. TLS 1.2 fails the handshake with a handshake_failure alert; TLS 1.3 completes the client's side of
    the handshake, then the client reads either the certificate_required alert or, when the server has already
    closed (about 4 times in 10 here), a bare EOF (ssl.SSLEOFError, no reason)."""
    options = tls_options(certificates, certfile=..., keyfile=..., tls_maximum_version=version)
    with pytest.raises(OperationalError) as caught:
        connect(tls_node, options)
    cause = caught.value.__cause__
    assert isinstance(cause, ssl.SSLError)
    assert ("EOF" if isinstance(cause, ssl.SSLEOFError) else cause.reason) in outcomes
