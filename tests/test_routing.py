"""Routing: by key and by class, one command/query handler each, events to zero or more, Ecotone globs."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from container_messaging import (
    CommandBus,
    EventBus,
    HandlerDefinitionError,
    MessagingContainer,
    NoHandlerError,
    QueryBus,
)
from container_messaging.routing import glob_pattern


def build(*scan: str, **extra: Any) -> MessagingContainer:
    return MessagingContainer.from_dict({"scan": list(scan), "transport": {"url": "memory://"}, **extra})


# -- by key and by class ------------------------------------------------------------------------------------------


def test_command_routed_by_key_to_its_handler(make_module) -> None:
    """Each routing key reaches the handler marked with it, and only that one."""
    name = make_module(
        "rt_by_key",
        """
        from container_messaging import command_handler

        calls = []

        class Service:
            @command_handler("routing.first")
            def first(self, payload: dict) -> None:
                calls.append(("first", payload))

            @command_handler("routing.second")
            def second(self, payload: dict) -> None:
                calls.append(("second", payload))
        """,
    )
    bus = build(name).get(CommandBus)

    bus.send_with_routing("routing.second", {"n": 2})
    bus.send_with_routing("routing.first", {"n": 1})

    assert importlib.import_module(name).calls == [("second", {"n": 2}), ("first", {"n": 1})]


def test_command_routing_key_is_exact(make_module) -> None:
    """Command routing keys match exactly: a longer key or another case has no handler."""
    name = make_module(
        "rt_exact_key",
        """
        from container_messaging import command_handler

        class Service:
            @command_handler("routing.exact")
            def handle(self, payload: dict) -> None: ...
        """,
    )
    bus = build(name).get(CommandBus)

    for key in ("routing.exact.more", "Routing.Exact", "routing"):
        with pytest.raises(NoHandlerError, match=key.replace(".", r"\.")):
            bus.send_with_routing(key, {})


def test_command_routed_by_class_and_subclass_goes_to_base_handler(make_module) -> None:
    """Without a key a command goes by its class; a subclass instance reaches the base-class handler."""
    name = make_module(
        "rt_by_class",
        """
        import attrs
        from container_messaging import command_handler

        @attrs.frozen
        class ChangeDetails:
            person_id: str

        @attrs.frozen
        class ChangeDetailsUrgently(ChangeDetails):
            pass

        calls = []

        class Service:
            @command_handler()
            def change(self, command: ChangeDetails) -> None:
                calls.append(command)
        """,
    )
    module = importlib.import_module(name)
    bus = build(name).get(CommandBus)

    bus.send(module.ChangeDetails("1"))
    bus.send(module.ChangeDetailsUrgently("2"))

    assert module.calls == [module.ChangeDetails("1"), module.ChangeDetailsUrgently("2")]
    assert type(module.calls[1]) is module.ChangeDetailsUrgently


def test_most_specific_class_handler_wins(make_module) -> None:
    """When both a class and its subclass have handlers, a subclass instance goes to the subclass handler."""
    name = make_module(
        "rt_specific_class",
        """
        import attrs
        from container_messaging import query_handler

        @attrs.frozen
        class Base:
            pass

        @attrs.frozen
        class Special(Base):
            pass

        class Service:
            @query_handler
            def base(self, query: Base) -> str:
                return "base"

            @query_handler
            def special(self, query: Special) -> str:
                return "special"
        """,
    )
    module = importlib.import_module(name)
    bus = build(name).get(QueryBus)

    assert bus.send(module.Special()) == "special"
    assert bus.send(module.Base()) == "base"


@pytest.mark.parametrize("marker", ["command_handler", "query_handler"])
def test_two_handlers_for_one_key_name_both_methods(make_module, marker: str) -> None:
    """Two command (or query) handlers for one routing key fail the build, naming both methods."""
    name = make_module(
        f"rt_duplicate_key_{marker}",
        f"""
        from container_messaging import {marker}

        class First:
            @{marker}("routing.duplicate")
            def one(self, payload: dict) -> None: ...

        class Second:
            @{marker}("routing.duplicate")
            def two(self, payload: dict) -> None: ...
        """,
    )

    with pytest.raises(HandlerDefinitionError) as info:
        build(name)

    message = str(info.value)
    assert f"{name}.First.one" in message
    assert f"{name}.Second.two" in message
    assert "'routing.duplicate'" in message


@pytest.mark.parametrize("marker", ["command_handler", "query_handler"])
def test_two_handlers_for_one_class_name_both_methods(make_module, marker: str) -> None:
    """Two command (or query) handlers routed by the same class fail the build, naming both and the class."""
    name = make_module(
        f"rt_duplicate_class_{marker}",
        f"""
        import attrs
        from container_messaging import {marker}

        @attrs.frozen
        class Payload:
            value: int

        class First:
            @{marker}
            def one(self, payload: Payload) -> None: ...

        @{marker}
        def two(payload: Payload) -> None: ...
        """,
    )

    with pytest.raises(HandlerDefinitionError) as info:
        build(name)

    message = str(info.value)
    assert f"{name}.First.one" in message
    assert f"{name}.two" in message
    assert f"{name}.Payload" in message


def test_duplicate_across_scanned_modules_names_both(make_module) -> None:
    """A duplicate command key in two different scanned modules names both modules' methods."""
    source = """
        from container_messaging import command_handler

        class Service:
            @command_handler("routing.across")
            def handle(self, payload: dict) -> None: ...
    """
    first = make_module("rt_across_a", source)
    second = make_module("rt_across_b", source)

    with pytest.raises(HandlerDefinitionError) as info:
        build(first, second)

    assert f"{first}.Service.handle" in str(info.value)
    assert f"{second}.Service.handle" in str(info.value)


