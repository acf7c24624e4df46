"""``container-messaging dead-letter list|show|replay|delete``, in-process through ``main()`` on the embedded
transport."""

from __future__ import annotations

import importlib
import itertools
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from container_messaging import MessagingContainer
from container_messaging.cli import BODY_LIMIT, CONFIG_ENV, main
from container_messaging.distributed.topology import PAYLOAD_TYPE, ROUTING_KEY
from container_messaging.messages import ID, FailureHeader
from container_messaging.transports.base import OutboundMessage, dead_letter_queue

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


def message_id(number: int) -> str:
    """A UUID (the sender refuses any other id) that says which message it is."""
    return f"0190b8e0-0000-7000-8000-{number:012d}"


ID1, ID2 = message_id(1), message_id(2)


@dataclass
class App:
    """A temporary ``billing`` service (no retries, so a failure goes straight to the dead letter)."""

    folder: Path
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
    yield App(tmp_path, module_name, config)
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


def put_entry(app: App, message_id: str, body: bytes, **headers: object) -> None:
    """Puts an entry straight on billing's dead letter queue, as the consumer would have (failure headers
    included)."""
    with MessagingContainer.from_config(app.config) as container:
        container.setup()
        queue = dead_letter_queue(container.topology.queue("billing"))
        entry_headers = {
            ID: message_id,
            PAYLOAD_TYPE: "command",
            ROUTING_KEY: "billing.fixable",
            FailureHeader.ENDPOINT: "billing",
            FailureHeader.HANDLER: "billing.BillingService.fixable",
            FailureHeader.REASON: "retries exhausted",
            FailureHeader.EXCEPTION_CLASS: "builtins.RuntimeError",
            FailureHeader.MESSAGE: "broken until fixed",
            FailureHeader.TRACE: "Traceback (most recent call last):\nRuntimeError: broken until fixed\n",
            FailureHeader.TIME: int(time.time()),
            FailureHeader.ATTEMPTS: 3,
            **headers,
        }
        container.transport.send_to_queue(queue, OutboundMessage(queue, body, entry_headers, "text/plain", message_id))


#: Runs the CLI's main() in a fresh process and writes the CPU seconds main() took to the file named first.
CPU_DRIVER = """
import sys, time
from container_messaging.cli import main
started = time.process_time()
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    out.write(repr(time.process_time() - started))
sys.exit(code)
"""


