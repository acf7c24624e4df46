"""Conversion for interoperability with other services (PHP Ecotone): declared type names (``__TypeId__``) both
ways, a base class or a union chosen by type name, the lenient-scalars mode, and Ecotone's framework headers kept
off what a handler sends. The same on the wire, against raw AMQP, is in tests/test_service_map_wire.py."""

from __future__ import annotations

import abc
from typing import Any

import attrs
import pytest

from container_messaging import ConversionError, HandlerDefinitionError, MessagingContainer, type_name
from container_messaging.conversion import Converter
from container_messaging.messages import Message, user_metadata

JSON = "application/json"
PYOBJ = "application/x-python-object"


@type_name("App\\Billing\\BillingEvent")
@attrs.frozen
class BillingEvent:
    person_id: str


@type_name("App\\Billing\\DetailsWereChanged")
@attrs.frozen
class DetailsWereChanged(BillingEvent):
    billing_details: str


@attrs.frozen
class AccountClosed(BillingEvent):
    reason: str


class Payment(abc.ABC):  # a plain base class, as a PHP interface: no fields of its own
    @abc.abstractmethod
    def amount(self) -> int: ...


@type_name("App\\Payments\\CardPayment")
@attrs.frozen
class CardPayment(Payment):
    card: str
    cents: int

    def amount(self) -> int:
        return self.cents


@type_name("App\\Payments\\TransferPayment")
@attrs.frozen
class TransferPayment(Payment):
    iban: str
    cents: int

    def amount(self) -> int:
        return self.cents


@attrs.frozen
class TicketOpened:
    ticket_id: str
    priority: int
    urgent: bool
    score: float
    note: str | None = None


@pytest.fixture
def converter() -> Converter:
    return Converter()


# -- type names --------------------------------------------------------------------------------------------------------


def test_a_declared_type_name_is_what_goes_out_and_a_subclass_does_not_inherit_it(converter: Converter) -> None:
    """type_name() is the name a class declares with @type_name; a subclass without its own declaration is known by
    its module and qualified name, not by its base's."""
    assert converter.type_name(DetailsWereChanged("1", "x")) == "App\\Billing\\DetailsWereChanged"
    assert converter.type_name(BillingEvent) == "App\\Billing\\BillingEvent"
    assert converter.type_name(AccountClosed) == f"{__name__}.AccountClosed"


def test_type_name_refuses_an_empty_name_and_a_function() -> None:
    """@type_name needs a non-empty name without surrounding spaces, and a class."""
    with pytest.raises(HandlerDefinitionError, match="non-empty name"):
        type_name(" ")
    with pytest.raises(HandlerDefinitionError, match="must decorate a class"):
        type_name("X")(len)  # type: ignore[type-var]


def test_a_base_class_parameter_builds_the_subclass_the_type_name_names(converter: Converter) -> None:
    """With a base class as target, an incoming __TypeId__ chooses the subclass (by its declared name or its Python
    name); a name none of them has, or none, builds the base class itself."""
    plan = converter.plan(BillingEvent)
    body = b'{"personId":"1","billingDetails":"IBAN","reason":"moved"}'
    assert plan(body, JSON, "App\\Billing\\DetailsWereChanged") == DetailsWereChanged("1", "IBAN")
    assert plan(body, JSON, f"{__name__}.AccountClosed") == AccountClosed("1", "moved")
    assert plan(body, JSON, "App\\Unknown") == BillingEvent("1")
    assert plan(body, JSON) == BillingEvent("1")


def test_a_plain_base_class_needs_a_type_name_naming_one_of_its_classes(converter: Converter) -> None:
    """A base class that cannot be built itself (an interface) is built as the class the __TypeId__ names; without
    one, or with an unknown one, the error says so and lists the names it knows."""
    plan = converter.plan(Payment)
    payment = plan(b'{"card":"4242","cents":500}', JSON, "App\\Payments\\CardPayment")
    assert payment == CardPayment("4242", 500)
    with pytest.raises(ConversionError, match=r"no __TypeId__ header.*'App\\\\Payments\\\\CardPayment'"):
        plan(b'{"card":"4242","cents":500}', JSON)
    with pytest.raises(ConversionError, match=r"__TypeId__ 'App\\\\Nope' names none of its classes"):
        plan(b'{"card":"4242","cents":500}', JSON, "App\\Nope")
    assert plan(TransferPayment("DE1", 7), PYOBJ) == TransferPayment("DE1", 7)  # in process: the object itself


def test_a_union_parameter_builds_the_member_the_type_name_names(converter: Converter) -> None:
    """With a union as target, the __TypeId__ chooses the member, even when their fields alone could not tell."""
    plan = converter.plan(CardPayment | TransferPayment)
    body = b'{"card":"4242","iban":"DE1","cents":9}'
    assert plan(body, JSON, "App\\Payments\\TransferPayment") == TransferPayment("DE1", 9)
    assert plan(body, JSON, "App\\Payments\\CardPayment") == CardPayment("4242", 9)


