"""The Service Map and message channels: routing by the map (commands, event mappings, the older single form),
channels as endpoints (send-only ones are not), several named buses in one service, one transport per broker URL,
and the example system's shared map file. The distributed scenarios on every transport are in
tests/test_distributed_contract.py."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from container_messaging import (
    DistributedBus,
    EndpointError,
    InvalidMessageError,
    MessagingContainer,
    MissingDependencyError,
    ServiceMapSettings,
    load_settings,
)
from container_messaging.distributed import ServiceMap
from container_messaging.errors import ContainerError

ROOT = Path(__file__).resolve().parent.parent


def service_map(data: dict[str, Any]) -> ServiceMap:
    return ServiceMap.from_settings(_settings(data))


def _settings(data: dict[str, Any]) -> ServiceMapSettings:
    from container_messaging.config import settings_from_dict

    settings = settings_from_dict({"service_name": "any", "service_map": data})
    assert settings.service_map is not None
    return settings.service_map


CHANNELS = {"ch_billing": None, "ch_ticket": None, "ch_user": None, "ch_audit": None}


# -- the map ----------------------------------------------------------------------------------------------------------


def test_command_goes_to_the_channel_its_target_service_is_mapped_to() -> None:
    """A command's (or message's) target service picks its channel from the command mapping."""
    the_map = service_map({"channels": CHANNELS, "commands": {"billing": "ch_billing", "ticket": "ch_ticket"}})
    assert the_map.channel_for("billing") == "ch_billing"
    assert the_map.channel_for("ticket") == "ch_ticket"


def test_a_target_the_map_does_not_know_is_an_error_naming_it_and_the_known_services() -> None:
    """Sending to a service the map does not know raises InvalidMessageError naming it and every known service."""
    the_map = service_map({"channels": CHANNELS, "commands": {"billing": "ch_billing", "ticket": "ch_ticket"}})
    with pytest.raises(InvalidMessageError, match=r"service 'shipping' .*known services: 'billing', 'ticket'"):
        the_map.channel_for("shipping")


def test_event_mapping_keys_left_out_mean_every_event_and_an_empty_list_none() -> None:
    """Subscription keys: left out, the channel gets every event; an empty list, none; globs match several words
    deep and ignore case, as Ecotone's."""
    the_map = service_map(
        {
            "channels": CHANNELS,
            "events": [
                {"channel": "ch_audit"},
                {"channel": "ch_user", "subscription_keys": []},
                {"channel": "ch_ticket", "subscription_keys": ["billing.*", "orders.placed"]},
            ],
        }
    )
    assert the_map.event_channels("billing", "billing.invoice.paid") == ("ch_audit", "ch_ticket")
    assert the_map.event_channels("billing", "BILLING.detailsWereChanged") == ("ch_audit", "ch_ticket")
    assert the_map.event_channels("orders", "orders.placed") == ("ch_audit", "ch_ticket")
    assert the_map.event_channels("orders", "orders.shipped") == ("ch_audit",)


def test_excluded_publishers_events_are_not_sent_and_an_include_list_is_the_only_one_sent() -> None:
    """exclude_publishing_services drops those publishers' events for the channel; include_publishing_services sends
    only theirs."""
    the_map = service_map(
        {
            "channels": CHANNELS,
            "events": [
                {"channel": "ch_audit", "exclude_publishing_services": ["user"]},
                {"channel": "ch_ticket", "include_publishing_services": ["billing"]},
            ],
        }
    )
    assert the_map.event_channels("billing", "x.happened") == ("ch_audit", "ch_ticket")
    assert the_map.event_channels("user", "x.happened") == ()
    assert the_map.event_channels("orders", "x.happened") == ("ch_audit",)


def test_a_publishers_own_channel_gets_its_events_only_when_it_is_included() -> None:
    """By default an event reaches every mapped service except its publisher: the channel the publisher's own name
    is mapped to is skipped, unless an event mapping includes the publisher explicitly."""
    default = service_map(
        {"channels": CHANNELS, "commands": {"billing": "ch_billing"}, "events": [{"channel": "ch_billing"}]}
    )
    assert default.event_channels("billing", "billing.changed") == ()
    assert default.event_channels("user", "billing.changed") == ("ch_billing",)
    included = service_map(
        {
            "channels": CHANNELS,
            "commands": {"billing": "ch_billing"},
            "events": [{"channel": "ch_billing", "include_publishing_services": ["billing"]}],
        }
    )
    assert included.event_channels("billing", "billing.changed") == ("ch_billing",)


def test_older_single_form_sends_events_to_every_mapped_service_but_the_publisher_once_per_channel() -> None:
    """The older single form (service, channel, subscription keys) maps commands and events at once: an event goes to
    every other service's channel its keys allow, and a channel shared by two services gets it once."""
    the_map = service_map(
        {
            "channels": CHANNELS,
            "services": [
                {"service": "billing", "channel": "ch_billing"},
                {"service": "ticket", "channel": "ch_ticket", "subscription_keys": ["billing.*"]},
                {"service": "helpdesk", "channel": "ch_ticket"},
                {"service": "user", "channel": "ch_user", "subscription_keys": []},
            ],
        }
    )
    assert the_map.channel_for("helpdesk") == "ch_ticket"
    assert the_map.event_channels("billing", "billing.changed") == ("ch_ticket",)
    assert the_map.event_channels("user", "user.registered") == ("ch_billing", "ch_ticket")