def cli_cpu(app: App, *argv: str) -> tuple[subprocess.CompletedProcess[bytes], float]:
    """Runs ``container-messaging --config <app> ARGV`` in a subprocess (killed after 60 s: a hang fails the test)
    and returns its result and the CPU seconds its main() took."""
    seconds = app.folder / "cpu-seconds"
    result = subprocess.run(
        [sys.executable, "-c", CPU_DRIVER, str(seconds), "--config", str(app.config), *argv],
        cwd=app.folder,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return result, float(seconds.read_text())


# -- list ------------------------------------------------------------------------------------------------------------


def test_list_of_an_empty_dead_letter_says_so(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter list` on an empty dead letter prints that it has no entries and exits 0."""
    assert cli(capsys, app, "setup")[0] == 0
    code, out, err = cli(capsys, app, "dead-letter", "list")
    assert code == 0, err
    assert out == "0 dead letter entries for billing\n"


def test_list_is_a_table_with_a_header_row_and_aligned_columns(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter list` prints a count line, a header row, then one row per entry whose columns (id, failed at,
    attempts, routing key, handler, reason, error) start where the header's do."""
    dead_letter(capsys, app, ID1, ID2)
    code, out, err = cli(capsys, app, "dead-letter", "list")
    assert code == 0, err
    title, header, *rows = out.splitlines()
    assert title == "2 dead letter entries for billing"
    columns = ["MESSAGE ID", "FAILED AT", "ATTEMPTS", "ROUTING KEY", "HANDLER", "REASON", "ERROR"]
    starts = [header.index(column) for column in columns]
    assert starts == sorted(starts)
    assert len(rows) == 2
    for row, message_id in zip(rows, [ID1, ID2], strict=True):
        cells = [row[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
        assert cells[0] == message_id
        handler = f"{app.module_name}.BillingService.fixable"
        assert cells[4] == handler or (cells[4].startswith("...") and handler.endswith(cells[4][3:]))
        assert [*cells[2:4], *cells[5:]] == [
            "1",
            "billing.fixable",
            "retries exhausted",
            "RuntimeError: broken until fixed",
        ]
        assert time.strptime(cells[1], "%Y-%m-%d %H:%M:%S")


def test_list_limit_shows_the_first_entries_and_counts_the_rest(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter list --limit 2` of five entries prints the two oldest and says how many more there are."""
    dead_letter(capsys, app, *(message_id(n) for n in range(1, 6)))
    code, out, err = cli(capsys, app, "dead-letter", "list", "--limit", "2")
    assert code == 0, err
    title, _header, *rows, more = out.splitlines()
    assert title == "5 dead letter entries for billing (the first 2)"
    assert [row.split()[0] for row in rows] == [ID1, ID2]
    assert more == "3 more entries: --limit 5 shows all"


def test_list_json_limit_keeps_stdout_json_and_counts_the_rest_on_stderr(
    app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dead-letter list --json --limit 1` of two entries prints a JSON list of one and the count of the rest on
    stderr."""
    dead_letter(capsys, app, ID1, ID2)
    code, out, err = cli(capsys, app, "dead-letter", "list", "--json", "--limit", "1")
    assert code == 0, err
    assert [entry["message_id"] for entry in json.loads(out)] == [ID1]
    assert err == "container-messaging: 1 more entries not shown: raise --limit\n"


def test_list_cuts_long_cells_unless_full(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """A 30 KB routing key is cut to a short cell in `dead-letter list`, and printed whole with `--full`."""
    key = "billing." + "k" * 30_000
    put_entry(app, "msg-long", b"{}", **{ROUTING_KEY: key})
    _, out, _ = cli(capsys, app, "dead-letter", "list")
    row = out.splitlines()[2]
    assert len(row) < 400
    assert "billing.kkk" in row
    assert "..." in row
    _, out, _ = cli(capsys, app, "dead-letter", "list", "--full")
    assert key in out.splitlines()[2]


def test_list_json_has_every_field_of_the_entry(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter list --json` prints a JSON list whose entries carry the failure, the headers and the body."""
    dead_letter(capsys, app, ID1)
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
        "message_id": ID1,
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
    assert entry["headers"]["id"] == ID1
    assert entry["headers"]["tenant"] == "acme"
    assert not [key for key in entry["headers"] if key.startswith("failure.")]


# -- show ------------------------------------------------------------------------------------------------------------


def test_show_prints_the_failure_headers_body_and_trace(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter show ID` prints the reason, the attempts, when it was sent and failed, the error, the original
    headers, the body and the trace."""
    dead_letter(capsys, app, ID1)
    code, out, err = cli(capsys, app, "dead-letter", "show", ID1)
    assert code == 0, err
    lines = out.splitlines()
    fields = dict(line.split(":", 1) for line in lines[: lines.index("headers:")])
    fields = {key: value.strip() for key, value in fields.items()}
    assert fields["message id"] == ID1
    assert fields["reason"] == "retries exhausted"
    assert fields["attempts"] == "1"
    assert fields["error"] == "builtins.RuntimeError: broken until fixed"
    assert fields["handler"] == f"{app.module_name}.BillingService.fixable"
    assert fields["routing key"] == "billing.fixable"
    for key in ("sent at", "failed at"):
        assert time.strptime(fields[key][:19], "%Y-%m-%d %H:%M:%S")
    headers = lines[lines.index("headers:") + 1 : lines.index("body (8 bytes):")]
    assert f"  id: {ID1}" in headers
    assert "  tenant: acme" in headers
    assert lines[lines.index("body (8 bytes):") + 1] == '{"n": 1}'
    assert "RuntimeError: broken until fixed" in out[out.index("\ntrace:\n") :]


def test_show_cuts_a_long_body_and_says_how_much_unless_full(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter show` prints the first BODY_LIMIT characters of a 100 KB body and how many more there are;
    `--full` prints the body whole."""
    body = "0123456789" * 10_000
    put_entry(app, "msg-big", body.encode())
    code, out, err = cli(capsys, app, "dead-letter", "show", "msg-big")
    assert code == 0, err
    lines = out.splitlines()
    shown = lines[lines.index("body (100,000 bytes):") + 1]
    assert shown == f"{body[:BODY_LIMIT]}... [{100_000 - BODY_LIMIT:,} more characters; --full shows all]"
    _, out, _ = cli(capsys, app, "dead-letter", "show", "msg-big", "--full")
    lines = out.splitlines()
    assert lines[lines.index("body (100,000 bytes):") + 1] == body


def test_show_of_a_100_kb_body_is_fast(app: App) -> None:
    """`dead-letter show` of an entry with a 100 KB body of letters and digits (with and without --full) takes
    well under a second of CPU."""
    put_entry(app, "msg-big", ("ab12" * 25_000).encode())
    for full in ([], ["--full"]):
        result, cpu = cli_cpu(app, "dead-letter", "show", "msg-big", *full)
        assert result.returncode == 0, result.stderr
        assert cpu < 1.0, f"{cpu:.2f} s of CPU"


def test_list_json_of_a_2_mb_entry_is_fast(app: App) -> None:
    """`dead-letter list --json` of an entry with a 2 MB body and a 100 KB header takes well under a second of CPU
    and prints the entry cut short."""
    put_entry(app, "msg-huge", ("ab12" * 500_000).encode(), tenant="x9" * 50_000)
    result, cpu = cli_cpu(app, "dead-letter", "list", "--json")
    assert result.returncode == 0, result.stderr
    assert cpu < 1.0, f"{cpu:.2f} s of CPU"
    [entry] = json.loads(result.stdout)
    assert entry["body"].endswith(f"... [{2_000_000 - BODY_LIMIT:,} more characters; --full shows all]")
    assert "more characters" in entry["headers"]["tenant"]


def test_a_closed_pipe_ends_quietly(app: App) -> None:
    """A reader that stops after one line (`| head -1`) of a long output ends the command quietly: exit 0,
    nothing on stderr."""
    put_entry(app, "msg-big", b"line\n" * 400_000)
    command = ["dead-letter", "show", "msg-big", "--full"]
    process = subprocess.Popen(
        [sys.executable, "-m", "container_messaging", "--config", str(app.config), *command],
        cwd=app.folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # 2 MB are still to come: far more than the pipe holds
    try:
        code = process.wait(timeout=60)
    finally:
        process.kill()
    assert first.startswith(b"message id:")
    assert (code, process.stderr.read()) == (0, b"")


# -- replay ----------------------------------------------------------------------------------------------------------


def test_replay_sends_the_message_back_and_run_handles_it(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter replay ID` sends the entry back to the service's queue, where `run` handles it once fixed."""
    dead_letter(capsys, app, ID1)
    app.fix()
    code, out, err = cli(capsys, app, "dead-letter", "replay", ID1)
    assert code == 0, err
    assert out == "replayed 1 message to billing\n"

    code, out, err = cli(capsys, app, "run", "billing", "--finish-when-no-messages")
    assert code == 0, err
    assert out == "billing: handled 1, failed 0 (no more messages)\n"
    [(command, headers)] = app.module().RECEIVED
    assert (command, headers["id"], headers["tenant"]) == ({"n": 1}, ID1, "acme")
    assert cli(capsys, app, "dead-letter", "list")[1] == "0 dead letter entries for billing\n"


def test_replay_all_sends_every_entry_back(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter replay --all` sends every entry back to the service's queue."""
    dead_letter(capsys, app, ID1, ID2)
    app.fix()
    code, out, err = cli(capsys, app, "dead-letter", "replay", "--all")
    assert code == 0, err
    assert out == "replayed 2 messages to billing\n"
    assert cli(capsys, app, "dead-letter", "list")[1] == "0 dead letter entries for billing\n"
    assert cli(capsys, app, "run", "billing", "--finish-when-no-messages")[1] == (
        "billing: handled 2, failed 0 (no more messages)\n"
    )
    assert sorted(headers["id"] for _, headers in app.module().RECEIVED) == [ID1, ID2]


@pytest.mark.parametrize("arguments", [[], [ID1, "--all"]], ids=["neither", "both"])
def test_replay_needs_exactly_one_of_an_id_and_all(
    app: App, capsys: pytest.CaptureFixture[str], arguments: list[str]
) -> None:
    """`dead-letter replay` with neither or both of ID and --all is a usage error (exit 2, one line) and replays
    nothing."""
    dead_letter(capsys, app, ID1)
    code, out, err = cli(capsys, app, "dead-letter", "replay", *arguments)
    assert code == 2
    assert out == ""
    assert error_lines(err) == ["container-messaging: error: dead-letter replay needs a message ID or --all (not both)"]
    assert cli(capsys, app, "dead-letter", "list")[1].startswith("1 dead letter entry for billing\nMESSAGE ID")


# -- delete ----------------------------------------------------------------------------------------------------------


def test_delete_removes_the_entry_for_good(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`dead-letter delete ID` removes that entry and keeps the others."""
    dead_letter(capsys, app, ID1, ID2)
    code, out, err = cli(capsys, app, "dead-letter", "delete", ID1)
    assert code == 0, err
    assert out == f"deleted 1 dead letter entry of {ID1}\n"
    _, out, _ = cli(capsys, app, "dead-letter", "list")
    assert [line.split()[0] for line in out.splitlines()[2:]] == [ID2]


# -- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["show", "replay", "delete"])
def test_unknown_id_is_one_error_line_naming_it(app: App, capsys: pytest.CaptureFixture[str], action: str) -> None:
    """`dead-letter show|replay|delete` of an unknown id prints one error line naming the id and the endpoint and
    exits 1."""
    dead_letter(capsys, app, ID1)
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
    dead_letter(capsys, app, ID1)
    code, out, err = cli(capsys, app, "dead-letter", "--endpoint", "billing", "list")
    assert code == 0, err
    assert out.splitlines()[2].startswith(f"{ID1} ")


def test_times_that_are_not_times_are_printed_as_they_are(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """An entry whose `timestamp` is not a number and whose failure time is out of range is listed and shown with
    those values as they are, not an error."""
    put_entry(app, "msg-odd", b"{}", timestamp="yesterday", **{FailureHeader.TIME: 10**30})
    code, out, err = cli(capsys, app, "dead-letter", "list")
    assert code == 0, err
    assert str(10**30) in out.splitlines()[2]
    code, out, err = cli(capsys, app, "dead-letter", "show", "msg-odd")
    assert code == 0, err
    assert "sent at:      yesterday" in out.splitlines()
    assert f"failed at:    {10**30} (the last attempt)" in out.splitlines()
