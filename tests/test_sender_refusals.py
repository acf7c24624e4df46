"""The distributed bus refuses doomed messages before sending anything, naming the culprit: a routing key or
destination that can never match, a content type no consumer accepts, a reserved or malformed header."""

from __future__ import annotations

import datetime
import importlib
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from container_messaging import (
    ConversionError,
    Converter,
    DistributedBus,
    InvalidMessageError,
    MessagingContainer,
    MessagingError,
    UnsupportedMediaTypeError,
)
from container_messaging.cli import main
from container_messaging.messages import MediaType
from container_messaging.testing import TestSystem

HANDLERS = """
from container_messaging import Headers, command_handler, distributed, event_handler, service_activator

RECEIVED = []

class Billing:
    @distributed
    @command_handler("billing.changeDetails")
    def change(self, command: str, headers: Headers) -> None:
        RECEIVED.append((command, dict(headers)))

    @distributed
    @event_handler("billing.changed")
    def changed(self, event: str, headers: Headers) -> None:
        RECEIVED.append((event, dict(headers)))

    @distributed
    @service_activator("billing.notes")
    def note(self, payload: str, headers: Headers) -> None:
        RECEIVED.append((payload, dict(headers)))
"""

SendWith = Callable[[DistributedBus, str], None]

#: Each operation, sending a valid payload under the given routing key (or target channel name).
OPERATIONS: dict[str, SendWith] = {
    "send_command": lambda bus, key: bus.send_command("billing", key, "{}", MediaType.APPLICATION_JSON),
    "convert_and_send_command": lambda bus, key: bus.convert_and_send_command("billing", key, {"n": 1}),
    "publish_event": lambda bus, key: bus.publish_event(key, "{}", MediaType.APPLICATION_JSON),
    "convert_and_publish_event": lambda bus, key: bus.convert_and_publish_event(key, {"n": 1}),
    "send_message": lambda bus, key: bus.send_message("billing", key, "note"),
}

#: A key each operation reaches a handler of billing with.
GOOD_KEYS = {
    "send_command": "billing.changeDetails",
    "convert_and_send_command": "billing.changeDetails",
    "publish_event": "billing.changed",
    "convert_and_publish_event": "billing.changed",
    "send_message": "billing.notes",
}


class Billing:
    """The service named billing of a test system (in-process channels), sending to itself."""

    def __init__(self, system: TestSystem, module: Any) -> None:
        self.system = system
        self.module = module
        self.bus = system.service("billing").distributed_bus

    def queued(self) -> int:
        return self.system.queued("billing")

    def handle_all(self) -> list[tuple[str, dict[str, Any]]]:
        self.system.run()
        return list(self.module.RECEIVED)


@pytest.fixture
def billing(make_module: Callable[[str, str], str]) -> Iterator[Billing]:
    name = make_module(f"refusals_{uuid.uuid4().hex[:8]}", HANDLERS)
    with TestSystem([{"service_name": "billing", "scan": [name]}]) as system:
        yield Billing(system, importlib.import_module(name))


# -- routing keys and destinations ---------------------------------------------------------------------------------


BAD_KEYS = [
    ("bad key!", "whitespace"),
    ("billing\tchangeDetails", "whitespace"),
    ("billing..changeDetails", "empty word"),
    (".billing", "empty word"),
    ("billing.", "empty word"),
    ("billing.*", "wildcards"),
    ("billing.#", "wildcards"),
    ("billing.change?", "character '?' is not allowed"),
    ("billing.'changeDetails'", 'character "\'" is not allowed'),
    ("x" * 256, "256 bytes long, over AMQP's limit of 255"),
    ("é" * 128, "256 bytes long, over AMQP's limit of 255"),
    ("", "it is empty"),
]


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize(("key", "reason"), BAD_KEYS)
def test_a_routing_key_that_can_never_match_is_refused(billing: Billing, operation: str, key: str, reason: str) -> None:
    """Every operation refuses a routing key (or channel name) that can never match with an InvalidMessageError
    naming the argument and the reason, and publishes nothing; the same operation with a good key publishes."""
    send = OPERATIONS[operation]
    argument = "target channel name" if operation == "send_message" else "routing key"

    with pytest.raises(
        InvalidMessageError, match=f"the {argument} .* can never match a handler: .*{re.escape(reason)}"
    ):
        send(billing.bus, key)
    assert billing.queued() == 0

    send(billing.bus, GOOD_KEYS[operation])
    assert billing.queued() == 1


def test_a_long_routing_key_is_shown_cut_short() -> None:
    """The error for a 30,000 character routing key quotes its first 60 characters and says how long it is."""
    config = {"service_name": "sender", "transport": {"url": "memory://"}}
    with MessagingContainer.from_dict(config) as container, pytest.raises(InvalidMessageError) as refused:
        container.get(DistributedBus).publish_event("k" * 30_000, "{}")
    assert f"'{'k' * 60}'... (30000 characters)" in str(refused.value)
    assert len(str(refused.value)) < 300


