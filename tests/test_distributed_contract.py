"""The distributed bus contract: the same Ecotone behaviour on every transport (memory, embedded, RabbitMQ, Redis).

Every test builds several containers (one per service) in this process; they talk through the transport under test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from container_messaging import (
    DistributedBus,
    EndpointError,
    MessagingContainer,
    UnroutableMessageError,
)
from container_messaging.transports import OutboundMessage

from conftest import forget_endpoint, transport_section

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


class Services:
    """Builds one container per service on the transport under test, all scanning one handler module."""

    def __init__(
        self, kind: str, tmp_path: Path, distribution: dict[str, str], make_module: Callable[[str, str], str]
    ) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.distribution = distribution
        self.module_name = make_module(f"contract_{uuid.uuid4().hex[:8]}", HANDLERS)
        self.module: Any = __import__(self.module_name)
        self.containers: list[MessagingContainer] = []

    def container(self, service_name: str, **sections: Any) -> MessagingContainer:
        """A service; no retries unless a ``recoverability`` section says otherwise (failures go to the dead letter)."""
        container = MessagingContainer.from_dict(
            {
                "service_name": service_name,
                "scan": [self.module_name],
                "transport": transport_section(self.kind, self.tmp_path),
                "distribution": self.distribution,
                "recoverability": {"immediate_retries": 0, "delayed_retries": []},
                **sections,
            }
        )
        self.containers.append(container)
        return container

    def received(self, what: str) -> list[tuple[str, Any, dict[str, Any]]]:
        return [r for r in self.module.RECEIVED if r[0] == what]

    def close(self) -> None:
        for container in self.containers:
            if container.list():
                queue = container.topology.queue(container.settings.service_name or "")
                forget_endpoint(container, queue)
            container.close()


@pytest.fixture
def services(
    transport_kind: str, tmp_path: Path, distribution: dict[str, str], make_module: Callable[[str, str], str]
) -> Any:
    built = Services(transport_kind, tmp_path, distribution, make_module)
    yield built
    built.close()


def drain(container: MessagingContainer, **options: Any) -> Any:
    """Runs the container's endpoint until its queue is empty."""
    return container.run(container.settings.service_name or "", finish_when_no_messages=True, **options)


def test_command_reaches_the_distributed_handler_with_ecotone_headers(services: Services) -> None:
    """A command sent to another service is handled there, with every header Ecotone puts on the wire."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    user.get(DistributedBus).send_command(
        "billing",
        "billing.changeDetails",
        '{"personId":"123","billingDetails":"01111"}',
        "application/json",
        {"tenant": "acme"},
    )
    result = drain(billing)

    [(_, command, headers)] = services.received("billing.changeDetails")
    assert command == services.module.ChangeBillingDetails("123", "01111")
    assert headers["ecotone.distributed.payloadType"] == "command"
    assert headers["ecotone.distributed.routingKey"] == "billing.changeDetails"
    assert headers["ecotone.distributed.targetServiceName"] == "billing"
    assert headers["ecotone.distributed.sourceServiceName"] == "user"
    assert headers["ecotone.amqp.distributed.service_target"] == "billing"
    assert headers["routingSlip"] == "ecotone.distributed.invoke"
    assert headers["contentType"] == "application/json"
    assert headers["correlationId"] == headers["id"]
    assert uuid.UUID(headers["id"]).version == 7
    assert isinstance(headers["timestamp"], int)
    assert headers["tenant"] == "acme"
    # the command, then the event its handler published: billing subscribes to billing.* itself
    assert result.handled == 2 and result.failed == 0


def test_convert_and_send_command_serializes_objects_to_camel_case_json(services: Services) -> None:
    """convert_and_send_command sends an attrs object as camelCase JSON with its type name, and it converts back."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    command = services.module.ChangeBillingDetails("7", "IBAN")
    user.get(DistributedBus).convert_and_send_command("billing", "billing.changeDetails", command)
    drain(billing)
    [(_, received, headers)] = services.received("billing.changeDetails")
    assert received == command
    assert headers["__TypeId__"] == f"{services.module_name}.ChangeBillingDetails"


def test_event_reaches_each_subscribed_service_once_and_every_local_handler(services: Services) -> None:
    """One event reaches each service with a matching distributed handler exactly once, then all its local handlers."""
    ticket, audit, user = services.container("ticket"), services.container("audit"), services.container("user")
    ticket.setup()
    audit.setup()
    user.get(DistributedBus).publish_event("billing.detailsWereChanged", '{"personId":"1"}', "application/json")

    ticket_result, audit_result = drain(ticket), drain(audit)

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
    drain(ticket)
    [(_, event, headers)] = services.received("on_billing")
    assert event == {"n": 1}
    assert headers["ecotone.distributed.routingKey"] == "billing.invoice.paid"
    assert headers["ecotone.amqp.distributed.service_target"] == "billing.invoice.paid"
    assert "ecotone.distributed.targetServiceName" not in headers


