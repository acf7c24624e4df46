"""The test system (container_messaging.testing.TestSystem): two services, billing and user, each scanning its own
handler module, built from dicts, on in-process channels (and, where the test says so, on the real RabbitMQ)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import kombu
import pytest
from amqp.exceptions import NotFound
from dependency_injector import containers, providers

from container_messaging import (
    ConfigurationError,
    ContainerError,
    ConversionError,
    DistributedBus,
    EndpointError,
    MessagingError,
)
from container_messaging.messages import FailureHeader
from container_messaging.redaction import mask_url
from container_messaging.testing import (
    MessageFailedError,
    Outcome,
    RecordedMessages,
    TestClock,
    TestSystem,
    TestSystemError,
)

BILLING = """
import attrs
from container_messaging import DistributedBus, Headers, command_handler, distributed, retries


@attrs.frozen
class ChangeDetails:
    person_id: str
    details: str


@attrs.frozen
class DetailsChanged:
    person_id: str
    details: str


class Repository:
    def __init__(self) -> None:
        self.details: dict[str, str] = {}
        self.failures_left = 0
        self.calls: list[str] = []


class Billing:
    def __init__(self, repository: Repository, bus: DistributedBus) -> None:
        self.repository = repository
        self.bus = bus

    @distributed
    @command_handler("billing.changeDetails")
    def change(self, command: ChangeDetails, headers: Headers) -> None:
        self.repository.calls.append(command.person_id)
        if self.repository.failures_left:
            self.repository.failures_left -= 1
            raise RuntimeError(f"billing is down for person {command.person_id}")
        self.repository.details[command.person_id] = command.details
        self.bus.convert_and_publish_event("billing.detailsChanged", DetailsChanged(command.person_id, command.details))

    @distributed
    @command_handler("billing.ping")
    def ping(self, count: int) -> None:
        self.bus.convert_and_send_command("user", "user.pong", count + 1)
"""

USER = """
import attrs
from container_messaging import CommandBus, DistributedBus, Headers, NoHandlerError, command_handler, distributed
from container_messaging import event_handler


@attrs.frozen
class DetailsChanged:
    person_id: str
    details: str


class Inbox:
    def __init__(self) -> None:
        self.told: list[tuple[DetailsChanged, str]] = []
        self.fallbacks = 0


class User:
    def __init__(self, inbox: Inbox, bus: DistributedBus, commands: CommandBus) -> None:
        self.inbox = inbox
        self.bus = bus
        self.commands = commands

    @distributed
    @event_handler("billing.*")
    def on_billing(self, event: DetailsChanged, headers: Headers) -> None:
        self.inbox.told.append((event, headers["correlationId"]))
        try:
            self.commands.send_with_routing("user.local", event)
        except ValueError:
            self.inbox.fallbacks += 1  # the handler's own error handling, around a local handler that fails

    @command_handler("user.local")
    def local(self, event: DetailsChanged) -> None:
        raise ValueError("a local handler failing inside a distributed one")

    @distributed
    @command_handler("user.pong")
    def pong(self, count: int) -> None:
        self.bus.convert_and_send_command("billing", "billing.ping", count + 1)
"""


@attrs.define
class Modules:
    billing: Any
    user: Any


@pytest.fixture
def modules(make_module: Callable[[str, str], str]) -> Modules:
    suffix = uuid.uuid4().hex[:8]
    billing = make_module(f"tsys_billing_{suffix}", BILLING)
    user = make_module(f"tsys_user_{suffix}", USER)
    return Modules(__import__(billing), __import__(user))


def configs(modules: Modules, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"service_name": "billing", "scan": [modules.billing.__name__], **extra},
        {"service_name": "user", "scan": [modules.user.__name__], **extra},
    ]


@pytest.fixture
def systems() -> Iterator[list[TestSystem]]:
    """Systems a test builds, closed after it (on a real broker, closing removes their queues and exchange)."""
    built: list[TestSystem] = []
    yield built
    for system in built:
        system.close()


@pytest.fixture
def build(modules: Modules, systems: list[TestSystem]) -> Callable[..., TestSystem]:
    def build(**options: Any) -> TestSystem:
        system = TestSystem(configs(modules), **options)
        systems.append(system)
        return system

    return build


@pytest.fixture(params=["inprocess", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def transport_url(request: pytest.FixtureRequest) -> str | None:
    """None (in-process channels), or the real RabbitMQ's URL: the same test on both."""
    return None if request.param == "inprocess" else str(request.getfixturevalue("amqp_url"))


