"""Interoperability with Ecotone over RabbitMQ, proven with raw AMQP (kombu used directly, as a PHP service publishes
and reads): a Service Map channel is a durable queue reached through the default exchange, as Ecotone's AMQP-backed
channel of the same name; and the interop fixes: declared type names (``__TypeId__``) both ways, lenient scalars,
Ecotone's framework headers never propagated, and events no service subscribes to refused when asked (Ecotone 1.326
publishes mandatory with confirms).

As in tests/test_ecotone_wire.py, Ecotone's names are spelled out here as Ecotone spells them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kombu
import pytest

from container_messaging import DistributedBus, MessagingContainer, UnroutableMessageError
from container_messaging.transports import dead_letter_queue

pytestmark = pytest.mark.rabbitmq

HANDLERS = """
import abc
import attrs
from container_messaging import DistributedBus, Headers, command_handler, distributed, event_handler, type_name

RECEIVED = []

class Payment(abc.ABC):
    pass

@type_name("App\\\\Payments\\\\CardPayment")
@attrs.frozen
class CardPayment(Payment):
    card: str
    cents: int

@type_name("App\\\\Payments\\\\TransferPayment")
@attrs.frozen
class TransferPayment(Payment):
    iban: str
    cents: int

@type_name("App\\\\Tickets\\\\OpenTicket")
@attrs.frozen
class OpenTicket:
    ticket_id: str
    title: str

class Billing:
    def __init__(self, bus: DistributedBus) -> None:
        self.bus = bus

    @distributed
    @command_handler("billing.pay")
    def pay(self, payment: Payment, headers: Headers) -> None:
        RECEIVED.append(("pay", payment, dict(headers)))

    @distributed
    @command_handler("billing.payEither")
    def pay_either(self, payment: CardPayment | TransferPayment) -> None:
        RECEIVED.append(("payEither", payment, {}))

    @distributed
    @command_handler("tickets.open")
    def open_ticket(self, command: OpenTicket, headers: Headers) -> None:
        RECEIVED.append(("open", command, dict(headers)))
        self.bus.convert_and_publish_event("billing.ticketOpened", {"ticketId": command.ticket_id})
"""


@pytest.fixture
def amqp(amqp_url: str) -> Iterator[kombu.Connection]:
    connection = kombu.Connection(amqp_url, transport_options={"confirm_publish": True})
    yield connection
    connection.release()


@pytest.fixture
def names(unique: str) -> dict[str, str]:
    return {
        "service": f"billing{unique}",
        "channel": f"distributed_billing_{unique}",  # the Python service's channel
        "ecotone": f"distributed_ticket_{unique}",  # an Ecotone service's AMQP-backed channel
        "exchange": f"ecotone.distributed.{unique}",
    }


@pytest.fixture
def module(make_module: Callable[[str, str], str]) -> Any:
    return __import__(make_module(f"map_wire_{uuid.uuid4().hex[:8]}", HANDLERS))


@pytest.fixture
def build(
    amqp_url: str, names: dict[str, str], module: Any, amqp: kombu.Connection
) -> Iterator[Callable[..., MessagingContainer]]:
    """Builds the Python billing service: it consumes its channel; its map sends ``ticket`` commands and every event
    to the Ecotone service's channel. Everything is deleted from the broker afterwards."""
    built: list[MessagingContainer] = []

    def make(**config: Any) -> MessagingContainer:
        container = MessagingContainer.from_dict(
            {
                "service_name": names["service"],
                "scan": [module.__name__],
                "transport": {"url": amqp_url},
                "distribution": {"exchange": names["exchange"]},
                "recoverability": {"immediate_retries": 0, "delayed_retries": []},
                "channels": {names["channel"]: None, names["ecotone"]: None},
                "consume": [names["channel"]],
                "service_map": {
                    "commands": {names["service"]: names["channel"], "ticket": names["ecotone"]},
                    "events": [{"channel": names["ecotone"]}],
                },
                **config,
            }
        )
        built.append(container)
        return container

    yield make
    for container in built:
        container.close()
    channel = amqp.channel()
    for queue in (names["channel"], names["ecotone"], names["service"]):
        for name in (
            queue,
            dead_letter_queue(queue),
            f"distributed_{queue}",
            dead_letter_queue(f"distributed_{queue}"),
        ):
            channel.queue_delete(name)
    channel.exchange_delete(names["exchange"])


