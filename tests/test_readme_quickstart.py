"""The README's Quickstart, verbatim: its files written to an empty folder, every Python block run, the INI block
saying what the YAML block says, and the two terminals of its commands (a running consumer, a second terminal
sending to it)."""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from container_messaging import load_settings

README = Path(__file__).resolve().parent.parent / "README.md"
CONSOLE_SCRIPT = Path(sys.executable).parent / "container-messaging"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_PATH_COMMENT = re.compile(r"^(?:#|;) ([\w./-]+\.(?:py|yaml|ini))\n")


def quickstart_blocks() -> list[tuple[str, str]]:
    """The Quickstart section's fenced blocks, as (language, text)."""
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Quickstart\n")
    section = text[start : text.index("\n## ", start + 1)]
    return [(match.group(1), match.group(2)) for match in _BLOCK.finditer(section)]


def files(blocks: list[tuple[str, str]]) -> dict[str, str]:
    """The blocks that open with a comment naming their file (``# billing/handlers.py``, ``; billing.ini``)."""
    named = {}
    for _language, text in blocks:
        match = _PATH_COMMENT.match(text)
        if match:
            named[match.group(1)] = text
    return named


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty folder holding the Quickstart's files."""
    for name, text in files(quickstart_blocks()).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("CONTAINER_MESSAGING")}


def run(argv: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    """Runs a command to its end in ``folder``, as a reader would in a terminal there."""
    return subprocess.run(argv, cwd=folder, env=clean_env(), capture_output=True, text=True, timeout=60, check=False)


def pump(stream: Iterable[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def test_the_quickstart_names_its_files_and_every_python_block_is_one() -> None:
    """The Quickstart has the handler module, the YAML and INI configurations and a script, each named by its
    first line, and no Python block without a file name."""
    blocks = quickstart_blocks()
    assert set(files(blocks)) == {"billing/handlers.py", "billing.yaml", "billing.ini", "quickstart.py"}
    assert all(_PATH_COMMENT.match(text) for language, text in blocks if language == "python")


def test_every_python_block_runs_verbatim(folder: Path) -> None:
    """Each Python block of the Quickstart runs as written, in order, in a folder holding its files (the script's
    own asserts check what it says happens)."""
    for language, text in quickstart_blocks():
        if language != "python":
            continue
        path = _PATH_COMMENT.match(text).group(1)  # type: ignore[union-attr]
        result = run([sys.executable, path], folder)
        assert result.returncode == 0, f"{path}:\n{result.stdout}\n{result.stderr}"
    assert (folder / ".container_messaging").is_dir()


def test_the_ini_block_says_what_the_yaml_block_says(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """billing.ini of the Quickstart loads to the same settings as billing.yaml."""
    monkeypatch.chdir(folder)
    assert load_settings(folder / "billing.ini") == load_settings(folder / "billing.yaml")


def commands() -> list[list[str]]:
    """The ``container-messaging`` command lines of the Quickstart's shell blocks, comments dropped."""
    found = []
    for language, text in quickstart_blocks():
        if language == "sh":
            found += [shlex.split(line, comments=True) for line in text.splitlines() if line.startswith(PROGRAM)]
    return found


PROGRAM = "container-messaging"


def cli(argv: list[str]) -> list[str]:
    """The installed console script when there is one (as a reader would run it), else ``python -m``."""
    assert argv[0] == PROGRAM
    if CONSOLE_SCRIPT.exists():
        return [str(CONSOLE_SCRIPT), *argv[1:]]
    return [sys.executable, "-m", "container_messaging", *argv[1:]]


def test_two_terminals_a_running_consumer_handles_what_the_second_sends(folder: Path) -> None:
    """The Quickstart's commands as written: `list` shows billing, `run billing` keeps running until Ctrl-C and
    handles the command `send-command` sends from a second terminal (printing the handler's line), then stops
    with its summary and exit code 0."""
    listing, running, sending = commands()
    assert (listing[3], running[3], sending[3]) == ("list", "run", "send-command")
    result = run(cli(listing), folder)
    assert result.returncode == 0, result.stderr
    assert "| billing        |" in result.stdout

    consumer = subprocess.Popen(
        cli(running),
        cwd=folder,
        env={**clean_env(), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert consumer.stdout is not None
    reader = threading.Thread(target=pump, args=(consumer.stdout, lines), daemon=True)
    reader.start()
    try:
        # the first terminal's run declares the queue before it consumes: send until it is there
        deadline = time.monotonic() + 30
        while True:
            sent = run(cli(sending), folder)
            if sent.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith("sent command billing.changeDetails to billing")
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while "billing details of 123 are now 01111\n" not in seen and time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                assert consumer.poll() is None, f"run ended early: {seen}"
        assert "billing details of 123 are now 01111\n" in seen, seen
        assert consumer.poll() is None, "run must keep running until it is stopped"
        consumer.send_signal(signal.SIGINT)  # Ctrl-C
        assert consumer.wait(timeout=30) == 0
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    reader.join(timeout=5)
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert any(line.startswith("billing: handled 1, failed 0") for line in rest), [*seen, *rest]