def test_routing_keys_ecotone_uses_are_sent(billing: Billing) -> None:
    """Dotted words of letters, digits, '_', '-', ':', '\\' (PHP class names) and non-ASCII letters, up to 255
    bytes, are sent."""
    keys = ["billing.changeDetails", "App\\Billing\\DetailsChanged", "billing:v2.changed", "fakturace.změna", "a-b_c"]
    keys.append("k" * 255)
    for key in keys:
        billing.bus.send_command("billing", key, "{}", MediaType.APPLICATION_JSON)
    assert billing.queued() == len(keys)


@pytest.mark.parametrize(
    ("destination", "reason"),
    [
        ("", "it is empty"),
        ("bil ling", "a service name is letters, digits"),
        ("billing/eu", "a service name is letters, digits"),
        ("b" * 256, "256 characters long"),
        (None, "must be a str, got NoneType"),
    ],
)
@pytest.mark.parametrize("operation", ["send_command", "convert_and_send_command", "send_message"])
def test_a_destination_that_cannot_be_a_service_is_refused(
    billing: Billing, operation: str, destination: Any, reason: str
) -> None:
    """An empty destination, or one that no service name can be, is an InvalidMessageError (a MessagingError, no
    longer a ValueError) naming the destination; nothing is published."""
    send: dict[str, Callable[[], None]] = {
        "send_command": lambda: billing.bus.send_command(destination, "billing.changeDetails", "{}"),
        "convert_and_send_command": lambda: billing.bus.convert_and_send_command(destination, "billing.x", {}),
        "send_message": lambda: billing.bus.send_message(destination, "billing.notes", "note"),
    }
    with pytest.raises(InvalidMessageError, match=f"destination.*{reason}") as refused:
        send[operation]()
    assert isinstance(refused.value, MessagingError)
    assert not isinstance(refused.value, ValueError)
    assert billing.queued() == 0


# -- content types -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "media_type",
    [
        "application/x-yaml",
        "application/yaml",
        "application/x-python-serialize",
        "application/x-php-serialized",
        "application/xml",
        "application/x-python-object",
        "",
    ],
)
def test_a_content_type_no_consumer_accepts_is_refused(billing: Billing, media_type: str) -> None:
    """send_command refuses a content type no consumer accepts with an UnsupportedMediaTypeError naming it; nothing
    is published."""
    with pytest.raises(UnsupportedMediaTypeError, match=repr(media_type) if media_type else "'\\(none\\)'"):
        billing.bus.send_command("billing", "billing.changeDetails", "a: 1", media_type)
    assert billing.queued() == 0


MEDIA_TYPES = [
    MediaType.APPLICATION_JSON,
    "application/json; charset=utf-8",
    "Application/JSON",
    MediaType.TEXT_PLAIN,
    "text/plain; charset=utf-8",
    MediaType.OCTET_STREAM,
    "application/x-yaml",
    "application/x-python-serialize",
    "application/xml",
    MediaType.PYTHON_OBJECT,
]


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_the_sender_accepts_exactly_what_the_consumer_accepts(billing: Billing, media_type: str) -> None:
    """One list: a content type the sender accepts is handled by a str handler on the consumer side, and one the
    sender refuses is refused by the consumer's conversion too."""
    payload = '{"n": 1}'
    try:
        billing.bus.send_command("billing", "billing.changeDetails", payload, media_type)
    except UnsupportedMediaTypeError:
        with pytest.raises(ConversionError):
            Converter().plan(str)(payload.encode(), media_type)
        assert billing.queued() == 0
    else:
        [(received, headers)] = billing.handle_all()
        assert received == payload
        assert headers["contentType"] == media_type


# -- metadata ------------------------------------------------------------------------------------------------------


