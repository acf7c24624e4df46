"""Wire compatibility with Ecotone over RabbitMQ, proven with raw AMQP (kombu used directly, as a PHP service would
publish and read): the exchange, queue, bindings, headers and properties an Ecotone service expects.

Ecotone's names are spelled out here on purpose, as Ecotone spells them, rather than taken from the package's
constants: these tests are what keeps those constants true to the wire."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kombu
import pytest

from container_messaging import DistributedBus, MessagingContainer
from container_messaging.transports import dead_letter_queue

pytestmark = pytest.mark.rabbitmq

HANDLERS = """
import attrs
from container_messaging import Headers, command_handler, distributed, event_handler, service_activator

RECEIVED = []

@attrs.frozen
class ChangeBillingDetails:
    person_id: str
    billing_details: str

class Billing:
    @distributed
    @command_handler("billing.changeDetails")
    def change(self, command: ChangeBillingDetails, headers: Headers) -> None:
        RECEIVED.append(("command", command, dict(headers)))

    @distributed
    @event_handler("userService.*")
    def on_user(self, event: dict, headers: Headers) -> None:
        RECEIVED.append(("event", event, dict(headers)))

    @distributed
    @service_activator("billing.notes")
    def note(self, payload: str) -> None:
        RECEIVED.append(("message", payload, {}))
"""


@pytest.fixture
def amqp(amqp_url: str) -> Iterator[kombu.Connection]:
    # confirms: a raw publish has reached its queue when it returns, so queue sizes read right after are exact
    connection = kombu.Connection(amqp_url, transport_options={"confirm_publish": True})
    yield connection
    connection.release()


@pytest.fixture
def names(unique: str) -> dict[str, str]:
    """Ecotone's own exchange name would collide between test runs; the exchange is configurable, so each test
    gets its own, and the queue names keep Ecotone's ``distributed_<service>`` form."""
    return {
        "exchange": f"ecotone.distributed.{unique}",
        "service": f"billing{unique}",
        "queue": f"distributed_billing{unique}",
    }


@pytest.fixture
def billing(
    amqp_url: str, names: dict[str, str], make_module: Callable[[str, str], str], amqp: kombu.Connection
) -> Iterator[Any]:
    module_name = make_module(f"wire_{uuid.uuid4().hex[:8]}", HANDLERS)
    container = MessagingContainer.from_dict(
        {
            "service_name": names["service"],
            "scan": [module_name],
            "transport": {"url": amqp_url},
            "distribution": {"exchange": names["exchange"]},
        }
    )
    container.module = __import__(module_name)  # type: ignore[attr-defined]
    yield container
    container.close()
    channel = amqp.channel()
    for queue in (names["queue"], dead_letter_queue(names["queue"])):
        channel.queue_delete(queue)
    channel.exchange_delete(names["exchange"])


def _ecotone_publish(
    amqp: kombu.Connection, exchange: str, routing_key: str, body: str, headers: dict[str, Any]
) -> None:
    """Publishes exactly as Ecotone's AMQP distribution does: topic exchange, persistent, JSON body."""
    producer = kombu.Producer(amqp.channel())
    producer.publish(
        body.encode(),
        exchange=kombu.Exchange(exchange, "topic", durable=True),
        routing_key=routing_key,
        headers=headers,
        content_type="application/json",
        content_encoding="binary",
        delivery_mode=2,
        declare=[kombu.Exchange(exchange, "topic", durable=True)],
    )


def _ecotone_headers(payload_type: str, routing_key: str, target: str | None = None) -> dict[str, Any]:
    message_id = str(uuid.uuid4())
    headers = {
        "ecotone.distributed.payloadType": payload_type,
        "ecotone.distributed.routingKey": routing_key,
        "ecotone.distributed.sourceServiceName": "userService",
        "ecotone.amqp.distributed.service_target": target or routing_key,
        "id": message_id,
        "correlationId": message_id,
        "timestamp": 1767225600,
        "contentType": "application/json",
        "routingSlip": "ecotone.distributed.invoke",
        "__TypeId__": "App\\User\\ChangeBillingDetails",
    }
    if target is not None:
        headers["ecotone.distributed.targetServiceName"] = target
    return headers


