"""Local buses: send/publish/query, missing handlers, message headers and their propagation, conversion errors."""

from __future__ import annotations

import importlib
import json
import re
import time
import uuid
from typing import Any

import pytest

from container_messaging import (
    CommandBus,
    ConversionError,
    EventBus,
    MessageChannels,
    MessagingContainer,
    NoHandlerError,
    QueryBus,
)
from container_messaging.distributed.topology import PAYLOAD_TYPE, ROUTING_SLIP_VALUE
from container_messaging.messages import (
    CONTENT_TYPE,
    CORRELATION_ID,
    ID,
    PARENT_ID,
    ROUTING_SLIP,
    TIMESTAMP,
    TYPE_ID,
    MediaType,
)

JSON = MediaType.APPLICATION_JSON


def module_suffix(request: pytest.FixtureRequest) -> str:
    """The test's node name as a module-name suffix, unique per test and parameter set."""
    return re.sub(r"\W", "_", request.node.name)


def build(*scan: str, **extra: Any) -> MessagingContainer:
    return MessagingContainer.from_dict({"scan": list(scan), "transport": {"url": "memory://"}, **extra})


# -- sending, publishing, querying --------------------------------------------------------------------------------


BUSES = """
import attrs
from container_messaging import Headers, command_handler, event_handler, query_handler
from container_messaging.messages import CONTENT_TYPE

@attrs.frozen
class ChangeBillingDetails:
    person_id: str
    billing_details: str

@attrs.frozen
class BillingDetailsChanged:
    person_id: str

@attrs.frozen
class GetBillingDetails:
    person_id: str

@attrs.frozen
class Unhandled:
    pass

calls = []
details = {}
tenants = []

class Billing:
    @command_handler
    def change(self, command: ChangeBillingDetails, metadata: Headers) -> str:
        details[command.person_id] = command.billing_details
        tenants.append(metadata.get("tenant"))
        calls.append(("change", command, metadata[CONTENT_TYPE]))
        return "changed " + command.person_id

    @command_handler("billing.changeDetails")
    def change_by_key(self, command: ChangeBillingDetails, metadata: Headers) -> None:
        details[command.person_id] = command.billing_details
        calls.append(("change_by_key", command, metadata[CONTENT_TYPE]))

    @command_handler("billing.raw")
    def raw(self, command, metadata: Headers) -> None:
        calls.append(("raw", command, metadata[CONTENT_TYPE]))

    @command_handler("billing.fails")
    def fails(self, command: dict) -> None:
        raise LookupError("handler failed: " + command["why"])

    @event_handler
    def on_changed(self, event: BillingDetailsChanged, metadata: Headers) -> None:
        tenants.append(metadata.get("tenant"))
        calls.append(("on_changed", event))

    @event_handler("billing.detailsWereChanged")
    def on_changed_key(self, event: dict, metadata: Headers) -> None:
        calls.append(("on_changed_key", event, metadata[CONTENT_TYPE]))

    @query_handler
    def get(self, query: GetBillingDetails, metadata: Headers) -> str | None:
        tenants.append(metadata.get("tenant"))
        return details.get(query.person_id)

    @query_handler("billing.getDetails")
    def get_by_key(self, query: dict) -> dict:
        return {"personId": query["personId"], "details": details.get(query["personId"])}
"""


@pytest.fixture
def billing(make_module, request: pytest.FixtureRequest) -> tuple[Any, MessagingContainer]:
    name = make_module(f"bus_billing_{module_suffix(request)}", BUSES)
    return importlib.import_module(name), build(name)


def test_command_send_routes_by_class_and_returns_result(billing) -> None:
    """CommandBus.send delivers the object itself, as an in-process object, and returns the handler's result."""
    module, container = billing
    command = module.ChangeBillingDetails("123", "01111")

    result = container.get(CommandBus).send(command)

    assert result == "changed 123"
    assert module.calls == [("change", command, MediaType.PYTHON_OBJECT)]
    assert module.calls[0][1] is command


def test_send_with_routing_defaults_to_in_process_object(billing) -> None:
    """send_with_routing without a media type passes the payload object as is, with the in-process content type."""
    module, container = billing
    payload = object()

    container.get(CommandBus).send_with_routing("billing.raw", payload)

    assert module.calls == [("raw", payload, MediaType.PYTHON_OBJECT)]
    assert module.calls[0][1] is payload


