"""The pytest plugin: registered through the ``pytest11`` entry point, so installing container_messaging enables it;
every fixture is opt-in (nothing is autouse).

Fixtures:

``messaging_system``
    A :class:`~container_messaging.testing.TestSystem` of the services named by the closest
    ``@pytest.mark.messaging_system("configs/billing.yaml", ..., **options)`` marker (the options are the
    TestSystem's: ``settings``, ``apps``, ``fail_fast``...), or else by the ``messaging_configs`` ini key. A new one
    for each test, closed after it: tests never share queues, recorded messages, singletons or overrides.
``messaging_system_factory``
    ``messaging_system_factory(configs, **options)`` builds a TestSystem the same way; each is closed after the test.

Relative configuration paths are taken from pytest's rootdir (the ini key's from the ini file's folder).
``--messaging-transport-url URL`` (or the ``messaging_transport_url`` ini key) runs every such system on that broker
instead of in-process channels: the same tests, end to end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from container_messaging.testing.system import ConfigSource, TestSystem

__all__ = ["messaging_system", "messaging_system_factory", "pytest_addoption", "pytest_configure"]

MARKER = "messaging_system"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("container_messaging", "container_messaging test systems")
    group.addoption(
        "--messaging-transport-url",
        dest="messaging_transport_url",
        default=None,
        metavar="URL",
        help="run the messaging_system fixtures on this broker (e.g. pyamqp://guest:guest@127.0.0.1:5672//) "
        "instead of in-process channels",
    )
    parser.addini("messaging_configs", "the services' configuration files of messaging_system", type="paths")
    parser.addini("messaging_transport_url", "like --messaging-transport-url", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*configs, **options): the services (configuration files or dicts) and TestSystem options of the "
        "messaging_system fixture",
    )


def _resolve(source: ConfigSource, root: Path) -> ConfigSource:
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return path if path.is_absolute() else root / path
    return source


@pytest.fixture
def messaging_system_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., TestSystem]]:
    """Builds TestSystems (``factory(configs, **options)``); each is closed after the test."""
    config = request.config
    url = config.getoption("messaging_transport_url") or config.getini("messaging_transport_url") or None
    root = config.rootpath
    built: list[TestSystem] = []

    def factory(configs: Iterable[ConfigSource], **options: Any) -> TestSystem:
        options.setdefault("transport_url", url)
        system = TestSystem([_resolve(source, root) for source in configs], **options)
        built.append(system)
        return system

    yield factory
    for system in reversed(built):
        system.close()


@pytest.fixture
def messaging_system(request: pytest.FixtureRequest, messaging_system_factory: Callable[..., TestSystem]) -> TestSystem:
    """A new TestSystem for this test, of the services of the closest ``messaging_system`` marker or else of the
    ``messaging_configs`` ini key."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is not None:
        return messaging_system_factory(marker.args, **marker.kwargs)
    configs = request.config.getini("messaging_configs")
    if not configs:
        pytest.fail(
            f"the messaging_system fixture needs the services: mark the test @pytest.mark.{MARKER}"
            "('configs/billing.yaml', ...) or list the files under messaging_configs in the pytest ini file",
            pytrace=False,
        )
    return messaging_system_factory(configs)