def test_setup_declares_ecotones_topology(billing: Any, amqp: kombu.Connection, names: dict[str, str]) -> None:
    """setup declares the durable topic exchange and the durable queue ``distributed_<service>`` with its bindings."""
    billing.setup()
    channel = amqp.channel()
    # passive declarations fail if they do not exist; re-declaring with other properties would fail too
    channel.exchange_declare(names["exchange"], "topic", durable=True, passive=True)
    kombu.Exchange(names["exchange"], "topic", durable=True)(channel).declare()
    kombu.Queue(names["queue"], durable=True)(channel).declare()
    # the bindings route: the service name, and the event glob userService.* several words deep
    _ecotone_publish(amqp, names["exchange"], names["service"], "{}", {"probe": 1})
    _ecotone_publish(amqp, names["exchange"], "userService.billing.DetailsWereChanged", "{}", {"probe": 2})
    _ecotone_publish(amqp, names["exchange"], "otherService.thing", "{}", {"probe": 3})
    assert billing.transport.queue_size(names["queue"]) == 2


def test_python_reads_a_command_published_by_ecotone(
    billing: Any, amqp: kombu.Connection, names: dict[str, str]
) -> None:
    """A command published by an Ecotone service (raw AMQP, Ecotone's headers) is handled by the Python service."""
    billing.setup()
    headers = _ecotone_headers("command", "billing.changeDetails", target=names["service"])
    _ecotone_publish(amqp, names["exchange"], names["service"], '{"personId":"123","billingDetails":"01111"}', headers)
    result = billing.run(names["service"], finish_when_no_messages=True)
    assert (result.handled, result.failed) == (1, 0)
    [(kind, command, received_headers)] = billing.module.RECEIVED
    assert kind == "command"
    assert command == billing.module.ChangeBillingDetails("123", "01111")
    assert received_headers["id"] == headers["id"]
    assert received_headers["__TypeId__"] == "App\\User\\ChangeBillingDetails"


def test_python_reads_an_event_published_by_ecotone(
    billing: Any, amqp: kombu.Connection, names: dict[str, str]
) -> None:
    """An event Ecotone publishes under ``userService.billing.DetailsWereChanged`` reaches the ``userService.*``
    distributed handler."""
    billing.setup()
    _ecotone_publish(
        amqp,
        names["exchange"],
        "userService.billing.DetailsWereChanged",
        '{"personId":123}',
        _ecotone_headers("event", "userService.billing.DetailsWereChanged"),
    )
    billing.run(names["service"], finish_when_no_messages=True)
    [(kind, event, headers)] = billing.module.RECEIVED
    assert (kind, event) == ("event", {"personId": 123})
    assert headers["ecotone.distributed.routingKey"] == "userService.billing.DetailsWereChanged"


def test_python_reads_a_generic_message_from_ecotone(
    billing: Any, amqp: kombu.Connection, names: dict[str, str]
) -> None:
    """Ecotone's sendMessage (payloadType ``message``) reaches the service activator of the target channel."""
    billing.setup()
    headers = _ecotone_headers("message", "billing.notes", target=names["service"])
    headers["contentType"] = "text/plain"
    _ecotone_publish(amqp, names["exchange"], names["service"], "a note", headers)
    billing.run(names["service"], finish_when_no_messages=True)
    assert billing.module.RECEIVED == [("message", "a note", {})]


def _ecotone_queue(amqp: kombu.Connection, exchange: str, queue: str, bindings: list[str]) -> kombu.Queue:
    """Declares a queue the way an Ecotone service does for itself."""
    ex = kombu.Exchange(exchange, "topic", durable=True)
    declared = kombu.Queue(queue, durable=True, bindings=[kombu.binding(ex, routing_key=k) for k in bindings])
    declared(amqp.channel()).declare()
    return declared


def _read_one(amqp: kombu.Connection, queue: str) -> Any:
    simple = amqp.SimpleQueue(queue, no_ack=True)  # passive use of an existing queue
    try:
        return simple.get(timeout=5)
    finally:
        simple.close()