def test_send_with_routing_json_string(billing) -> None:
    """send_with_routing with application/json converts a JSON string to the handler's payload class."""
    module, container = billing

    container.get(CommandBus).send_with_routing(
        "billing.changeDetails", '{"personId": "123", "billingDetails": "01111"}', media_type=JSON
    )

    assert module.calls == [("change_by_key", module.ChangeBillingDetails("123", "01111"), JSON)]


def test_publish_reaches_class_handlers(billing) -> None:
    """EventBus.publish delivers the event object to the handlers of its class and returns None."""
    module, container = billing
    event = module.BillingDetailsChanged("123")

    assert container.get(EventBus).publish(event) is None

    assert module.calls == [("on_changed", event)]


def test_publish_with_routing(billing) -> None:
    """EventBus.publish_with_routing delivers to key handlers, in-process by default or converted from JSON."""
    module, container = billing
    events = container.get(EventBus)

    events.publish_with_routing("billing.detailsWereChanged", {"personId": "1"})
    events.publish_with_routing("billing.detailsWereChanged", '{"personId": "2"}', media_type=JSON)

    assert module.calls == [
        ("on_changed_key", {"personId": "1"}, MediaType.PYTHON_OBJECT),
        ("on_changed_key", {"personId": "2"}, JSON),
    ]


def test_query_bus_returns_the_handler_result(billing) -> None:
    """QueryBus.send and send_with_routing return what the query handler returns."""
    module, container = billing
    container.get(CommandBus).send(module.ChangeBillingDetails("42", "IBAN-1"))
    queries = container.get(QueryBus)

    assert queries.send(module.GetBillingDetails("42")) == "IBAN-1"
    assert queries.send(module.GetBillingDetails("43")) is None
    assert queries.send_with_routing("billing.getDetails", '{"personId": "42"}', media_type=JSON) == {
        "personId": "42",
        "details": "IBAN-1",
    }


def test_metadata_reaches_class_routed_handlers(billing) -> None:
    """Metadata given to send, publish and query by object arrives in the handlers' headers."""
    module, container = billing

    container.get(CommandBus).send(module.ChangeBillingDetails("1", "x"), metadata={"tenant": "t-command"})
    container.get(EventBus).publish(module.BillingDetailsChanged("1"), metadata={"tenant": "t-event"})
    container.get(QueryBus).send(module.GetBillingDetails("1"), metadata={"tenant": "t-query"})

    assert module.tenants == ["t-command", "t-event", "t-query"]


def test_command_without_handler_names_the_key(billing) -> None:
    """A command routing key with no handler raises NoHandlerError naming the key."""
    _module, container = billing

    with pytest.raises(NoHandlerError, match=r"'billing\.unknownCommand'"):
        container.get(CommandBus).send_with_routing("billing.unknownCommand", {})


def test_command_without_handler_names_the_class(billing) -> None:
    """A command object whose class has no handler raises NoHandlerError naming the class."""
    module, container = billing

    with pytest.raises(NoHandlerError, match=rf"{module.__name__}\.Unhandled"):
        container.get(CommandBus).send(module.Unhandled())


def test_query_without_handler_names_the_key_or_class(billing) -> None:
    """A query with no handler raises NoHandlerError naming its key or its class."""
    module, container = billing
    queries = container.get(QueryBus)

    with pytest.raises(NoHandlerError, match=r"'billing\.unknownQuery'"):
        queries.send_with_routing("billing.unknownQuery", {})
    with pytest.raises(NoHandlerError, match=rf"{module.__name__}\.Unhandled"):
        queries.send(module.Unhandled())


def test_channel_without_service_activator_names_the_channel(billing) -> None:
    """Sending to a channel no service activator consumes raises NoHandlerError naming the channel."""
    _module, container = billing

    with pytest.raises(NoHandlerError, match=r"'billing\.noSuchChannel'"):
        container.get(MessageChannels).send("billing.noSuchChannel", "payload")


