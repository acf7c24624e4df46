"""The outbox inside Django's transactions: the example portal's view, driven through Django's test client, on
SQLite and on PostgreSQL (as Django's default database), over the embedded transport and RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.cache import cache
from django.db import connections, transaction
from django.test import Client, override_settings
from test_django import django_project, get_container_module, messaging  # noqa: F401 - the module's Django set-up

from container_messaging import ConfigurationError, DistributedBus, MessagingContainer, TransportError

from conftest import forget_endpoint, transport_section

RELAY = ("--handled-message-limit", "1", "--execution-time-limit", "20000")


def _change_model() -> Any:
    """The example's model (importable once the ``django_project`` fixture has set Django up)."""
    from examples.django_app.portal.models import BillingDetailsChange

    return BillingDetailsChange


class Boom(Exception):
    """The application's failure that rolls its transaction back."""


def _swap_default(database: dict[str, Any]) -> dict[str, Any]:
    """Makes ``database`` Django's default database in this thread; returns the one it replaces."""
    connections["default"].close()
    del connections["default"]
    saved: dict[str, Any] = connections.settings["default"]
    connections.settings["default"] = connections.configure_settings({"default": database})["default"]
    return saved


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Iterator[str]:
    """Django's default database: the example's SQLite file (migrated by ``django_project``), or PostgreSQL with the
    portal's table created for the test and dropped after it. Yields the database's vendor."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    url = urlsplit(request.getfixturevalue("postgres_url"))
    saved = _swap_default(
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": url.path.lstrip("/"),
            "USER": url.username or "",
            "PASSWORD": url.password or "",
            "HOST": url.hostname or "",
            "PORT": str(url.port or ""),
        }
    )
    model = _change_model()
    try:
        with connections["default"].schema_editor() as editor:
            if model._meta.db_table in connections["default"].introspection.table_names():
                editor.delete_model(model)  # left by an interrupted run
            editor.create_model(model)
        try:
            yield "postgresql"
        finally:
            with connections["default"].schema_editor() as editor:
                editor.delete_model(model)
    finally:
        _swap_default(saved)


@pytest.fixture(params=["embedded", "rabbitmq"])
def portal(
    request: pytest.FixtureRequest, database: str, tmp_path: Path, distribution: dict[str, str], unique: str
) -> Iterator[MessagingContainer]:
    """The portal's settings with the outbox enabled (private table names, ``database_url`` left out: Django's
    database) on one transport, its queue and outbox tables set up, and the billing example service's container on
    the same transport; yields billing's container."""
    transport = transport_section(str(request.param), tmp_path)
    outbox = {"enabled": True, "outbox_table": f"cm_outbox_{unique}", "inbox_table": f"cm_inbox_{unique}"}
    config = {"service_name": "portal", "transport": transport, "distribution": distribution, "outbox": outbox}
    billing = MessagingContainer.from_dict(
        {"service_name": "billing", "scan": ["examples.billing"], "transport": transport, "distribution": distribution}
    )
    container_module = get_container_module()
    try:
        with override_settings(CONTAINER_MESSAGING=config):
            billing.setup("billing")
            messaging("setup")  # the portal's queue and the outbox tables, in Django's database
            try:
                yield billing
            finally:
                shared = container_module.get_container().get("outbox")
                shared.schema.drop(shared.engine)
    finally:
        container_module.close_container()
        cache.clear()
        for name in ("billing", "portal"):
            forget_endpoint(billing, f"{distribution['queue_prefix']}{name}")
        billing.close()


def _pending() -> int:
    return int(get_container_module().get_container().get("outbox").pending_count())


def _billing_receives(billing: MessagingContainer) -> dict[str, str]:
    """Runs the billing endpoint until its queue is empty; what its repository then holds."""
    from examples.billing.handlers import BillingRepository

    result = billing.run("billing", finish_when_no_messages=True, execution_time_limit=20_000)
    assert result.failed == 0
    return billing.get(BillingRepository).details


def _post(person_id: str, details: str) -> Any:
    return Client().post(
        f"/people/{person_id}/billing-details", data={"billingDetails": details}, content_type="application/json"
    )


def test_the_views_committed_command_is_published_after_djangos_commit(portal: MessagingContainer) -> None:
    """The view's atomic block commits the change row and its command together; after the commit the command is
    published (nothing is left pending in the outbox) and billing handles it."""
    person = uuid.uuid4().hex
    response = _post(person, "IBAN-0001")
    assert response.status_code == 202, response.content
    assert _change_model().objects.filter(person_id=person, pk=response.json()["change"]).exists()
    assert _pending() == 0
    assert _billing_receives(portal) == {person: "IBAN-0001"}


