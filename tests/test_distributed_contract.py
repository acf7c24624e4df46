"""The distributed bus contract: the same Ecotone behaviour in both modes (Ecotone's AMQP distributed bus, and the
Distributed Bus with Service Map) on every transport (memory, embedded, RabbitMQ, Redis), and over a service map
whose channels live on two brokers at once.

Every test builds several containers (one per service) in this process; they talk through the transport under test.
Where the modes differ by design, the test says so: with a service map a publisher does not receive its own events,
and a command to a service the map does not know is refused before sending rather than unroutable at the broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kombu
import pytest

from container_messaging import (
    DistributedBus,
    EndpointError,
    InvalidMessageError,
    MessagingContainer,
    UnroutableMessageError,
)
from container_messaging.transports import OutboundMessage, dead_letter_queue

from conftest import TRANSPORTS, forget_endpoint, transport_section

HANDLERS = """
import attrs
from typing import Annotated
from container_messaging import (
    DistributedBus, EventBus, Header, Headers, command_handler, distributed, event_handler, service_activator,
)

RECEIVED = []

@attrs.frozen
class ChangeBillingDetails:
    person_id: str
    billing_details: str

class BillingService:
    def __init__(self, bus: DistributedBus) -> None:
        self.bus = bus

    @distributed
    @command_handler("billing.changeDetails")
    def change(self, command: ChangeBillingDetails, headers: Headers) -> None:
        RECEIVED.append(("billing.changeDetails", command, dict(headers)))
        self.bus.convert_and_publish_event("billing.detailsWereChanged", {"personId": command.person_id})

    @command_handler("billing.local")
    def local_only(self, command: dict) -> None:
        RECEIVED.append(("billing.local", command, {}))

    @distributed
    @command_handler("billing.fail")
    def fail(self, command: dict) -> None:
        raise RuntimeError("handler failed on purpose")

    @distributed
    @command_handler("billing.flaky")
    def flaky(self, command: dict, headers: Headers) -> None:
        RECEIVED.append(("billing.flaky", command, dict(headers)))
        if len([r for r in RECEIVED if r[0] == "billing.flaky"]) < 3:
            raise RuntimeError("not yet")

    @distributed
    @service_activator("billing.channel")
    def channel(self, payload: str, headers: Headers) -> None:
        RECEIVED.append(("billing.channel", payload, dict(headers)))

    @service_activator("billing.private")
    def private_channel(self, payload: str) -> None:
        RECEIVED.append(("billing.private", payload, {}))

class Subscriber:
    @distributed
    @event_handler("billing.*")
    def on_billing(self, event: dict, headers: Headers) -> None:
        RECEIVED.append(("on_billing", event, dict(headers)))

    @distributed
    @event_handler("billing.detailsWereChanged")
    def on_changed(self, event: dict) -> None:
        RECEIVED.append(("on_changed", event, {}))

    @event_handler("billing.detailsWereChanged")
    def local_listener(self, event: dict) -> None:
        RECEIVED.append(("local_listener", event, {}))

    @event_handler("orders.*")
    def not_distributed(self, event: dict) -> None:
        RECEIVED.append(("not_distributed", event, {}))

    @distributed
    @event_handler("orders.ship*")
    def on_shipping(self, event: dict) -> None:
        RECEIVED.append(("on_shipping", event, {}))