# -- channels and buses in a container ------------------------------------------------------------------------------

HANDLERS = """
from typing import Annotated
from container_messaging import DistributedBus, Headers, Named, command_handler, distributed

RECEIVED = []

class Notifier:
    def __init__(self, bus: DistributedBus, internal: Annotated[DistributedBus, Named("internal_bus")]) -> None:
        self.bus = bus
        self.internal = internal

    @distributed
    @command_handler("notify")
    def notify(self, text: str, headers: Headers) -> None:
        RECEIVED.append((headers["ecotone.distributed.targetServiceName"], text))
"""


@pytest.fixture
def handlers(make_module: Callable[[str, str], str]) -> Any:
    name = make_module(f"service_map_{uuid.uuid4().hex[:8]}", HANDLERS)
    return __import__(name)


def _container(handlers: Any, service: str, **config: Any) -> MessagingContainer:
    return MessagingContainer.from_dict(
        {
            "service_name": service,
            "scan": [handlers.__name__],
            "transport": {"url": "memory://"},
            "recoverability": {"immediate_retries": 0, "delayed_retries": []},
            **config,
        }
    )


TWO_MAPS = {
    "channels": {"public_in": None, "internal_in": None, "partner_in": None, "team_in": None},
    "service_map": {"commands": {"partner": "partner_in", "notifier": "public_in"}},
    "distributed_buses": {
        "internal_bus": {"service_map": {"commands": {"team": "team_in", "notifier": "internal_in"}}}
    },
}


def test_a_send_only_channel_is_neither_listed_nor_consumed(handlers: Any) -> None:
    """A service lists and runs only the channels it consumes; a channel it only sends to is no endpoint (running or
    setting it up is an EndpointError), and what the service sends there stays there for its owner."""
    container = _container(handlers, "notifier", consume=["public_in"], **TWO_MAPS)
    assert container.list() == ["public_in"]
    with pytest.raises(EndpointError, match=r"'partner_in'.*available: 'public_in'"):
        container.run("partner_in")
    with pytest.raises(EndpointError, match=r"'partner_in'"):
        container.setup("partner_in")
    container.get(DistributedBus).send_command("partner", "notify", "hello")
    assert container.run("public_in", finish_when_no_messages=True).handled == 0  # partner's message stayed put
    assert container.channels.transport("partner_in").queue_size("partner_in") == 1


def test_two_named_buses_with_different_maps_are_injected_into_one_service(handlers: Any) -> None:
    """One class receives the default bus by type and another by name (Annotated[..., Named("internal_bus")]); each
    sends where its own map says, and container.get("internal_bus") is the bus that was injected."""
    notifier = _container(handlers, "notifier", consume=["public_in", "internal_in"], **TWO_MAPS)
    service = notifier.get(handlers.Notifier)
    assert service.bus is notifier.get(DistributedBus)
    assert service.internal is notifier.get("internal_bus")
    assert service.internal is not service.bus
    assert (service.bus.name, service.internal.name) == ("distributed_bus", "internal_bus")

    service.bus.send_command("notifier", "notify", "by the public map")
    service.internal.send_command("notifier", "notify", "by the internal map")
    with pytest.raises(InvalidMessageError, match="'team'"):
        service.bus.send_command("team", "notify", "the public map has no team")
    service.internal.send_command("team", "notify", "to the team")

    assert notifier.run("public_in", finish_when_no_messages=True).handled == 1
    assert notifier.run("internal_in", finish_when_no_messages=True).handled == 1
    assert handlers.RECEIVED == [("notifier", "by the public map"), ("notifier", "by the internal map")]
    assert notifier.channels.transport("team_in").queue_size("team_in") == 1


def test_a_bus_in_amqp_mode_next_to_a_service_map_bus(handlers: Any) -> None:
    """The mode is chosen per bus: a named bus without a map is Ecotone's AMQP bus, and with it the service keeps
    its AMQP endpoint (named after it) next to its channel."""
    config = {**TWO_MAPS, "distributed_buses": {"internal_bus": {}}}
    notifier = _container(handlers, "notifier", consume=["public_in"], **config)
    assert notifier.list() == ["notifier", "public_in"]
    notifier.setup()
    internal = notifier.get("internal_bus")
    assert (internal.mode, notifier.get(DistributedBus).mode) == ("amqp", "service map")
    internal.send_command("notifier", "notify", "over the exchange")
    assert notifier.run("notifier", finish_when_no_messages=True).handled == 1
    assert handlers.RECEIVED == [("notifier", "over the exchange")]


