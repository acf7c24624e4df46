"""The example services' configurations in configs/ load, agree between YAML and INI, and build their containers."""

from __future__ import annotations

from pathlib import Path

import pytest

from container_messaging import Headers, MessagingContainer, load_settings

ROOT = Path(__file__).resolve().parent.parent
#: the AMQP-mode services (configs/service_map/ holds the same services with the Service Map)
CONFIGS = sorted(path for path in (ROOT / "configs").iterdir() if path.is_file())


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_example_config_builds_its_service(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file in configs/ loads and builds a container whose only endpoint is its service (no broker needed)."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.delenv("CONTAINER_MESSAGING_URL", raising=False)
    settings = load_settings(path)
    container = MessagingContainer(settings)
    assert container.list() == [settings.service_name]
    assert settings.transport.url == "embedded://"
    assert any(handler.distributed for handler in container.routes.handlers)


def test_billing_yaml_and_ini_say_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """configs/billing.yaml and configs/billing.ini carry the same settings and build the same handlers."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv("CONTAINER_MESSAGING_URL", "pyamqp://guest:secret@127.0.0.1:5672//")
    from_yaml = MessagingContainer.from_yaml(ROOT / "configs" / "billing.yaml")
    from_ini = MessagingContainer.from_ini(ROOT / "configs" / "billing.ini")
    assert from_yaml.settings == from_ini.settings
    assert from_yaml.settings.transport.url == "pyamqp://guest:secret@127.0.0.1:5672//"  # the one line to change
    assert [h.name for h in from_yaml.routes.handlers] == [h.name for h in from_ini.routes.handlers]


def test_demo_lines_tell_correlation_ids_of_one_millisecond_apart(capsys: pytest.CaptureFixture[str]) -> None:
    """The billing and user handlers print a part of the correlation id that differs between two UUID v7 ids made
    in the same millisecond (their first characters are the same timestamp)."""
    from examples.billing.handlers import BillingRepository, BillingService
    from examples.messages import BillingDetailsWereChanged, ChangeBillingDetails
    from examples.user.handlers import UserNotifications

    same_millisecond = ["0190f3a2-7c1e-7a10-8b11-5c6d7e8f9a01", "0190f3a2-7c1e-7f22-9c33-0a1b2c3d4e02"]

    class NoBus:
        def convert_and_publish_event(self, routing_key: str, event: object) -> None: ...

    billing = BillingService(BillingRepository(), NoBus())  # type: ignore[arg-type]
    for correlation_id in same_millisecond:
        headers = Headers({"correlationId": correlation_id, "ecotone.distributed.sourceServiceName": "user"})
        billing.change_details(ChangeBillingDetails("101", "IBAN"), headers)
        UserNotifications().on_details_changed(BillingDetailsWereChanged("101", "IBAN"), headers)
    billing_first, user_first, billing_second, user_second = capsys.readouterr().out.splitlines()
    assert billing_first.startswith("[billing] changed details")
    assert user_first.startswith("[user] person 101 was told")
    assert billing_first != billing_second
    assert user_first != user_second