"""


#: (mode, transport): Ecotone's AMQP bus and the Service Map on every transport, and a map whose channels live on
#: two brokers at once (billing's and audit's channels on RabbitMQ, ticket's and user's on Redis).
SETUPS = [
    *(("amqp", kind) for kind in TRANSPORTS),
    *(("service_map", kind) for kind in TRANSPORTS),
    ("service_map", "rabbitmq+redis"),
]
SERVICES = ("billing", "ticket", "audit", "user")
DELAYS = (50,)  # the delayed retries of the retry test
ON_RABBITMQ = ("billing", "audit")  # the others' channels are on Redis, in the two-broker setup


class Services:
    """Builds one container per service on the setup under test, all scanning one handler module.

    In ``service_map`` mode every service shares one map: each service's commands go to its channel ``ch_<unique>_
    <service>``, each channel subscribes to ``billing.*`` and ``orders.*`` (what the handlers' AMQP bindings say in
    ``amqp`` mode), and each service consumes its own channel.
    """

    def __init__(
        self,
        mode: str,
        kind: str,
        tmp_path: Path,
        unique: str,
        distribution: dict[str, str],
        make_module: Callable[[str, str], str],
    ) -> None:
        self.mode = mode
        self.kind = kind
        self.tmp_path = tmp_path
        self.distribution = distribution
        self.module_name = make_module(f"contract_{uuid.uuid4().hex[:8]}", HANDLERS)
        self.module: Any = __import__(self.module_name)
        self.containers: list[MessagingContainer] = []
        self.channel = {service: f"ch_{unique}_{service}" for service in SERVICES}

    @property
    def self_delivery(self) -> bool:
        """Whether a service receives the events it publishes itself: through its AMQP bindings, yes; with a service
        map, a publisher's own channel is skipped."""
        return self.mode == "amqp"

    def _transport(self) -> dict[str, Any]:
        if self.kind == "rabbitmq+redis":
            return transport_section("redis", self.tmp_path)
        return transport_section(self.kind, self.tmp_path)

    def _channel_url(self, service: str) -> dict[str, str] | None:
        if self.kind != "rabbitmq+redis":
            return None
        kind = "rabbitmq" if service in ON_RABBITMQ else "redis"
        return {"url": transport_section(kind, self.tmp_path)["url"]}

    def service_map(self) -> dict[str, Any]:
        return {
            "channels": {self.channel[service]: self._channel_url(service) for service in SERVICES},
            "commands": {service: self.channel[service] for service in SERVICES},
            "events": [
                {"channel": self.channel[service], "subscription_keys": ["billing.*", "orders.*"]}
                for service in SERVICES
            ],
        }

    def container(self, service_name: str, **sections: Any) -> MessagingContainer:
        """A service; no retries unless a ``recoverability`` section says otherwise (failures go to the dead letter)."""
        config: dict[str, Any] = {
            "service_name": service_name,
            "scan": [self.module_name],
            "transport": self._transport(),
            "distribution": self.distribution,
            "recoverability": {"immediate_retries": 0, "delayed_retries": []},
        }
        if self.mode == "service_map":
            config["service_map"] = self.service_map()
            config["consume"] = [self.channel[service_name]] if service_name in self.channel else []
        container = MessagingContainer.from_dict({**config, **sections})
        self.containers.append(container)
        return container

    def endpoint(self, container: MessagingContainer) -> str:
        """The endpoint a service consumes: its name (AMQP mode) or its channel."""
        service = container.settings.service_name or ""
        return service if self.mode == "amqp" else self.channel[service]

    def queue_size(self, container: MessagingContainer, *, dead_letter: bool = False) -> int:
        """How many messages wait on the service's queue (or on its dead letter queue)."""
        endpoint = self.endpoint(container)
        if self.mode == "amqp":
            transport, queue = container.transport, container.topology.queue(endpoint)
        else:
            transport, queue = container.channels.transport(endpoint), endpoint
        return transport.queue_size(dead_letter_queue(queue) if dead_letter else queue)

    def put_raw(self, container: MessagingContainer, headers: dict[str, Any], body: bytes) -> None:
        """Puts a hand-made message where the service's consumer reads: published with the service's name as routing
        key (AMQP mode), or straight onto its channel."""
        endpoint = self.endpoint(container)
        message = OutboundMessage(endpoint, body, headers, "application/json", str(uuid.uuid4()))
        if self.mode == "amqp":
            container.transport.publish(container.topology.exchange, message, mandatory=True)
        else:
            container.channels.transport(endpoint).send_to_queue(endpoint, message)

    def received(self, what: str) -> list[tuple[str, Any, dict[str, Any]]]:
        return [r for r in self.module.RECEIVED if r[0] == what]

    def close(self) -> None:
        for container in self.containers:
            if self.mode == "amqp" and container.list():
                queue = container.topology.queue(container.settings.service_name or "")
                forget_endpoint(container, queue, DELAYS)
        if self.mode == "service_map" and self.containers:
            channels = self.containers[0].channels
            for service in SERVICES:
                drop_queue(channels.get(self.channel[service]).url, self.channel[service])
        for container in self.containers:
            container.close()


def drop_queue(url: str, queue: str) -> None:
    """Deletes a channel's queue and its dead letter queue from a shared broker (RabbitMQ or Redis)."""
    scheme = url.partition("://")[0]
    if scheme not in ("pyamqp", "amqp", "redis"):
        return
    with kombu.Connection(url) as connection:
        channel = connection.channel()
        if scheme == "redis":
            channel.client.delete(queue, dead_letter_queue(queue), f"{queue}.delayed")
            return
        for name in (queue, dead_letter_queue(queue), *(f"{queue}.delay.{ms}" for ms in DELAYS)):
            channel.queue_delete(name)


