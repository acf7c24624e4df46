"""Services as separate OS processes: the example services over the embedded transport and over RabbitMQ, and a
consumer process stopped by SIGTERM in the middle of a message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from container_messaging import MessagingContainer

from conftest import AMQP_URL, REDIS_URL, forget_endpoint, require_broker

ROOT = Path(__file__).resolve().parent.parent


def _demo(
    tmp_path: Path, url: str | None, distribution: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    for config in (path for path in (ROOT / "configs").iterdir() if path.is_file()):
        text = config.read_text()
        if distribution:
            if config.suffix == ".ini":
                text += (
                    f"\n[distribution]\nexchange = {distribution['exchange']}\n"
                    f"queue_prefix = {distribution['queue_prefix']}\n"
                )
            else:
                text += (
                    f"distribution:\n  exchange: {distribution['exchange']}\n"
                    f"  queue_prefix: {distribution['queue_prefix']}\n"
                )
        (config_dir / config.name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER_MESSAGING_URL"}
    if url is not None:
        env["CONTAINER_MESSAGING_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "examples.demo", "--count", "3", "--timeout", "60", "--config-dir", str(config_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _assert_demo_succeeded(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for service in ("billing", "user", "ticket"):
        assert f"ok  {service}: handled 3 of 3 (exit 0)" in output, output
    assert output.count("[billing] changed details of person") == 3
    assert output.count("[user] person") == 3  # the event crossed back to the sender's service
    assert output.count("[ticket] opened a ticket for billing.detailsWereChanged") == 3


def test_example_services_talk_as_processes_over_the_embedded_transport(tmp_path: Path) -> None:
    """The three example services, each its own OS process, exchange commands and events with no broker."""
    _assert_demo_succeeded(_demo(tmp_path, None))


def _forget_demo(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Removes the demo's queues and exchange from the shared broker."""
    monkeypatch.setenv("CONTAINER_MESSAGING_URL", url)
    monkeypatch.syspath_prepend(str(ROOT))
    for config in sorted((tmp_path / "configs").iterdir()):
        with MessagingContainer.from_config(config) as container:
            forget_endpoint(container, container.topology.queue(container.settings.service_name or ""))


@pytest.mark.parametrize(
    ("broker", "url", "port"),
    [
        pytest.param("RabbitMQ", AMQP_URL, 5672, marks=pytest.mark.rabbitmq, id="rabbitmq"),
        pytest.param("Redis", REDIS_URL, 6379, marks=pytest.mark.redis, id="redis"),
    ],
)
def test_example_services_talk_as_processes_over_a_broker(
    broker: str, url: str, port: int, tmp_path: Path, distribution: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same example services, changed only in their transport URL, talk over the real RabbitMQ and Redis."""
    require_broker(broker, url, port)
    try:
        _assert_demo_succeeded(_demo(tmp_path, url, distribution))
    finally:
        _forget_demo(tmp_path, url, monkeypatch)


SLOW_HANDLER = """
import os
import time
from pathlib import Path
from container_messaging import command_handler, distributed

FOLDER = Path(os.environ["SLOW_FOLDER"])

class Slow:
    @distributed
    @command_handler("slow.work")
    def work(self, payload: str) -> None:
        (FOLDER / "started").write_text(payload)
        deadline = time.monotonic() + 30
        while not (FOLDER / "go").exists():  # the test says when to finish, after it sent SIGTERM
            if time.monotonic() > deadline:
                raise TimeoutError("the test never said go")
            time.sleep(0.01)
        with open(FOLDER / "finished", "a") as finished:
            finished.write(payload + "\\n")
"""


def _wait_for(path: Path, process: subprocess.Popen[str], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"consumer exited early: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} never appeared")
        time.sleep(0.01)


def test_sigterm_lets_the_message_in_hand_finish_and_be_acknowledged(tmp_path: Path) -> None:
    """SIGTERM during a slow handler: that message completes, is acknowledged once, and the consumer exits 0."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "slow_handlers.py").write_text(textwrap.dedent(SLOW_HANDLER))
    config = tmp_path / "slow.yaml"
    config.write_text(
        f"service_name: slow\nscan: [slow_handlers]\n"
        f"transport:\n  url: embedded://\n  data_folder: {tmp_path / 'data'}\n"
    )
    env = {**os.environ, "SLOW_FOLDER": str(tmp_path), "PYTHONPATH": str(modules)}
    cli = [sys.executable, "-m", "container_messaging", "--config", str(config)]
    subprocess.run([*cli, "setup"], env=env, check=True, capture_output=True)
    subprocess.run(
        [*cli, "send-command", "slow", "slow.work", "first", "--content-type", "text/plain"],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*cli, "send-command", "slow", "slow.work", "second", "--content-type", "text/plain"],
        env=env,
        check=True,
        capture_output=True,
    )
    consumer = subprocess.Popen(
        [*cli, "run", "slow", "-v"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_for(tmp_path / "started", consumer)
        consumer.send_signal(signal.SIGTERM)
        (tmp_path / "go").write_text("")
        output, _ = consumer.communicate(timeout=30)
    finally:
        if consumer.poll() is None:
            consumer.kill()
    assert consumer.returncode == 0, output
    assert (tmp_path / "finished").read_text() == "first\n"  # the message in hand finished, the next never began
    assert "slow: handled 1, failed 0 (signal SIGTERM)" in output
    remaining = subprocess.run(
        [*cli, "run", "slow", "--finish-when-no-messages"], env=env, capture_output=True, text=True, check=True
    )
    # only the second command is still queued: the first was acknowledged exactly once
    assert "slow: handled 1, failed 0 (no more messages)" in remaining.stdout
    assert (tmp_path / "finished").read_text() == "first\nsecond\n"


def test_a_second_signal_stops_at_once_and_the_message_is_not_lost(tmp_path: Path) -> None:
    """A second SIGTERM stops the consumer in the middle of a handler (exit 130); the message was not acknowledged,
    so the next run handles it."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "slow_handlers.py").write_text(textwrap.dedent(SLOW_HANDLER))
    config = tmp_path / "slow.yaml"
    config.write_text(
        "service_name: slow\nscan: [slow_handlers]\n"
        f"transport:\n  url: embedded://\n  data_folder: {tmp_path / 'data'}\n"
    )
    env = {**os.environ, "SLOW_FOLDER": str(tmp_path), "PYTHONPATH": str(modules)}
    cli = [sys.executable, "-m", "container_messaging", "--config", str(config)]
    subprocess.run([*cli, "setup"], env=env, check=True, capture_output=True)
    subprocess.run(
        [*cli, "send-command", "slow", "slow.work", "only", "--content-type", "text/plain"],
        env=env,
        check=True,
        capture_output=True,
    )
    log = tmp_path / "consumer.log"
    with log.open("w") as log_file:
        consumer = subprocess.Popen([*cli, "run", "slow", "-v"], env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_for(tmp_path / "started", consumer)
        consumer.send_signal(signal.SIGTERM)
        # the same signal twice in a row may arrive as one: wait until the first one was taken
        deadline = time.monotonic() + 30
        while "stopping after the current message" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=30)
        output = log.read_text()
    finally:
        if consumer.poll() is None:
            consumer.kill()
    assert consumer.returncode == 130, output
    assert not (tmp_path / "finished").exists()  # stopped in the handler, before it finished
    (tmp_path / "go").write_text("")
    again = subprocess.run(
        [*cli, "run", "slow", "--finish-when-no-messages"], env=env, capture_output=True, text=True, check=True
    )
    assert "slow: handled 1, failed 0 (no more messages)" in again.stdout
    assert (tmp_path / "finished").read_text() == "only\n"