# -- the flow between services -------------------------------------------------------------------------------------


def test_a_command_crosses_to_billing_and_its_event_comes_back_to_user(
    build: Callable[..., TestSystem], modules: Modules, transport_url: str | None
) -> None:
    """A command user sends is handled by billing's real handler; the event billing publishes reaches user's handler,
    converted to user's own class, with the command's correlation id; each side's recording shows it."""
    system = build(transport_url=transport_url)
    user, billing = system.service("user"), system.service("billing")
    user.distributed_bus.convert_and_send_command(
        "billing", "billing.changeDetails", {"personId": "7", "details": "IBAN-7"}
    )

    run = system.run()

    assert run.stop_reason == "no more messages"
    assert billing.get(modules.billing.Repository).details == {"7": "IBAN-7"}
    [(event, correlation)] = user.get(modules.user.Inbox).told
    assert event == modules.user.DetailsChanged("7", "IBAN-7")
    [command] = user.sent.commands("billing.changeDetails", to="billing")
    assert correlation == command.id
    assert billing.received.commands().ids() == [command.id]
    assert billing.sent.events("billing.*").payloads() == [{"personId": "7", "details": "IBAN-7"}]
    assert user.received.events("billing.detailsChanged").payloads(modules.user.DetailsChanged) == [event]
    assert [(m.service, m.payload_type, m.outcome) for m in run.received] == [
        ("billing", "command", Outcome.ACKNOWLEDGED),
        ("user", "event", Outcome.ACKNOWLEDGED),
    ]
    assert system.queued() == 0


def test_recorded_messages_carry_the_wire_identity_of_each_message(
    build: Callable[..., TestSystem], modules: Modules
) -> None:
    """A recorded command names its payload type, routing key, destination, source, content type and headers as they
    went on the wire; its payload converts to the receiving handler's class."""
    system = build()
    user = system.service("user")
    user.distributed_bus.send_command(
        "billing", "billing.changeDetails", '{"personId":"1","details":"x"}', "application/json", {"tenant": "acme"}
    )
    [sent] = user.sent
    assert (sent.service, sent.payload_type, sent.routing_key, sent.destination, sent.source) == (
        "user",
        "command",
        "billing.changeDetails",
        "billing",
        "user",
    )
    assert (sent.content_type, sent.text, sent.headers["tenant"], sent.outcome) == (
        "application/json",
        '{"personId":"1","details":"x"}',
        "acme",
        None,
    )
    assert sent.payload(modules.billing.ChangeDetails) == modules.billing.ChangeDetails("1", "x")
    assert str(sent) == f"command 'billing.changeDetails' to 'billing' sent by 'user' (id {sent.id})"


def test_recorded_messages_filter_by_kind_routing_key_glob_and_destination(build: Callable[..., TestSystem]) -> None:
    """commands/events/messages keep only their kind, a routing key matches as an Ecotone glob, ``to`` matches the
    destination, and the result is RecordedMessages again."""
    system = build()
    bus = system.service("user").distributed_bus
    bus.publish_event("orders.placed", "{}", "application/json")
    bus.publish_event("billing.detailsChanged", '{"personId":"1","details":"x"}', "application/json")
    bus.send_command("billing", "billing.changeDetails", '{"personId":"1","details":"x"}', "application/json")
    sent = system.service("user").sent
    assert isinstance(sent.events(), RecordedMessages)
    assert sent.events().routing_keys() == ["orders.placed", "billing.detailsChanged"]
    assert sent.events("billing.*").routing_keys() == ["billing.detailsChanged"]
    assert sent.events("orders.placed").routing_keys() == ["orders.placed"]
    assert sent.commands(to="billing").routing_keys() == ["billing.changeDetails"]
    assert sent.commands(to="user") == ()
    assert sent.messages() == ()


def test_run_of_one_service_leaves_the_others_messages_queued(build: Callable[..., TestSystem]) -> None:
    """Running billing's endpoint handles its command; the event it published waits on user's queue until user runs."""
    system = build()
    system.service("user").distributed_bus.send_command(
        "billing", "billing.changeDetails", '{"personId":"1","details":"x"}', "application/json"
    )
    first = system.service("billing").run()
    assert [m.service for m in first.received] == ["billing"]
    assert (system.queued("billing"), system.queued("user")) == (0, 1)
    second = system.run("user")
    assert [m.payload_type for m in second.received] == ["event"]
    assert system.queued() == 0