def test_command_and_query_may_share_a_key(make_module) -> None:
    """A command handler and a query handler with the same key are distinct routes."""
    name = make_module(
        "rt_command_query_share",
        """
        from container_messaging import command_handler, query_handler

        class Service:
            @command_handler("routing.shared")
            def command(self, payload: dict) -> str:
                return "command"

            @query_handler("routing.shared")
            def query(self, payload: dict) -> str:
                return "query"
        """,
    )
    container = build(name)

    assert container.get(CommandBus).send_with_routing("routing.shared", {}) == "command"
    assert container.get(QueryBus).send_with_routing("routing.shared", {}) == "query"


# -- events -------------------------------------------------------------------------------------------------------


EVENTS = """
import attrs
from container_messaging import event_handler

@attrs.frozen
class Happened:
    what: str

@attrs.frozen
class HappenedAgain(Happened):
    pass

calls = []

class Listeners:
    @event_handler("routing.many")
    def first(self, event: dict) -> None:
        calls.append(("first", event))

    @event_handler("routing.many")
    def second(self, event: dict) -> None:
        calls.append(("second", event))

    @event_handler("routing.one")
    def only(self, event: dict) -> None:
        calls.append(("only", event))

    @event_handler
    def by_class(self, event: Happened) -> None:
        calls.append(("by_class", event))

@event_handler("routing.many")
def module_level(event: dict) -> None:
    calls.append(("module_level", event))
"""


def test_event_reaches_every_matching_handler(make_module) -> None:
    """An event key with three handlers runs all three, one with one handler runs it alone."""
    name = make_module("rt_events_many", EVENTS)
    module = importlib.import_module(name)
    bus = build(name).get(EventBus)

    bus.publish_with_routing("routing.many", {"n": 1})
    assert sorted(module.calls) == [("first", {"n": 1}), ("module_level", {"n": 1}), ("second", {"n": 1})]

    module.calls.clear()
    bus.publish_with_routing("routing.one", {"n": 2})
    assert module.calls == [("only", {"n": 2})]


def test_event_without_handler_is_fine(make_module) -> None:
    """Publishing an event nothing listens to raises nothing and calls nothing."""
    name = make_module("rt_events_none", EVENTS)
    module = importlib.import_module(name)
    bus = build(name).get(EventBus)

    bus.publish_with_routing("routing.nobody.listens", {"n": 1})
    bus.publish(object())

    assert module.calls == []


def test_event_by_class_reaches_handlers_of_its_base_classes(make_module) -> None:
    """An event published as an object reaches class-routed handlers of its class and its base classes."""
    name = make_module("rt_events_class", EVENTS)
    module = importlib.import_module(name)
    bus = build(name).get(EventBus)

    bus.publish(module.Happened("a"))
    bus.publish(module.HappenedAgain("b"))

    assert module.calls == [("by_class", module.Happened("a")), ("by_class", module.HappenedAgain("b"))]


# -- Ecotone globs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("userService.*", "userService.billing.DetailsWereChanged", True),
        ("userService.*", "userService.x", True),
        ("userService.*", "userservice.BILLING.changed", True),
        ("USERSERVICE.*", "userService.billing", True),
        ("*.changed", "billing.details.changed", True),
        ("billing.*.changed", "billing.a.b.changed", True),
        ("*", "anything.at.all", True),
        ("billing.changed", "BILLING.CHANGED", True),
        ("billing.*", "xbilling.a", False),
        ("billing.*", "billing", False),
        ("billing", "billing.x", False),
        ("billing", "xbilling", False),
        ("*.changed", "billing.changed.later", False),
        ("billing.changed", "billingXchanged", False),
        ("user[Service]", "userS", False),
        ("a+b", "aab", False),
    ],
)
def test_glob_matching(pattern: str, key: str, matches: bool) -> None:
    """Ecotone globs: * spans dots, the match ignores case, is anchored, and other characters are literal."""
    assert (glob_pattern(pattern).match(key) is not None) is matches