def test_two_classes_declaring_one_type_name_are_refused_when_planned(converter: Converter) -> None:
    """Two classes a __TypeId__ could choose between that declare the same name fail the plan, naming both."""

    @attrs.frozen
    class Base:
        pass

    @type_name("Same")
    @attrs.frozen
    class First(Base):
        pass

    @type_name("Same")
    @attrs.frozen
    class Second(Base):
        pass

    with pytest.raises(ConversionError, match=r"First and .*Second both declare type name 'Same'"):
        converter.plan(Base)


def test_a_handler_with_a_base_class_parameter_gets_the_subclass_the_header_names(
    make_module: Any,
) -> None:
    """Through a container: a handler typed with the base class receives the subclass the message's __TypeId__
    header names."""
    module_name = make_module(
        "type_name_handlers",
        f"""
        from container_messaging import event_handler
        from {__name__} import Payment

        RECEIVED = []

        @event_handler("payment.made")
        def on_payment(payment: Payment) -> None:
            RECEIVED.append(payment)
        """,
    )
    container = MessagingContainer.from_dict({"scan": [module_name], "transport": {"url": "memory://"}})
    [handler] = container.routes.events_for_key("payment.made")
    handler(Message.create(b'{"iban":"DE1","cents":3}', JSON, {"__TypeId__": "App\\Payments\\TransferPayment"}))
    received = __import__(module_name).RECEIVED
    assert received == [TransferPayment("DE1", 3)]


# -- lenient scalars ------------------------------------------------------------------------------------------------


def test_strict_scalars_stay_the_default(converter: Converter) -> None:
    """By default a number for a str field (what a PHP serializer may send) is a conversion error naming the field."""
    with pytest.raises(ConversionError, match=r"expected str @ \$\.ticketId"):
        converter.plan(TicketOpened)(b'{"ticketId":77,"priority":1,"urgent":true,"score":1.5}', JSON)


def test_lenient_scalars_coerce_what_a_php_serializer_sends() -> None:
    """In the lenient mode a number fills a str field, whole-number text or a whole float an int, number text a
    float, and 0/1/"true"/"false" a bool; an optional str takes a number too."""
    plan = Converter(lenient_scalars=True).plan(TicketOpened)
    body = b'{"ticketId":77,"priority":"3","urgent":1,"score":"2.5","note":12}'
    assert plan(body, JSON) == TicketOpened("77", 3, True, 2.5, "12")
    assert plan(b'{"ticketId":"a","priority":4.0,"urgent":"false","score":2}', JSON) == TicketOpened("a", 4, False, 2.0)


def test_lenient_scalars_still_refuse_what_cannot_be_the_type() -> None:
    """The lenient mode coerces only what has one meaning: text that is no number for an int, 2.5 for an int, 2 for
    a bool and true for a str are still errors naming each field."""
    plan = Converter(lenient_scalars=True).plan(TicketOpened)
    with pytest.raises(ConversionError) as caught:
        plan(b'{"ticketId":true,"priority":"three","urgent":2,"score":"x","note":2.5e400}', JSON)
    fields = "\n".join(caught.value.errors)
    for path in ("$.ticketId", "$.priority", "$.urgent", "$.score"):
        assert f"@ {path}" in fields


def test_lenient_scalars_come_from_the_configuration() -> None:
    """conversion.scalars: lenient builds the container's converter in the lenient mode; the default is strict."""
    assert MessagingContainer.from_dict({"conversion": {"scalars": "lenient"}}).converter.lenient_scalars
    assert not MessagingContainer.from_dict({}).converter.lenient_scalars


# -- framework headers ----------------------------------------------------------------------------------------------


def test_ecotones_framework_headers_are_not_user_metadata() -> None:
    """user_metadata (what a handler's messages inherit) leaves out Ecotone's framework headers: polledChannelName
    and the other MessageHeaders of one message's trip, the amqp_ headers, and the header an Ecotone consumer's
    consumerAcknowledgeCallbackHeader names; the user's own headers stay."""
    headers = {
        "tenant": "acme",
        "executorId": 7,
        "polledChannelName": "distributed_billing",
        "consumerPollingMetadata": {"x": 1},
        "consumerAcknowledgeCallbackHeader": "amqpAcker",
        "amqpAcker": "callback",
        "amqp_deliveryTag": 3,
        "replyChannel": "reply",
        "errorChannel": "errors",
        "priority": 1,
        "deliveryDelay": 0,
        "timeToLive": 100,
        "contentEncoding": "utf-8",
        "streamBasedSourced": True,
        "channelSendRetryNumber": 1,
        "aggregate.id": "a-1",
        "ecotone.messaging.entrypoint": "x",
    }
    assert user_metadata(headers) == {"tenant": "acme", "executorId": 7}