def test_event_no_handler_matches_is_acknowledged_and_dropped(services: Services) -> None:
    """An event that reaches the queue but matches no distributed handler is acknowledged and dropped, and the local
    (not distributed) handlers of its key do not run."""
    ticket, user = services.container("ticket"), services.container("user")
    ticket.setup()
    # ``orders.ship*`` can only be bound as ``orders.#``: ``orders.cancelled`` reaches the queue, the glob says no
    user.get(DistributedBus).publish_event("orders.cancelled", '{"n":1}', "application/json")
    result = drain(ticket)
    assert result.handled == 1 and result.failed == 0
    assert services.module.RECEIVED == []
    assert ticket.transport.queue_size(ticket.topology.queue("ticket")) == 0
    assert ticket.transport.queue_size(ticket.topology.queue("ticket") + ".dead_letter") == 0


def test_event_nobody_subscribes_to_is_not_an_error_for_the_publisher(services: Services) -> None:
    """Publishing an event no service subscribes to succeeds and delivers nothing."""
    ticket, user = services.container("ticket"), services.container("user")
    ticket.setup()
    user.get(DistributedBus).publish_event("nobody.listens", "x")
    assert drain(ticket).handled == 0


def test_handler_without_distributed_is_unreachable_from_outside(services: Services) -> None:
    """A command for a handler without @distributed fails with Ecotone's error and is dead-lettered, not handled."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    user.get(DistributedBus).send_command("billing", "billing.local", "{}", "application/json")
    result = drain(billing)
    assert result.failed == 1 and result.handled == 0
    assert services.received("billing.local") == []
    assert billing.transport.queue_size(billing.topology.queue("billing") + ".dead_letter") == 1


def test_failing_handler_message_is_dead_lettered_with_the_error(services: Services) -> None:
    """A message whose handler raises is kept in the dead letter queue with the error, never acknowledged as handled."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    user.get(DistributedBus).send_command("billing", "billing.fail", "{}", "application/json")
    result = drain(billing)
    assert (result.handled, result.failed) == (0, 1)
    queue = billing.topology.queue("billing")
    assert billing.transport.queue_size(queue) == 0
    assert billing.transport.queue_size(queue + ".dead_letter") == 1


def test_stop_on_failure_keeps_the_message_on_its_queue(services: Services) -> None:
    """With stop_on_failure the consumer stops at the failing message, which stays on the service's queue."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    bus = user.get(DistributedBus)
    bus.send_command("billing", "billing.fail", "{}", "application/json")
    bus.send_command("billing", "billing.changeDetails", '{"personId":"1","billingDetails":"x"}', "application/json")
    result = drain(billing, stop_on_failure=True)
    assert (result.handled, result.failed) == (0, 1)
    assert "stop_on_failure" in result.stop_reason
    assert billing.transport.queue_size(billing.topology.queue("billing")) == 2


def _publish_raw(container: MessagingContainer, routing_key: str, headers: dict[str, Any], body: bytes) -> None:
    container.transport.publish(
        container.topology.exchange,
        OutboundMessage(routing_key, body, headers, "application/json", str(uuid.uuid4())),
        mandatory=True,
    )


def test_command_targeted_at_another_service_is_an_error(services: Services) -> None:
    """A command whose targetServiceName is another service is refused and dead-lettered, naming both services."""
    billing = services.container("billing")
    billing.setup()
    _publish_raw(
        billing,
        "billing",
        {
            "id": str(uuid.uuid4()),
            "ecotone.distributed.payloadType": "command",
            "ecotone.distributed.routingKey": "billing.changeDetails",
            "ecotone.distributed.targetServiceName": "shipping",
        },
        b'{"personId":"1","billingDetails":"x"}',
    )
    result = drain(billing)
    assert result.failed == 1
    assert services.received("billing.changeDetails") == []
    assert billing.transport.queue_size(billing.topology.queue("billing") + ".dead_letter") == 1


def test_unknown_payload_type_is_an_error(services: Services) -> None:
    """A distributed message with an unknown payloadType is refused and dead-lettered."""
    billing = services.container("billing")
    billing.setup()
    _publish_raw(
        billing,
        "billing",
        {
            "id": str(uuid.uuid4()),
            "ecotone.distributed.payloadType": "query",
            "ecotone.distributed.routingKey": "billing.changeDetails",
        },
        b"{}",
    )
    assert drain(billing).failed == 1
    assert billing.transport.queue_size(billing.topology.queue("billing") + ".dead_letter") == 1


def test_generic_message_goes_to_the_distributed_service_activator(services: Services) -> None:
    """send_message delivers the payload to the @distributed service activator of the target channel."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    bus = user.get(DistributedBus)
    bus.send_message("billing", "billing.channel", "hello")
    bus.send_message("billing", "billing.private", "secret")
    result = drain(billing)
    [(_, payload, headers)] = services.received("billing.channel")
    assert payload == "hello"
    assert headers["ecotone.distributed.payloadType"] == "message"
    assert headers["ecotone.distributed.routingKey"] == "billing.channel"
    assert services.received("billing.private") == []  # not @distributed: unreachable
    assert (result.handled, result.failed) == (1, 1)


