"""The ``container-messaging`` command line, in-process through ``main()`` and as real subprocesses."""

from __future__ import annotations

import importlib
import io
import itertools
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from container_messaging import DistributedBus, MessagingContainer, MessagingError
from container_messaging.cli import (
    CONFIG_ENV,
    EXIT_BROKER,
    EXIT_CODES,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    build_parser,
    main,
)
from container_messaging.errors import BrokerRefusedError

from conftest import AMQP_URL

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).parent / "container-messaging"
SUBCOMMANDS = ["list", "run", "setup", "send-command", "publish-event", "send-message"]
PERSON = '{"personId": "123", "billingDetails": "Street 1"}'

HANDLERS = """
import logging

import attrs
from container_messaging import Headers, command_handler, distributed, event_handler, service_activator

RECEIVED = []


@attrs.frozen
class ChangeBillingDetails:
    person_id: str
    billing_details: str


class BillingService:
    @distributed
    @command_handler("billing.changeDetails")
    def change(self, command: ChangeBillingDetails, metadata: Headers) -> None:
        RECEIVED.append(("command", command, dict(metadata)))

    @distributed
    @command_handler("billing.fail")
    def fail(self, command: dict, metadata: Headers) -> None:
        raise RuntimeError("this command always fails")

    @distributed
    @event_handler("user.registered")
    def on_registered(self, event: dict, metadata: Headers) -> None:
        RECEIVED.append(("event", event, dict(metadata)))

    @distributed
    @service_activator("billing.ping")
    def ping(self, payload: str, metadata: Headers) -> None:
        RECEIVED.append(("message", payload, dict(metadata)))

    @distributed
    @command_handler("billing.loud")
    def loud(self, command: dict, metadata: Headers) -> None:
        logging.getLogger("container_messaging.tests").warning("received %s", command["text"])
        RECEIVED.append(("loud", len(command["text"]), dict(metadata)))
"""

_unique = itertools.count()


@dataclass
class App:
    """A temporary service: a handler module importable under a unique name and its YAML configuration."""

    folder: Path
    module_name: str
    config: Path

    def module(self) -> ModuleType:
        return importlib.import_module(self.module_name)

    def received(self) -> list[tuple[str, object, dict[str, object]]]:
        return list(self.module().RECEIVED)


def write_config(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)


def _service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str, source: str) -> Iterator[App]:
    """The billing service on the embedded transport, scanning ``source`` written as a fresh module."""
    module_name = f"{prefix}_{os.getpid()}_{next(_unique)}"
    (tmp_path / f"{module_name}.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write_config(
        tmp_path / "billing.yaml",
        f"""\
        service_name: billing
        scan: [{module_name}]
        transport:
          url: "embedded://"
          data_folder: "{tmp_path / "broker"}"
          polling_interval: 0.01
        """,
    )
    yield App(tmp_path, module_name, config)
    sys.modules.pop(module_name, None)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    yield from _service(tmp_path, monkeypatch, "cli_billing_handlers", HANDLERS)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


# -- list ------------------------------------------------------------------------------------------------------------