BAD_METADATA = [
    ({"id": "not-a-uuid"}, "'id' must be a UUID as text"),
    ({"id": uuid.UUID(int=7)}, "'id' must be a UUID as text (like '01890a5d-ac96-774b-bcce-b302099a8057'), got UUID"),
    ({"correlationId": "corr-77"}, "'correlationId' must be a UUID as text"),
    ({"parentId": 12}, "'parentId' must be a UUID as text"),
    ({"timestamp": "1700000000"}, "'timestamp' must be unix seconds as an int, got str"),
    ({"timestamp": 1.5}, "'timestamp' must be unix seconds as an int, got float"),
    ({"timestamp": True}, "'timestamp' must be unix seconds as an int, got bool"),
    ({"timestamp": -1}, "'timestamp' must be unix seconds as an int"),
    ({"contentType": "text/plain"}, "'contentType' 'text/plain' disagrees with the media type 'application/json'"),
    ({"__TypeId__": ""}, "'__TypeId__' must name the payload's type"),
    ({"ecotone.distributed.routingKey": "x"}, "'ecotone.distributed.routingKey' is reserved"),
    ({"ecotone.distributed.targetServiceName": "x"}, "'ecotone.distributed.targetServiceName' is reserved"),
    ({"ecotone.distributed.anything": "x"}, "'ecotone.distributed.anything' is reserved"),
    ({"ecotone.amqp.distributed.service_target": "x"}, "'ecotone.amqp.distributed.service_target' is reserved"),
    ({"routingSlip": "ecotone.distributed.invoke"}, "'routingSlip' is reserved"),
    ({"ecotone_retry_number": 1}, "'ecotone_retry_number' is reserved"),
    ({"container_messaging.handler": "h"}, "'container_messaging.handler' is reserved"),
    ({"failure.reason": "poison message"}, "'failure.reason' is reserved"),
    ({"when": datetime.datetime(2026, 1, 1)}, "'when' cannot be sent: datetime values cannot cross the wire"),
    ({"big": 2**64}, "'big' cannot be sent: the int 18446744073709551616 does not fit in 64 bits"),
    ({"thing": object()}, "'thing' cannot be sent: object values cannot cross the wire"),
    ({"nested": {"a": {1: "x"}}}, "'nested' cannot be sent: its key 1 is not a str"),
    ({1: "x"}, "names must be str, got int 1"),
]


@pytest.mark.parametrize(("metadata", "message"), BAD_METADATA)
@pytest.mark.parametrize("operation", ["send_command", "convert_and_publish_event"])
def test_a_reserved_or_malformed_header_is_refused(
    billing: Billing, operation: str, metadata: dict[Any, Any], message: str
) -> None:
    """Metadata setting a reserved header, a settable one in the wrong shape, or a value the wire cannot carry is an
    InvalidMessageError naming the header; nothing is published."""
    with pytest.raises(InvalidMessageError, match=re.escape(f"metadata header {message}")):
        if operation == "send_command":
            billing.bus.send_command("billing", "billing.changeDetails", "{}", MediaType.APPLICATION_JSON, metadata)
        else:
            billing.bus.convert_and_publish_event("billing.changed", {"n": 1}, metadata)
    assert billing.queued() == 0


def test_metadata_that_is_not_a_mapping_is_refused(billing: Billing) -> None:
    """A list given as metadata is an InvalidMessageError saying metadata must be a mapping."""
    with pytest.raises(InvalidMessageError, match="metadata must be a mapping of header names to values, got list"):
        billing.bus.convert_and_send_command("billing", "billing.changeDetails", {}, ["tenant"])  # type: ignore[arg-type]
    assert billing.queued() == 0


def test_the_headers_a_sender_may_set_arrive_as_given(billing: Billing) -> None:
    """id, correlationId, parentId, timestamp, __TypeId__, a contentType equal to the media type and user headers
    (nested lists and dicts included) set in metadata arrive in the handler's headers as given."""
    given = {
        "id": str(uuid.uuid4()),
        "correlationId": str(uuid.uuid4()),
        "parentId": str(uuid.uuid4()).upper(),
        "timestamp": 1_700_000_000,
        "__TypeId__": "App\\Billing\\ChangeDetails",
        "contentType": "application/json; charset=utf-8",
        "tenant": "acme",
        "x-trace": "t-1",
        "limits": {"n": [1, 2.5, True, None]},
    }
    billing.bus.send_command("billing", "billing.changeDetails", "{}", "application/json; charset=utf-8", given)
    [(_, headers)] = billing.handle_all()
    assert {key: headers[key] for key in given} == given


# -- the command line ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "culprit"),
    [
        (["send-command", "billing", "bad key!", "{}"], "the routing key 'bad key!' can never match"),
        (["publish-event", "billing..changed", "{}"], "the routing key 'billing..changed' can never match"),
        (["send-message", "billing", "bill notes", "x", "--content-type", "text/plain"], "channel name 'bill notes'"),
        (["send-command", "bil ling", "billing.x", "{}"], "the destination 'bil ling' can never be a service"),
        (["send-command", "billing", "billing.x", "a: 1", "--content-type", "application/x-yaml"], "x-yaml"),
        (["send-command", "billing", "billing.x", "{}", "--header", "id=nope"], "'id' must be a UUID"),
        (["publish-event", "a.b", "{}", "--header", "routingSlip=x"], "'routingSlip' is reserved"),
    ],
)
def test_the_cli_send_commands_refuse_doomed_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], culprit: str
) -> None:
    """The CLI's send commands fail with one error line naming the culprit, through the bus's refusal."""
    config = tmp_path / "sender.yaml"
    config.write_text("service_name: sender\ntransport:\n  url: memory://\n", encoding="utf-8")

    code = main(["--config", str(config), *arguments])

    out, err = capsys.readouterr()
    assert code != 0
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("container-messaging: error: ")
    assert culprit in line
