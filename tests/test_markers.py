"""Handler markers: they attach metadata only; the container finds marked handlers when it scans."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from container_messaging import (
    CommandBus,
    EventBus,
    HandlerDefinitionError,
    MessageChannels,
    MessagingContainer,
    NoHandlerError,
    QueryBus,
    command_handler,
    distributed,
    event_handler,
    query_handler,
    service_activator,
)
from container_messaging.markers import HandlerKind, HandlerMarker, is_distributed, markers_of


def build(*scan: str, **extra: Any) -> MessagingContainer:
    return MessagingContainer.from_dict({"scan": list(scan), "transport": {"url": "memory://"}, **extra})


# -- metadata only ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decorator", "kind"),
    [
        (command_handler, HandlerKind.COMMAND),
        (event_handler, HandlerKind.EVENT),
        (query_handler, HandlerKind.QUERY),
        (service_activator, HandlerKind.SERVICE_ACTIVATOR),
    ],
)
def test_marker_returns_the_function_with_its_spec_attached(decorator, kind) -> None:
    """A marker returns the very function it decorates, carrying only a spec of its kind and key."""

    def handle(payload: dict) -> None:
        return None

    marked = decorator("some.key")(handle)

    assert marked is handle
    assert markers_of(handle) == (HandlerMarker(kind, "some.key"),)


def test_unmarked_function_has_no_markers() -> None:
    """A plain function carries no markers and is not distributed."""

    def plain(payload: dict) -> None:
        return None

    assert markers_of(plain) == ()
    assert is_distributed(plain) is False


def test_importing_marked_modules_registers_nothing(make_module) -> None:
    """Two containers scanning different modules, both imported, each see only their own module's handlers."""
    source = """
        from container_messaging import command_handler

        calls = []

        class Service:
            @command_handler("markers.shared.key")
            def handle(self, payload: dict) -> None:
                calls.append(payload)

            @command_handler("markers.{name}.only")
            def only(self, payload: dict) -> None:
                calls.append(payload)
    """
    first = make_module("mk_registers_nothing_a", source.replace("{name}", "a"))
    second = make_module("mk_registers_nothing_b", source.replace("{name}", "b"))
    module_a, module_b = importlib.import_module(first), importlib.import_module(second)

    container_a, container_b = build(first), build(second)
    container_a.get(CommandBus).send_with_routing("markers.shared.key", {"to": "a"})
    container_b.get(CommandBus).send_with_routing("markers.shared.key", {"to": "b"})

    assert module_a.calls == [{"to": "a"}]
    assert module_b.calls == [{"to": "b"}]
    with pytest.raises(NoHandlerError, match=r"markers\.b\.only"):
        container_a.get(CommandBus).send_with_routing("markers.b.only", {})
    with pytest.raises(NoHandlerError, match=r"markers\.a\.only"):
        container_b.get(CommandBus).send_with_routing("markers.a.only", {})


def test_marked_class_outside_scan_is_not_found(make_module) -> None:
    """A marked class in an imported module that is not listed under scan is not a handler."""
    outside = make_module(
        "mk_outside_scan_outside",
        """
        from container_messaging import command_handler

        class Outside:
            @command_handler("markers.outside")
            def handle(self, payload: dict) -> None:
                raise AssertionError("must not be called")
        """,
    )
    inside = make_module(
        "mk_outside_scan_inside",
        """
        from container_messaging import command_handler

        class Inside:
            @command_handler("markers.inside")
            def handle(self, payload: dict) -> str:
                return "inside"
        """,
    )
    importlib.import_module(outside)

    container = build(inside)

    assert container.get(CommandBus).send_with_routing("markers.inside", {}) == "inside"
    assert [h.name for h in container.routes.handlers] == [f"{inside}.Inside.handle"]
    with pytest.raises(NoHandlerError, match=r"markers\.outside"):
        container.get(CommandBus).send_with_routing("markers.outside", {})


# -- stacking and forms -------------------------------------------------------------------------------------------


def test_distributed_stacking_order_does_not_matter(make_module) -> None:
    """@distributed above or below @command_handler gives the same, distributed, handler."""
    name = make_module(
        "mk_stacking_order",
        """
        from container_messaging import command_handler, distributed

        class Service:
            @distributed
            @command_handler("markers.above")
            def above(self, payload: dict) -> None: ...

            @command_handler("markers.below")
            @distributed
            def below(self, payload: dict) -> None: ...

            @distributed()
            @command_handler("markers.called")
            def called(self, payload: dict) -> None: ...
        """,
    )
    module = importlib.import_module(name)
    for function in (module.Service.above, module.Service.below, module.Service.called):
        assert is_distributed(function)
        assert [m.kind for m in markers_of(function)] == [HandlerKind.COMMAND]

    container = build(name, service_name="markers-stacking")

    distributed_keys = sorted(h.routing_key for h in container.routes.distributed(HandlerKind.COMMAND))
    assert distributed_keys == ["markers.above", "markers.below", "markers.called"]


def test_distributed_directly_on_function() -> None:
    """@distributed applied without parentheses and with them marks the function distributed."""

    @distributed
    def first(payload: dict) -> None: ...

    @distributed()
    def second(payload: dict) -> None: ...

    assert is_distributed(first)
    assert is_distributed(second)