def test_a_rolled_back_block_or_savepoint_sends_nothing(portal: MessagingContainer) -> None:
    """Commands sent in an atomic block that rolls back, and in a nested block whose savepoint rolls back, are never
    published; the command of the enclosing block that commits is the only one billing receives."""
    bus = get_container_module().get_container().get(DistributedBus)
    rolled_back, nested, committed = (uuid.uuid4().hex for _ in range(3))

    from examples.messages import ChangeBillingDetails

    def send(person: str) -> None:
        _change_model().objects.create(person_id=person, billing_details="x")
        bus.convert_and_send_command("billing", "billing.changeDetails", ChangeBillingDetails(person, person))

    with pytest.raises(Boom), transaction.atomic():
        send(rolled_back)
        raise Boom
    with transaction.atomic():
        try:
            with transaction.atomic():
                send(nested)
                raise Boom
        except Boom:
            pass
        send(committed)

    assert list(_change_model().objects.filter(person_id__in=[rolled_back, nested, committed])
                .values_list("person_id", flat=True)) == [committed]  # fmt: skip
    assert _pending() == 0
    assert _billing_receives(portal) == {committed: committed}


def test_a_failed_publish_after_the_commit_leaves_the_row_to_the_relay(
    portal: MessagingContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the publish after Django's commit fails (as if the process died there), the view still answers 202, the
    change is committed and its command waits in the outbox, unpublished; ``manage.py messaging run outbox`` then
    publishes it and billing handles it."""
    broker = get_container_module().get_container().transport.inner  # the real transport behind the outbox's

    def broker_gone(*_: Any, **__: Any) -> None:
        raise TransportError("the broker went away (simulated)")

    for method in ("publish", "publish_many", "send_to_queue"):
        monkeypatch.setattr(broker, method, broker_gone)
    person = uuid.uuid4().hex
    response = _post(person, "IBAN-0002")
    assert response.status_code == 202, response.content
    assert _change_model().objects.filter(person_id=person).exists()
    assert _pending() == 1
    assert _billing_receives(portal) == {}

    assert messaging("run", "outbox", *RELAY) == "outbox: handled 1, failed 0 (handled message limit reached)\n"
    assert _pending() == 0
    assert _billing_receives(portal) == {person: "IBAN-0002"}


def test_the_outbox_database_url_defaults_to_djangos_database() -> None:
    """With the outbox enabled and no database_url, the outbox's database is Django's default SQLite file."""
    config = {"service_name": "portal", "transport": {"url": "memory://"}, "outbox": {"enabled": True}}
    with override_settings(CONTAINER_MESSAGING=config):
        url = get_container_module().get_container().settings.outbox.database_url.reveal()
    assert url == f"sqlite:///{Path(connections['default'].settings_dict['NAME']).resolve()}"


def test_an_outbox_database_url_naming_another_database_is_refused(tmp_path: Path) -> None:
    """An outbox.database_url that is not the database whose transactions the outbox joins is a ConfigurationError
    naming the key and CONTAINER_MESSAGING_DATABASE; with that setting None it is accepted."""
    other = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    outbox = {"enabled": True, "database_url": other}
    config = {"service_name": "portal", "transport": {"url": "memory://"}, "outbox": outbox}
    container_module = get_container_module()
    with override_settings(CONTAINER_MESSAGING=config):
        refused = r"outbox\.database_url .* settings\.CONTAINER_MESSAGING_DATABASE = None"
        with pytest.raises(ConfigurationError, match=refused):
            container_module.get_container()
        with override_settings(CONTAINER_MESSAGING_DATABASE=None):
            assert container_module.get_container().settings.outbox.database_url.reveal() == other
    container_module.close_container()


def test_an_unknown_database_alias_is_named() -> None:
    """CONTAINER_MESSAGING_DATABASE naming no database of settings.DATABASES is a ConfigurationError naming it."""
    config = {"service_name": "portal", "transport": {"url": "memory://"}, "outbox": {"enabled": True}}
    with (
        override_settings(CONTAINER_MESSAGING=config, CONTAINER_MESSAGING_DATABASE="nope"),
        pytest.raises(ConfigurationError, match=r"settings\.CONTAINER_MESSAGING_DATABASE: .* got 'nope'"),
    ):
        get_container_module().get_container()
