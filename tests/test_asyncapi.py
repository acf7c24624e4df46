"""AsyncAPI 3.0 documents: validated by the official parser (@asyncapi/parser, Node.js), payload schemas checked
against what the converter really writes, and the errors for bad input.

The Node.js tools live in tests/asyncapi (package.json and package-lock.json pin them); the ``node`` fixture installs
them with ``npm ci`` from the npm registry when node_modules is missing or older than the lock file. Without Node.js
or npm the Node tests are skipped loudly, except with CI=true, where that is a failure.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import uuid
import warnings
from datetime import date, datetime
from pathlib import Path
from typing import Any, Generic, NoReturn, TypeVar

import attrs
import pytest

from container_messaging import ConfigurationError, Converter, HandlerDefinitionError
from container_messaging.cli import main
from container_messaging.docs import SchemaBuilder, asyncapi_document, asyncapi_json, describe_services

from conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tests" / "asyncapi"
EXAMPLES = [ROOT / "configs" / name for name in ("billing.yaml", "ticket.ini", "user.yaml")]
NODE_TIMEOUT = 120


# -- Node.js tools -------------------------------------------------------------------------------------------------


def _unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason}: CI=true, so this is a failure, not a skip", pytrace=False)
    warnings.warn(f"SKIPPING ASYNCAPI PARSER TESTS: {reason}", stacklevel=2)
    sys.stderr.write(f"\n*** SKIPPING ASYNCAPI PARSER TESTS: {reason} ***\n")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def node() -> str:
    """The node executable, with tests/asyncapi/node_modules installed as package-lock.json pins it."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("Node.js and npm are needed to run the official AsyncAPI parser")
    installed = TOOLS / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < (TOOLS / "package-lock.json").stat().st_mtime:
        result = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=TOOLS,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            _unavailable(f"npm ci in {TOOLS} failed: {result.stderr.strip()[-2000:]}")
    return node


def parse(node: str, documents: dict[str, Any], folder: Path) -> dict[str, dict[str, Any]]:
    """Runs the official parser on each document (by name); its verdict per name."""
    files = []
    for name, document in documents.items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(document))
        files.append(str(path))
    result = subprocess.run(
        [node, str(TOOLS / "validate.js"), *files],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    by_file = {Path(verdict["file"]).stem: verdict for verdict in verdicts}
    assert set(by_file) == set(documents)
    assert (result.returncode == 0) == all(verdict["valid"] for verdict in verdicts)
    return by_file


def check_payloads(node: str, document: dict[str, Any], cases: list[tuple[str, Any]], folder: Path) -> list[bool]:
    """Whether each payload fits its message's payload schema (Ajv, JSON Schema draft 7 with formats)."""
    doc_file, cases_file = folder / "document.json", folder / "cases.json"
    doc_file.write_text(json.dumps(document))
    cases_file.write_text(json.dumps([{"message": message, "payload": payload} for message, payload in cases]))
    result = subprocess.run(
        [node, str(TOOLS / "payloads.js"), str(doc_file), str(cases_file)],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [case["valid"] for case in json.loads(result.stdout)]


@pytest.fixture
def examples_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))


def write_config(folder: Path, service: str, scan: str, **extra: Any) -> Path:
    path = folder / f"{service}.yaml"
    lines = [f"service_name: {service}", f"scan: [{scan}]", "transport:", "  url: memory://"]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- the example services, through the official parser -------------------------------------------------------------


def test_example_documents_pass_the_official_parser(node: str, examples_importable: None, tmp_path: Path) -> None:
    """The document of each example service, and of the three together, is valid AsyncAPI 3.0 for
    @asyncapi/parser, without a single error or warning."""
    services = describe_services(EXAMPLES)
    documents = {service.name: asyncapi_document([service]) for service in services}
    documents["system"] = asyncapi_document(services)

    verdicts = parse(node, documents, tmp_path)

    for name, verdict in verdicts.items():
        assert verdict["errors"] == [], name
        assert verdict["warnings"] == [], name
        assert verdict["valid"], name
        assert verdict["version"] == "3.0.0", name


