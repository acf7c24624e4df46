"""The configuration keys of a production topology: several broker URLs (a RabbitMQ cluster), ``queue_type`` and
``delivery_limit``; read the same from YAML and INI, and every wrong value named by its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from container_messaging.config import TransportSettings, load_settings, settings_from_dict
from container_messaging.errors import ConfigurationError
from container_messaging.transports import TransportOptions

NODE_1 = "amqp://app:S3cret-pw@rabbit-1:5672/prod"
NODE_2 = "amqp://app:S3cret-pw@rabbit-2:5672/prod"


def _error(data: dict[str, object]) -> str:
    with pytest.raises(ConfigurationError) as caught:
        settings_from_dict(data)
    return str(caught.value)


def test_a_yaml_list_of_urls_and_an_ini_failover_string_give_the_same_settings(tmp_path: Path) -> None:
    """A YAML list of broker URLs equals INI's ``url1;url2``: the failover list held as one ``;``-joined URL whose
    URLs the transport options list in order, the quorum keys alike."""
    yaml_file = tmp_path / "cluster.yaml"
    yaml_file.write_text(
        f"transport:\n  url:\n    - {NODE_1}\n    - {NODE_2}\n  queue_type: quorum\n  delivery_limit: 5\n"
    )
    ini_file = tmp_path / "cluster.ini"
    ini_file.write_text(f"[transport]\nurl = {NODE_1};{NODE_2}\nqueue_type = quorum\ndelivery_limit = 5\n")
    from_yaml, from_ini = load_settings(yaml_file), load_settings(ini_file)
    assert from_yaml == from_ini
    assert from_yaml.transport.url == f"{NODE_1};{NODE_2}"
    assert (from_yaml.transport.queue_type, from_yaml.transport.delivery_limit) == ("quorum", 5)
    assert TransportOptions.of(from_yaml.transport).urls == (NODE_1, NODE_2)
    assert "S3cret-pw" not in repr(from_yaml)


def test_defaults_are_classic_queues_a_delivery_limit_of_20_and_5_publish_retries() -> None:
    """Without the keys: classic queues (as Ecotone declares them), a delivery limit of 20 (RabbitMQ 4's default) for
    when quorum queues are chosen, and 5 publish retries (about 5 s of back-off, time for a failover)."""
    transport = settings_from_dict({}).transport
    assert (transport.queue_type, transport.delivery_limit, transport.publish_retries) == ("classic", 20, 5)


def test_a_list_of_urls_in_code_is_joined_like_in_a_file() -> None:
    """TransportSettings built in code takes a tuple of URLs too, and amqps:// in it turns TLS on."""
    settings = TransportSettings(url=("amqps://a:5671//", "amqps://b:5671//"))  # type: ignore[arg-type]
    assert settings.url == "amqps://a:5671//;amqps://b:5671//"
    assert settings.ssl


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ([NODE_1, 5672], "transport.url[1]: expected a string, got int 5672"),
        (
            [NODE_1, "redis://127.0.0.1:6379/0"],
            "must all be RabbitMQ URLs of one scheme (amqp, amqps or pyamqp), got amqp, redis",
        ),
        ([NODE_1, "amqps://app:S3cret-pw@rabbit-2:5671/prod"], "got amqp, amqps"),
        ("redis://a:6379/0;redis://b:6379/0", "must all be RabbitMQ URLs of one scheme"),
        (f"{NODE_1};", "an empty URL in the failover list"),
        ([NODE_1, "rabbit-2:5672"], "expected a URL such as 'pyamqp://user:password@host:5672//', got 'rabbit-2:5672'"),
        ([NODE_1, "kafka://k:9092"], "unknown URL scheme 'kafka'"),
        ([], "transport.url: expected a URL"),
    ],
)
def test_a_wrong_failover_list_is_an_error_naming_the_key_without_the_password(url: object, problem: str) -> None:
    """A failover list with a wrong item, mixed schemes, a non-RabbitMQ scheme or an empty URL is a
    ConfigurationError naming transport.url (and the item), never the password."""
    text = _error({"transport": {"url": url}})
    assert "transport.url" in text
    assert problem in text
    assert "S3cret-pw" not in text


@pytest.mark.parametrize(
    ("transport", "problem"),
    [
        ({"queue_type": "stream"}, "transport.queue_type: must be one of 'classic', 'quorum', got 'stream'"),
        ({"delivery_limit": 0}, "transport.delivery_limit: must be at least 1, got 0"),
        ({"delivery_limit": "many"}, "transport.delivery_limit: expected an integer, got 'many'"),
        (
            {"url": "redis://127.0.0.1:6379/0", "queue_type": "quorum"},
            "transport.queue_type: 'quorum' queues are RabbitMQ's (an amqp:// url), not redis:// ones",
        ),
    ],
)
def test_a_wrong_queue_setting_is_an_error_naming_the_key(transport: dict[str, object], problem: str) -> None:
    """An unknown queue type, a delivery limit below 1 or not a number, and quorum queues on Redis are each a
    ConfigurationError naming the key."""
    assert problem in _error({"transport": {"url": NODE_1, **transport}})