def _ecotone_headers(payload_type: str, routing_key: str, target: str | None = None, **extra: Any) -> dict[str, Any]:
    """The headers an Ecotone 1.326 service puts on a distributed message, including its framework headers of the
    message's trip (polledChannelName and the like), which must not travel further."""
    message_id = str(uuid.uuid4())
    headers: dict[str, Any] = {
        "ecotone.distributed.payloadType": payload_type,
        "ecotone.distributed.routingKey": routing_key,
        "ecotone.distributed.sourceServiceName": "ticketService",
        "id": message_id,
        "correlationId": message_id,
        "timestamp": 1767225600,
        "contentType": "application/json",
        "routingSlip": "ecotone.distributed.invoke",
        "polledChannelName": "distributed_ticket_service",
        "consumerAcknowledgeCallbackHeader": "amqpAcker",
        "amqpAcker": "Ecotone\\Amqp\\AmqpAcknowledgementCallback",
        "amqp_deliveryTag": 1,
        "replyChannel": "ecotone.reply",
        **extra,
    }
    if target is not None:
        headers["ecotone.distributed.targetServiceName"] = target
    return headers


def _ecotone_send_to_channel(amqp: kombu.Connection, queue: str, body: str, headers: dict[str, Any]) -> None:
    """What Ecotone's AMQP-backed channel does: declare the durable queue, publish persistently through the default
    exchange with the queue's name as routing key."""
    kombu.Queue(queue, durable=True)(amqp.channel()).declare()
    kombu.Producer(amqp.channel()).publish(
        body.encode(),
        exchange="",
        routing_key=queue,
        headers=headers,
        content_type="application/json",
        content_encoding="binary",
        delivery_mode=2,
    )


def _read_one(amqp: kombu.Connection, queue: str) -> Any:
    simple = amqp.SimpleQueue(queue, no_ack=True)
    try:
        return simple.get(timeout=5)
    finally:
        simple.close()


def _run(container: MessagingContainer, endpoint: str) -> Any:
    return container.run(endpoint, finish_when_no_messages=True)


def test_python_reads_what_ecotone_puts_on_an_amqp_backed_channel_and_drops_its_framework_headers(
    build: Callable[..., MessagingContainer], module: Any, amqp: kombu.Connection, names: dict[str, str]
) -> None:
    """A command an Ecotone service puts on the Python service's channel (a durable queue, through the default
    exchange) is handled; the event its handler publishes reaches the Ecotone service's channel with the command's
    correlation, parent and user headers, and without Ecotone's framework headers (polledChannelName, the
    acknowledgement callback, amqp_*, replyChannel)."""
    billing = build()
    headers = _ecotone_headers("command", "tickets.open", target=names["service"], executorId="u-7")
    _ecotone_send_to_channel(amqp, names["channel"], '{"ticketId":"T1","title":"help"}', headers)
    assert (_run(billing, names["channel"]).handled, module.RECEIVED[0][1]) == (1, module.OpenTicket("T1", "help"))

    event = _read_one(amqp, names["ecotone"])
    assert json.loads(event.body) == {"ticketId": "T1"}
    assert event.delivery_info["exchange"] == "" and event.delivery_info["routing_key"] == names["ecotone"]
    assert event.properties["delivery_mode"] == 2
    assert event.content_type == "application/json"
    sent = event.headers
    assert sent["ecotone.distributed.payloadType"] == "event"
    assert sent["ecotone.distributed.routingKey"] == "billing.ticketOpened"
    assert sent["ecotone.distributed.sourceServiceName"] == names["service"]
    assert sent["routingSlip"] == "ecotone.distributed.invoke"
    assert sent["correlationId"] == headers["correlationId"] and sent["parentId"] == headers["id"]
    assert sent["executorId"] == "u-7"
    for framework in ("polledChannelName", "consumerAcknowledgeCallbackHeader", "amqpAcker", "amqp_deliveryTag"):
        assert framework not in sent
    assert "replyChannel" not in sent
    assert "ecotone.amqp.distributed.service_target" not in sent  # an AMQP-bus header: not on a channel