@pytest.fixture(params=SETUPS, ids=[f"{mode}-{kind}" for mode, kind in SETUPS])
def services(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    unique: str,
    distribution: dict[str, str],
    make_module: Callable[[str, str], str],
) -> Any:
    mode, kind = request.param
    built = Services(mode, kind, tmp_path, unique, distribution, make_module)
    yield built
    built.close()


def drain(services: Services, container: MessagingContainer, **options: Any) -> Any:
    """Runs the service's endpoint until its queue is empty."""
    return container.run(services.endpoint(container), finish_when_no_messages=True, **options)


def test_command_reaches_the_distributed_handler_with_ecotone_headers(services: Services) -> None:
    """A command sent to another service is handled there, with every header Ecotone puts on the wire (the AMQP
    routing key header only in AMQP mode)."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    user.get(DistributedBus).send_command(
        "billing",
        "billing.changeDetails",
        '{"personId":"123","billingDetails":"01111"}',
        "application/json",
        {"tenant": "acme"},
    )
    result = drain(services, billing)

    [(_, command, headers)] = services.received("billing.changeDetails")
    assert command == services.module.ChangeBillingDetails("123", "01111")
    assert headers["ecotone.distributed.payloadType"] == "command"
    assert headers["ecotone.distributed.routingKey"] == "billing.changeDetails"
    assert headers["ecotone.distributed.targetServiceName"] == "billing"
    assert headers["ecotone.distributed.sourceServiceName"] == "user"
    assert headers.get("ecotone.amqp.distributed.service_target") == ("billing" if services.mode == "amqp" else None)
    assert headers["routingSlip"] == "ecotone.distributed.invoke"
    assert headers["contentType"] == "application/json"
    assert headers["correlationId"] == headers["id"]
    assert uuid.UUID(headers["id"]).version == 7
    assert isinstance(headers["timestamp"], int)
    assert headers["tenant"] == "acme"
    # the command, then (AMQP mode) the event its handler published: billing's bindings include billing.*
    assert (result.handled, result.failed) == (2 if services.self_delivery else 1, 0)


def test_convert_and_send_command_serializes_objects_to_camel_case_json(services: Services) -> None:
    """convert_and_send_command sends an attrs object as camelCase JSON with its type name, and it converts back."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    command = services.module.ChangeBillingDetails("7", "IBAN")
    user.get(DistributedBus).convert_and_send_command("billing", "billing.changeDetails", command)
    drain(services, billing)
    [(_, received, headers)] = services.received("billing.changeDetails")
    assert received == command
    assert headers["__TypeId__"] == f"{services.module_name}.ChangeBillingDetails"


def test_event_reaches_each_subscribed_service_once_and_every_local_handler(services: Services) -> None:
    """One event reaches each service with a matching distributed handler exactly once, then all its local handlers."""
    ticket, audit, user = services.container("ticket"), services.container("audit"), services.container("user")
    ticket.setup()
    audit.setup()
    user.get(DistributedBus).publish_event("billing.detailsWereChanged", '{"personId":"1"}', "application/json")

    ticket_result, audit_result = drain(services, ticket), drain(services, audit)

    # each service got one transport message although two of its distributed handlers match the key
    assert ticket_result.handled == 1 and audit_result.handled == 1
    assert len(services.received("on_billing")) == 2
    assert len(services.received("on_changed")) == 2
    assert len(services.received("local_listener")) == 2


def test_glob_subscription_receives_events_several_words_deep(services: Services) -> None:
    """A handler of ``billing.*`` receives events several words deep (``*`` spans dots, as in Ecotone)."""
    ticket, user = services.container("ticket"), services.container("user")
    ticket.setup()
    user.get(DistributedBus).publish_event("billing.invoice.paid", '{"n":1}', "application/json")
    drain(services, ticket)
    [(_, event, headers)] = services.received("on_billing")
    assert event == {"n": 1}
    assert headers["ecotone.distributed.routingKey"] == "billing.invoice.paid"
    assert "ecotone.distributed.targetServiceName" not in headers


