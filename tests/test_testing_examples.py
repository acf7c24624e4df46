"""The example services (examples/, configs/) tested with the test system: built from their real configuration files,
in one process, on in-process channels, as a project's own tests would test them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from container_messaging import ConversionError
from container_messaging.testing import Outcome, TestSystem

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [ROOT / "configs" / name for name in ("billing.yaml", "user.yaml", "ticket.ini")]


@pytest.fixture
def system(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestSystem]:
    monkeypatch.syspath_prepend(str(ROOT))  # the handler modules are the examples package (each test imports it)
    monkeypatch.delenv("CONTAINER_MESSAGING_URL", raising=False)  # the files' transport is replaced anyway
    with TestSystem(CONFIGS) as built:
        yield built


def test_a_billing_change_reaches_billing_and_its_event_reaches_user_and_ticket(system: TestSystem) -> None:
    """The user controller's command is handled by billing, which stores the details and publishes the event; the user
    and ticket services each receive it once."""
    from examples.billing.handlers import BillingRepository
    from examples.messages import BillingDetailsWereChanged
    from examples.user.handlers import UserController

    system.service("user").get(UserController).change_billing("101", "IBAN-0001")

    run = system.run()

    billing = system.service("billing")
    assert billing.get(BillingRepository).details == {"101": "IBAN-0001"}
    assert billing.sent.events("billing.detailsWereChanged").payloads(BillingDetailsWereChanged) == [
        BillingDetailsWereChanged("101", "IBAN-0001")
    ]
    assert [(m.service, m.routing_key) for m in run.received] == [
        ("billing", "billing.changeDetails"),
        ("user", "billing.detailsWereChanged"),
        ("ticket", "billing.detailsWereChanged"),
    ]
    assert {m.outcome for m in run.received} == {Outcome.ACKNOWLEDGED}


def test_the_command_and_the_event_survive_the_round_trip_through_json(system: TestSystem) -> None:
    """Details with quotes, a backslash and non-ASCII letters arrive unchanged at billing and back at user: the command
    is converted to JSON bytes on the way, not handed over as an object."""
    from examples.billing.handlers import BillingRepository
    from examples.messages import BillingDetailsWereChanged
    from examples.user.handlers import UserController

    details = 'IBAN "CZ65" \\ Příliš žluťoučký'
    system.service("user").get(UserController).change_billing("7", details)
    [command] = system.service("user").sent.commands("billing.changeDetails", to="billing")
    assert command.content_type == "application/json"
    assert command.headers["__TypeId__"] == "examples.messages.ChangeBillingDetails"
    system.run()
    assert system.service("billing").get(BillingRepository).details == {"7": details}
    [event] = system.service("user").received.events().payloads(BillingDetailsWereChanged)
    assert event == BillingDetailsWereChanged("7", details)


def test_billing_writes_to_a_fake_repository(system: TestSystem) -> None:
    """BillingRepository overridden by type: billing's handler stores the details in the fake the test holds."""
    from examples.billing.handlers import BillingRepository
    from examples.messages import ChangeBillingDetails

    fake = BillingRepository()
    system.service("billing").override(BillingRepository, fake)
    system.service("billing").distributed_bus.convert_and_send_command(
        "billing", "billing.changeDetails", ChangeBillingDetails("3", "IBAN-3")
    )
    system.run("billing")
    assert fake.details == {"3": "IBAN-3"}
    assert system.queued("user") == 1  # the event waits for the user service, which did not run


def test_a_command_billing_cannot_read_fails_the_test(system: TestSystem) -> None:
    """A command missing a field fails billing's conversion; the test system raises that error in the test."""
    system.service("user").distributed_bus.send_command(
        "billing", "billing.changeDetails", '{"personId": "1"}', "application/json"
    )
    with pytest.raises(ConversionError, match=r"required field missing @ \$\.billingDetails"):
        system.run()


SERVICE_MAP_CONFIGS = [ROOT / "configs" / "service_map" / name for name in ("billing.yaml", "user.yaml", "ticket.ini")]


def test_the_service_map_example_system_runs_in_the_test_system(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same flow in Service Map mode: each service consumes its channel (no AMQP endpoint), the command crosses
    to billing's channel and the event reaches the user and ticket channels the shared map subscribes."""
    from examples.billing.handlers import BillingRepository
    from examples.user.handlers import UserController

    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.delenv("CONTAINER_MESSAGING_URL", raising=False)
    with TestSystem(SERVICE_MAP_CONFIGS) as system:
        assert [service.consumer.name for service in map(system.service, system.services)] == [
            "distributed_billing",
            "distributed_user",
            "distributed_ticket",
        ]
        system.service("user").get(UserController).change_billing("202", "IBAN-0202")
        run = system.run()
        assert system.service("billing").get(BillingRepository).details == {"202": "IBAN-0202"}
        assert sorted((m.service, m.routing_key) for m in run.received) == [
            ("billing", "billing.changeDetails"),
            ("ticket", "billing.detailsWereChanged"),
            ("user", "billing.detailsWereChanged"),
        ]
