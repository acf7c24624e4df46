"""TransportOptions, the adapter table, and how options become kombu (and, for Redis, redis-py) connection options
(TLS, heartbeats, timeouts), without connecting."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import attrs
import pytest
import redis

from container_messaging.config import TransportSettings, settings_from_dict
from container_messaging.errors import ConfigurationError
from container_messaging.transports import TransportOptions, create_transport
from container_messaging.transports.embedded import EmbeddedTransport
from container_messaging.transports.memory import MemoryTransport
from container_messaging.transports.rabbitmq import RabbitMqTransport
from container_messaging.transports.redis import RedisTransport


def _connection(transport: dict[str, object]):
    settings = settings_from_dict({"transport": transport})
    return create_transport(TransportOptions.of(settings.transport)).new_connection()  # type: ignore[attr-defined]


def test_option_names_and_defaults_are_those_of_the_transport_settings():
    """Every TransportOptions field is a TransportSettings field, and the defaults agree."""
    settings_fields = {field.name for field in attrs.fields(TransportSettings)}
    assert {field.name for field in attrs.fields(TransportOptions)} <= settings_fields
    assert TransportOptions.of(TransportSettings()) == TransportOptions()


def test_options_repr_hides_the_password():
    """The repr of TransportOptions shows the URL with its password masked."""
    text = repr(TransportOptions(url="pyamqp://guest:s3cr3t-pw@127.0.0.1:5672//"))
    assert "s3cr3t-pw" not in text
    assert "pyamqp://guest:***@127.0.0.1:5672//" in text


@pytest.mark.parametrize(
    ("url", "adapter"),
    [
        ("pyamqp://guest:guest@127.0.0.1:5672//", RabbitMqTransport),
        ("amqp://guest:guest@127.0.0.1:5672//", RabbitMqTransport),
        ("amqps://guest:guest@127.0.0.1:5671//", RabbitMqTransport),
        ("redis://127.0.0.1:6379/0", RedisTransport),
        ("rediss://127.0.0.1:6380/0", RedisTransport),
        ("memory://", MemoryTransport),
        ("embedded://", EmbeddedTransport),
    ],
)
def test_each_scheme_gets_its_adapter(url: str, adapter: type):
    """create_transport picks the adapter of the URL's scheme, and its description is the masked URL."""
    transport = create_transport(TransportOptions(url=url))
    assert type(transport) is adapter
    assert transport.description == TransportOptions(url=url).masked_url


def test_an_unknown_scheme_is_a_configuration_error_naming_it():
    """A URL scheme no adapter serves is a ConfigurationError naming the scheme and the known ones."""
    with pytest.raises(ConfigurationError, match=r"unknown scheme 'kafka'.*known: amqp, amqps, embedded"):
        create_transport(TransportOptions(url="kafka://127.0.0.1:9092"))


def test_amqps_url_turns_tls_on_and_checks_the_host_name():
    """An amqps:// URL connects with TLS even though ssl is not set, verifying the certificate and (through
    server_hostname None, filled in by kombu) the host name."""
    connection = create_transport(TransportOptions(url="amqps://guest:guest@127.0.0.1:5671//")).new_connection()  # type: ignore[attr-defined]
    assert connection.ssl["cert_reqs"] == ssl.CERT_REQUIRED
    assert "server_hostname" in connection.ssl


def test_amqps_without_verification_checks_no_host_name():
    """ssl_verify false turns certificate and host name checks off (py-amqp refuses a host name check without
    verification)."""
    connection = _connection({"url": "amqps://guest:guest@127.0.0.1:5671//", "ssl_verify": False})
    assert connection.ssl["cert_reqs"] == ssl.CERT_NONE
    assert "server_hostname" not in connection.ssl


def test_tls_certificates_are_passed_to_kombu(tmp_path: Path):
    """ssl_ca_certs, ssl_certfile, ssl_keyfile and ssl_verify reach kombu's ssl options for AMQP."""
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("not read before connecting")
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
        "server_hostname": None,
    }


def test_rediss_uses_redis_ssl_option_names():
    """For Redis over TLS the client gets redis-py's TLS options, and ssl_verify false turns certificate and host
    name verification off."""
    kwargs = _connection({"url": "rediss://127.0.0.1:6380/0", "ssl_verify": False}).connection_pool.connection_kwargs
    assert (kwargs["ssl_cert_reqs"], kwargs["ssl_check_hostname"]) == (ssl.CERT_NONE, False)


@pytest.mark.parametrize("transport", [{"url": "rediss://127.0.0.1:6380/0"}, {"url": "redis://h:6380/0", "ssl": True}])
def test_redis_tls_verifies_the_certificate(transport: dict[str, object]):
    """A rediss:// URL, or redis:// with ssl true, connects with TLS, verifying the certificate and the host name."""
    pool = _connection(transport).connection_pool
    assert issubclass(pool.connection_class, redis.SSLConnection)
    assert (pool.connection_kwargs["ssl_cert_reqs"], pool.connection_kwargs["ssl_check_hostname"]) == (
        ssl.CERT_REQUIRED,
        True,
    )


def test_every_redis_wait_is_bounded_and_redis_py_retries_nothing():
    """A Redis client waits connect_timeout at most to connect and for each reply (Redis answers at once), and
    redis-py itself retries nothing (the transport decides what is retried and says what is known)."""
    options = {"url": "redis://127.0.0.1:6379/0", "connect_timeout": 3, "reply_timeout": 7}
    kwargs = _connection(options).connection_pool.connection_kwargs
    assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (3, 3)
    assert kwargs["retry"].get_retries() == 0


def test_amqp_waits_are_bounded_by_reply_timeout_for_senders_and_connect_timeout_for_consumers():
    """A RabbitMQ sender's connection waits reply_timeout at most for each answer, a consumer's connect_timeout."""
    settings = settings_from_dict({"transport": {"url": "pyamqp://g:g@127.0.0.1:5672//", "reply_timeout": 7}})
    transport: Any = create_transport(TransportOptions.of(settings.transport))
    sender, consumer = transport.new_connection(), transport.consumer_connection()
    assert (sender.transport_options["read_timeout"], sender.transport_options["write_timeout"]) == (7, 7)
    assert (consumer.transport_options["read_timeout"], consumer.transport_options["write_timeout"]) == (5, 5)


@pytest.mark.parametrize("url", ["amqps://guest:guest@127.0.0.1:5671//", "rediss://127.0.0.1:6380/0"])
def test_a_missing_ca_file_is_an_error_naming_it(tmp_path: Path, url: str):
    """A CA bundle path that is not a file is a ConfigurationError naming the option and the path."""
    missing = tmp_path / "no-such-ca.pem"
    transport = create_transport(TransportOptions(url=url, ssl_ca_certs=str(missing)))
    with pytest.raises(ConfigurationError, match=r"transport\.ssl_ca_certs: no such file .*no-such-ca\.pem"):
        transport.new_connection()  # type: ignore[attr-defined]


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


def test_a_connection_of_a_failover_list_holds_one_url_mapped_to_pyamqp():
    """Of a failover list ``amqp://a;amqp://b`` a new connection holds the first URL alone, on py-amqp (the adapter
    moves it along the list itself, not kombu)."""
    connection = _connection({"url": "amqp://guest:guest@127.0.0.1:5672//;amqp://guest:guest@127.0.0.1:5673//"})
    assert connection.transport_cls == "pyamqp"
    assert connection.port == 5672
    assert not connection.alt