def test_bare_markers_route_by_first_parameter_class(make_module) -> None:
    """Bare @command_handler, @query_handler and @event_handler (no parentheses) route by the payload class."""
    name = make_module(
        "mk_bare_markers",
        """
        import attrs
        from container_messaging import command_handler, event_handler, query_handler

        @attrs.frozen
        class Register:
            user: str

        @attrs.frozen
        class FindUser:
            user: str

        @attrs.frozen
        class Registered:
            user: str

        calls = []

        class Users:
            @command_handler
            def register(self, command: Register) -> str:
                calls.append(("command", command))
                return "registered " + command.user

            @query_handler
            def find(self, query: FindUser) -> str:
                return "found " + query.user

            @event_handler
            def on_registered(self, event: Registered) -> None:
                calls.append(("event", event))
        """,
    )
    module = importlib.import_module(name)
    container = build(name)

    assert container.get(CommandBus).send(module.Register("ann")) == "registered ann"
    assert container.get(QueryBus).send(module.FindUser("bob")) == "found bob"
    container.get(EventBus).publish(module.Registered("cid"))

    assert module.calls == [("command", module.Register("ann")), ("event", module.Registered("cid"))]


def test_module_level_functions_are_handlers(make_module) -> None:
    """Marked module-level functions are found and called without an instance."""
    name = make_module(
        "mk_module_functions",
        """
        from container_messaging import command_handler, event_handler, query_handler

        calls = []

        @command_handler("markers.fn.command")
        def on_command(payload: dict) -> None:
            calls.append(("command", payload))

        @event_handler("markers.fn.event")
        def on_event(payload: dict) -> None:
            calls.append(("event", payload))

        @query_handler("markers.fn.query")
        def on_query(payload: dict) -> int:
            return payload["n"] * 2
        """,
    )
    container = build(name)

    container.get(CommandBus).send_with_routing("markers.fn.command", {"a": 1})
    container.get(EventBus).publish_with_routing("markers.fn.event", {"b": 2})
    result = container.get(QueryBus).send_with_routing("markers.fn.query", {"n": 21})

    assert importlib.import_module(name).calls == [("command", {"a": 1}), ("event", {"b": 2})]
    assert result == 42


def test_staticmethod_handlers_in_either_stacking_order(make_module) -> None:
    """A staticmethod handler works with the marker above or below @staticmethod and needs no instance."""
    name = make_module(
        "mk_staticmethod",
        """
        from container_messaging import command_handler

        class NotConstructible:
            def __init__(self) -> None:
                raise AssertionError("a static handler needs no instance")

            @command_handler("markers.static.above")
            @staticmethod
            def above(payload: dict) -> str:
                return "above " + payload["v"]

            @staticmethod
            @command_handler("markers.static.below")
            def below(payload: dict) -> str:
                return "below " + payload["v"]
        """,
    )
    bus = build(name).get(CommandBus)

    assert bus.send_with_routing("markers.static.above", {"v": "x"}) == "above x"
    assert bus.send_with_routing("markers.static.below", {"v": "y"}) == "below y"


@pytest.mark.parametrize("order", ["marker_above", "marker_below"])
def test_classmethod_handler_is_a_definition_error(make_module, order: str) -> None:
    """A classmethod marked as a handler (either stacking order) fails the build, naming the method."""
    decorators = (
        '@command_handler("markers.cls")\n    @classmethod'
        if order == "marker_above"
        else '@classmethod\n    @command_handler("markers.cls")'
    )
    name = make_module(
        f"mk_classmethod_{order}",
        f"""
from container_messaging import command_handler

class Service:
    {decorators}
    def handle(cls, payload: dict) -> None: ...
""",
    )

    with pytest.raises(HandlerDefinitionError, match=r"Service\.handle.*classmethod"):
        build(name)


def test_service_activator_reached_through_its_channel(make_module) -> None:
    """A @service_activator handler receives what is sent to its input channel."""
    name = make_module(
        "mk_service_activator",
        """
        from container_messaging import service_activator

        class Receiver:
            @service_activator("markers.channel")
            def receive(self, payload: str) -> str:
                return payload.upper()
        """,
    )

    assert build(name).get(MessageChannels).send("markers.channel", "hello") == "HELLO"


def test_bare_service_activator_is_an_error() -> None:
    """@service_activator used bare, without an input channel, raises HandlerDefinitionError."""
    with pytest.raises(HandlerDefinitionError, match="input channel"):

        @service_activator  # type: ignore[arg-type]
        def receive(payload: str) -> None: ...


@pytest.mark.parametrize("channel", [None, "", "   "])
def test_service_activator_with_empty_channel_is_an_error(channel) -> None:
    """@service_activator with a None or blank channel name raises HandlerDefinitionError."""
    with pytest.raises(HandlerDefinitionError, match="service_activator"):
        service_activator(channel)


@pytest.mark.parametrize("decorator", [command_handler, event_handler, query_handler])
@pytest.mark.parametrize("key", ["", "  ", 42])
def test_blank_or_non_string_routing_key_is_an_error(decorator, key) -> None:
    """A routing key that is blank or not a string is refused when the marker is applied."""
    with pytest.raises(HandlerDefinitionError, match="routing key"):
        decorator(key)


def test_bare_marker_over_staticmethod_routes_by_class(make_module) -> None:
    """A bare @command_handler above @staticmethod routes by the payload class and needs no instance."""
    name = make_module(
        "mk_bare_static",
        """
        import attrs
        from container_messaging import command_handler

        @attrs.frozen
        class Ping:
            n: int

        class Pinger:
            def __init__(self) -> None:
                raise AssertionError("a static handler needs no instance")

            @command_handler
            @staticmethod
            def ping(command: Ping) -> int:
                return command.n + 1
        """,
    )
    module = importlib.import_module(name)

    assert build(name).get(CommandBus).send(module.Ping(41)) == 42


def test_bare_marker_over_classmethod_is_an_error() -> None:
    """A bare @command_handler above @classmethod raises HandlerDefinitionError mentioning the method."""
    with pytest.raises(HandlerDefinitionError, match="handle"):

        class Service:
            @command_handler  # type: ignore[arg-type]
            @classmethod
            def handle(cls, payload: dict) -> None: ...