def test_command_to_a_service_without_a_queue_is_an_error_to_the_caller(services: Services) -> None:
    """Sending a command to a destination that has no queue raises UnroutableMessageError naming the destination."""
    user = services.container("user")
    with pytest.raises(UnroutableMessageError, match="'nowhere'"):
        user.get(DistributedBus).send_command("nowhere", "x.y", "{}", "application/json")


def test_handler_messages_carry_correlation_and_causation_across_services(services: Services) -> None:
    """An event published by a handler keeps the command's correlationId and has parentId = the command's id."""
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
    drain(billing)
    drain(ticket)
    [(_, _, command_headers)] = services.received("billing.changeDetails")
    received = services.received("on_billing")
    assert len(received) == 2  # ticket and billing itself both subscribe to billing.*
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
    result = ticket.run("ticket", handled_message_limit=2)
    assert result.handled == 2
    assert result.stop_reason == "handled message limit reached"
    assert len(services.received("on_billing")) == 2  # two messages, each running its three handlers once
    assert len(services.received("local_listener")) == 2
    assert ticket.transport.queue_size(ticket.topology.queue("ticket")) == 1


def test_execution_time_limit_stops_an_idle_consumer(services: Services) -> None:
    """execution_time_limit (ms) stops a consumer that has nothing to do."""
    ticket = services.container("ticket")
    result = ticket.run("ticket", execution_time_limit=300)
    assert result.stop_reason == "execution time limit reached"
    assert result.handled == 0


def test_setup_is_idempotent(services: Services) -> None:
    """Declaring the same endpoint twice changes nothing and keeps queued messages."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    user.get(DistributedBus).send_message("billing", "billing.channel", "kept")
    billing.setup()
    drain(billing)
    assert [p for _, p, _ in services.received("billing.channel")] == ["kept"]


def test_a_service_named_like_an_event_prefix_gets_no_foreign_commands(services: Services) -> None:
    """A ``billing.*`` subscriber does not receive the commands sent to the service named ``billing``."""
    billing, ticket, user = services.container("billing"), services.container("ticket"), services.container("user")
    billing.setup()
    ticket.setup()
    user.get(DistributedBus).send_message("billing", "billing.channel", "for billing only")
    assert drain(ticket).handled == 0
    assert drain(billing).handled == 1


def test_unknown_endpoint_lists_the_available_ones(services: Services) -> None:
    """Running an unknown endpoint raises EndpointError listing the available endpoints."""
    billing = services.container("billing")
    assert billing.list() == ["billing"]
    with pytest.raises(EndpointError, match=r"'shipping'.*available: 'billing'"):
        billing.run("shipping")


def test_batch_publishes_everything_when_the_block_ends(services: Services) -> None:
    """Messages sent inside ``bus.batch()`` are published together when the block ends, all of them, in order."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    bus = user.get(DistributedBus)
    with bus.batch():
        for number in range(50):
            bus.send_message("billing", "billing.channel", f"m{number}")
        assert billing.transport.queue_size(billing.topology.queue("billing")) == 0  # nothing before the end
    result = drain(billing)
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
    assert drain(billing).handled == 0


def test_batch_with_an_unroutable_command_is_an_error_naming_it(services: Services) -> None:
    """A batch holding a command for a service without a queue raises UnroutableMessageError naming that key."""
    billing, user = services.container("billing"), services.container("user")
    billing.setup()
    bus = user.get(DistributedBus)
    with pytest.raises(UnroutableMessageError, match="nowhere"), bus.batch():
        bus.send_message("billing", "billing.channel", "kept")
        bus.send_command("nowhere", "x.y", "{}", "application/json")
