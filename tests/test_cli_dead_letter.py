"""``container-messaging dead-letter list|show|replay|delete``, in-process through ``main()`` on the embedded
transport."""

from __future__ import annotations

import importlib
import itertools
import json
import os
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from container_messaging.cli import CONFIG_ENV, main

HANDLERS = """
from container_messaging import Headers, command_handler, distributed

BROKEN = [True]
RECEIVED = []


class BillingService:
    @distributed
    @command_handler("billing.fixable")
    def fixable(self, command: dict, metadata: Headers) -> None:
        if BROKEN[0]:
            raise RuntimeError("broken until fixed")
        RECEIVED.append((command, dict(metadata)))
"""

_unique = itertools.count()


@dataclass
class App:
    """A temporary ``billing`` service (no retries, so a failure goes straight to the dead letter)."""

    module_name: str
    config: Path

    def module(self) -> ModuleType:
        return importlib.import_module(self.module_name)

    def fix(self) -> None:
        self.module().BROKEN[0] = False


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    module_name = f"cli_dead_letter_handlers_{os.getpid()}_{next(_unique)}"
    (tmp_path / f"{module_name}.py").write_text(HANDLERS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "billing.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            service_name: billing
            scan: [{module_name}]
            transport:
              url: "embedded://"
              data_folder: "{tmp_path / "broker"}"
              polling_interval: 0.01
            recoverability:
              immediate_retries: 0
              delayed_retries: []
            """
        ),
        encoding="utf-8",
    )
    yield App(module_name, config)
    sys.modules.pop(module_name, None)


def cli(capsys: pytest.CaptureFixture[str], app: App, *argv: str) -> tuple[int, str, str]:
    code = main(["--config", str(app.config), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def dead_letter(capsys: pytest.CaptureFixture[str], app: App, *message_ids: str) -> None:
    """Sends one failing command per id (with a ``tenant`` header) and runs the consumer: each reaches the dead
    letter."""
    assert cli(capsys, app, "setup")[0] == 0
    for number, message_id in enumerate(message_ids, 1):
        code, _, err = cli(
            capsys,
            app,
            "send-command",
            "billing",
            "billing.fixable",
            f'{{"n": {number}}}',
            "--header",
            f"id={message_id}",
            "--header",
            "tenant=acme",
        )
        assert code == 0, err
    code, out, err = cli(capsys, app, "run", "billing", "--finish-when-no-messages")
    assert code == 0, err
    assert out == f"billing: handled 0, failed {len(message_ids)} (no more messages)\n"


# -- list ------------------------------------------------------------------------------------------------------------


def test_list_of_an_empty_dead_letter_says_so(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter list` on an empty dead letter prints that it has no entries and exits 0."""
    assert cli(capsys, app, "setup")[0] == 0
    code, out, err = cli(capsys, app, "dead-letter", "list")
    assert code == 0, err
    assert out == "0 dead letter entries for billing\n"


def test_list_shows_one_line_per_entry_starting_with_its_id(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter list` prints a count line, then per entry its id, routing key, handler, reason and error."""
    dead_letter(capsys, app, "0190b8e0-0000-7000-8000-000000000001")
    code, out, err = cli(capsys, app, "dead-letter", "list")
    assert code == 0, err
    title, line = out.splitlines()
    assert title == "1 dead letter entry for billing"
    assert line.startswith("0190b8e0-0000-7000-8000-000000000001  ")
    assert f"  billing.fixable  {app.module_name}.BillingService.fixable  retries exhausted  " in line
    assert line.endswith("  RuntimeError: broken until fixed")


def test_list_json_has_every_field_of_the_entry(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter list --json` prints a JSON list whose entries carry the failure, the headers and the body."""
    dead_letter(capsys, app, "0190b8e0-0000-7000-8000-000000000001")
    code, out, err = cli(capsys, app, "dead-letter", "list", "--json")
    assert code == 0, err
    [entry] = json.loads(out)
    assert {
        key: entry[key]
        for key in (
            "message_id",
            "endpoint",
            "handler",
            "reason",
            "error_class",
            "error_message",
            "attempts",
            "routing_key",
            "payload_type",
            "content_type",
            "body",
        )
    } == {
        "message_id": "0190b8e0-0000-7000-8000-000000000001",
        "endpoint": "billing",
        "handler": f"{app.module_name}.BillingService.fixable",
        "reason": "retries exhausted",
        "error_class": "builtins.RuntimeError",
        "error_message": "broken until fixed",
        "attempts": 1,
        "routing_key": "billing.fixable",
        "payload_type": "command",
        "content_type": "application/json",
        "body": '{"n": 1}',
    }
    assert isinstance(entry["failed_at"], int)
    assert "RuntimeError: broken until fixed" in entry["trace"]
    assert entry["headers"]["id"] == "0190b8e0-0000-7000-8000-000000000001"
    assert entry["headers"]["tenant"] == "acme"
    assert not [key for key in entry["headers"] if key.startswith("failure.")]


# -- show ------------------------------------------------------------------------------------------------------------


def test_show_prints_the_failure_headers_body_and_trace(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter show ID` prints the error class, the reason, the original headers, the body and the trace."""
    dead_letter(capsys, app, "0190b8e0-0000-7000-8000-000000000001")
    code, out, err = cli(capsys, app, "dead-letter", "show", "0190b8e0-0000-7000-8000-000000000001")
    assert code == 0, err
    lines = out.splitlines()
    assert "message_id: 0190b8e0-0000-7000-8000-000000000001" in lines
    assert "error_class: builtins.RuntimeError" in lines
    assert "error_message: broken until fixed" in lines
    assert "reason: retries exhausted" in lines
    assert "attempts: 1" in lines
    headers = lines[lines.index("headers:") + 1 : lines.index("body:")]
    assert "  id: 0190b8e0-0000-7000-8000-000000000001" in headers
    assert "  tenant: acme" in headers
    assert lines[lines.index("body:") + 1] == '{"n": 1}'
    assert "RuntimeError: broken until fixed" in out[out.index("\ntrace:\n") :]


# -- replay ----------------------------------------------------------------------------------------------------------


def test_replay_sends_the_message_back_and_run_handles_it(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter replay ID` sends the entry back to the service's queue, where `run` handles it once fixed."""
    dead_letter(capsys, app, "0190b8e0-0000-7000-8000-000000000001")
    app.fix()
    code, out, err = cli(capsys, app, "dead-letter", "replay", "0190b8e0-0000-7000-8000-000000000001")
    assert code == 0, err
    assert out == "replayed 1 message to billing\n"

    code, out, err = cli(capsys, app, "run", "billing", "--finish-when-no-messages")
    assert code == 0, err
    assert out == "billing: handled 1, failed 0 (no more messages)\n"
    [(command, headers)] = app.module().RECEIVED
    assert (command, headers["id"], headers["tenant"]) == ({"n": 1}, "0190b8e0-0000-7000-8000-000000000001", "acme")
    assert cli(capsys, app, "dead-letter", "list")[1] == "0 dead letter entries for billing\n"


def test_replay_all_sends_every_entry_back(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter replay --all` sends every entry back to the service's queue."""
    dead_letter(capsys, app, "0190b8e0-0000-7000-8000-000000000001", "0190b8e0-0000-7000-8000-000000000002")
    app.fix()
    code, out, err = cli(capsys, app, "dead-letter", "replay", "--all")
    assert code == 0, err
    assert out == "replayed 2 messages to billing\n"
    assert cli(capsys, app, "dead-letter", "list")[1] == "0 dead letter entries for billing\n"
    assert cli(capsys, app, "run", "billing", "--finish-when-no-messages")[1] == (
        "billing: handled 2, failed 0 (no more messages)\n"
    )
    assert sorted(headers["id"] for _, headers in app.module().RECEIVED) == [
        "0190b8e0-0000-7000-8000-000000000001",
        "0190b8e0-0000-7000-8000-000000000002",
    ]


@pytest.mark.parametrize("arguments", [[], ["0190b8e0-0000-7000-8000-000000000001", "--all"]], ids=["neither", "both"])
def test_replay_needs_exactly_one_of_an_id_and_all(
    app: App, capsys: pytest.CaptureFixture[str], arguments: list[str]
) -> None:
    """`dead-letter replay` with neither or both of ID and --all is a usage error (exit 2, one line) and replays
    nothing."""
    dead_letter(capsys, app, "0190b8e0-0000-7000-8000-000000000001")
    code, out, err = cli(capsys, app, "dead-letter", "replay", *arguments)
    assert code == 2
    assert out == ""
    assert error_lines(err) == ["container-messaging: error: dead-letter replay needs a message ID or --all (not both)"]
    assert cli(capsys, app, "dead-letter", "list")[1].startswith(
        "1 dead letter entry for billing\n0190b8e0-0000-7000-8000-000000000001  "
    )


# -- delete ----------------------------------------------------------------------------------------------------------


def test_delete_removes_the_entry_for_good(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter delete ID` removes that entry and keeps the others."""
    dead_letter(capsys, app, "0190b8e0-0000-7000-8000-000000000001", "0190b8e0-0000-7000-8000-000000000002")
    code, out, err = cli(capsys, app, "dead-letter", "delete", "0190b8e0-0000-7000-8000-000000000001")
    assert code == 0, err
    assert out == "deleted 1 dead letter entry of 0190b8e0-0000-7000-8000-000000000001\n"
    _, out, _ = cli(capsys, app, "dead-letter", "list")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["0190b8e0-0000-7000-8000-000000000002"]


# -- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["show", "replay", "delete"])
def test_unknown_id_is_one_error_line_naming_it(app: App, capsys: pytest.CaptureFixture[str], action: str) -> None:
    """`dead-letter show|replay|delete` of an unknown id prints one error line naming the id and the endpoint and
    exits 1."""
    dead_letter(capsys, app, "0190b8e0-0000-7000-8000-000000000001")
    code, out, err = cli(capsys, app, "dead-letter", action, "nope")
    assert code == 1
    assert out == ""
    assert error_lines(err) == [
        "container-messaging: error: no dead letter entry with message id 'nope' for endpoint 'billing'"
    ]


def test_unknown_endpoint_lists_the_available_ones(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter --endpoint NAME` of an unknown endpoint prints one error line listing the available endpoints and
    exits 2."""
    code, out, err = cli(capsys, app, "dead-letter", "--endpoint", "shipping", "list")
    assert code == 2
    assert out == ""
    assert error_lines(err) == ["container-messaging: error: unknown endpoint 'shipping' (available: 'billing')"]


def test_endpoint_option_names_the_dead_letter_to_use(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter --endpoint billing list` uses that endpoint's dead letter."""
    dead_letter(capsys, app, "0190b8e0-0000-7000-8000-000000000001")
    code, out, err = cli(capsys, app, "dead-letter", "--endpoint", "billing", "list")
    assert code == 0, err
    assert out.startswith("1 dead letter entry for billing\n0190b8e0-0000-7000-8000-000000000001  ")