def test_ecotone_reads_a_command_python_sends_to_its_channel(
    build: Callable[..., MessagingContainer], amqp: kombu.Connection, names: dict[str, str], module: Any
) -> None:
    """A command the Python service sends through its map lands in the Ecotone service's channel queue (declared by
    Ecotone, durable) with Ecotone's headers, the declared type name as __TypeId__, and persistent delivery."""
    kombu.Queue(names["ecotone"], durable=True)(amqp.channel()).declare()  # Ecotone declared its channel first
    billing = build()
    billing.get(DistributedBus).convert_and_send_command(
        "ticket", "tickets.open", module.OpenTicket("T2", "printer"), {"tenant": "acme"}
    )
    message = _read_one(amqp, names["ecotone"])
    assert json.loads(message.body) == {"ticketId": "T2", "title": "printer"}
    assert message.properties["delivery_mode"] == 2
    assert message.content_type == "application/json"
    headers = message.headers
    assert headers["__TypeId__"] == "App\\Tickets\\OpenTicket"
    assert headers["ecotone.distributed.payloadType"] == "command"
    assert headers["ecotone.distributed.routingKey"] == "tickets.open"
    assert headers["ecotone.distributed.targetServiceName"] == "ticket"
    assert headers["ecotone.distributed.sourceServiceName"] == names["service"]
    assert headers["routingSlip"] == "ecotone.distributed.invoke"
    assert headers["contentType"] == "application/json"
    assert headers["correlationId"] == headers["id"] and uuid.UUID(headers["id"]).version == 7
    assert headers["tenant"] == "acme"


def test_the_declared_type_name_goes_out_on_the_amqp_bus_too(
    build: Callable[..., MessagingContainer], amqp: kombu.Connection, names: dict[str, str], module: Any
) -> None:
    """Ecotone's AMQP distributed bus (a named bus without a map): a converted command carries the class's declared
    type name as __TypeId__, not the Python dotted name."""
    ex = kombu.Exchange(names["exchange"], "topic", durable=True)
    queue = f"distributed_{names['ecotone']}"
    kombu.Queue(queue, durable=True, bindings=[kombu.binding(ex, routing_key="ticket")])(amqp.channel()).declare()
    billing = build(distributed_buses={"amqp_bus": {}})
    billing.get("amqp_bus").convert_and_send_command("ticket", "tickets.open", module.OpenTicket("T3", "x"))
    message = _read_one(amqp, queue)
    assert message.headers["__TypeId__"] == "App\\Tickets\\OpenTicket"
    assert message.delivery_info["exchange"] == names["exchange"]


def test_an_incoming_type_id_chooses_the_class_of_a_base_class_or_union_parameter(
    build: Callable[..., MessagingContainer], module: Any, amqp: kombu.Connection, names: dict[str, str]
) -> None:
    """Ecotone's __TypeId__ picks the class a handler typed with a base class (a PHP interface) or a union receives;
    a base-class command whose __TypeId__ names none of its classes is dead-lettered, naming the known ones."""
    billing = build()
    target = names["service"]
    send = _ecotone_send_to_channel
    send(
        amqp,
        names["channel"],
        '{"iban":"DE1","cents":5}',
        _ecotone_headers("command", "billing.pay", target, **{"__TypeId__": "App\\Payments\\TransferPayment"}),
    )
    send(
        amqp,
        names["channel"],
        '{"card":"4242","cents":6}',
        _ecotone_headers("command", "billing.payEither", target, **{"__TypeId__": "App\\Payments\\CardPayment"}),
    )
    send(
        amqp,
        names["channel"],
        '{"card":"4242","cents":7}',
        _ecotone_headers("command", "billing.pay", target, **{"__TypeId__": "App\\Payments\\GiftCard"}),
    )
    result = _run(billing, names["channel"])
    assert (result.handled, result.failed) == (2, 1)
    assert [(kind, payment) for kind, payment, _ in module.RECEIVED] == [
        ("pay", module.TransferPayment("DE1", 5)),
        ("payEither", module.CardPayment("4242", 6)),
    ]
    [entry] = billing.dead_letter(names["channel"]).list()
    assert "'App\\\\Payments\\\\GiftCard' names none of its classes" in (entry.error_message or "")


