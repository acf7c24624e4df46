"""The Django integration: settings, autodiscovery, get_container, ``manage.py messaging``, and the example project
driven through Django's test client over real brokers."""

from __future__ import annotations

import importlib
import io
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.apps import apps as django_apps
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings
from django.test.utils import setup_test_environment, teardown_test_environment

from container_messaging import ConfigurationError, DistributedBus, MessagingContainer
from container_messaging.integrations import MissingExtraError

from conftest import forget_endpoint, transport_section

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_MODULE = "examples.django_app.portal_site.settings"
LIMITS = ("--handled-message-limit", "1", "--execution-time-limit", "20000")


@pytest.fixture(scope="module", autouse=True)
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Django set up once with the example project's own settings (Django's settings are once per process); its
    embedded transport's folder and its SQLite database (migrated) in a temporary directory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT))
        patch.setenv("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
        patch.delenv("CONTAINER_MESSAGING_URL", raising=False)
        patch.setenv("CONTAINER_MESSAGING_DATA", str(tmp_path_factory.mktemp("portal")))
        django.setup()
        setup_test_environment()
        call_command("migrate", verbosity=0)  # the portal's table, in the temporary SQLite database
        try:
            yield
        finally:
            teardown_test_environment()
            get_container_module().close_container()


def get_container_module() -> Any:
    return importlib.import_module("container_messaging.integrations.django")


def messaging(*args: str) -> str:
    """Runs ``manage.py messaging ARGS`` in this process and returns what it printed."""
    out = io.StringIO()
    call_command("messaging", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture(params=["embedded", "rabbitmq"])
def portal(
    request: pytest.FixtureRequest, tmp_path: Path, distribution: dict[str, str]
) -> Iterator[MessagingContainer]:
    """The portal project's messaging settings pointed at one transport (private names), with the billing example
    service's container on the same transport; yields billing's container."""
    transport = transport_section(str(request.param), tmp_path)
    config = {"service_name": "portal", "transport": transport, "distribution": distribution}
    billing = MessagingContainer.from_dict(
        {"service_name": "billing", "scan": ["examples.billing"], "transport": transport, "distribution": distribution}
    )
    try:
        with override_settings(CONTAINER_MESSAGING=config):
            billing.setup("billing")
            yield billing
    finally:
        get_container_module().close_container()
        cache.clear()
        for name in ("billing", "portal"):
            forget_endpoint(billing, f"{distribution['queue_prefix']}{name}")
        billing.close()


def test_importing_without_django_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing the Django integration when django cannot be imported raises MissingExtraError naming the extra."""
    for name in [m for m in sys.modules if m.startswith("container_messaging.integrations.django")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "django", None)  # what an absent package looks like to the import system
    monkeypatch.setitem(sys.modules, "django.apps", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'container-messaging\[django\]'") as raised:
        importlib.import_module("container_messaging.integrations.django")
    assert isinstance(raised.value, ImportError)


def test_the_example_view_sends_the_command_to_billing_and_shows_its_event(portal: MessagingContainer) -> None:
    """A POST to the portal's view sends billing.changeDetails that the billing service handles; billing's event,
    consumed by ``manage.py messaging run portal``, is what the view's GET then shows."""
    from examples.billing.handlers import BillingRepository

    billing = portal
    client = Client()
    assert "portal: declared" in messaging("setup")  # the portal's queue is bound before billing publishes
    assert client.get("/people/123/billing-details").status_code == 404

    response = client.post(
        "/people/123/billing-details", data={"billingDetails": "IBAN-0001"}, content_type="application/json"
    )
    assert response.status_code == 202, response.content

    result = billing.run("billing", handled_message_limit=1, execution_time_limit=20_000)
    assert (result.handled, result.failed) == (1, 0)
    assert billing.get(BillingRepository).details == {"123": "IBAN-0001"}

    assert messaging("run", "portal", *LIMITS) == "portal: handled 1, failed 0 (handled message limit reached)\n"
    answer = client.get("/people/123/billing-details")
    assert answer.status_code == 200
    assert answer.json() == {"personId": "123", "billingDetails": "IBAN-0001"}


def test_the_dead_letter_commands_list_show_replay_and_delete(portal: MessagingContainer) -> None:
    """A command the portal has no handler for lands in its dead letter; ``messaging dead-letter`` lists it, shows
    it, replays it (it fails again, back in the dead letter) and deletes it."""
    messaging("setup", "portal")
    poison = str(uuid.uuid4())
    portal.get(DistributedBus).send_command("portal", "portal.unknown", '{"a": 1}', "application/json", {"id": poison})
    assert messaging("run", "portal", *LIMITS).startswith("portal: handled 0, failed 1")

    listed = json.loads(messaging("dead-letter", "list", "--json"))
    assert [(entry["message_id"], entry["routing_key"]) for entry in listed] == [(poison, "portal.unknown")]
    assert poison in messaging("dead-letter", "list").splitlines()[1]
    shown = json.loads(messaging("dead-letter", "show", poison))
    assert [(entry["message_id"], entry["body"]) for entry in shown] == [(poison, '{"a": 1}')]

    assert messaging("dead-letter", "replay", poison) == "replayed 1 message to portal\n"
    assert json.loads(messaging("dead-letter", "list", "--json")) == []
    assert messaging("run", "portal", *LIMITS).startswith("portal: handled 0, failed 1")  # the replayed copy

    assert messaging("dead-letter", "delete", poison) == f"deleted 1 dead letter entry of {poison}\n"
    assert json.loads(messaging("dead-letter", "list", "--json")) == []


def test_list_names_the_endpoint_and_autodiscovery_finds_the_apps_handlers() -> None:
    """``messaging list`` prints the service's endpoint and the outbox relay (the example enables the outbox), and the
    shared container scanned the example app's ``handlers`` module because CONTAINER_MESSAGING_AUTODISCOVER is on
    (and only then)."""
    container_module = get_container_module()
    assert messaging("list") == "portal\noutbox\n"
    handler = "examples.django_app.portal.handlers.remember_billing_details"
    assert [h.name for h in container_module.get_container().routes.handlers] == [handler]
    assert container_module.get_container().settings.scan == ("examples.django_app.portal.handlers",)

    with override_settings(CONTAINER_MESSAGING_AUTODISCOVER=False):
        assert list(container_module.get_container().routes.handlers) == []


def test_get_container_is_shared_until_the_settings_change() -> None:
    """get_container returns one container per process; overriding CONTAINER_MESSAGING builds a new one from the
    new settings."""
    container_module = get_container_module()
    first = container_module.get_container()
    assert container_module.get_container() is first
    with override_settings(CONTAINER_MESSAGING={"service_name": "other", "transport": {"url": "memory://"}}):
        other = container_module.get_container()
        assert other is not first
        assert other.settings.service_name == "other"
    assert container_module.get_container().settings.service_name == "portal"


def test_a_configuration_file_path_is_read_as_the_cli_reads_it(tmp_path: Path) -> None:
    """CONTAINER_MESSAGING may be the path of a YAML file: the container gets that file's settings."""
    config = tmp_path / "portal.yaml"
    config.write_text("service_name: from_file\ntransport:\n  url: memory://\n")
    with override_settings(CONTAINER_MESSAGING=str(config)):
        assert messaging("list") == "from_file\n"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"CONTAINER_MESSAGING": None}, r"settings\.CONTAINER_MESSAGING is not set"),
        ({"CONTAINER_MESSAGING": {"transport": {"urll": "x"}}}, r"settings\.CONTAINER_MESSAGING: .*'transport\.urll'"),
        ({"CONTAINER_MESSAGING": ["service_name"]}, r"settings\.CONTAINER_MESSAGING: expected a mapping .* got list"),
        ({"CONTAINER_MESSAGING_AUTODISCOVER": "not a module"}, r"settings\.CONTAINER_MESSAGING_AUTODISCOVER"),
    ],
    ids=["missing", "unknown-key", "wrong-type", "bad-autodiscover"],
)
def test_a_wrong_configuration_is_an_error_naming_the_setting(overrides: dict[str, Any], message: str) -> None:
    """A missing or wrong setting makes Django's start (the app's ready()) and get_container raise a
    ConfigurationError naming the setting (and the key), and makes ``manage.py messaging`` fail with exit code 2 and
    the same message."""
    container_module = get_container_module()
    with override_settings(**overrides):
        with pytest.raises(ConfigurationError, match=message):
            django_apps.get_app_config("container_messaging").ready()
        with pytest.raises(ConfigurationError, match=message):
            container_module.get_container()
        with pytest.raises(CommandError, match=message) as raised:
            messaging("list")
        assert raised.value.returncode == 2


