"""Handler parameters: payload conversion to the first parameter, Headers, Header("name"), method injection."""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

import pytest

from container_messaging import (
    CommandBus,
    HandlerDefinitionError,
    Headers,
    MessagingContainer,
    MissingDependencyError,
    MissingHeaderError,
    QueryBus,
)
from container_messaging.messages import MediaType

JSON = MediaType.APPLICATION_JSON


def module_suffix(request: pytest.FixtureRequest) -> str:
    """The test's node name as a module-name suffix, unique per test and parameter set."""
    return re.sub(r"\W", "_", request.node.name)


def build(*scan: str, **extra: Any) -> MessagingContainer:
    return MessagingContainer.from_dict({"scan": list(scan), "transport": {"url": "memory://"}, **extra})


PAYLOADS = """
import dataclasses
import attrs
from container_messaging import command_handler

@attrs.frozen
class ChangeBillingDetails:
    person_id: str
    billing_details: str
    amount: int

@dataclasses.dataclass(frozen=True)
class RegisterUser:
    user_id: str
    tags: list[str]

calls = []

class Handlers:
    @command_handler("inv.attrs")
    def attrs_payload(self, command: ChangeBillingDetails) -> None:
        calls.append(command)

    @command_handler("inv.dataclass")
    def dataclass_payload(self, command: RegisterUser) -> None:
        calls.append(command)

    @command_handler("inv.str")
    def str_payload(self, command: str) -> None:
        calls.append(command)

    @command_handler("inv.bytes")
    def bytes_payload(self, command: bytes) -> None:
        calls.append(command)

    @command_handler("inv.dict")
    def dict_payload(self, command: dict) -> None:
        calls.append(command)

    @command_handler("inv.list")
    def list_payload(self, command: list) -> None:
        calls.append(command)

    @command_handler("inv.untyped")
    def untyped_payload(self, command) -> None:
        calls.append(command)
"""


@pytest.fixture
def payloads(make_module, request: pytest.FixtureRequest) -> tuple[Any, CommandBus]:
    name = make_module(f"inv_payloads_{module_suffix(request)}", PAYLOADS)
    return importlib.import_module(name), build(name).get(CommandBus)


# -- payload ------------------------------------------------------------------------------------------------------


def test_attrs_payload_from_in_process_dict(payloads) -> None:
    """An attrs-class first parameter is structured from an in-process dict with camelCase keys."""
    module, bus = payloads

    bus.send_with_routing("inv.attrs", {"personId": "123", "billingDetails": "01111", "amount": 5})

    assert module.calls == [module.ChangeBillingDetails("123", "01111", 5)]


def test_attrs_payload_from_json_text(payloads) -> None:
    """An attrs-class first parameter is structured from JSON text sent as application/json."""
    module, bus = payloads

    bus.send_with_routing("inv.attrs", '{"personId": "9", "billingDetails": "x", "amount": 1}', media_type=JSON)

    assert module.calls == [module.ChangeBillingDetails("9", "x", 1)]


def test_attrs_payload_instance_passed_through(payloads) -> None:
    """An in-process instance of the payload class reaches the handler as the very same object."""
    module, bus = payloads
    command = module.ChangeBillingDetails("1", "2", 3)

    bus.send_with_routing("inv.attrs", command)

    assert module.calls[0] is command


def test_dataclass_payload_from_in_process_dict(payloads) -> None:
    """A dataclass first parameter is structured from an in-process dict."""
    module, bus = payloads

    bus.send_with_routing("inv.dataclass", {"userId": "u1", "tags": ["a", "b"]})

    assert module.calls == [module.RegisterUser("u1", ["a", "b"])]


def test_dataclass_payload_from_json_bytes(payloads) -> None:
    """A dataclass first parameter is structured from JSON bytes sent as application/json."""
    module, bus = payloads

    bus.send_with_routing("inv.dataclass", b'{"userId": "u2", "tags": []}', media_type=JSON)

    assert module.calls == [module.RegisterUser("u2", [])]


