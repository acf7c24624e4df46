"""Module scanning: recursive package walk, defining-module rule, import failures."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from container_messaging import CommandBus, EventBus, MessagingContainer, ScanError
from container_messaging.markers import HandlerKind
from container_messaging.scanning import scan

SERVICE = """
from container_messaging import command_handler

class {cls}:
    @command_handler("{key}")
    def handle(self, payload: dict) -> str:
        return "{key}"
"""


def build(*scan_list: str, **extra: Any) -> MessagingContainer:
    return MessagingContainer.from_dict({"scan": list(scan_list), "transport": {"url": "memory://"}, **extra})


def test_package_is_walked_recursively(make_module) -> None:
    """Scanning a package finds handlers in its __init__, its modules and nested subpackages."""
    make_module("sc_recursive.__init__", SERVICE.format(cls="Top", key="scan.top"))
    make_module("sc_recursive.direct", SERVICE.format(cls="Direct", key="scan.direct"))
    make_module("sc_recursive.sub.deeper.handlers", SERVICE.format(cls="Deep", key="scan.deep"))

    found = scan(["sc_recursive"])

    assert sorted(f.name for f in found) == [
        "sc_recursive.Top.handle",
        "sc_recursive.direct.Direct.handle",
        "sc_recursive.sub.deeper.handlers.Deep.handle",
    ]
    bus = build("sc_recursive").get(CommandBus)
    assert bus.send_with_routing("scan.deep", {}) == "scan.deep"


def test_found_handler_describes_owner_marker_and_function(make_module) -> None:
    """A found method handler records its owner class, marker, function and qualified name."""
    name = make_module("sc_found_fields", SERVICE.format(cls="Billing", key="scan.fields"))
    module = importlib.import_module(name)

    (found,) = scan([name])

    assert found.owner is module.Billing
    assert found.function is module.Billing.__dict__["handle"]
    assert found.marker.kind is HandlerKind.COMMAND
    assert found.marker.routing_key == "scan.fields"
    assert found.distributed is False
    assert found.name == f"{name}.Billing.handle"


def test_reexported_class_is_taken_only_from_its_defining_module(make_module) -> None:
    """A handler class re-exported by another scanned module is found once, so no duplicate-handler error."""
    make_module("sc_reexport.defining", SERVICE.format(cls="Service", key="scan.reexport"))
    make_module(
        "sc_reexport.api",
        """
        from sc_reexport.defining import Service
        from sc_reexport import defining as alias_module

        Alias = Service
        """,
    )

    found = scan(["sc_reexport.api", "sc_reexport.defining", "sc_reexport"])

    assert [f.name for f in found] == ["sc_reexport.defining.Service.handle"]
    assert build("sc_reexport.api", "sc_reexport").get(CommandBus).send_with_routing("scan.reexport", {}) == (
        "scan.reexport"
    )


def test_reexported_function_is_taken_only_from_its_defining_module(make_module) -> None:
    """A module-level handler function re-exported elsewhere is found once."""
    make_module(
        "sc_reexport_fn.defining",
        """
        from container_messaging import event_handler

        calls = []

        @event_handler("scan.fn")
        def on_event(payload: dict) -> None:
            calls.append(payload)
        """,
    )
    make_module("sc_reexport_fn.other", "from sc_reexport_fn.defining import on_event\n")

    container = build("sc_reexport_fn")
    container.get(EventBus).publish_with_routing("scan.fn", {"n": 1})

    assert [f.name for f in scan(["sc_reexport_fn"])] == ["sc_reexport_fn.defining.on_event"]
    assert importlib.import_module("sc_reexport_fn.defining").calls == [{"n": 1}]


def test_reexport_only_module_contributes_no_handler(make_module) -> None:
    """Scanning only a module that re-exports a handler class finds nothing: the defining module is not scanned."""
    make_module("sc_reexport_only.defining", SERVICE.format(cls="Service", key="scan.only"))
    make_module("sc_reexport_only_api", "from sc_reexport_only.defining import Service\n")

    assert scan(["sc_reexport_only_api"]) == ()


def test_module_listed_twice_is_scanned_once(make_module) -> None:
    """A module listed twice, or both itself and through its package, yields its handlers once."""
    make_module("sc_twice.handlers", SERVICE.format(cls="Service", key="scan.twice"))

    found = scan(["sc_twice.handlers", "sc_twice", "sc_twice.handlers"])

    assert [f.name for f in found] == ["sc_twice.handlers.Service.handle"]


def test_module_that_fails_to_import_is_a_scan_error(make_module) -> None:
    """A scanned module raising on import gives ScanError naming the module and the original exception."""
    name = make_module("sc_broken_module", "raise RuntimeError('database url missing xyz123')\n")

    with pytest.raises(ScanError) as info:
        build(name)

    message = str(info.value)
    assert "'sc_broken_module'" in message
    assert "RuntimeError" in message
    assert "database url missing xyz123" in message
    assert isinstance(info.value.__cause__, RuntimeError)


def test_submodule_that_fails_to_import_is_a_scan_error(make_module) -> None:
    """A failing submodule of a scanned package gives ScanError naming the submodule and its exception."""
    make_module("sc_broken_sub.good", SERVICE.format(cls="Good", key="scan.good"))
    make_module("sc_broken_sub.bad", "import math\nmath.sqrt('not a number')\n")

    with pytest.raises(ScanError) as info:
        build("sc_broken_sub")

    message = str(info.value)
    assert "'sc_broken_sub.bad'" in message
    assert "'sc_broken_sub'" in message
    assert "TypeError" in message
    assert "must be real number" in message


def test_subpackage_whose_init_fails_is_a_scan_error(make_module) -> None:
    """A subpackage whose __init__ raises gives ScanError naming that subpackage and the exception."""
    make_module("sc_broken_init.inner.__init__", "raise ValueError('bad init qwe789')\n")
    make_module("sc_broken_init.inner.handlers", SERVICE.format(cls="H", key="scan.inner"))

    with pytest.raises(ScanError) as info:
        scan(["sc_broken_init"])

    message = str(info.value)
    assert "'sc_broken_init.inner'" in message
    assert "ValueError" in message
    assert "bad init qwe789" in message


def test_submodule_with_missing_import_is_a_scan_error(make_module) -> None:
    """A submodule importing a missing module gives ScanError naming the submodule and the missing module."""
    make_module("sc_missing_dep.handlers", "import sc_no_such_dependency_abc\n")

    with pytest.raises(ScanError) as info:
        scan(["sc_missing_dep"])

    message = str(info.value)
    assert "'sc_missing_dep.handlers'" in message
    assert "sc_no_such_dependency_abc" in message


def test_nonexistent_module_is_a_scan_error() -> None:
    """Scanning a module that does not exist gives ScanError naming it."""
    with pytest.raises(ScanError, match=r"'sc_does_not_exist_4242\.handlers'"):
        build("sc_does_not_exist_4242.handlers")


def test_every_marked_member_is_found(make_module) -> None:
    """Every marked method of a class and every marked function of a module is found."""
    name = make_module(
        "sc_all_members",
        """
        from container_messaging import command_handler, event_handler, query_handler

        class Service:
            @command_handler("scan.a")
            def a(self, payload: dict) -> None: ...

            @query_handler("scan.b")
            def b(self, payload: dict) -> None: ...

            def not_a_handler(self) -> None: ...

        @event_handler("scan.c")
        @event_handler("scan.d")
        def c(payload: dict) -> None: ...
        """,
    )

    found = scan([name])

    assert sorted((f.name.rsplit(".", 1)[-1], f.marker.routing_key) for f in found) == [
        ("a", "scan.a"),
        ("b", "scan.b"),
        ("c", "scan.c"),
        ("c", "scan.d"),
    ]


# -- where modules are looked for ------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project folder holding a config file and a handler package, with the working directory elsewhere."""
    folder = tmp_path / "project"
    (folder / "sc_next_to_config").mkdir(parents=True)
    (folder / "sc_next_to_config" / "__init__.py").write_text("")
    (folder / "sc_next_to_config" / "handlers.py").write_text(SERVICE.format(cls="Near", key="scan.near"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    yield folder
    for name in [m for m in sys.modules if m.split(".")[0] == "sc_next_to_config"]:
        del sys.modules[name]


def test_scan_finds_modules_next_to_the_config_file(project: Path) -> None:
    """A scanned package in the config file's folder is found from another working directory, and the folder is
    taken off sys.path after the scan."""
    config = project / "app.yaml"
    config.write_text("scan: [sc_next_to_config]\ntransport:\n  url: memory://\n")

    container = MessagingContainer.from_yaml(config)

    assert container.get(CommandBus).send_with_routing("scan.near", {}) == "scan.near"
    assert str(project) not in sys.path


def test_missing_scanned_module_says_where_it_looked_and_how_to_fix(project: Path) -> None:
    """A scanned module that exists nowhere is a ScanError listing the folders tried and the ways to fix it."""
    config = project / "app.yaml"
    config.write_text("scan: [sc_not_anywhere_4711.handlers]\ntransport:\n  url: memory://\n")

    with pytest.raises(ScanError) as info:
        MessagingContainer.from_yaml(config)

    message = str(info.value)
    assert "cannot import module 'sc_not_anywhere_4711.handlers'" in message
    assert f"looked for 'sc_not_anywhere_4711' in: {str(project)!r}, " in message
    assert "PYTHONPATH" in message
    assert "pip install -e ." in message
    assert str(project) not in sys.path


def test_missing_dependency_of_a_scanned_module_gets_no_folder_hint(make_module) -> None:
    """When a scanned module exists but imports a missing one, the error names that one and lists no folders."""
    name = make_module("sc_missing_inner.handlers", "import sc_absent_dependency_0815\n")

    with pytest.raises(ScanError) as info:
        scan([name])

    assert "sc_absent_dependency_0815" in str(info.value)
    assert "looked for" not in str(info.value)


# -- an endpoint with nothing to handle -----------------------------------------------------------------------------


def test_empty_scan_warns_naming_the_config_file_when_the_endpoint_is_built(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A config with an endpoint and an empty scan builds quietly (a sender needs no handlers) and logs one warning
    naming the file when the endpoint's consumer is built to run."""
    config = tmp_path / "billing.yaml"
    config.write_text("service_name: billing\ntransport:\n  url: memory://\n")

    with caplog.at_level(logging.WARNING, logger="container_messaging"):
        container = MessagingContainer.from_yaml(config)
        built_quietly = not caplog.records
        container.endpoint("billing")

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert built_quietly
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{config}: scan is empty, so endpoint 'billing' has no handlers")


def test_no_empty_scan_warning_when_scan_lists_modules(make_module, caplog: pytest.LogCaptureFixture) -> None:
    """No warning for an endpoint whose scan lists a handler module."""
    name = make_module("sc_quiet", SERVICE.format(cls="Quiet", key="scan.quiet"))

    with caplog.at_level(logging.WARNING, logger="container_messaging"):
        build(name, service_name="sc-has-handlers").endpoint("sc-has-handlers")

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