def test_glob_is_anchored_at_the_very_end() -> None:
    """A key with a trailing newline is a different key and does not match the pattern without it."""
    assert glob_pattern("billing.changed").match("billing.changed\n") is None


def test_event_glob_routing_through_the_bus(make_module) -> None:
    """Event handlers with glob keys receive exactly the published keys that match them."""
    name = make_module(
        "rt_event_globs",
        """
        from container_messaging import event_handler

        calls = []

        class Audit:
            @event_handler("userService.*")
            def user_service(self, event: dict) -> None:
                calls.append(("userService.*", event["key"]))

            @event_handler("billing.*")
            def billing(self, event: dict) -> None:
                calls.append(("billing.*", event["key"]))

            @event_handler("billing")
            def billing_exact(self, event: dict) -> None:
                calls.append(("billing", event["key"]))
        """,
    )
    module = importlib.import_module(name)
    bus = build(name).get(EventBus)

    for key in ("userService.billing.DetailsWereChanged", "USERSERVICE.x", "xbilling.a", "billing.x", "billing"):
        bus.publish_with_routing(key, {"key": key})

    assert module.calls == [
        ("userService.*", "userService.billing.DetailsWereChanged"),
        ("userService.*", "USERSERVICE.x"),
        ("billing.*", "billing.x"),
        ("billing", "billing"),
    ]


# -- definition errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("marker", ["command_handler", "event_handler"])
def test_distributed_handler_without_routing_key_is_an_error(make_module, marker: str) -> None:
    """A @distributed handler routed by class fails the build, naming the handler and asking for a key."""
    name = make_module(
        f"rt_distributed_no_key_{marker}",
        f"""
        import attrs
        from container_messaging import {marker}, distributed

        @attrs.frozen
        class Payload:
            value: int

        class Service:
            @distributed
            @{marker}
            def handle(self, payload: Payload) -> None: ...
        """,
    )

    with pytest.raises(HandlerDefinitionError, match=rf"{name}\.Service\.handle.*routing key"):
        build(name, service_name="routing-svc")


@pytest.mark.parametrize(
    "annotation",
    [
        "",
        ": dict",
        ": str",
    ],
)
def test_keyless_handler_without_message_class_is_an_error(make_module, annotation: str) -> None:
    """A handler with no routing key whose first parameter is not a message class fails the build, naming it."""
    name = make_module(
        f"rt_keyless_{len(annotation)}",
        f"""
        from container_messaging import command_handler

        class Service:
            @command_handler
            def handle(self, payload{annotation}) -> None: ...
        """,
    )

    with pytest.raises(HandlerDefinitionError, match=rf"{name}\.Service\.handle.*routing key"):
        build(name)


def test_keyless_handler_without_parameters_is_an_error(make_module) -> None:
    """A keyless handler that takes no payload parameter fails the build, naming it."""
    name = make_module(
        "rt_keyless_no_params",
        """
        from container_messaging import event_handler

        @event_handler
        def on_anything() -> None: ...
        """,
    )

    with pytest.raises(HandlerDefinitionError, match=rf"{name}\.on_anything.*missing"):
        build(name)


def test_distributed_query_handler_is_an_error(make_module) -> None:
    """A @distributed query handler fails the build, naming the handler: queries are not distributed."""
    name = make_module(
        "rt_distributed_query",
        """
        from container_messaging import distributed, query_handler

        class Service:
            @distributed
            @query_handler("routing.query")
            def handle(self, payload: dict) -> None: ...
        """,
    )

    with pytest.raises(HandlerDefinitionError, match=rf"{name}\.Service\.handle.*queries"):
        build(name, service_name="routing-svc")


def test_two_service_activators_for_one_channel_name_both(make_module) -> None:
    """Two service activators for one input channel fail the build, naming both and the channel."""
    name = make_module(
        "rt_duplicate_channel",
        """
        from container_messaging import service_activator

        class First:
            @service_activator("routing.channel")
            def one(self, payload: str) -> None: ...

        @service_activator("routing.channel")
        def two(payload: str) -> None: ...
        """,
    )

    with pytest.raises(HandlerDefinitionError) as info:
        build(name)

    message = str(info.value)
    assert f"{name}.First.one" in message
    assert f"{name}.two" in message
    assert "'routing.channel'" in message