def test_event_without_handler_is_fine(billing) -> None:
    """Publishing an event with no handler, by object or by key, raises nothing and runs nothing."""
    module, container = billing
    events = container.get(EventBus)

    events.publish(module.Unhandled())
    events.publish_with_routing("billing.nobodyListens", {"x": 1})

    assert module.calls == []


def test_handler_exception_propagates_unchanged(billing) -> None:
    """An exception raised by a handler reaches the sender as the same exception."""
    _module, container = billing

    with pytest.raises(LookupError, match="handler failed: because"):
        container.get(CommandBus).send_with_routing("billing.fails", {"why": "because"})


# -- headers ------------------------------------------------------------------------------------------------------


HEADERS = """
from container_messaging import CommandBus, EventBus, Headers, QueryBus, command_handler, event_handler, query_handler

seen = {}

class Flow:
    @command_handler("flow.start")
    def start(self, command: dict, metadata: Headers, commands: CommandBus, events: EventBus,
              queries: QueryBus) -> None:
        seen["start"] = dict(metadata)
        commands.send_with_routing("flow.next", {"step": 2})
        events.publish_with_routing("flow.started", {"step": 3})
        queries.send_with_routing("flow.query", {"step": 4})
        commands.send_with_routing("flow.override", {}, metadata={"tenant": "explicit", "extra": "yes"})

    @command_handler("flow.next")
    def next(self, command: dict, metadata: Headers) -> None:
        seen["next"] = dict(metadata)

    @event_handler("flow.started")
    def started(self, event: dict, metadata: Headers, commands: CommandBus) -> None:
        seen["started"] = dict(metadata)
        commands.send_with_routing("flow.grandchild", {"step": 5})

    @query_handler("flow.query")
    def query(self, query: dict, metadata: Headers) -> None:
        seen["query"] = dict(metadata)

    @command_handler("flow.grandchild")
    def grandchild(self, command: dict, metadata: Headers) -> None:
        seen["grandchild"] = dict(metadata)

    @command_handler("flow.override")
    def override(self, command: dict, metadata: Headers) -> None:
        seen["override"] = dict(metadata)

    @command_handler("flow.single")
    def single(self, command: dict, metadata: Headers) -> None:
        seen.setdefault("single", []).append(dict(metadata))
"""


@pytest.fixture
def flow(make_module, request: pytest.FixtureRequest) -> tuple[dict[str, dict[str, Any]], MessagingContainer]:
    name = make_module(f"bus_flow_{module_suffix(request)}", HEADERS)
    return importlib.import_module(name).seen, build(name)


def test_message_id_is_a_uuid_version_7(flow) -> None:
    """Every message id is an RFC 4122 UUID of version 7 whose embedded time is now."""
    seen, container = flow
    before_ms = time.time_ns() // 1_000_000

    container.get(CommandBus).send_with_routing("flow.single", {})
    container.get(CommandBus).send_with_routing("flow.single", {})

    after_ms = time.time_ns() // 1_000_000
    ids = [uuid.UUID(headers[ID]) for headers in seen["single"]]
    assert ids[0] != ids[1]
    for message_id in ids:
        assert message_id.version == 7
        assert message_id.variant == uuid.RFC_4122
        assert before_ms <= message_id.int >> 80 <= after_ms


def test_top_level_message_headers(flow) -> None:
    """A message sent from outside a handler has correlationId = id, no parentId, int timestamp and contentType."""
    seen, container = flow
    before = time.time()

    container.get(CommandBus).send_with_routing("flow.single", '{"a": 1}', media_type=JSON)

    after = time.time()
    (headers,) = seen["single"]
    assert headers[CORRELATION_ID] == headers[ID]
    assert PARENT_ID not in headers
    assert type(headers[TIMESTAMP]) is int
    assert int(before) <= headers[TIMESTAMP] <= after
    assert headers[CONTENT_TYPE] == JSON


def test_given_correlation_id_is_kept(flow) -> None:
    """A correlationId given as metadata is the message's correlationId."""
    seen, container = flow

    container.get(CommandBus).send_with_routing("flow.single", {}, metadata={CORRELATION_ID: "corr-77"})

    (headers,) = seen["single"]
    assert headers[CORRELATION_ID] == "corr-77"
    assert headers[ID] != "corr-77"


