"""Test certificates: a certificate authority, a server certificate for 127.0.0.1 / localhost and a client
certificate signed by it, written as PEM files (EC P-256 keys: quick to make, accepted by Erlang's ssl and Python's).

    files = make_certificates(tmp_path / "tls")
    files.ca, files.server_certificate, files.server_key, files.client_certificate, files.client_key

``make_certificate_authority`` alone makes an unrelated CA: the "wrong CA" a client must refuse.
"""

from __future__ import annotations

import datetime
import ipaddress
import uuid
from pathlib import Path
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from container_messaging.transports import EndpointTopology, OutboundMessage

VALIDITY = datetime.timedelta(days=2)
SERVER_DNS_NAMES = ("localhost",)
SERVER_IP_ADDRESSES = ("127.0.0.1",)


@attrs.frozen
class CertificateAuthority:
    """A CA's certificate (``certificate``, a PEM file the other side trusts) and its key, kept in memory to sign."""

    name: str
    certificate: Path
    _cert: x509.Certificate = attrs.field(repr=False)
    _key: ec.EllipticCurvePrivateKey = attrs.field(repr=False)

    def issue(self, folder: Path, stem: str, common_name: str, *, server: bool) -> tuple[Path, Path]:
        """A certificate signed by this CA, for a server (with 127.0.0.1 / localhost as subject alternative names)
        or a client; written to ``<stem>.pem`` and ``<stem>.key`` in ``folder``, whose paths it returns."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _builder(common_name, key).issuer_name(self._cert.subject)
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
        )
        if server:
            names: list[x509.GeneralName] = [x509.DNSName(name) for name in SERVER_DNS_NAMES]
            names += [x509.IPAddress(ipaddress.ip_address(address)) for address in SERVER_IP_ADDRESSES]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        return _write_certificate(folder / f"{stem}.pem", certificate), _write_key(folder / f"{stem}.key", key)


@attrs.frozen
class CertificateFiles:
    """PEM files for one TLS setup: the CA both sides trust, the server's and the client's certificate and key."""

    ca: Path
    server_certificate: Path
    server_key: Path
    client_certificate: Path
    client_key: Path


def make_certificate_authority(folder: Path, name: str) -> CertificateAuthority:
    """A self-signed CA named ``name``; its certificate is written to ``<folder>/<name>.pem``."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(name, key).issuer_name(_subject(name))
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    certificate = builder.sign(key, hashes.SHA256())
    path = _write_certificate(folder / f"{name}.pem", certificate)
    return CertificateAuthority(name, path, certificate, key)


def make_certificates(folder: Path) -> CertificateFiles:
    """A fresh CA (``ca.pem``) with a server certificate for 127.0.0.1 / localhost and a client certificate."""
    authority = make_certificate_authority(folder, "ca")
    server_certificate, server_key = authority.issue(folder, "server", "localhost", server=True)
    client_certificate, client_key = authority.issue(folder, "client", "container-messaging-tests", server=False)
    return CertificateFiles(authority.certificate, server_certificate, server_key, client_certificate, client_key)


def _subject(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(common_name: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_subject(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _write_certificate(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    encoded = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(encoded)
    path.chmod(0o600)
    return path


def assert_round_trip(transport: Any, unique: str) -> None:
    """Publishes one message through ``transport`` to a queue of its own, receives and acknowledges it (the queue
    is removed and the transport closed afterwards)."""
    topology = EndpointTopology(f"test.tls.{unique}", f"test_tls_{unique}", ("billing.#",))
    message_id = str(uuid.uuid4())
    try:
        transport.setup_endpoint(topology)
        transport.publish(
            topology.exchange,
            OutboundMessage("billing.changed", b"{}", {"id": message_id}, "application/json", message_id),
            mandatory=True,
        )
        with transport.open_receiver(topology.queue, prefetch_count=1) as receiver:
            delivery = receiver.receive(10)
            assert delivery is not None
            assert delivery.headers["id"] == message_id
            delivery.ack()
    finally:
        transport.remove_endpoint(topology)
        transport.close()