def test_an_empty_queue_ends_a_run_without_waiting_for_the_idle_timeout(build: Callable[..., TestSystem]) -> None:
    """With a polling interval that makes a consumer wait 10 s to call its queue empty, a system run still returns at
    once: the in-process queues are not polled, an empty one is known to be empty."""
    system = build(settings={name: {"transport": {"polling_interval": 1.0}} for name in ("billing", "user")})
    system.service("user").distributed_bus.send_command(
        "billing", "billing.changeDetails", '{"personId":"1","details":"x"}', "application/json"
    )
    started = time.monotonic()
    run = system.run()
    assert (run.stop_reason, run.handled) == ("no more messages", 2)
    assert time.monotonic() - started < 10  # four endpoint runs: 40 s if any waited for its idle timeout


# -- failures ------------------------------------------------------------------------------------------------------


def test_a_failing_handler_raises_its_own_exception_in_the_test(
    build: Callable[..., TestSystem], modules: Modules, transport_url: str | None
) -> None:
    """fail_fast (the default): the handler's exception object is raised by run(), after one attempt although two
    immediate retries are configured; the message stays on its queue, recorded as returned."""
    system = build(transport_url=transport_url)
    billing = system.service("billing")
    repository = billing.get(modules.billing.Repository)
    repository.failures_left = 5
    system.service("user").distributed_bus.send_command(
        "billing", "billing.changeDetails", '{"personId":"9","details":"x"}', "application/json"
    )

    with pytest.raises(RuntimeError, match="billing is down for person 9") as raised:
        system.run()

    assert raised.value.__traceback__ is not None
    assert raised.traceback[-1].name == "change"  # the handler's own frame, where it raised
    assert repository.calls == ["9"]
    assert billing.queued() == 1
    assert [m.outcome for m in billing.received] == [Outcome.RETURNED]


def test_a_local_handler_failing_inside_a_handler_stays_the_handlers_business(
    build: Callable[..., TestSystem], modules: Modules
) -> None:
    """fail_fast stops only on an exception escaping the handler a consumer called: an error of a local handler that
    the distributed handler catches itself does not stop the run."""
    system = build()
    system.service("billing").distributed_bus.publish_event(
        "billing.detailsChanged", '{"personId":"1","details":"x"}', "application/json"
    )
    run = system.run()
    inbox = system.service("user").get(modules.user.Inbox)
    assert (run.handled, inbox.fallbacks) == (1, 1)


def test_a_message_refused_before_any_handler_ran_is_a_message_failed_error(build: Callable[..., TestSystem]) -> None:
    """fail_fast: a command billing has no distributed handler for goes to the dead letter (as in production) and
    run() raises MessageFailedError naming the endpoint, the message and the dispatcher's error."""
    system = build()
    system.service("user").distributed_bus.send_command("billing", "billing.unknown", "{}", "application/json")
    with pytest.raises(MessageFailedError) as raised:
        system.run()
    assert "endpoint 'billing' could not handle the command 'billing.unknown' to 'billing'" in str(raised.value)
    assert "DistributionError: There is no Distributed Command Handler registered with routing key" in str(raised.value)
    assert isinstance(raised.value, MessagingError)
    [entry] = system.service("billing").dead_letter().list()
    assert entry.routing_key == "billing.unknown"


def test_a_conversion_error_surfaces_in_the_test(build: Callable[..., TestSystem]) -> None:
    """A payload that does not fit the handler's class (a number where text is expected) raises the ConversionError
    listing the field: the round trip through bytes is real."""
    system = build()
    system.service("user").distributed_bus.convert_and_send_command(
        "billing", "billing.changeDetails", {"personId": 7, "details": "x"}
    )
    with pytest.raises(ConversionError, match=r"\$\.personId"):
        system.run()