def test_event_no_handler_matches_is_acknowledged_and_dropped(services: Services) -> None:
    """An event that reaches the queue but matches no distributed handler is acknowledged and dropped, and the local
    (not distributed) handlers of its key do not run."""
    ticket, user = services.container("ticket"), services.container("user")
    ticket.setup()
    # ``orders.ship*`` is bound as ``orders.#`` (the map subscribes ``orders.*``): ``orders.cancelled`` reaches the
    # queue, the handler's glob says no
    user.get(DistributedBus).publish_event("orders.cancelled", '{"n":1}', "application/json")
    result = drain(services, ticket)
    assert result.handled == 1 and result.failed == 0
    assert services.module.RECEIVED == []
    assert services.queue_size(ticket) == 0
    assert services.queue_size(ticket, dead_letter=True) == 0


def test_event_nobody_subscribes_to_is_not_an_error_for_the_publisher(services: Services) -> None:
    """Publishing an event no service subscribes to succeeds and delivers nothing (the default: dropped)."""
    ticket, user = services.container("ticket"), services.container("user")
    ticket.setup()
    user.get(DistributedBus).publish_event("nobody.listens", "x")
    assert services.queue_size(ticket) == 0
    assert drain(services, ticket).handled == 0


def test_event_nobody_subscribes_to_is_an_error_when_asked(services: Services) -> None:
    """With distribution.unsubscribed_events: error (Ecotone 1.326's mandatory publishing), publishing an event no
    service subscribes to raises UnroutableMessageError naming its key; a subscribed event is still delivered."""
    ticket = services.container("ticket")
    ticket.setup()
    user = services.container("user", distribution={**services.distribution, "unsubscribed_events": "error"})
    bus = user.get(DistributedBus)
    with pytest.raises(UnroutableMessageError, match=r"nobody\.listens"):
        bus.publish_event("nobody.listens", "x")
    bus.publish_event("billing.detailsWereChanged", '{"personId":"1"}', "application/json")
    assert drain(services, ticket).handled == 1


def test_handler_without_distributed_is_unreachable_from_outside(services: Services) -> None:
    """A command for a handler without @distributed fails with Ecotone's error and is dead-lettered, not handled."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    user.get(DistributedBus).send_command("billing", "billing.local", "{}", "application/json")
    result = drain(services, billing)
    assert result.failed == 1 and result.handled == 0
    assert services.received("billing.local") == []
    assert services.queue_size(billing, dead_letter=True) == 1


def test_failing_handler_message_is_dead_lettered_with_the_error(services: Services) -> None:
    """A message whose handler raises is kept in the dead letter queue with the error, never acknowledged as handled."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    user.get(DistributedBus).send_command("billing", "billing.fail", "{}", "application/json")
    result = drain(services, billing)
    assert (result.handled, result.failed) == (0, 1)
    assert services.queue_size(billing) == 0
    [entry] = billing.dead_letter(services.endpoint(billing)).list()
    assert entry.error_message == "handler failed on purpose"


def test_stop_on_failure_keeps_the_message_on_its_queue(services: Services) -> None:
    """With stop_on_failure the consumer stops at the failing message, which stays on the service's queue."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    bus = user.get(DistributedBus)
    bus.send_command("billing", "billing.fail", "{}", "application/json")
    bus.send_command("billing", "billing.changeDetails", '{"personId":"1","billingDetails":"x"}', "application/json")
    result = drain(services, billing, stop_on_failure=True)
    assert (result.handled, result.failed) == (0, 1)
    assert "stop_on_failure" in result.stop_reason
    assert services.queue_size(billing) == 2


def test_failing_handler_is_retried_at_once_then_later_and_succeeds(services: Services) -> None:
    """A handler that fails twice runs again at once (immediate retry), then after a delay (a delayed copy on the
    same queue, never held unacknowledged), and succeeds: nothing is dead-lettered."""
    billing = services.container("billing", recoverability={"immediate_retries": 1, "delayed_retries": list(DELAYS)})
    user = services.container("user")
    billing.setup()
    user.get(DistributedBus).send_command("billing", "billing.flaky", '{"n":1}', "application/json")
    first = billing.run(services.endpoint(billing), handled_message_limit=1)
    assert (first.handled, first.failed, first.retried) == (0, 0, 1)  # two attempts, then a delayed copy
    second = drain(services, billing)
    assert (second.handled, second.failed) == (1, 0)
    attempts = services.received("billing.flaky")
    assert len(attempts) == 3
    assert len({headers["id"] for _, _, headers in attempts}) == 1  # one message, three attempts
    assert services.queue_size(billing, dead_letter=True) == 0


def test_a_message_already_handled_is_skipped_when_it_comes_again(services: Services) -> None:
    """A message whose id a handler already handled (sent twice with the same id) is acknowledged as a duplicate,
    and the handler runs once."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    bus = user.get(DistributedBus)
    message_id = str(uuid.uuid4())
    for _ in range(2):
        bus.send_message("billing", "billing.channel", "once", metadata={"id": message_id})
    result = drain(services, billing)
    assert (result.handled, result.duplicates) == (1, 1)
    assert [payload for _, payload, _ in services.received("billing.channel")] == ["once"]