def test_the_cli_document_passes_the_official_parser(node: str, examples_importable: None, tmp_path: Path) -> None:
    """``container-messaging asyncapi --config ... --output FILE`` writes a file the official parser accepts."""
    output = tmp_path / "system.json"
    configs = [arg for path in EXAMPLES for arg in ("--config", str(path))]
    assert main(["asyncapi", *configs, "--output", str(output)]) == 0

    verdict = parse(node, {"system": json.loads(output.read_text())}, tmp_path)["system"]

    assert verdict["valid"], verdict["errors"]


def _user_document() -> dict[str, Any]:
    return asyncapi_document(describe_services([ROOT / "configs" / "user.yaml"]))


def _message_of_another_channel(document: dict[str, Any]) -> None:
    operation = document["operations"]["user.send.command.billing.changeDetails"]
    operation["messages"] = [{"$ref": "#/channels/queue.distributed_user/messages/event.billing.detailsWereChanged"}]


def _no_version(document: dict[str, Any]) -> None:
    del document["info"]["version"]


def _queue_with_an_exchange(document: dict[str, Any]) -> None:
    document["channels"]["queue.distributed_user"]["bindings"]["amqp"]["exchange"] = {"name": "x"}


def _dangling_schema_reference(document: dict[str, Any]) -> None:
    message = document["components"]["messages"]["command.billing.changeDetails"]
    message["payload"] = {"$ref": "#/components/schemas/NoSuchSchema"}


BREAKAGES = {
    "operation-message-of-another-channel": (_message_of_another_channel, "asyncapi3-operation-messages-from-referred"),
    "info-without-version": (_no_version, "asyncapi-document-resolved"),
    "queue-channel-with-an-exchange": (_queue_with_an_exchange, "asyncapi-document-resolved"),
    "dangling-schema-reference": (_dangling_schema_reference, "invalid-ref"),
}


def test_broken_documents_fail_the_official_parser(node: str, examples_importable: None, tmp_path: Path) -> None:
    """A valid document broken on purpose (a message from the wrong channel, no version, a queue channel with an
    exchange, a dangling $ref) is refused by the parser with the matching diagnostic: the check can fail."""
    documents = {"intact": _user_document()}
    for name, (breakage, _) in BREAKAGES.items():
        documents[name] = _user_document()
        breakage(documents[name])

    verdicts = parse(node, documents, tmp_path)

    assert verdicts["intact"]["valid"]
    for name, (_, code) in BREAKAGES.items():
        assert not verdicts[name]["valid"], name
        assert any(error["code"].startswith(code) for error in verdicts[name]["errors"]), (name, verdicts[name])


# -- payload schemas agree with the converter ----------------------------------------------------------------------


ORDER_MESSAGES = """
from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from typing import Literal

import attrs


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


@attrs.frozen
class Line:
    sku: str
    quantity: int
    unit_price: float


@attrs.frozen
class PlaceOrder:
    \"\"\"Places an order for a customer.\"\"\"

    order_id: uuid.UUID
    customer_name: str
    lines: list[Line]
    placed_at: datetime
    delivery_day: date
    colour: Colour
    priority: Literal["low", "high"]
    tags: frozenset[str]
    attributes: dict[str, int]
    coupon: str | None = None
    gift_wrap: bool = False
    related: list[PlaceOrder] = attrs.field(factory=list)
"""

ORDER_HANDLERS = """
from container_messaging import command_handler, distributed, publishes
from orders_service.messages import PlaceOrder


class Orders:
    @distributed
    @command_handler("orders.place")
    @publishes("orders.placed", PlaceOrder)
    def place(self, command: PlaceOrder) -> None: ...
"""


def an_order(messages: Any) -> Any:
    """A PlaceOrder of the generated module, with every kind of field filled, one related order nested."""
    related = messages.PlaceOrder(
        order_id=uuid.UUID("0190a4c2-7b1e-7c3d-8e4f-abcdefabcdef"),
        customer_name="Bob",
        lines=[],
        placed_at=datetime(2024, 5, 2),
        delivery_day=date(2024, 5, 4),
        colour=messages.Colour.RED,
        priority="low",
        tags=frozenset(),
        attributes={},
        coupon="SPRING",
    )
    return messages.PlaceOrder(
        order_id=uuid.UUID("0190a4c2-7b1e-7c3d-8e4f-123456789abc"),
        customer_name="Ada",
        lines=[messages.Line("A-1", 2, 9.5)],
        placed_at=datetime(2024, 5, 1, 12, 30),
        delivery_day=date(2024, 5, 3),
        colour=messages.Colour.GREEN,
        priority="high",
        tags=frozenset({"new"}),
        attributes={"floor": 3},
        related=[related],
    )


