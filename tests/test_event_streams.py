"""Event streams on Redis (issue 10, item 6): a stream channel gets each event once, and every consuming service
reads it in a consumer group of its own, acknowledging after its handlers; a killed consumer's entry is taken over;
retries and the dead letter are the service's own; a stream on another broker, or as a command target, is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from container_messaging import ConfigurationError, MessagingContainer
from container_messaging.transports.redis import RedisTransport
from container_messaging.transports.redis.keys import stream_key

HANDLERS = """
import os
from container_messaging import distributed, event_handler

RECEIVED = []
FAILURES = {"left": 0}


class Handlers:
    @distributed
    @event_handler("orders.placed")
    def placed(self, event: dict) -> None:
        if os.environ.get("STREAM_TEST_CRASH") == "1":
            os._exit(3)  # killed while handling: the entry is never acknowledged
        if FAILURES["left"] > 0:
            FAILURES["left"] -= 1
            raise RuntimeError("handler failed")
        RECEIVED.append(event)
"""


@pytest.fixture
def names(unique: str) -> dict[str, str]:
    return {"stream": f"order_events_{unique}", "billing": f"billing{unique}", "shipping": f"shipping{unique}"}


@pytest.fixture
def config(redis_url: str, names: dict[str, str]) -> Callable[..., dict[str, Any]]:
    def make(service: str, module: str | None = None, **extra: Any) -> dict[str, Any]:
        data: dict[str, Any] = {
            "service_name": service,
            "scan": [module] if module else [],
            "transport": {"url": redis_url, "polling_interval": 0.05, "heartbeat": 1},
            "recoverability": {"immediate_retries": 0, "delayed_retries": []},
            "channels": {names["stream"]: {"stream": True}},
            "service_map": {"events": [{"channel": names["stream"]}]},
        }
        if module:
            data["consume"] = [names["stream"]]
        return {**data, **extra}

    return make


@pytest.fixture
def build(
    config: Callable[..., dict[str, Any]], names: dict[str, str], redis_url: str
) -> Iterator[Callable[..., MessagingContainer]]:
    """Builds services on the stream; afterwards deletes their subscriptions and the stream."""
    built: list[MessagingContainer] = []

    def make(service: str, module: str | None = None, **extra: Any) -> MessagingContainer:
        container = MessagingContainer.from_dict(config(service, module, **extra))
        built.append(container)
        return container

    yield make
    for container in built:
        if names["stream"] in container.list():
            transport, topology = container._endpoint_parts(names["stream"])
            assert isinstance(transport, RedisTransport)
            transport.remove_endpoint(topology)
        container.close()
    redis.Redis.from_url(redis_url).delete(stream_key(names["stream"]))


def _module(make_module: Callable[[str, str], str]) -> Any:
    return __import__(make_module(f"stream_handlers_{uuid.uuid4().hex[:8]}", HANDLERS))


def _stream_length(redis_url: str, stream: str) -> int:
    return int(redis.Redis.from_url(redis_url).xlen(stream_key(stream)))


def test_an_event_is_appended_once_and_each_subscribing_service_handles_it_once(
    build: Callable[..., MessagingContainer],
    make_module: Callable[[str, str], str],
    names: dict[str, str],
    redis_url: str,
) -> None:
    """One event published to a stream channel is one stream entry; two services (set up after it was published, so
    reading from the start) each handle it exactly once in their own group, and it stays for the other group."""
    billing_module, shipping_module = _module(make_module), _module(make_module)
    publisher = build("orders")
    publisher.get("distributed_bus").convert_and_publish_event("orders.placed", {"orderId": "o-1"})
    assert _stream_length(redis_url, names["stream"]) == 1

    billing = build(names["billing"], billing_module.__name__)
    shipping = build(names["shipping"], shipping_module.__name__)
    assert billing.list() == [names["stream"]]
    for service in (billing, shipping):
        result = service.run(names["stream"], finish_when_no_messages=True, execution_time_limit=20_000)
        assert result.handled == 1
        again = service.run(names["stream"], finish_when_no_messages=True, execution_time_limit=5_000)
        assert again.handled == 0  # acknowledged: never delivered again to the same group
    assert billing_module.RECEIVED == [{"orderId": "o-1"}]
    assert shipping_module.RECEIVED == [{"orderId": "o-1"}]
    assert _stream_length(redis_url, names["stream"]) == 1  # acknowledged, never deleted: XACK only


def test_a_consumer_killed_before_its_ack_leaves_the_entry_to_the_next_consumer_of_its_group(
    build: Callable[..., MessagingContainer],
    config: Callable[..., dict[str, Any]],
    make_module: Callable[[str, str], str],
    names: dict[str, str],
    tmp_path: Path,
) -> None:
    """A consumer process killed inside its handler (never acknowledging) leaves the entry pending in its group; the
    next consumer of that service takes it over once the killed one's alive key expired, and handles it."""
    module = _module(make_module)
    publisher = build("orders")
    publisher.get("distributed_bus").convert_and_publish_event("orders.placed", {"orderId": "o-2"})
    consumer = build(names["billing"], module.__name__)  # removes the subscription afterwards
    script = tmp_path / "crash.py"
    script.write_text(
        "import json, sys\n"
        "from container_messaging import MessagingContainer\n"
        "container = MessagingContainer.from_dict(json.loads(sys.argv[1]))\n"
        f"container.run({names['stream']!r}, execution_time_limit=20_000)\n"
    )
    data = config(names["billing"], module.__name__)
    crashed = subprocess.run(
        [sys.executable, str(script), json.dumps(data)],
        env={**os.environ, "STREAM_TEST_CRASH": "1", "PYTHONPATH": str(Path(module.__file__).parent)},
        timeout=60,
        check=False,
    )
    assert crashed.returncode == 3  # killed in the handler, before the ack
    assert module.RECEIVED == []
    result = consumer.run(names["stream"], handled_message_limit=1, execution_time_limit=20_000)
    assert result.handled == 1
    assert module.RECEIVED == [{"orderId": "o-2"}]