def test_command_targeted_at_another_service_is_an_error(services: Services) -> None:
    """A command whose targetServiceName is another service is refused and dead-lettered, naming both services."""
    billing = services.container("billing")
    billing.setup()
    services.put_raw(
        billing,
        {
            "id": str(uuid.uuid4()),
            "ecotone.distributed.payloadType": "command",
            "ecotone.distributed.routingKey": "billing.changeDetails",
            "ecotone.distributed.targetServiceName": "shipping",
        },
        b'{"personId":"1","billingDetails":"x"}',
    )
    result = drain(services, billing)
    assert result.failed == 1
    assert services.received("billing.changeDetails") == []
    [entry] = billing.dead_letter(services.endpoint(billing)).list()
    assert "'shipping'" in (entry.error_message or "") and "'billing'" in (entry.error_message or "")


def test_unknown_payload_type_is_an_error(services: Services) -> None:
    """A distributed message with an unknown payloadType is refused and dead-lettered."""
    billing = services.container("billing")
    billing.setup()
    services.put_raw(
        billing,
        {
            "id": str(uuid.uuid4()),
            "ecotone.distributed.payloadType": "query",
            "ecotone.distributed.routingKey": "billing.changeDetails",
        },
        b"{}",
    )
    assert drain(services, billing).failed == 1
    assert services.queue_size(billing, dead_letter=True) == 1


def test_message_hand_crafted_with_ecotones_headers_is_handled(services: Services) -> None:
    """A message a non-Ecotone application writes with only the headers Ecotone asks of it (payloadType, routingKey,
    contentType, routingSlip: no id, no source or target) reaches the distributed command handler."""
    billing = services.container("billing")
    billing.setup()
    services.put_raw(
        billing,
        {
            "ecotone.distributed.payloadType": "command",
            "ecotone.distributed.routingKey": "billing.changeDetails",
            "contentType": "application/json",
            "routingSlip": "ecotone.distributed.invoke",
        },
        b'{"personId":"5","billingDetails":"by hand"}',
    )
    result = drain(services, billing)
    [(_, command, _headers)] = services.received("billing.changeDetails")
    assert command == services.module.ChangeBillingDetails("5", "by hand")
    assert result.failed == 0


def test_generic_message_goes_to_the_distributed_service_activator(services: Services) -> None:
    """send_message delivers the payload to the @distributed service activator of the target channel."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    bus = user.get(DistributedBus)
    bus.send_message("billing", "billing.channel", "hello")
    bus.send_message("billing", "billing.private", "secret")
    result = drain(services, billing)
    [(_, payload, headers)] = services.received("billing.channel")
    assert payload == "hello"
    assert headers["ecotone.distributed.payloadType"] == "message"
    assert headers["ecotone.distributed.routingKey"] == "billing.channel"
    assert services.received("billing.private") == []  # not @distributed: unreachable
    assert (result.handled, result.failed) == (1, 1)


def test_command_to_a_service_nothing_leads_to_is_an_error_to_the_caller(services: Services) -> None:
    """A command to a destination nothing leads to raises an error naming the destination: unroutable at the broker
    (AMQP mode: no queue is bound), or refused before sending (a service the map does not know, with the known
    ones)."""
    user = services.container("user")
    bus = user.get(DistributedBus)
    if services.mode == "amqp":
        with pytest.raises(UnroutableMessageError, match="'nowhere'"):
            bus.send_command("nowhere", "x.y", "{}", "application/json")
    else:
        with pytest.raises(InvalidMessageError, match=r"'nowhere' is not in the service map.*'billing'"):
            bus.send_command("nowhere", "x.y", "{}", "application/json")


def test_handler_messages_carry_correlation_and_causation_across_services(services: Services) -> None:
    """An event published by a handler keeps the command's correlationId and user metadata and has parentId = the
    command's id."""
    billing, ticket, user = services.container("billing"), services.container("ticket"), services.container("user")
    billing.setup()
    ticket.setup()
    user.get(DistributedBus).send_command(
        "billing",
        "billing.changeDetails",
        '{"personId":"1","billingDetails":"x"}',
        "application/json",
        {"tenant": "acme"},
    )
    drain(services, billing)
    drain(services, ticket)
    [(_, _, command_headers)] = services.received("billing.changeDetails")
    received = services.received("on_billing")
    # ticket, and (AMQP mode) billing itself: both subscribe to billing.*
    assert len(received) == (2 if services.self_delivery else 1)
    for _, event, event_headers in received:
        assert event == {"personId": "1"}
        assert event_headers["correlationId"] == command_headers["correlationId"]
        assert event_headers["parentId"] == command_headers["id"]
        assert event_headers["tenant"] == "acme"
        assert event_headers["ecotone.distributed.sourceServiceName"] == "billing"