@attrs.frozen
class Orders:
    document: dict[str, Any]
    wire: dict[str, Any]  # an order as the converter writes it
    messages: Any


@pytest.fixture
def orders(make_module, tmp_path: Path) -> Orders:
    make_module("orders_service.messages", ORDER_MESSAGES)
    make_module("orders_service.handlers", ORDER_HANDLERS)
    document = asyncapi_document(describe_services([write_config(tmp_path, "orders", "orders_service")]))
    messages = importlib.import_module("orders_service.messages")
    return Orders(document, json.loads(Converter().to_wire(an_order(messages))[0]), messages)


def test_converter_output_fits_the_payload_schema(node: str, orders: Orders, tmp_path: Path) -> None:
    """The JSON the converter writes for a rich attrs class (nested classes, lists, UUID, datetimes, enum, Literal,
    set, dict, Optional, self-reference) fits the document's schema, and payloads that break it do not."""
    wire = orders.wire
    missing_name = {key: value for key, value in wire.items() if key != "customerName"}
    snake_case = {**{k: v for k, v in wire.items() if k != "customerName"}, "customer_name": "Ada"}
    cases = [
        ("command.orders.place", wire),
        ("event.orders.placed", wire),
        ("command.orders.place", missing_name),
        ("command.orders.place", snake_case),
        ("command.orders.place", {**wire, "colour": "blue"}),
        ("command.orders.place", {**wire, "lines": [{"sku": "A-1", "quantity": "2", "unitPrice": 1.0}]}),
        ("command.orders.place", {**wire, "orderId": "not-a-uuid"}),
        ("command.orders.place", {**wire, "priority": "urgent"}),
        ("command.orders.place", {**wire, "attributes": {"floor": "3"}}),
    ]

    assert check_payloads(node, orders.document, cases, tmp_path) == [True, True] + [False] * 7