def test_ecotone_reads_a_command_sent_by_python(billing: Any, amqp: kombu.Connection, names: dict[str, str]) -> None:
    """A command sent from Python arrives in the Ecotone service's queue with Ecotone's headers and properties."""
    ecotone_queue = f"distributed_ecotoneBilling{names['service']}"
    _ecotone_queue(amqp, names["exchange"], ecotone_queue, [f"ecotoneBilling{names['service']}"])
    try:
        billing.get(DistributedBus).send_command(
            f"ecotoneBilling{names['service']}",
            "billing.changeDetails",
            '{"personId":"123","billingDetails":"01111"}',
            "application/json",
            {"tenant": "acme"},
        )
        message = _read_one(amqp, ecotone_queue)
    finally:
        amqp.channel().queue_delete(ecotone_queue)
    headers = message.headers
    assert message.body == b'{"personId":"123","billingDetails":"01111"}'
    assert message.content_type == "application/json"
    assert message.properties["delivery_mode"] == 2
    assert message.delivery_info["exchange"] == names["exchange"]
    assert message.delivery_info["routing_key"] == f"ecotoneBilling{names['service']}"
    assert headers["ecotone.distributed.payloadType"] == "command"
    assert headers["ecotone.distributed.routingKey"] == "billing.changeDetails"
    assert headers["ecotone.distributed.targetServiceName"] == f"ecotoneBilling{names['service']}"
    assert headers["ecotone.distributed.sourceServiceName"] == names["service"]
    assert headers["ecotone.amqp.distributed.service_target"] == f"ecotoneBilling{names['service']}"
    assert headers["routingSlip"] == "ecotone.distributed.invoke"
    assert headers["contentType"] == "application/json"
    assert headers["correlationId"] == headers["id"]
    assert uuid.UUID(headers["id"]).version == 7
    assert isinstance(headers["timestamp"], int)
    assert headers["tenant"] == "acme"


def test_ecotone_reads_an_event_published_by_python(
    billing: Any, amqp: kombu.Connection, names: dict[str, str]
) -> None:
    """An object event converted by Python arrives as camelCase JSON in an Ecotone subscriber's queue bound with
    Ecotone's own ``#`` rewrite of ``billing.*``."""
    ecotone_queue = f"distributed_ecotoneAudit{names['service']}"
    _ecotone_queue(amqp, names["exchange"], ecotone_queue, ["billing.#"])
    try:
        event = billing.module.ChangeBillingDetails("9", "IBAN")
        billing.get(DistributedBus).convert_and_publish_event("billing.detailsWereChanged", event)
        message = _read_one(amqp, ecotone_queue)
    finally:
        amqp.channel().queue_delete(ecotone_queue)
    assert json.loads(message.body) == {"personId": "9", "billingDetails": "IBAN"}
    assert message.headers["ecotone.distributed.payloadType"] == "event"
    assert message.headers["ecotone.distributed.routingKey"] == "billing.detailsWereChanged"
    assert message.headers["ecotone.amqp.distributed.service_target"] == "billing.detailsWereChanged"
    assert "ecotone.distributed.targetServiceName" not in message.headers
    assert message.headers["__TypeId__"].endswith(".ChangeBillingDetails")
    assert message.properties["delivery_mode"] == 2


def test_auto_declare_off_leaves_the_exchange_to_the_operator(amqp_url: str, unique: str) -> None:
    """With auto_declare off a sender never declares the exchange: publishing to a missing one is a TransportError
    naming it; with auto_declare on (the default) the sender declares it first."""
    from container_messaging import TransportError

    exchange = f"ecotone.distributed.nodeclare.{unique}"
    config = {
        "service_name": "sender",
        "transport": {"url": amqp_url, "auto_declare": False},
        "distribution": {"exchange": exchange},
    }
    with MessagingContainer.from_dict(config) as container, pytest.raises(TransportError, match=re.escape(exchange)):
        container.get(DistributedBus).publish_event("any.event", "x")
    config["transport"] = {"url": amqp_url}
    with MessagingContainer.from_dict(config) as container:
        container.get(DistributedBus).publish_event("any.event", "x")
        connection = kombu.Connection(amqp_url)
        try:
            connection.channel().exchange_declare(exchange, "topic", durable=True, passive=True)
            connection.channel().exchange_delete(exchange)
        finally:
            connection.release()