def test_list_prints_the_endpoint_names_table(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`list` prints Ecotone's endpoint names table with the service's endpoint and exits 0."""
    code, out, err = run_cli(capsys, "--config", str(app.config), "list")
    assert code == 0, err
    assert out == (
        "+----------------+\n| Endpoint Names |\n+----------------+\n| billing        |\n+----------------+\n"
    )


def test_config_comes_from_the_environment_variable(
    app: App, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --config the file named by CONTAINER_MESSAGING_CONFIG is used."""
    monkeypatch.setenv(CONFIG_ENV, str(app.config))
    code, out, err = run_cli(capsys, "list")
    assert code == 0, err
    assert "| billing        |" in out


def test_config_given_after_the_subcommand_is_used(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`--config` is accepted after the subcommand as well as before it."""
    code, out, err = run_cli(capsys, "list", "--config", str(app.config))
    assert code == 0, err
    assert "| billing        |" in out


# -- send, setup and run ---------------------------------------------------------------------------------------------


def test_send_command_then_run_handles_it(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """A command sent with `send-command` is handled by `run billing --finish-when-no-messages`, which sums it up."""
    config = ["--config", str(app.config)]
    code, out, err = run_cli(capsys, *config, "setup", "billing")
    assert code == 0, err
    assert "queue 'distributed_billing'" in out
    assert "exchange 'ecotone.distributed'" in out

    code, out, err = run_cli(capsys, *config, "send-command", "billing", "billing.changeDetails", PERSON)
    assert code == 0, err
    assert out.startswith("sent command billing.changeDetails to billing")
    assert app.received() == []

    code, out, err = run_cli(capsys, *config, "run", "billing", "--finish-when-no-messages")
    assert code == 0, err
    assert out == "billing: handled 1, failed 0 (no more messages)\n"
    [(kind, command, _headers)] = app.received()
    assert kind == "command"
    assert command == app.module().ChangeBillingDetails(person_id="123", billing_details="Street 1")


def test_header_options_reach_the_handlers_headers(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """Each `--header K=V` arrives in the handler's Headers (a value may itself contain '=')."""
    config = ["--config", str(app.config)]
    assert run_cli(capsys, *config, "setup")[0] == 0
    code, _, err = run_cli(
        capsys,
        *config,
        "send-command",
        "billing",
        "billing.changeDetails",
        PERSON,
        "--header",
        "tenant=acme",
        "--header",
        "filter=a=b",
    )
    assert code == 0, err
    assert run_cli(capsys, *config, "run", "billing", "--finish-when-no-messages")[0] == 0
    [(_, _, headers)] = app.received()
    assert headers["tenant"] == "acme"
    assert headers["filter"] == "a=b"


def test_publish_event_reads_the_payload_from_stdin(
    app: App, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`publish-event KEY -` publishes standard input's payload and the subscribed handler receives it."""
    config = ["--config", str(app.config)]
    assert run_cli(capsys, *config, "setup")[0] == 0
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"userId": "7"}'), encoding="utf-8"))
    code, out, err = run_cli(capsys, *config, "publish-event", "user.registered", "-")
    assert code == 0, err
    assert out.startswith("published event user.registered")
    assert run_cli(capsys, *config, "run", "billing", "--finish-when-no-messages")[0] == 0
    [(kind, event, _)] = app.received()
    assert (kind, event) == ("event", {"userId": "7"})


def test_send_message_reaches_the_service_activator(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`send-message DEST CHANNEL PAYLOAD --content-type text/plain` reaches the channel's service activator."""
    config = ["--config", str(app.config)]
    assert run_cli(capsys, *config, "setup")[0] == 0
    code, out, err = run_cli(
        capsys, *config, "send-message", "billing", "billing.ping", "hello", "--content-type", "text/plain"
    )
    assert code == 0, err
    assert out.startswith("sent message to channel billing.ping of billing")
    assert run_cli(capsys, *config, "run", "billing", "--finish-when-no-messages")[0] == 0
    [(kind, payload, _)] = app.received()
    assert (kind, payload) == ("message", "hello")


def test_run_stopped_by_stop_on_failure_exits_1(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`run --stop-on-failure` stops at a failing message, prints the summary and exits 1."""
    config = ["--config", str(app.config)]
    assert run_cli(capsys, *config, "setup")[0] == 0
    assert run_cli(capsys, *config, "send-command", "billing", "billing.fail", "{}")[0] == 0
    code, out, _ = run_cli(capsys, *config, "run", "billing", "--stop-on-failure", "--finish-when-no-messages")
    assert code == 1
    assert out == "billing: handled 0, failed 1 (a message failed (stop_on_failure))\n"


def test_invalid_json_payload_is_a_usage_error(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """A PAYLOAD that is not JSON under the default content type is refused with exit code 2 and one line."""
    code, out, err = run_cli(capsys, "--config", str(app.config), "send-command", "billing", "billing.x", "{nope")
    assert code == 2
    assert out == ""
    assert error_lines(err) == [error_lines(err)[0]]
    assert err.startswith("container-messaging: error: PAYLOAD is not valid JSON")


def test_verbose_flags_after_the_subcommand_are_accepted(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`run billing -vvv` (Ecotone's order) is accepted and turns on DEBUG logging on stderr."""
    config = ["--config", str(app.config)]
    assert run_cli(capsys, *config, "setup")[0] == 0
    assert run_cli(capsys, *config, "send-command", "billing", "billing.changeDetails", PERSON)[0] == 0
    code, out, err = run_cli(capsys, *config, "run", "billing", "--finish-when-no-messages", "-vvv")
    assert code == 0, err
    assert out == "billing: handled 1, failed 0 (no more messages)\n"
    assert " DEBUG container_messaging.consumer: endpoint 'billing': handled" in err


def test_keyboard_interrupt_exits_130_quietly(
    app: App, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt (second Ctrl-C during `run`) exits 130 printing nothing but the start banner."""

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(MessagingContainer, "run", interrupted)
    code, out, err = run_cli(capsys, "--config", str(app.config), "run", "billing")
    assert (code, out) == (130, "")
    assert err.startswith("billing: consuming distributed_billing on embedded://\n")
    assert "error" not in err


def test_verbose_flags_before_and_after_the_subcommand_add_up() -> None:
    """`-v run billing -vv` counts three -v flags."""
    args = build_parser().parse_args(["-v", "run", "billing", "-vv"])
    assert args.verbose + args.verbose_after == 3


# -- errors ----------------------------------------------------------------------------------------------------------


def test_run_unknown_endpoint_prints_one_line_listing_the_endpoints(
    app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run unknown` prints one error line naming the available endpoints and exits 2."""
    code, out, err = run_cli(capsys, "--config", str(app.config), "run", "unknown")
    assert code == 2
    assert out == ""
    assert error_lines(err) == ["container-messaging: error: unknown endpoint 'unknown' (available: 'billing')"]


def test_missing_config_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --config and without CONTAINER_MESSAGING_CONFIG, one line says how to give the configuration."""
    code, _, err = run_cli(capsys, "list")
    assert code == 2
    [line] = error_lines(err)
    assert line.startswith("container-messaging: error:")
    assert "--config" in line
    assert CONFIG_ENV in line


def test_bad_config_file_is_one_line_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A configuration file with a YAML syntax error gives exit code 2 and one line naming the file."""
    config = write_config(tmp_path / "broken.yaml", "service_name: [billing\n")
    code, out, err = run_cli(capsys, "--config", str(config), "list")
    assert code == 2
    assert out == ""
    [line] = error_lines(err)
    assert line.startswith(f"container-messaging: error: {config}: ")
    assert "Traceback" not in err


def test_missing_config_file_is_one_line_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A configuration path that does not exist gives exit code 2 and one line naming the path."""
    missing = tmp_path / "missing.yaml"
    code, _, err = run_cli(capsys, "--config", str(missing), "list")
    assert code == 2
    assert error_lines(err) == [f"container-messaging: error: {missing}: no such file"]


def unreachable_broker_config(tmp_path: Path, password: str = "s3cret") -> Path:
    """A configuration whose RabbitMQ URL points at a port nothing listens on."""
    return write_config(
        tmp_path / "amqp.yaml",
        f"""\
        service_name: billing
        transport:
          url: "pyamqp://user:{password}@127.0.0.1:1//"
          connect_timeout: 0.2
        """,
    )


def test_broker_down_is_one_error_line_and_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With the broker down, `send-command` prints nothing but one error line (no retry warnings) and exits 3."""
    config = unreachable_broker_config(tmp_path)
    code, out, err = run_cli(capsys, "--config", str(config), "send-command", "billing", "billing.x", "{}")
    assert code == EXIT_BROKER == 3
    assert out == ""
    [line] = error_lines(err)
    assert line.startswith("container-messaging: error: ")
    assert "pyamqp://user:***@127.0.0.1:1//" in line


def test_password_never_appears_in_the_output_of_a_failing_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A send that cannot reach the broker shows the URL's password only as ***, even at -vvv with tracebacks."""
    config = unreachable_broker_config(tmp_path, password="Zq7-distinctive")
    code, out, err = run_cli(capsys, "--config", str(config), "send-command", "billing", "billing.x", "{}", "-vvv")
    assert code == EXIT_BROKER
    assert "Traceback" in err
    assert "Zq7-distinctive" not in out + err
    assert "pyamqp://user:***@127.0.0.1:1//" in err
    assert error_lines(err)[-1].startswith("container-messaging: error: ")


def test_a_refusing_broker_is_one_error_line_and_exit_3(
    app: App, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A BrokerRefusedError while sending gives exactly one error line with its message and exit code 3."""

    def refused(*_args: object, **_kwargs: object) -> None:
        raise BrokerRefusedError("connecting failed on pyamqp://guest:***@127.0.0.1:5672//: ACCESS_REFUSED")

    monkeypatch.setattr(DistributedBus, "send_command", refused)
    code, out, err = run_cli(capsys, "--config", str(app.config), "send-command", "billing", "billing.x", "{}")
    assert (code, out) == (EXIT_BROKER, "")
    assert error_lines(err) == [
        "container-messaging: error: connecting failed on pyamqp://guest:***@127.0.0.1:5672//: ACCESS_REFUSED"
    ]


def test_wrong_credentials_on_rabbitmq_are_one_error_line_and_exit_3(
    amqp_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real RabbitMQ refusing a wrong password gives one error line naming ACCESS_REFUSED, without the
    password, and exit code 3."""
    wrong = re.sub(r"//([^:/@]*):[^@]*@", r"//\1:Wr0ng-pass@", AMQP_URL)
    assert "Wr0ng-pass" in wrong, "the test broker URL carries no user: cannot make a wrong password"
    config = write_config(
        tmp_path / "refused.yaml",
        f"""\
        service_name: billing
        transport:
          url: "{wrong}"
        """,
    )
    code, out, err = run_cli(capsys, "--config", str(config), "send-command", "billing", "billing.x", "{}")
    assert (code, out) == (EXIT_BROKER, "")
    [line] = error_lines(err)
    assert "ACCESS_REFUSED" in line
    assert "Wr0ng-pass" not in err


def test_bad_header_option_is_a_usage_error(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """A `--header` without '=' is rejected by the parser with exit code 2."""
    code, _, err = run_cli(
        capsys, "--config", str(app.config), "send-command", "billing", "billing.x", "{}", "--header", "novalue"
    )
    assert code == 2
    assert "expected KEY=VALUE" in err


# -- help ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_help_of_each_subcommand_exits_0(subcommand: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`SUBCOMMAND --help` prints that subcommand's usage and exits 0."""
    code, out, _ = run_cli(capsys, subcommand, "--help")
    assert code == 0
    assert out.startswith(f"usage: container-messaging {subcommand}")


def test_python_dash_m_help_in_a_subprocess() -> None:
    """`python -m container_messaging --help` runs as a real process, lists the subcommands and exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "container_messaging", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=PROJECT_ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for subcommand in SUBCOMMANDS:
        assert subcommand in result.stdout


@pytest.mark.skipif(
    not CONSOLE_SCRIPT.exists() and shutil.which("container-messaging") is None,
    reason="the console script is not installed",
)
def test_console_script_runs_list_from_the_working_directory(app: App) -> None:
    """The installed `container-messaging` script finds handler modules in its working directory and lists them."""
    script = str(CONSOLE_SCRIPT) if CONSOLE_SCRIPT.exists() else str(shutil.which("container-messaging"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", CONFIG_ENV)}
    env[CONFIG_ENV] = str(app.config)
    help_result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30, check=False)
    assert help_result.returncode == 0, help_result.stderr
    result = subprocess.run(
        [script, "list"], capture_output=True, text=True, timeout=30, cwd=app.folder, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "| billing        |" in result.stdout


# -- exit codes, --version, a closed pipe ----------------------------------------------------------------------------

DUPLICATE_HANDLERS = """
from container_messaging import command_handler


class One:
    @command_handler("billing.same")
    def first(self, command: dict) -> None: ...


class Two:
    @command_handler("billing.same")
    def second(self, command: dict) -> None: ...
"""

MISSING_DEPENDENCY = """
import abc

from container_messaging import command_handler


class Clock(abc.ABC):
    @abc.abstractmethod
    def now(self) -> float: ...


class Timed:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    @command_handler("billing.timed")
    def timed(self, command: dict) -> None: ...
"""


def boot_error_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> Path:
    """A configuration whose container cannot boot: a scan error, clashing handlers or a missing dependency."""
    monkeypatch.syspath_prepend(str(tmp_path))
    module = f"cli_boot_{kind}_{os.getpid()}_{next(_unique)}"
    sources = {"duplicate": DUPLICATE_HANDLERS, "dependency": MISSING_DEPENDENCY}
    if kind in sources:
        (tmp_path / f"{module}.py").write_text(sources[kind], encoding="utf-8")
    return write_config(tmp_path / f"{kind}.yaml", f"scan: [{module}]\n")


@pytest.mark.parametrize(
    ("kind", "named"),
    [("scan", "cli_boot_scan_"), ("duplicate", "billing.same"), ("dependency", "Clock")],
    ids=["scan error", "duplicate handler", "missing dependency"],
)
def test_boot_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, kind: str, named: str
) -> None:
    """A scan error, two handlers for one key and a missing dependency are boot errors: one line naming the
    culprit, exit code 2."""
    config = boot_error_config(tmp_path, monkeypatch, kind)
    code, out, err = run_cli(capsys, "--config", str(config), "list")
    assert (code, out) == (EXIT_USAGE, "")
    [line] = error_lines(err)
    assert line.startswith("container-messaging: error: ")
    assert named in line


def test_exit_codes_are_distinct_and_documented_in_help_and_readme(capsys: pytest.CaptureFixture[str]) -> None:
    """The exit code table has one row per code; `--help` prints every row and the README's CLI table says the
    same."""
    codes = [code for code, _ in EXIT_CODES]
    assert codes == [EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_BROKER, EXIT_INTERRUPTED] == [0, 1, 2, 3, 130]
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    help_text = " ".join(out.split())
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    for number, meaning in EXIT_CODES:
        assert f"{number} {' '.join(meaning.split())}" in help_text
        assert f"| {number} | {meaning} |" in readme


def test_usage_error_is_a_messaging_error() -> None:
    """The CLI's UsageError is part of the package's error tree."""
    assert issubclass(UsageError, MessagingError)


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`--version` prints the program name and the installed distribution's version and exits 0."""
    from importlib.metadata import version

    code, out, _ = run_cli(capsys, "--version")
    assert code == 0
    assert out == f"container-messaging {version('container-messaging')}\n"


def test_a_long_log_line_is_printed_in_linear_time(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """A handler logging a 150 KB run of letters and digits under `run` costs well under two seconds of CPU, and
    the line reaches stderr whole (nothing scans printed text for secrets)."""
    config = ["--config", str(app.config)]
    assert run_cli(capsys, *config, "setup")[0] == 0
    text = "a1" * 75_000
    payload = f'{{"text": "{text}"}}'
    assert run_cli(capsys, *config, "send-command", "billing", "billing.loud", payload)[0] == 0
    started = time.process_time()
    code, _, err = run_cli(capsys, *config, "run", "billing", "--handled-message-limit", "1")
    cpu = time.process_time() - started
    assert code == 0, err
    assert [kind for kind, *_ in app.received()] == ["loud"]
    assert f"received {text}\n" in err
    assert cpu < 2.0, f"{cpu:.2f} s of CPU"


# -- --app: the application's dependency-injector container --------------------------------------------------------

APP_MODULE = """
import abc

from dependency_injector import containers, providers

from container_messaging import command_handler, distributed

GREETINGS = []


class Greeter(abc.ABC):
    @abc.abstractmethod
    def greet(self, name: str) -> str: ...


class FriendlyGreeter(Greeter):
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    def greet(self, name: str) -> str:
        return f"{self.greeting}, {name}"


class AppContainer(containers.DeclarativeContainer):
    greeter = providers.Singleton(FriendlyGreeter, greeting="Hello")


container = AppContainer()
not_a_container = 42


class GreetingService:
    def __init__(self, greeter: Greeter) -> None:
        self.greeter = greeter

    @distributed
    @command_handler("billing.greet")
    def greet(self, command: dict) -> None:
        GREETINGS.append(self.greeter.greet(command["name"]))
"""


@pytest.fixture
def greeting_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """A service whose handler needs a Greeter that only the application's container provides."""
    yield from _service(tmp_path, monkeypatch, "cli_app", APP_MODULE)


def test_app_option_provides_the_handlers_dependencies(greeting_app: App, capsys: pytest.CaptureFixture[str]) -> None:
    """With `--app module:container`, `run` builds the handler with the application container's Greeter and
    handles the command sent to it (`--app` also works after the subcommand)."""
    config = ["--config", str(greeting_app.config)]
    app_option = ["--app", f"{greeting_app.module_name}:container"]
    assert run_cli(capsys, *config, *app_option, "setup")[0] == 0
    code, _, err = run_cli(capsys, *config, *app_option, "send-command", "billing", "billing.greet", '{"name": "Ada"}')
    assert code == 0, err
    code, out, err = run_cli(capsys, *config, "run", "billing", "--finish-when-no-messages", *app_option)
    assert code == 0, err
    assert "handled 1, failed 0" in out
    assert greeting_app.module().GREETINGS == ["Hello, Ada"]


def test_without_app_the_missing_dependency_is_a_boot_error(
    greeting_app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without `--app`, the handler's Greeter has no provider: one line naming it, exit code 2."""
    code, out, err = run_cli(capsys, "--config", str(greeting_app.config), "list")
    assert (code, out) == (EXIT_USAGE, "")
    [line] = error_lines(err)
    assert "Greeter" in line


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("{module}", "expected MODULE:ATTRIBUTE"),
        ("cli_no_such_module_xyz:container", "module 'cli_no_such_module_xyz' not found"),
        ("{module}:nothing", "module '{module}' has no attribute 'nothing'"),
        ("{module}:not_a_container", "dependency-injector container, got int"),
    ],
    ids=["no colon", "module not found", "attribute missing", "not a container"],
)
def test_a_bad_app_option_names_what_failed(
    greeting_app: App, capsys: pytest.CaptureFixture[str], spec: str, expected: str
) -> None:
    """A wrong `--app` value is one error line, exit code 2, saying what failed: the form, the module, the
    attribute, or the object not being a container."""
    module = greeting_app.module_name
    code, out, err = run_cli(capsys, "--config", str(greeting_app.config), "--app", spec.format(module=module), "list")
    assert (code, out) == (EXIT_USAGE, "")
    [line] = error_lines(err)
    assert expected.format(module=module) in line