@pytest.mark.parametrize("scalars", ["strict", "lenient"])
def test_a_number_for_a_string_field_needs_lenient_scalars(
    scalars: str, build: Callable[..., MessagingContainer], module: Any, amqp: kombu.Connection, names: dict[str, str]
) -> None:
    """``{"ticketId": 77}`` from a PHP service into a str field: strict (the default) dead-letters it naming the
    field; conversion.scalars: lenient handles it as "77"."""
    billing = build(conversion={"scalars": scalars})
    headers = _ecotone_headers("command", "tickets.open", target=names["service"])
    _ecotone_send_to_channel(amqp, names["channel"], '{"ticketId":77,"title":"x"}', headers)
    result = _run(billing, names["channel"])
    if scalars == "lenient":
        assert result.handled == 1
        assert module.RECEIVED[0][1] == module.OpenTicket("77", "x")
    else:
        assert (result.handled, result.failed) == (0, 1)
        [entry] = billing.dead_letter(names["channel"]).list()
        assert "expected str @ $.ticketId" in (entry.error_message or "")


def test_an_unsubscribed_event_on_the_amqp_bus_is_dropped_unless_asked_to_fail(
    build: Callable[..., MessagingContainer], amqp: kombu.Connection, names: dict[str, str]
) -> None:
    """On Ecotone's AMQP bus an event no queue is bound to is dropped by default (no error); with
    distribution.unsubscribed_events: error it is published mandatory, as Ecotone 1.326 does, and the broker's return
    is an UnroutableMessageError; a bound event still arrives in the subscriber's queue, and only it."""
    ex = kombu.Exchange(names["exchange"], "topic", durable=True)
    queue = f"distributed_{names['ecotone']}"
    kombu.Queue(queue, durable=True, bindings=[kombu.binding(ex, routing_key="billing.#")])(amqp.channel()).declare()
    dropping = build(distributed_buses={"amqp_bus": {}})
    dropping.get("amqp_bus").publish_event("nobody.listens", "{}", "application/json")
    strict = build(
        distributed_buses={"amqp_bus": {}}, distribution={"exchange": names["exchange"], "unsubscribed_events": "error"}
    )
    with pytest.raises(UnroutableMessageError, match=r"'nobody\.listens'"):
        strict.get("amqp_bus").publish_event("nobody.listens", "{}", "application/json")
    strict.get("amqp_bus").publish_event("billing.paid", '{"n":1}', "application/json")
    assert _read_one(amqp, queue).headers["ecotone.distributed.routingKey"] == "billing.paid"
    assert dropping.transport.queue_size(queue) == 0


def test_ecotones_glob_binding_catches_commands_to_a_service_named_like_the_prefix(
    build: Callable[..., MessagingContainer], amqp: kombu.Connection, names: dict[str, str]
) -> None:
    """The trap of a mixed system (README): an Ecotone subscriber to ``billing.*`` binds ``billing.#``, which also
    matches the routing key of every command sent to a service named ``billing``; a service name that is no event
    prefix (here ``billingService``) keeps its commands out of that queue."""
    ex = kombu.Exchange(names["exchange"], "topic", durable=True)
    queue = f"distributed_{names['ecotone']}"
    kombu.Queue(queue, durable=True, bindings=[kombu.binding(ex, routing_key="billing.#")])(amqp.channel()).declare()
    for service in ("billing", "billingService"):
        kombu.Queue(
            f"distributed_{service}_{names['ecotone']}", durable=True, bindings=[kombu.binding(ex, routing_key=service)]
        )(amqp.channel()).declare()
    sender = build(distributed_buses={"amqp_bus": {}}).get("amqp_bus")
    try:
        sender.send_command("billing", "billing.changeDetails", "{}", "application/json")
        sender.send_command("billingService", "billing.changeDetails", "{}", "application/json")
        caught = _read_one(amqp, queue)
        assert caught.headers["ecotone.distributed.targetServiceName"] == "billing"  # a command in an event queue
        assert build().transport.queue_size(queue) == 0  # the one to billingService did not land there
    finally:
        for service in ("billing", "billingService"):
            amqp.channel().queue_delete(f"distributed_{service}_{names['ecotone']}")