def test_handled_message_limit_counts_transport_messages(services: Services) -> None:
    """handled_message_limit stops after N transport messages, an event with several local handlers counting once."""
    ticket, user = services.container("ticket"), services.container("user")
    ticket.setup()
    bus = user.get(DistributedBus)
    for number in range(3):
        bus.publish_event("billing.detailsWereChanged", f'{{"n":{number}}}', "application/json")
    result = ticket.run(services.endpoint(ticket), handled_message_limit=2)
    assert result.handled == 2
    assert result.stop_reason == "handled message limit reached"
    assert len(services.received("on_billing")) == 2  # two messages, each running its three handlers once
    assert len(services.received("local_listener")) == 2
    assert services.queue_size(ticket) == 1


def test_execution_time_limit_stops_an_idle_consumer(services: Services) -> None:
    """execution_time_limit (ms) stops a consumer that has nothing to do."""
    ticket = services.container("ticket")
    result = ticket.run(services.endpoint(ticket), execution_time_limit=300)
    assert result.stop_reason == "execution time limit reached"
    assert result.handled == 0


def test_setup_is_idempotent(services: Services) -> None:
    """Declaring the same endpoint twice changes nothing and keeps queued messages."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    user.get(DistributedBus).send_message("billing", "billing.channel", "kept")
    billing.setup()
    drain(services, billing)
    assert [p for _, p, _ in services.received("billing.channel")] == ["kept"]


def test_a_service_named_like_an_event_prefix_gets_no_foreign_commands(services: Services) -> None:
    """A ``billing.*`` subscriber does not receive the commands sent to the service named ``billing``."""
    billing, ticket, user = services.container("billing"), services.container("ticket"), services.container("user")
    billing.setup()
    ticket.setup()
    user.get(DistributedBus).send_message("billing", "billing.channel", "for billing only")
    assert drain(services, ticket).handled == 0
    assert drain(services, billing).handled == 1


def test_unknown_endpoint_lists_the_available_ones(services: Services) -> None:
    """A service lists its one endpoint (its name, or its channel); running an unknown endpoint raises EndpointError
    listing the available ones."""
    billing = services.container("billing")
    endpoint = services.endpoint(billing)
    assert billing.list() == [endpoint]
    with pytest.raises(EndpointError, match=rf"'shipping'.*available: '{endpoint}'"):
        billing.run("shipping")


def test_batch_publishes_everything_when_the_block_ends(services: Services) -> None:
    """Messages sent inside ``bus.batch()`` are published together when the block ends, all of them, in order."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    bus = user.get(DistributedBus)
    with bus.batch():
        for number in range(50):
            bus.send_message("billing", "billing.channel", f"m{number}")
        assert services.queue_size(billing) == 0  # nothing before the end
    result = drain(services, billing)
    assert result.handled == 50
    assert [payload for _, payload, _ in services.received("billing.channel")] == [f"m{n}" for n in range(50)]


def test_batch_that_raises_publishes_nothing(services: Services) -> None:
    """A batch block that raises publishes none of its messages."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    bus = user.get(DistributedBus)
    with pytest.raises(RuntimeError, match="changed my mind"), bus.batch():
        bus.send_message("billing", "billing.channel", "never")
        raise RuntimeError("changed my mind")
    assert drain(services, billing).handled == 0


def test_batch_with_a_command_nothing_leads_to_is_an_error_naming_it(services: Services) -> None:
    """A batch holding a command for a destination nothing leads to raises an error naming it: when the batch is
    published (AMQP mode, unroutable), or when the command is sent (service map: an unknown service)."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    bus = user.get(DistributedBus)
    expected = UnroutableMessageError if services.mode == "amqp" else InvalidMessageError
    with pytest.raises(expected, match="nowhere"), bus.batch():
        bus.send_message("billing", "billing.channel", "kept")
        bus.send_command("nowhere", "x.y", "{}", "application/json")