@pytest.mark.parametrize(
    ("key", "payload", "media_type", "expected"),
    [
        ("inv.str", "plain text é", MediaType.TEXT_PLAIN, "plain text é"),
        ("inv.str", b"bytes as text \xc3\xa9", MediaType.TEXT_PLAIN, "bytes as text é"),
        ("inv.str", '{"a": 1}', JSON, '{"a": 1}'),
        ("inv.bytes", b"\x00\xff raw", MediaType.OCTET_STREAM, b"\x00\xff raw"),
        ("inv.bytes", '{"a": 1}', JSON, b'{"a": 1}'),
        ("inv.dict", '{"a": 1, "b": [true, null]}', JSON, {"a": 1, "b": [True, None]}),
        ("inv.dict", {"in": "process"}, MediaType.PYTHON_OBJECT, {"in": "process"}),
        ("inv.list", '[1, 2.5, "x"]', JSON, [1, 2.5, "x"]),
        ("inv.list", [1, 2], MediaType.PYTHON_OBJECT, [1, 2]),
        ("inv.untyped", '{"k": "v"}', JSON, {"k": "v"}),
    ],
)
def test_builtin_targets(payloads, key: str, payload: Any, media_type: str, expected: Any) -> None:
    """str gets text, bytes the raw body, dict/list decoded JSON; an untyped payload gets decoded JSON."""
    module, bus = payloads

    bus.send_with_routing(key, payload, media_type=media_type)

    assert module.calls == [expected]
    assert type(module.calls[0]) is type(expected)


def test_untyped_payload_gets_in_process_object_as_is(payloads) -> None:
    """An unannotated payload parameter receives an in-process object unchanged."""
    module, bus = payloads
    thing = object()

    bus.send_with_routing("inv.untyped", thing)

    assert module.calls[0] is thing


# -- headers ------------------------------------------------------------------------------------------------------


HEADERS = """
from typing import Annotated
from container_messaging import Header, Headers, command_handler

calls = []

class Handlers:
    @command_handler("inv.all_headers")
    def all_headers(self, payload: dict, metadata: Headers) -> None:
        calls.append(metadata)

    @command_handler("inv.one_header")
    def one_header(self, payload: dict, tenant: Annotated[str, Header("tenant")]) -> None:
        calls.append(tenant)

    @command_handler("inv.header_default")
    def header_default(self, payload: dict, tenant: Annotated[str, Header("tenant", default="none")]) -> None:
        calls.append(tenant)

    @command_handler("inv.header_python_default")
    def header_python_default(self, payload: dict, tenant: Annotated[str, Header("tenant")] = "fallback") -> None:
        calls.append(tenant)

    @command_handler("inv.keyword_header")
    def keyword_header(self, payload: dict, *, region: Annotated[str, Header("region")], meta: Headers) -> None:
        calls.append((region, meta["region"]))

    @command_handler("inv.headers_only")
    def headers_only(self, metadata: Headers) -> None:
        calls.append(dict(metadata))

    @command_handler("inv.no_params")
    def no_params(self) -> None:
        calls.append("called")
"""


@pytest.fixture
def headers_module(make_module, request: pytest.FixtureRequest) -> tuple[Any, CommandBus]:
    name = make_module(f"inv_headers_{module_suffix(request)}", HEADERS)
    return importlib.import_module(name), build(name).get(CommandBus)


def test_headers_parameter_receives_every_header(headers_module) -> None:
    """A Headers parameter receives the framework headers and the sent metadata."""
    module, bus = headers_module

    bus.send_with_routing("inv.all_headers", {}, metadata={"tenant": "acme", "traceLevel": 3})

    (received,) = module.calls
    assert isinstance(received, Headers)
    assert received["tenant"] == "acme"
    assert received["traceLevel"] == 3
    assert {"id", "correlationId", "timestamp", "contentType"} <= set(received)


def test_headers_parameter_is_read_only(headers_module) -> None:
    """The Headers a handler receives cannot be assigned to or deleted from."""
    module, bus = headers_module
    bus.send_with_routing("inv.all_headers", {}, metadata={"tenant": "acme"})
    (received,) = module.calls

    with pytest.raises(TypeError):
        received["tenant"] = "other"
    with pytest.raises(TypeError):
        del received["tenant"]
    assert received["tenant"] == "acme"


def test_to_dict_gives_an_independent_copy(headers_module) -> None:
    """Headers.to_dict returns a mutable copy; changing it leaves the headers unchanged."""
    module, bus = headers_module
    bus.send_with_routing("inv.all_headers", {}, metadata={"tenant": "acme"})
    (received,) = module.calls

    copy = received.to_dict()
    copy["tenant"] = "changed"

    assert received["tenant"] == "acme"


