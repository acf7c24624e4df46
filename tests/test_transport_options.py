"""How transport settings become kombu connection options (TLS, heartbeats, timeouts), without connecting."""

from __future__ import annotations

import ssl
from pathlib import Path

from container_messaging.config import settings_from_dict
from container_messaging.transports import create_transport


def _connection(transport: dict[str, object]):
    settings = settings_from_dict({"transport": transport})
    return create_transport(settings.transport).new_connection()  # type: ignore[attr-defined]


def test_amqps_url_turns_tls_on():
    """An amqps:// URL connects with TLS even though ssl is not set."""
    connection = _connection({"url": "amqps://guest:guest@127.0.0.1:5671//"})
    assert connection.ssl is True


def test_tls_certificates_are_passed_to_kombu(tmp_path: Path):
    """ssl_ca_certs, ssl_certfile, ssl_keyfile and ssl_verify reach kombu's ssl options for AMQP."""
    connection = _connection(
        {
            "url": "amqps://guest:guest@127.0.0.1:5671//",
            "ssl_ca_certs": str(tmp_path / "ca.pem"),
            "ssl_certfile": str(tmp_path / "client.pem"),
            "ssl_keyfile": str(tmp_path / "client.key"),
        }
    )
    assert connection.ssl == {
        "cert_reqs": ssl.CERT_REQUIRED,
        "ca_certs": str(tmp_path / "ca.pem"),
        "certfile": str(tmp_path / "client.pem"),
        "keyfile": str(tmp_path / "client.key"),
    }


def test_rediss_uses_redis_ssl_option_names():
    """For Redis over TLS the options use redis-py's names, and ssl_verify false turns verification off."""
    connection = _connection({"url": "rediss://127.0.0.1:6380/0", "ssl_verify": False})
    assert connection.ssl["ssl_cert_reqs"] == ssl.CERT_NONE


def test_plain_amqp_has_no_tls_and_keeps_heartbeat_and_timeout():
    """A pyamqp:// URL without ssl has no TLS, and heartbeat and connect_timeout come from the settings."""
    connection = _connection({"url": "pyamqp://guest:guest@127.0.0.1:5672//", "heartbeat": 17, "connect_timeout": 3})
    assert not connection.ssl
    assert connection.heartbeat == 17
    assert connection.connect_timeout == 3


def test_amqp_url_is_mapped_to_pyamqp():
    """amqp:// uses the pure-Python py-amqp client (never librabbitmq, even when it is installed)."""
    connection = _connection({"url": "amqp://guest:guest@127.0.0.1:5672//"})
    assert connection.transport_cls == "pyamqp"