def test_asking_for_a_bus_by_an_unknown_name_is_an_error_naming_the_parameter(
    make_module: Callable[[str, str], str],
) -> None:
    """A parameter annotated with Named("...") that nothing is registered under fails the build, naming the
    parameter and the known names."""
    module = make_module(
        f"named_{uuid.uuid4().hex[:8]}",
        """
        from typing import Annotated
        from container_messaging import DistributedBus, Named

        class Sender:
            def __init__(self, bus: Annotated[DistributedBus, Named("nightly_bus")]) -> None:
                self.bus = bus
        """,
    )
    container = MessagingContainer.from_dict({"service_name": "x", "transport": {"url": "memory://"}})
    sender = __import__(module).Sender
    with pytest.raises(MissingDependencyError, match=r"no provider named 'nightly_bus', needed by parameter 'bus'.*"):
        container.get(sender)


def test_asking_by_name_for_a_provider_of_another_type_is_an_error(make_module: Callable[[str, str], str]) -> None:
    """Named("command_bus") on a DistributedBus parameter is refused: that provider gives a CommandBus."""
    module = make_module(
        f"named_{uuid.uuid4().hex[:8]}",
        """
        from typing import Annotated
        from container_messaging import DistributedBus, Named

        class Sender:
            def __init__(self, bus: Annotated[DistributedBus, Named("command_bus")]) -> None:
                self.bus = bus
        """,
    )
    container = MessagingContainer.from_dict({"service_name": "x", "transport": {"url": "memory://"}})
    with pytest.raises(
        ContainerError, match=r"DistributedBus named 'command_bus', but that provider gives .*CommandBus"
    ):
        container.get(__import__(module).Sender)


def test_a_bus_name_taken_by_the_framework_is_a_configuration_error() -> None:
    """distributed_buses may not reuse a framework provider's name; the error names the key."""
    from container_messaging import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"distributed_buses\.event_bus: the name is taken"):
        MessagingContainer.from_dict({"service_name": "x", "distributed_buses": {"event_bus": {}}})


def test_channels_on_one_broker_share_one_transport(tmp_path: Path) -> None:
    """One transport per distinct broker URL: channels without a URL use the container's transport, channels with the
    same URL share one, another URL gets its own."""
    other = "embedded://"
    container = MessagingContainer.from_dict(
        {
            "service_name": "x",
            "transport": {"url": "memory://", "data_folder": str(tmp_path)},
            "channels": {"a": None, "b": {"url": "memory://"}, "c": {"url": other}, "d": {"url": other}},
        }
    )
    transports = {name: container.channels.transport(name) for name in "abcd"}
    assert transports["a"] is container.transport is transports["b"]
    assert transports["c"] is transports["d"] is not container.transport
    container.close()


# -- the example system's shared map ------------------------------------------------------------------------------

EXAMPLES = ROOT / "configs" / "service_map"


def test_three_services_configs_include_one_shared_map_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """billing.yaml, ticket.ini and user.yaml of configs/service_map/ read the one map configs/shared/service_map.yaml
    (relative to their own folder), so the three have the same map, and each consumes its own channel."""
    monkeypatch.chdir(ROOT / "tests")  # the include does not depend on the working directory
    monkeypatch.delenv("CONTAINER_MESSAGING_URL", raising=False)
    shared = str(ROOT / "configs" / "shared" / "service_map.yaml")
    loaded = {path.stem: load_settings(path) for path in sorted(EXAMPLES.iterdir())}
    assert set(loaded) == {"billing", "ticket", "user"}
    maps = [settings.service_map for settings in loaded.values()]
    assert all(m is not None and m.source == shared for m in maps)
    assert maps[0] == maps[1] == maps[2]
    assert {name: list(settings.consume) for name, settings in loaded.items()} == {
        "billing": ["distributed_billing"],
        "ticket": ["distributed_ticket"],
        "user": ["distributed_user"],
    }


def test_the_example_services_talk_through_the_shared_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In one process over the embedded transport: the user service's command reaches billing's channel, and the
    event billing publishes reaches ticket's and user's channels (the map's subscriptions), not billing's own."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.delenv("CONTAINER_MESSAGING_URL", raising=False)
    monkeypatch.setenv("CONTAINER_MESSAGING_DATA", str(tmp_path))
    services = {path.stem: MessagingContainer.from_config(path) for path in sorted(EXAMPLES.iterdir())}
    try:
        for container in services.values():
            container.setup()
        from examples.user.handlers import UserController

        services["user"].get(UserController).change_billing("7", "IBAN-7")
        results = {
            name: container.run(container.list()[0], finish_when_no_messages=True)
            for name, container in services.items()
        }
        assert {name: (result.handled, result.failed) for name, result in results.items()} == {
            "billing": (1, 0),
            "ticket": (1, 0),
            "user": (1, 0),
        }
    finally:
        for container in services.values():
            container.close()


def test_the_demo_runs_the_example_system_with_the_service_map(tmp_path: Path) -> None:
    """``python -m examples.demo --mode service_map``: the three example services, each its own OS process, exchange
    the command and the events through their channels over the embedded transport."""
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER_MESSAGING_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "examples.demo", "--mode", "service_map", "--count", "2", "--timeout", "60"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for service in ("billing", "user", "ticket"):
        assert f"ok  {service}: handled 2 of 2 (exit 0)" in output, output
    assert "distributed_ticket: handled 2, failed 0" in output, output