def test_without_fail_fast_retries_and_the_dead_letter_behave_as_in_production(
    build: Callable[..., TestSystem], modules: Modules
) -> None:
    """fail_fast=False: a handler failing three times runs three times (immediate retries 2), then its message goes to
    the dead letter with its failure; run() returns, and the recording says dead-lettered."""
    system = build(fail_fast=False, settings={"billing": {"recoverability": {"delayed_retries": []}}})
    billing = system.service("billing")
    billing.get(modules.billing.Repository).failures_left = 3
    system.service("user").distributed_bus.send_command(
        "billing", "billing.changeDetails", '{"personId":"3","details":"x"}', "application/json"
    )
    run = system.run()
    assert (run.handled, run.failed) == (0, 1)
    assert billing.get(modules.billing.Repository).calls == ["3", "3", "3"]
    [received] = billing.received.with_outcome(Outcome.DEAD_LETTERED)
    assert received.error == "builtins.RuntimeError: billing is down for person 3"
    assert received.failure is not None and received.failure[FailureHeader.ATTEMPTS] == 3
    [entry] = billing.dead_letter().list()
    assert entry.message_id == received.id


def test_a_delayed_retry_waits_for_the_test_clock(build: Callable[..., TestSystem], modules: Modules) -> None:
    """A retry delayed 60 s is not due while the clock stands still, nor at 59.9 s; advancing the clock to 60 s makes
    the next run handle it, with no sleeping (the whole test takes far less than the delay)."""
    started = time.monotonic()
    clock = TestClock()
    system = build(
        fail_fast=False,
        clock=clock,
        settings={"billing": {"recoverability": {"immediate_retries": 0, "delayed_retries": [60_000]}}},
    )
    billing = system.service("billing")
    repository = billing.get(modules.billing.Repository)
    repository.failures_left = 1
    system.service("user").distributed_bus.send_command(
        "billing", "billing.changeDetails", '{"personId":"5","details":"x"}', "application/json"
    )
    system.run("billing")
    assert (billing.delayed(), billing.queued(), repository.details) == (1, 0, {})
    clock.advance(59.9)
    assert system.run("billing").received == ()
    clock.advance(0.1)
    retried = system.run("billing")
    assert [m.outcome for m in retried.received] == [Outcome.ACKNOWLEDGED]
    assert retried.received[0].headers["ecotone_retry_number"] == 1
    assert repository.details == {"5": "x"}
    assert [m.outcome for m in billing.received] == [Outcome.RETRIED_LATER, Outcome.ACKNOWLEDGED]
    assert system.clock is clock and billing.delayed() == 0
    assert time.monotonic() - started < 60


def test_stop_on_failure_leaves_the_message_queued_and_ends_the_run(
    build: Callable[..., TestSystem], modules: Modules
) -> None:
    """Without fail_fast, stop_on_failure puts the failing message back on its queue and the system run stops there,
    with the consumer's reason."""
    system = build(fail_fast=False)
    system.service("billing").get(modules.billing.Repository).failures_left = 10
    system.service("user").distributed_bus.send_command(
        "billing", "billing.changeDetails", '{"personId":"1","details":"x"}', "application/json"
    )
    run = system.run(stop_on_failure=True)
    assert "stop_on_failure" in run.stop_reason
    assert [m.outcome for m in run.received] == [Outcome.REQUEUED]
    assert system.queued("billing") == 1


# -- run limits ----------------------------------------------------------------------------------------------------


def test_handled_message_limit_counts_messages_across_services(build: Callable[..., TestSystem]) -> None:
    """Services that message each other forever (ping-pong) stop quietly at handled_message_limit, counted over the
    whole run; the next message waits on its queue."""
    system = build()
    system.service("user").distributed_bus.convert_and_send_command("billing", "billing.ping", 0)
    run = system.run(handled_message_limit=5)
    assert run.stop_reason == "handled message limit reached"
    assert [m.service for m in run.received] == ["billing", "user", "billing", "user", "billing"]
    assert [m.payload() for m in run.received] == [0, 1, 2, 3, 4]
    assert system.queued() == 1


def test_an_endless_exchange_is_an_error_naming_the_busiest_routes(build: Callable[..., TestSystem]) -> None:
    """Without a limit, a run taking message_limit messages while more are queued raises TestSystemError that names
    the routes the messages took."""
    system = build(message_limit=20)
    system.service("user").distributed_bus.convert_and_send_command("billing", "billing.ping", 0)
    with pytest.raises(TestSystemError, match="took 20 messages") as raised:
        system.run()
    assert "billing <- command 'billing.ping': 10" in str(raised.value)
    assert "user <- command 'user.pong': 10" in str(raised.value)