def test_payload_schema_uses_the_wire_keys_and_required_fields(orders: Orders) -> None:
    """The class schema has the converter's camelCase keys, requires exactly the fields without a default, and
    describes Optional, enum, Literal, set, dict, datetime and UUID fields in their wire form."""
    schemas = orders.document["components"]["schemas"]
    schema = schemas["orders_service.messages.PlaceOrder"]
    properties = schema["properties"]

    assert set(properties) == set(orders.wire)
    assert schema["required"] == [
        "orderId",
        "customerName",
        "lines",
        "placedAt",
        "deliveryDay",
        "colour",
        "priority",
        "tags",
        "attributes",
    ]
    assert schema["description"] == "Places an order for a customer."
    assert properties["orderId"] == {"type": "string", "format": "uuid"}
    assert properties["placedAt"]["type"] == "string"
    assert "format" not in properties["placedAt"]  # isoformat() of a naive datetime is not RFC 3339 date-time
    assert properties["deliveryDay"] == {"type": "string", "format": "date"}
    assert properties["coupon"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert properties["giftWrap"] == {"type": "boolean", "default": False}
    assert properties["priority"] == {"type": "string", "enum": ["low", "high"]}
    assert properties["tags"] == {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    assert properties["attributes"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert properties["lines"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/orders_service.messages.Line"},
    }
    assert properties["related"]["items"] == {"$ref": "#/components/schemas/orders_service.messages.PlaceOrder"}
    assert properties["colour"] == {"$ref": "#/components/schemas/orders_service.messages.Colour"}
    assert schemas["orders_service.messages.Colour"]["enum"] == ["red", "green"]


def test_as_is_json_keys_keep_the_attribute_names(orders: Orders) -> None:
    """With ``conversion.json_keys: as_is`` the schema's keys are the attribute names, as the converter writes them."""
    builder = SchemaBuilder()
    builder.schema(orders.messages.Line, where="test", camel_case=False)

    written = json.loads(Converter(camel_case=False).to_wire(orders.messages.Line("A", 1, 2.0))[0])
    assert list(builder.definitions["orders_service.messages.Line"]["properties"]) == list(written)
    assert list(written) == ["sku", "quantity", "unit_price"]


T = TypeVar("T")


@attrs.frozen
class Box(Generic[T]):
    item: T


@pytest.mark.parametrize(
    ("annotation", "schema"),
    [
        (str, {"type": "string"}),
        (int | None, {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
        (dict, {"type": "object"}),
        (
            list[dict[str, str]],
            {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "string"}}},
        ),
        (
            tuple[int, str],
            {"type": "array", "items": [{"type": "integer"}, {"type": "string"}], "minItems": 2, "maxItems": 2},
        ),
        (tuple[float, ...], {"type": "array", "items": {"type": "number"}}),
        (Any, {}),
        (Box[int], {"type": "object", "properties": {"item": {"type": "integer"}}, "required": ["item"]}),
    ],
    ids=["str", "optional-int", "dict", "list-of-dicts", "fixed-tuple", "tuple", "any", "generic-class"],
)
def test_schema_of_plain_annotations(annotation: Any, schema: dict[str, Any]) -> None:
    """Plain handler annotations (primitives, unions, collections, Any, a parametrized generic class) map to the
    expected JSON Schema."""
    assert SchemaBuilder().schema(annotation, where="test") == schema


# -- what the documents say ----------------------------------------------------------------------------------------


def test_billing_document_has_its_queue_its_handler_and_what_it_publishes(examples_importable: None) -> None:
    """Billing's document: the queue distributed_billing (an AMQP queue channel) received on by
    BillingService.change_details, and the event it declares it publishes, sent on the exchange with its key."""
    document = asyncapi_document(describe_services([ROOT / "configs" / "billing.yaml"]))

    queue = document["channels"]["queue.distributed_billing"]
    assert queue["address"] == "distributed_billing"
    assert queue["bindings"]["amqp"]["is"] == "queue"
    receive = document["operations"]["billing.receive.BillingService.change_details"]
    assert receive["action"] == "receive"
    assert receive["messages"] == [
        {"$ref": "#/channels/queue.distributed_billing/messages/command.billing.changeDetails"}
    ]
    publish = document["operations"]["billing.send.event.billing.detailsWereChanged"]
    assert publish["action"] == "send"
    assert publish["channel"] == {"$ref": "#/channels/routingKey.billing.detailsWereChanged"}
    channel = document["channels"]["routingKey.billing.detailsWereChanged"]
    assert channel["address"] == "billing.detailsWereChanged"
    assert channel["bindings"]["amqp"]["exchange"]["name"] == "ecotone.distributed"
    assert channel["bindings"]["amqp"]["exchange"]["type"] == "topic"
    event = document["components"]["messages"]["event.billing.detailsWereChanged"]
    assert event["payload"] == {"$ref": "#/components/schemas/examples.messages.BillingDetailsWereChanged"}


def test_messages_carry_the_ecotone_headers(examples_importable: None) -> None:
    """A command's headers schema fixes payloadType, routingKey, the target service and the AMQP routing key, and
    requires the headers every Ecotone sender sets."""
    document = asyncapi_document(describe_services([ROOT / "configs" / "user.yaml"]))
    headers = document["components"]["messages"]["command.billing.changeDetails"]["headers"]

    assert headers["type"] == "object"
    properties = headers["properties"]
    assert properties["ecotone.distributed.payloadType"] == {"const": "command"}
    assert properties["ecotone.distributed.routingKey"] == {"const": "billing.changeDetails"}
    assert properties["ecotone.distributed.targetServiceName"] == {"const": "billing"}
    assert properties["ecotone.amqp.distributed.service_target"] == {"const": "billing"}
    assert properties["routingSlip"] == {"const": "ecotone.distributed.invoke"}
    assert properties["id"]["format"] == "uuid"
    assert set(headers["required"]) == {
        "id",
        "correlationId",
        "timestamp",
        "contentType",
        "ecotone.distributed.payloadType",
        "ecotone.distributed.routingKey",
        "ecotone.distributed.targetServiceName",
    }


def test_system_document_shares_one_message_between_sender_and_receiver(examples_importable: None) -> None:
    """In the document of all three services, user's send operation and billing's receive operation of
    billing.changeDetails use the same message definition; ticket's glob subscription is described as a glob."""
    document = asyncapi_document(describe_services(EXAMPLES))

    send = document["operations"]["user.send.command.billing.changeDetails"]
    receive = document["operations"]["billing.receive.BillingService.change_details"]
    assert send["messages"][0]["$ref"].endswith("/messages/command.billing.changeDetails")
    assert receive["messages"][0]["$ref"].endswith("/messages/command.billing.changeDetails")
    assert [name for name in document["components"]["messages"] if name.startswith("command.")] == [
        "command.billing.changeDetails"
    ]
    glob = document["components"]["messages"]["event.billing._"]
    assert glob["name"] == "billing.*"
    assert "glob billing.*" in glob["headers"]["properties"]["ecotone.distributed.routingKey"]["description"]
    assert glob["payload"] == {"type": "object", "additionalProperties": {"type": "string"}}


def test_cli_prints_the_document_as_json(examples_importable: None, capsys: pytest.CaptureFixture[str]) -> None:
    """``container-messaging --config billing.yaml asyncapi`` prints the same document the API builds."""
    code = main(["--config", str(ROOT / "configs" / "billing.yaml"), "asyncapi"])

    assert code == 0
    expected = asyncapi_json(asyncapi_document(describe_services([ROOT / "configs" / "billing.yaml"])))
    assert capsys.readouterr().out == expected


def test_cli_writes_yaml_when_the_output_file_says_so(examples_importable: None, tmp_path: Path) -> None:
    """``--output doc.yaml`` writes the document as YAML with the same content."""
    output = tmp_path / "doc.yaml"
    assert main(["asyncapi", "--config", str(ROOT / "configs" / "user.yaml"), "--output", str(output)]) == 0

    import yaml

    assert yaml.safe_load(output.read_text()) == _user_document()


# -- bad input -----------------------------------------------------------------------------------------------------


def test_unknown_config_file_is_an_error_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A configuration file that does not exist is a ConfigurationError naming it, and one CLI error line (exit 2)."""
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigurationError, match=r"nowhere\.yaml: no such file"):
        describe_services([missing])

    assert main(["asyncapi", "--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "nowhere.yaml" in err


def test_a_service_without_a_name_cannot_be_described(tmp_path: Path) -> None:
    """A configuration without service_name is a ConfigurationError naming the file and the key."""
    config = tmp_path / "anonymous.yaml"
    config.write_text("transport:\n  url: memory://\n")

    with pytest.raises(ConfigurationError, match=r"anonymous\.yaml: service_name: not set"):
        describe_services([config])


BAD_HANDLER = """
import attrs
from container_messaging import command_handler, distributed


@attrs.frozen
class Upload:
    name: str
    content: bytes


class Files:
    @distributed
    @command_handler("files.upload")
    def upload(self, command: Upload) -> None: ...
"""

BAD_DECLARATION = """
from container_messaging import publishes


class Ledger:
    @publishes("ledger.balanced", dict[int, str])
    def balance(self) -> None: ...
"""


def test_a_handler_type_without_a_json_form_is_an_error_naming_the_handler(
    make_module, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A handler whose payload class holds bytes is a HandlerDefinitionError naming the handler, the type and the
    field's wire path; the CLI prints it as one error line."""
    make_module("files_service", BAD_HANDLER)
    services = describe_services([write_config(tmp_path, "files", "files_service")])

    with pytest.raises(HandlerDefinitionError) as caught:
        asyncapi_document(services)

    message = str(caught.value)
    assert "handler files_service.Files.upload" in message
    assert "files_service.Upload" in message
    assert "@ $.content" in message
    assert main(["asyncapi", "--config", str(tmp_path / "files.yaml")]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "files_service.Files.upload" in err


def test_a_declared_type_without_a_json_form_is_an_error_naming_the_sender(make_module, tmp_path: Path) -> None:
    """A sending declaration whose payload type is a mapping with int keys is an error naming the sending method."""
    make_module("ledger_service", BAD_DECLARATION)
    services = describe_services([write_config(tmp_path, "ledger", "ledger_service")])

    with pytest.raises(HandlerDefinitionError, match=r"sending declaration of ledger_service\.Ledger\.balance.*keys"):
        asyncapi_document(services)


def test_a_payload_type_that_is_no_data_is_an_error_naming_it() -> None:
    """An arbitrary class (not attrs, dataclass, enum or primitive) is refused, naming the class."""

    class Connection:
        pass

    with pytest.raises(HandlerDefinitionError, match=r"where: .*Connection is not an attrs class"):
        SchemaBuilder().schema(list[Connection], where="where")