def test_messages_sent_by_a_handler_keep_correlation_and_metadata(flow) -> None:
    """Commands, events and queries sent by a handler keep correlationId and user metadata, parentId = handled id."""
    seen, container = flow

    container.get(CommandBus).send_with_routing("flow.start", {}, metadata={"tenant": "acme", "userId": 7})

    start = seen["start"]
    for child in ("next", "started", "query"):
        headers = seen[child]
        assert headers[CORRELATION_ID] == start[ID], child
        assert headers[PARENT_ID] == start[ID], child
        assert headers["tenant"] == "acme", child
        assert headers["userId"] == 7, child
        assert headers[ID] != start[ID], child


def test_propagation_follows_the_chain(flow) -> None:
    """A message sent by a handler of a child message gets the child's id as parentId and the root's correlationId."""
    seen, container = flow

    container.get(CommandBus).send_with_routing("flow.start", {}, metadata={CORRELATION_ID: "root-corr"})

    assert seen["start"][CORRELATION_ID] == "root-corr"
    assert seen["started"][CORRELATION_ID] == "root-corr"
    assert seen["grandchild"][CORRELATION_ID] == "root-corr"
    assert seen["grandchild"][PARENT_ID] == seen["started"][ID]
    assert seen["started"][PARENT_ID] == seen["start"][ID]


def test_framework_headers_are_not_copied(flow) -> None:
    """Outgoing messages of a handler get their own id, timestamp and contentType, and no routing headers."""
    seen, container = flow
    before = int(time.time())

    container.get(CommandBus).send_with_routing(
        "flow.start",
        "{}",
        media_type=JSON,
        metadata={
            "tenant": "acme",
            TIMESTAMP: 1000,
            ROUTING_SLIP: ROUTING_SLIP_VALUE,
            TYPE_ID: "some.Type",
            PAYLOAD_TYPE: "command",
        },
    )

    start, child = seen["start"], seen["next"]
    assert start[TIMESTAMP] == 1000
    assert start[CONTENT_TYPE] == JSON
    assert child[ID] != start[ID]
    assert child[TIMESTAMP] >= before
    assert child[CONTENT_TYPE] == MediaType.PYTHON_OBJECT
    for header in (ROUTING_SLIP, TYPE_ID, PAYLOAD_TYPE):
        assert header not in child, header
    assert child["tenant"] == "acme"


def test_explicit_metadata_overrides_copied_metadata(flow) -> None:
    """Metadata given when sending from a handler is merged over the copied user metadata."""
    seen, container = flow

    container.get(CommandBus).send_with_routing("flow.start", {}, metadata={"tenant": "acme"})

    assert seen["override"]["tenant"] == "explicit"
    assert seen["override"]["extra"] == "yes"
    assert seen["override"][PARENT_ID] == seen["start"][ID]


def test_no_parent_after_the_handler_returns(flow) -> None:
    """A message sent after a handler finished has no parentId and its own correlationId."""
    seen, container = flow
    bus = container.get(CommandBus)

    bus.send_with_routing("flow.start", {}, metadata={"tenant": "acme"})
    bus.send_with_routing("flow.single", {})

    (headers,) = seen["single"]
    assert PARENT_ID not in headers
    assert "tenant" not in headers
    assert headers[CORRELATION_ID] == headers[ID]


# -- conversion through the buses ---------------------------------------------------------------------------------


CONVERSION = """
import attrs
from container_messaging import command_handler

@attrs.frozen
class Address:
    zip_code: int

@attrs.frozen
class ChangeBillingDetails:
    person_id: str
    amount: int
    address: Address

calls = []

class Billing:
    @command_handler("conv.change")
    def change(self, command: ChangeBillingDetails) -> None:
        calls.append(command)
"""

VALID_CAMEL = {"personId": "123", "amount": 3, "address": {"zipCode": 1000}}
VALID_AS_IS = {"person_id": "123", "amount": 3, "address": {"zip_code": 1000}}


def conversion_setup(make_module, name: str, **conversion: Any) -> tuple[Any, CommandBus]:
    module_name = make_module(name, CONVERSION)
    extra = {"conversion": conversion} if conversion else {}
    return importlib.import_module(module_name), build(module_name, **extra).get(CommandBus)