def test_execution_time_limit_stops_the_run(build: Callable[..., TestSystem]) -> None:
    """An endless exchange under execution_time_limit stops by time, well before the message limit."""
    system = build(message_limit=10_000_000)
    system.service("user").distributed_bus.convert_and_send_command("billing", "billing.ping", 0)
    run = system.run(execution_time_limit=200)
    assert run.stop_reason == "execution time limit reached"
    assert len(run.received) > 0


# -- overrides and settings ----------------------------------------------------------------------------------------


def test_override_by_type_replaces_a_dependency_with_a_fake(build: Callable[..., TestSystem], modules: Modules) -> None:
    """A repository overridden by type before the first message is the one billing's handler writes to."""
    system = build()
    billing = system.service("billing")
    fake = modules.billing.Repository()
    billing.override(modules.billing.Repository, fake)
    billing.distributed_bus.send_command(
        "billing", "billing.changeDetails", '{"personId":"1","details":"x"}', "application/json"
    )
    system.run()
    assert fake.details == {"1": "x"}
    assert billing.get(modules.billing.Repository) is fake


def test_override_by_name_is_undone_when_the_system_closes(build: Callable[..., TestSystem], modules: Modules) -> None:
    """An application container's provider overridden by name serves the fake during the test and the real object
    again once the system is closed (the application container outlives the test)."""

    class App(containers.DeclarativeContainer):
        repository = providers.Singleton(modules.billing.Repository)

    app = App()
    real = app.repository()
    system = build(apps={"billing": app})
    fake = modules.billing.Repository()
    system.service("billing").override("repository", fake)
    assert system.service("billing").get(modules.billing.Repository) is fake
    system.close()
    assert app.repository() is real


def test_override_of_an_unknown_name_lists_the_known_ones(build: Callable[..., TestSystem]) -> None:
    """Overriding a provider name the container does not have is a ContainerError naming it and the known names."""
    with pytest.raises(ContainerError, match=r"service 'billing' has no provider named 'nope' \(known: .*command_bus"):
        build().service("billing").override("nope", object())


def test_settings_set_configuration_values_per_service(build: Callable[..., TestSystem]) -> None:
    """settings= sets keys of one service (others keep theirs), checked as in a file: a bad value names the key."""
    system = build(
        settings={"user": {"conversion": {"json_keys": "as_is"}, "recoverability": {"immediate_retries": 0}}}
    )
    assert system.service("user").container.settings.conversion.json_keys == "as_is"
    assert system.service("user").container.settings.recoverability.delayed_retries == (1000, 10000, 60000)
    assert system.service("billing").container.settings.conversion.json_keys == "camelCase"
    with pytest.raises(ConfigurationError, match=r"\(TestSystem settings\): recoverability.immediate_retries: "):
        build(settings={"user": {"recoverability": {"immediate_retries": "many"}}})


# -- building ------------------------------------------------------------------------------------------------------


def test_services_come_from_configuration_files(modules: Modules, tmp_path: Any, systems: list[TestSystem]) -> None:
    """YAML and INI files build their services; the transport URL in the files is replaced by in-process channels."""
    (tmp_path / "billing.yaml").write_text(
        f"service_name: billing\nscan: [{modules.billing.__name__}]\ntransport:\n  url: pyamqp://u:p@127.0.0.1:1//\n"
    )
    (tmp_path / "user.ini").write_text(
        f"[container_messaging]\nservice_name = user\nscan = {modules.user.__name__}\n"
        "[deduplication]\nstore = redis://127.0.0.1:1/0\n"
    )
    system = TestSystem([tmp_path / "billing.yaml", str(tmp_path / "user.ini")])
    systems.append(system)
    assert system.services == ("billing", "user")
    assert system.service("billing").container.transport.description == "inprocess://billing"
    assert system.service("user").container.settings.deduplication.store == "memory"
    system.service("user").distributed_bus.send_command(
        "billing", "billing.changeDetails", '{"personId":"1","details":"x"}', "application/json"
    )
    assert system.run().handled == 2


