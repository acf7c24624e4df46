"""``run NAME --processes N``: N consumer processes, a crashed child started again, SIGTERM passed on."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

CONFIG = """
service_name: worker
scan: [supervised_handlers]
transport:
  url: "embedded://"
  data_folder: "{folder}"
  polling_interval: 0.05
"""

HANDLERS = """
from container_messaging import command_handler, distributed

class Handlers:
    @distributed
    @command_handler("work.do")
    def do(self, command: dict) -> None:
        pass
"""


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_processes_restarts_a_killed_child_and_passes_sigterm_on(tmp_path: Path) -> None:
    """With --processes 2, a child killed with SIGKILL is started again (a new pid), and SIGTERM to the supervisor
    stops every child and the supervisor exits 0."""
    (tmp_path / "supervised_handlers.py").write_text(HANDLERS)
    config = tmp_path / "worker.yaml"
    config.write_text(CONFIG.format(folder=tmp_path / "data"))
    log = tmp_path / "supervisor.log"
    with log.open("wb") as stderr:
        supervisor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "container_messaging",
                "--config",
                str(config),
                "-v",
                "run",
                "worker",
                "--processes",
                "2",
            ],
            cwd=tmp_path,
            stderr=stderr,
        )
    try:

        def started() -> list[int]:
            return [int(pid) for pid in re.findall(r"started \(pid (\d+)\)", log.read_text())]

        wait_for(lambda: len(started()) == 2)
        first, second = started()
        wait_for(lambda: "consuming" in log.read_text())
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(started()) == 3)
        assert "was killed by signal SIGKILL" in log.read_text()
        third = started()[2]
        assert third not in (first, second) and alive(third)

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
        assert not alive(second) and not alive(third)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()


@pytest.mark.parametrize("processes", ["0", "-1", "x"])
def test_processes_must_be_a_positive_whole_number(tmp_path: Path, processes: str) -> None:
    """--processes 0, -1 or x is a usage error naming the option."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "container_messaging",
            "--config",
            str(tmp_path / "none.yaml"),
            "run",
            "worker",
            "--processes",
            processes,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--processes" in result.stderr
