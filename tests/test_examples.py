"""The example services' configurations in configs/ load, agree between YAML and INI, and build their containers."""

from __future__ import annotations

from pathlib import Path

import pytest

from container_messaging import MessagingContainer, load_settings

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
