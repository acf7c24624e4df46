"""The command line's observability: `health` as a probe (exit codes, bounded time, JSON), `--log-format json`,
`--otel`; and the core without the otel extra."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from container_messaging import MessagingContainer
from container_messaging.cli import main
from container_messaging.transports.base import OutboundMessage

from conftest import forget_endpoint

HANDLERS = """
from container_messaging import command_handler, distributed

class Billing:
    @distributed
    @command_handler("billing.changeDetails")
    def change(self, command: dict) -> None:
        pass
"""


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(folder: Path, url: str, distribution: dict[str, str] | None = None) -> Path:
    (folder / "cli_observed.py").write_text(HANDLERS)
    lines = ["service_name: billing", "scan: [cli_observed]", "transport:", f"  url: '{url}'", "  connect_timeout: 2"]
    if distribution:
        lines += ["distribution:", *(f"  {key}: {value}" for key, value in distribution.items())]
    path = folder / "billing.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_health_exits_1_within_its_timeout_when_the_broker_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`health` against a closed port prints an unhealthy report naming the broker (password masked) and exits 1,
    within the timeout given."""
    config = write_config(tmp_path, f"pyamqp://guest:secret@127.0.0.1:{closed_port()}//")
    started = time.monotonic()
    code = main(["--config", str(config), "health", "--timeout", "5"])
    assert time.monotonic() - started < 6
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("unhealthy")
    assert "FAIL broker" in out
    assert "secret" not in out


def test_health_exits_0_when_the_broker_and_the_queue_are_there_and_prints_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], amqp_url: str, distribution: dict[str, str]
) -> None:
    """After `setup`, `health billing --json` against RabbitMQ exits 0 and prints a JSON report whose checks are
    the broker, the queue and the dead letter, all healthy; over --dead-letter-threshold it exits 1."""
    config = write_config(tmp_path, amqp_url, distribution)
    container = MessagingContainer.from_config(config)
    try:
        assert main(["--config", str(config), "setup"]) == 0
        capsys.readouterr()
        assert main(["--config", str(config), "health", "billing", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["healthy"] is True
        assert [(check["name"], check["healthy"]) for check in report["checks"]] == [
            ("broker", True),
            ("queue", True),
            ("dead letter", True),
        ]
        queue = container.topology.queue("billing")
        container.transport.send_to_queue(
            f"{queue}.dead_letter", OutboundMessage("x", b"{}", {}, "application/json", "m-1")
        )
        assert main(["--config", str(config), "health", "--dead-letter-threshold", "0"]) == 1
        assert "FAIL dead letter" in capsys.readouterr().out
    finally:
        forget_endpoint(container, container.topology.queue("billing"))
        container.close()


def test_health_refuses_an_unknown_endpoint_and_a_bad_threshold_as_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`health NAME` of an endpoint that does not exist, or a negative threshold, is a usage error (exit 2)."""
    config = write_config(tmp_path, "memory://")
    assert main(["--config", str(config), "health", "nobody"]) == 2
    assert "unknown endpoint 'nobody'" in capsys.readouterr().err
    assert main(["--config", str(config), "health", "--dead-letter-threshold", "-1"]) == 2


def test_log_format_json_writes_one_parsable_object_per_stderr_line(tmp_path: Path) -> None:
    """`--log-format json run ... -v` in a real process writes only JSON objects on stderr, one a line (the start
    banner included), and the consumer's line about the message carries its routing key and outcome."""
    config = write_config(tmp_path, "embedded://")
    with (tmp_path / "billing.yaml").open("a") as file:
        file.write(f"  data_folder: '{tmp_path / 'data'}'\n  polling_interval: 0.01\n")
    command = [sys.executable, "-m", "container_messaging", "--config", str(config)]
    assert main(["--config", str(config), "setup"]) == 0
    sent = subprocess.run(
        [*command, "send-command", "billing", "billing.changeDetails", "{}"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    done = subprocess.run(
        [*command, "--log-format", "json", "run", "billing", "--finish-when-no-messages", "-v"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    assert entries
    handled = [entry for entry in entries if entry.get("outcome") == "handled"]
    assert [(entry["routing_key"], entry["endpoint"]) for entry in handled] == [("billing.changeDetails", "billing")]
    banners = [
        entry for entry in entries if entry["logger"] == "container_messaging.cli" and "bound to" in entry["message"]
    ]
    assert [entry["endpoint"] for entry in banners] == ["billing"]  # the start banner is a JSON line too


def test_otel_traces_with_the_global_tracer_provider(tmp_path: Path) -> None:
    """With --otel, a command sent from the command line is traced through OpenTelemetry's global tracer provider
    (here one with an in-memory exporter, set up in the process before main() runs)."""
    config = write_config(tmp_path, "memory://")
    script = textwrap.dedent(
        f"""
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from container_messaging.cli import main

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        assert main(["--config", {str(config)!r}, "setup"]) == 0
        code = main(["--otel", "--config", {str(config)!r}, "send-command", "billing", "billing.changeDetails", "{{}}"])
        print([span.name for span in exporter.get_finished_spans()], code)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.stdout.splitlines()[-1] == "['publish billing.changeDetails'] 0", done.stderr


def test_without_opentelemetry_the_core_works_and_otel_says_which_extra_to_install(tmp_path: Path) -> None:
    """With OpenTelemetry unimportable, the package, the container, JSON logs and health load and run without
    importing it; importing the tracing module, or --otel, is an error naming the otel extra (exit 2)."""
    config = write_config(tmp_path, "memory://")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
        from container_messaging import MessagingContainer
        from container_messaging.cli import main
        from container_messaging.observability import configure_logging

        container = MessagingContainer.from_config({str(config)!r})
        assert container.health().healthy
        assert not [name for name in sys.modules if name.startswith("opentelemetry.")]
        try:
            import container_messaging.observability.tracing
        except ImportError as exc:
            print(type(exc).__name__, exc)
        print(main(["--otel", "--config", {str(config)!r}, "list"]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    lines = done.stdout.splitlines()
    assert lines[0].startswith("MissingExtraError container_messaging.observability.tracing needs OpenTelemetry"), done
    assert "pip install 'container-messaging[otel]'" in lines[0]
    assert lines[-1] == "2"
    assert "pip install 'container-messaging[otel]'" in done.stderr