def test_a_failing_handler_is_dead_lettered_for_its_own_service_alone(
    build: Callable[..., MessagingContainer],
    make_module: Callable[[str, str], str],
    names: dict[str, str],
) -> None:
    """When one service's handler fails (no retries left), the event goes to that service's dead letter; replaying
    it reaches that service only, and the other service handled the event once."""
    billing_module, shipping_module = _module(make_module), _module(make_module)
    billing_module.FAILURES["left"] = 1
    billing = build(names["billing"], billing_module.__name__)
    shipping = build(names["shipping"], shipping_module.__name__)
    billing.setup()
    shipping.setup()
    build("orders").get("distributed_bus").convert_and_publish_event("orders.placed", {"orderId": "o-3"})

    assert billing.run(names["stream"], finish_when_no_messages=True, execution_time_limit=20_000).failed == 1
    assert shipping.run(names["stream"], finish_when_no_messages=True, execution_time_limit=20_000).handled == 1
    dead_letter = billing.dead_letter(names["stream"])
    assert len(dead_letter.list()) == 1
    assert shipping.dead_letter(names["stream"]).list() == []
    dead_letter.replay_all()
    assert billing.run(names["stream"], finish_when_no_messages=True, execution_time_limit=20_000).handled == 1
    assert shipping.run(names["stream"], finish_when_no_messages=True, execution_time_limit=5_000).handled == 0
    assert billing_module.RECEIVED == [{"orderId": "o-3"}]
    assert shipping_module.RECEIVED == [{"orderId": "o-3"}]


def test_a_stream_channel_on_a_broker_other_than_redis_is_refused_naming_it() -> None:
    """A stream channel whose URL is not Redis is a ConfigurationError naming the channel."""
    with pytest.raises(ConfigurationError, match=r"channels\.ev\.stream.*channel 'ev' is an event stream.*Redis"):
        MessagingContainer.from_dict(
            {
                "service_name": "orders",
                "transport": {"url": "memory://"},
                "channels": {"ev": {"stream": True}},
                "service_map": {"events": [{"channel": "ev"}]},
            }
        )


def test_a_stream_channel_as_a_command_target_is_refused_naming_it() -> None:
    """Mapping commands to a stream channel is a ConfigurationError naming the key and the channel."""
    with pytest.raises(ConfigurationError, match=r"service_map\.commands\.billing.*channel 'ev' is an event stream"):
        MessagingContainer.from_dict(
            {
                "service_name": "orders",
                "transport": {"url": "redis://127.0.0.1:6379/0"},
                "channels": {"ev": {"stream": True}},
                "service_map": {"commands": {"billing": "ev"}},
            }
        )


def test_waiting_entries_of_the_stream_count_in_the_subscription_size(
    build: Callable[..., MessagingContainer],
    make_module: Callable[[str, str], str],
    names: dict[str, str],
) -> None:
    """The size of a service's subscription counts the stream entries its group has not read yet."""
    module = _module(make_module)
    billing = build(names["billing"], module.__name__)
    billing.setup()
    bus = build("orders").get("distributed_bus")
    for number in range(3):
        bus.convert_and_publish_event("orders.placed", {"orderId": f"o-{number}"})
    transport, topology = billing._endpoint_parts(names["stream"])
    assert transport.queue_size(topology.queue) == 3