def test_run_names_an_unknown_endpoint_with_exit_code_2() -> None:
    """``messaging run`` of an endpoint the service does not have fails naming it and the available ones."""
    with pytest.raises(CommandError, match=r"unknown endpoint 'nope' \(available: 'portal', 'outbox'\)") as raised:
        messaging("run", "nope")
    assert raised.value.returncode == 2


def test_run_refuses_a_limit_that_is_not_positive() -> None:
    """``messaging run portal --handled-message-limit 0`` is a usage error (exit code 2) naming the option."""
    with pytest.raises(CommandError, match=r"handled[_-]message[_-]limit") as raised:
        messaging("run", "portal", "--handled-message-limit", "0")
    assert raised.value.returncode == 2


def test_replay_needs_an_id_or_all() -> None:
    """``messaging dead-letter replay`` without an ID or --all is a usage error (exit code 2)."""
    with (
        override_settings(CONTAINER_MESSAGING={"service_name": "portal", "transport": {"url": "memory://"}}),
        pytest.raises(CommandError, match="needs a message ID or --all") as raised,
    ):
        messaging("dead-letter", "replay")
    assert raised.value.returncode == 2


def test_run_verbosity_flags_log_the_consumer_to_stderr() -> None:
    """``messaging run portal -v`` logs the consumer's INFO lines to the command's stderr; without it nothing is
    logged there."""
    with override_settings(CONTAINER_MESSAGING={"service_name": "portal", "transport": {"url": "memory://"}}):
        for flags, expected in (([], False), (["-v"], True), (["-vvv"], True)):
            err = io.StringIO()
            call_command(
                "messaging", "run", "portal", "--finish-when-no-messages", *flags, stdout=io.StringIO(), stderr=err
            )
            assert ("endpoint 'portal' consuming queue" in err.getvalue()) is expected, (flags, err.getvalue())