@pytest.mark.parametrize(
    ("configs", "options", "error"),
    [
        ([{"scan": []}], {}, r"<dict>: service_name: a service of a TestSystem needs a service_name"),
        ([{"service_name": "a"}, {"service_name": "a"}], {}, "'a' is in the TestSystem twice"),
        ([{"service_name": "a"}], {"settings": {"b": {}}}, r"TestSystem settings: no service named 'b' \(services"),
        ([{"service_name": "a"}], {"apps": {"b": None}}, "TestSystem apps: no service named 'b'"),
        ([{"service_name": "a"}], {"message_limit": 0}, "message_limit must be at least 1"),
        ([{"service_name": "a"}], {"transport_url": "memory://", "clock": TestClock()}, "with transport_url"),
    ],
)
def test_a_system_that_cannot_be_built_names_the_culprit(
    configs: list[dict[str, Any]], options: dict[str, Any], error: str
) -> None:
    """A service without a name, a name given twice, settings or apps for no service, a bad limit, or a test clock
    with a real broker is a ConfigurationError saying which."""
    with pytest.raises(ConfigurationError, match=error):
        TestSystem(configs, **options)


def test_an_unknown_service_name_lists_the_services(build: Callable[..., TestSystem]) -> None:
    """Asking for a service the system does not have is an EndpointError listing the ones it has."""
    with pytest.raises(EndpointError, match=r"no service named 'ticket' \(services: 'billing', 'user'\)"):
        build().service("ticket")


@pytest.mark.rabbitmq
def test_on_a_real_broker_names_are_unique_and_removed_on_close(
    modules: Modules, systems: list[TestSystem], amqp_url: str
) -> None:
    """With a real broker, the exchange and queues carry the system's unique suffix, the password stays out of the
    repr, the test clock is a TestSystemError saying why, and closing the system deletes its queues and exchange."""
    system = TestSystem(configs(modules), transport_url=amqp_url)
    systems.append(system)
    settings = system.service("billing").container.settings
    assert settings.distribution.exchange == f"ecotone.distributed.test.{system.suffix}"
    assert system.service("billing").queue == f"test_{system.suffix}_distributed_billing"
    assert settings.transport.url == amqp_url
    with pytest.raises(TestSystemError, match="real time"):
        system.clock
    assert system.delayed() == 0
    assert mask_url(amqp_url) in repr(system)
    assert mask_url(amqp_url) == amqp_url or amqp_url not in repr(system)
    queues = [system.service(name).queue for name in system.services]
    system.close()
    with kombu.Connection(amqp_url) as connection:
        for queue in (*queues, f"{queues[0]}.dead_letter"):
            with pytest.raises(NotFound):
                connection.channel().queue_declare(queue, passive=True)
        with pytest.raises(NotFound):
            connection.channel().exchange_declare(settings.distribution.exchange, "topic", passive=True)


def test_two_systems_share_nothing(build: Callable[..., TestSystem], modules: Modules) -> None:
    """What one system sends never reaches the other's queues, recordings or singletons."""
    first, second = build(), build()
    first.service("user").distributed_bus.send_command(
        "billing", "billing.changeDetails", '{"personId":"1","details":"x"}', "application/json"
    )
    assert (first.queued(), second.queued()) == (1, 0)
    second.run()
    assert second.service("billing").received == ()
    first.run()
    assert second.service("billing").get(modules.billing.Repository).details == {}


def test_clear_recorded_forgets_what_was_recorded(build: Callable[..., TestSystem]) -> None:
    """clear_recorded() empties every service's sent and received messages."""
    system = build()
    system.service("user").distributed_bus.send_command(
        "billing", "billing.changeDetails", '{"personId":"1","details":"x"}', "application/json"
    )
    system.run()
    system.clear_recorded()
    assert [(s.sent, s.received) for s in map(system.service, system.services)] == [((), ()), ((), ())]


def test_the_test_clock_only_moves_forward() -> None:
    """TestClock.advance takes seconds or a timedelta and refuses to go back or to take a non-number."""
    import datetime

    clock = TestClock(start=10)
    assert clock.advance(datetime.timedelta(milliseconds=500)) == 10.5
    assert clock() == clock.now() == 10.5
    with pytest.raises(ConfigurationError, match="never goes back"):
        clock.advance(-1)
    with pytest.raises(ConfigurationError, match="finite number of seconds"):
        clock.advance(float("nan"))


def test_the_distributed_bus_of_a_service_is_its_containers(build: Callable[..., TestSystem]) -> None:
    """A service's buses are its container's own objects (the system adds nothing between them)."""
    service = build().service("user")
    assert service.distributed_bus is service.container.get(DistributedBus)
    assert service.get("distributed_bus") is service.distributed_bus