def test_header_parameter_receives_one_header(headers_module) -> None:
    """Annotated[str, Header("tenant")] receives that header's value."""
    module, bus = headers_module

    bus.send_with_routing("inv.one_header", {}, metadata={"tenant": "acme", "other": "x"})

    assert module.calls == ["acme"]


def test_missing_header_without_default_names_the_header(headers_module) -> None:
    """A missing Header("tenant") with no default raises MissingHeaderError naming the header and parameter."""
    module, bus = headers_module

    with pytest.raises(MissingHeaderError) as info:
        bus.send_with_routing("inv.one_header", {}, metadata={"other": "x"})

    assert "'tenant'" in str(info.value)
    assert "Handlers.one_header" in str(info.value)
    assert module.calls == []


@pytest.mark.parametrize(
    ("key", "default"), [("inv.header_default", "none"), ("inv.header_python_default", "fallback")]
)
def test_missing_header_with_default_gets_the_default(headers_module, key: str, default: str) -> None:
    """A missing header with a Header(default=...) or a Python default receives that default."""
    module, bus = headers_module

    bus.send_with_routing(key, {})
    bus.send_with_routing(key, {}, metadata={"tenant": "present"})

    assert module.calls == [default, "present"]


def test_keyword_only_header_parameters(headers_module) -> None:
    """Header and Headers parameters may be keyword-only."""
    module, bus = headers_module

    bus.send_with_routing("inv.keyword_header", {}, metadata={"region": "eu"})

    assert module.calls == [("eu", "eu")]


def test_handler_with_headers_but_no_payload(headers_module) -> None:
    """A keyed handler whose only parameter is Headers receives the headers and no payload."""
    module, bus = headers_module

    bus.send_with_routing("inv.headers_only", "ignored payload", metadata={"tenant": "t"})

    assert module.calls[0]["tenant"] == "t"


def test_handler_without_parameters_is_called(headers_module) -> None:
    """A keyed handler that takes no parameters is called."""
    module, bus = headers_module

    bus.send_with_routing("inv.no_params", {"anything": 1})

    assert module.calls == ["called"]


# -- method injection ---------------------------------------------------------------------------------------------


INJECTION = """
from container_messaging import EventBus, Headers, command_handler, event_handler

class BillingRepository:
    def __init__(self) -> None:
        self.saved = []

calls = []

class BillingService:
    @command_handler("inv.inject")
    def change(self, command: dict, repository: BillingRepository, events: EventBus, metadata: Headers) -> None:
        repository.saved.append(command)
        calls.append(("command", repository))
        events.publish_with_routing("inv.changed", command)

    @event_handler("inv.changed")
    def on_changed(self, event: dict, repository: BillingRepository) -> None:
        calls.append(("event", repository))

@command_handler("inv.inject.function")
def function_handler(command: dict, *, repository: BillingRepository) -> None:
    calls.append(("function", repository))
"""


def test_annotated_parameters_are_injected_from_the_container(make_module) -> None:
    """Other annotated parameters get container objects: the repository singleton and the EventBus."""
    name = make_module("inv_method_injection", INJECTION)
    module = importlib.import_module(name)
    container = build(name)

    container.get(CommandBus).send_with_routing("inv.inject", {"n": 1})
    container.get(CommandBus).send_with_routing("inv.inject.function", {"n": 2})

    repository = container.get(module.BillingRepository)
    assert module.calls == [("command", repository), ("event", repository), ("function", repository)]
    assert repository.saved == [{"n": 1}]


def test_unannotated_parameter_without_default_names_the_parameter(make_module) -> None:
    """A non-payload parameter with no annotation and no default fails the build, naming it and the handler."""
    name = make_module(
        "inv_unannotated_param",
        """
        from container_messaging import command_handler

        class Service:
            @command_handler("inv.unannotated")
            def handle(self, payload: dict, mystery) -> None: ...
        """,
    )

    with pytest.raises(HandlerDefinitionError) as info:
        build(name)

    assert "'mystery'" in str(info.value)
    assert f"{name}.Service.handle" in str(info.value)


def test_unannotated_parameter_with_default_keeps_the_default(make_module) -> None:
    """A non-payload parameter with no annotation but a default is left to its default."""
    name = make_module(
        "inv_unannotated_default",
        """
        from container_messaging import query_handler

        class Service:
            @query_handler("inv.unannotated.default")
            def handle(self, payload: dict, factor=3) -> int:
                return payload["n"] * factor
        """,
    )

    assert build(name).get(QueryBus).send_with_routing("inv.unannotated.default", {"n": 5}) == 15