@pytest.mark.parametrize("as_json", [False, True])
def test_camel_case_wire_keys_structure_snake_case_fields(make_module, as_json: bool) -> None:
    """By default camelCase keys, nested too, fill snake_case attrs fields, from JSON and from a dict."""
    module, bus = conversion_setup(make_module, f"bus_conv_camel_{as_json}")

    if as_json:
        bus.send_with_routing("conv.change", json.dumps(VALID_CAMEL), media_type=JSON)
    else:
        bus.send_with_routing("conv.change", VALID_CAMEL)

    assert module.calls == [module.ChangeBillingDetails("123", 3, module.Address(1000))]


def test_as_is_json_keys_keep_field_names(make_module) -> None:
    """With json_keys: as_is the wire keys are the field names, and camelCase keys are missing fields."""
    module, bus = conversion_setup(make_module, "bus_conv_as_is", json_keys="as_is")

    bus.send_with_routing("conv.change", json.dumps(VALID_AS_IS), media_type=JSON)
    with pytest.raises(ConversionError, match=r"\$\.person_id"):
        bus.send_with_routing("conv.change", json.dumps(VALID_CAMEL), media_type=JSON)

    assert module.calls == [module.ChangeBillingDetails("123", 3, module.Address(1000))]


def test_unknown_keys_ignored_by_default(make_module) -> None:
    """An extra JSON key is ignored by default."""
    module, bus = conversion_setup(make_module, "bus_conv_tolerant")

    bus.send_with_routing("conv.change", json.dumps({**VALID_CAMEL, "unexpected": True}), media_type=JSON)

    assert module.calls == [module.ChangeBillingDetails("123", 3, module.Address(1000))]


def test_forbid_unknown_keys_rejects_an_extra_key(make_module) -> None:
    """With forbid_unknown_keys: true an extra JSON key raises ConversionError naming it, and nothing is handled."""
    module, bus = conversion_setup(make_module, "bus_conv_forbid", forbid_unknown_keys=True)

    with pytest.raises(ConversionError, match="unexpectedKey"):
        bus.send_with_routing("conv.change", json.dumps({**VALID_CAMEL, "unexpectedKey": 1}), media_type=JSON)

    bus.send_with_routing("conv.change", json.dumps(VALID_CAMEL), media_type=JSON)
    assert module.calls == [module.ChangeBillingDetails("123", 3, module.Address(1000))]


def test_string_for_int_is_an_error_and_handler_not_called(make_module) -> None:
    """ "3" for an int field raises ConversionError listing $.amount, and the handler is not called."""
    module, bus = conversion_setup(make_module, "bus_conv_no_coercion")

    with pytest.raises(ConversionError) as info:
        bus.send_with_routing("conv.change", json.dumps({**VALID_CAMEL, "amount": "3"}), media_type=JSON)

    assert [e for e in info.value.errors if "$.amount" in e] == ["invalid value for type, expected int @ $.amount"]
    assert "$.amount" in str(info.value)
    assert module.calls == []


def test_every_bad_field_is_reported(make_module) -> None:
    """Several bad fields, nested and missing ones included, are all listed by one ConversionError."""
    module, bus = conversion_setup(make_module, "bus_conv_many_errors")

    with pytest.raises(ConversionError) as info:
        bus.send_with_routing("conv.change", {"amount": "3", "address": {"zipCode": "x"}})

    errors = info.value.errors
    assert "required field missing @ $.personId" in errors
    assert "invalid value for type, expected int @ $.amount" in errors
    assert "invalid value for type, expected int @ $.address.zipCode" in errors
    assert len(errors) == 3
    for path in ("$.personId", "$.amount", "$.address.zipCode"):
        assert path in str(info.value)
    assert module.calls == []


def test_json_that_is_not_an_object_is_an_error(make_module) -> None:
    """A JSON array or invalid JSON for a class payload raises ConversionError and calls nothing."""
    module, bus = conversion_setup(make_module, "bus_conv_not_object")

    with pytest.raises(ConversionError):
        bus.send_with_routing("conv.change", "[1, 2]", media_type=JSON)
    with pytest.raises(ConversionError):
        bus.send_with_routing("conv.change", "{not json", media_type=JSON)

    assert module.calls == []