@pytest.mark.parametrize("kind", ["args", "kwargs"])
def test_variadic_parameters_are_a_definition_error(make_module, kind: str) -> None:
    """A handler with *args or **kwargs fails the build, naming the parameter."""
    param = "*rest" if kind == "args" else "**rest"
    name = make_module(
        f"inv_variadic_{kind}",
        f"""
        from container_messaging import command_handler

        @command_handler("inv.variadic")
        def handle(payload: dict, {param}) -> None: ...
        """,
    )

    with pytest.raises(HandlerDefinitionError, match=r"'rest'"):
        build(name)


def test_unresolvable_injected_type_fails_at_build(make_module) -> None:
    """A handler parameter whose type nothing provides fails the container build, naming class and parameter."""
    name = make_module(
        "inv_unresolvable_abc",
        """
        import abc
        from container_messaging import command_handler

        class PaymentGateway(abc.ABC):
            @abc.abstractmethod
            def charge(self) -> None: ...

        calls = []

        class Service:
            @command_handler("inv.unresolvable")
            def handle(self, payload: dict, gateway: PaymentGateway) -> None:
                calls.append(payload)
        """,
    )

    with pytest.raises(MissingDependencyError) as info:
        build(name)

    message = str(info.value)
    assert f"{name}.PaymentGateway" in message
    assert "'gateway'" in message
    assert f"{name}.Service.handle" in message


def test_unresolvable_protocol_parameter_fails_with_missing_dependency(make_module) -> None:
    """A handler parameter typed with an unprovided Protocol fails the build with MissingDependencyError naming it."""
    name = make_module(
        "inv_unresolvable_protocol",
        """
        from typing import Protocol
        from container_messaging import command_handler

        class Clock(Protocol):
            def now(self) -> float: ...

        class Service:
            @command_handler("inv.protocol")
            def handle(self, payload: dict, clock: Clock) -> None: ...
        """,
    )

    with pytest.raises(MissingDependencyError) as info:
        build(name)

    assert f"{name}.Clock" in str(info.value)
    assert "'clock'" in str(info.value)


@pytest.mark.parametrize(
    ("signature", "expected"),
    [("gateway: PaymentGateway = FALLBACK", "fallback"), ("gateway: PaymentGateway | None", "none")],
    ids=["default", "optional"],
)
def test_unresolvable_injected_parameter_gets_default_or_none(make_module, signature: str, expected: str) -> None:
    """A handler parameter of an unprovided type gets its default, or None when typed T | None, like constructors."""
    name = make_module(
        f"inv_unresolvable_{expected}",
        f"""
        import abc
        from container_messaging import command_handler

        class PaymentGateway(abc.ABC):
            @abc.abstractmethod
            def charge(self) -> None: ...

        class Fallback(PaymentGateway):
            def charge(self) -> None: ...

        FALLBACK = Fallback()
        calls = []

        class Service:
            @command_handler("inv.unresolvable.default")
            def handle(self, payload: dict, {signature}) -> None:
                calls.append(gateway)
        """,
    )

    build(name).get(CommandBus).send_with_routing("inv.unresolvable.default", {})

    module = importlib.import_module(name)
    assert module.calls == [module.FALLBACK if expected == "fallback" else None]


def test_injected_parameter_resolved_from_json_payload_message(make_module) -> None:
    """Injection and header parameters work alongside a payload converted from JSON."""
    name = make_module(
        "inv_json_and_injection",
        """
        from typing import Annotated
        import attrs
        from container_messaging import Header, QueryBus, command_handler, query_handler

        @attrs.frozen
        class Order:
            order_id: str

        calls = []

        class Orders:
            @command_handler("inv.order")
            def place(self, order: Order, queries: QueryBus, tenant: Annotated[str, Header("tenant")]) -> None:
                calls.append((order, tenant, queries.send_with_routing("inv.order.count", None)))

            @query_handler("inv.order.count")
            def count(self) -> int:
                return 7
        """,
    )
    module = importlib.import_module(name)

    build(name).get(CommandBus).send_with_routing(
        "inv.order", json.dumps({"orderId": "o-1"}), media_type=JSON, metadata={"tenant": "acme"}
    )

    assert module.calls == [(module.Order("o-1"), "acme", 7)]
