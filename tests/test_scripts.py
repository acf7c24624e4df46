"""scripts/demo.sh and scripts/test.sh install the project only when pyproject.toml changed since the last install.

The scripts run for real (bash) on a copy of the project's scripts/ and pyproject.toml in a temporary folder, with
a stand-in Python: `-m venv` makes a .venv whose python logs every `pip` call and every module run instead of doing
them, and runs everything else (the hash of pyproject.toml) with the real interpreter.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FAKE_PYTHON = textwrap.dedent(
    f"""\
    #!/bin/sh
    if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
      mkdir -p "$3/bin"
      cat > "$3/bin/python" <<'VENV_PYTHON'
    #!/bin/sh
    log="$(dirname "$0")/../calls.log"
    if [ "$1" = "-c" ]; then exec "{sys.executable}" "$@"; fi
    echo "$*" >> "$log"
    if [ "$2" = "pip" ] && [ -n "$FAIL_PIP" ]; then echo "pip failed as asked"; exit 1; fi
    exit 0
    VENV_PYTHON
      chmod +x "$3/bin/python"
      exit 0
    fi
    echo "unexpected call: $*" >&2
    exit 2
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh clone as far as the scripts see: scripts/ and pyproject.toml, no .venv."""
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    python = tmp_path / "fake-python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return tmp_path


def run(project: Path, script: str, *args: str, fail_pip: bool = False) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(project / "fake-python"), "FAIL_PIP": "1" if fail_pip else ""}
    return subprocess.run(
        ["bash", str(project / "scripts" / script), *args],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def calls(project: Path) -> list[str]:
    log = project / ".venv" / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def pip_installs(project: Path) -> list[str]:
    return [call for call in calls(project) if call.startswith("-m pip install")]


def test_demo_installs_on_a_fresh_clone_and_not_again(project: Path) -> None:
    """demo.sh creates .venv and installs the project on a fresh clone, then runs the demo; a second run only runs
    the demo."""
    first = run(project, "demo.sh", "--count", "1")
    assert first.returncode == 0, first.stderr
    assert pip_installs(project) == ["-m pip install --disable-pip-version-check -e ."]
    second = run(project, "demo.sh", "--count", "1")
    assert second.returncode == 0, second.stderr
    assert pip_installs(project) == ["-m pip install --disable-pip-version-check -e ."]
    assert [call for call in calls(project) if "examples.demo" in call] == ["-m examples.demo --count 1"] * 2


def test_test_sh_installs_again_only_when_pyproject_changes(project: Path) -> None:
    """test.sh installs '.[dev]' once; touching pyproject.toml does not reinstall, changing its content does."""
    assert run(project, "test.sh", "-q").returncode == 0
    assert run(project, "test.sh", "-q").returncode == 0
    assert len(pip_installs(project)) == 1
    pyproject = project / "pyproject.toml"
    pyproject.touch()
    assert run(project, "test.sh", "-q").returncode == 0
    assert len(pip_installs(project)) == 1
    pyproject.write_text(pyproject.read_text() + "\n# a new dependency would go here\n")
    assert run(project, "test.sh", "-q").returncode == 0
    assert pip_installs(project) == ["-m pip install --disable-pip-version-check -e .[dev]"] * 2
    assert [call for call in calls(project) if call.startswith("-m pytest")] == ["-m pytest -q"] * 4


def test_demo_after_test_installs_what_the_demo_needs_once(project: Path) -> None:
    """Each set of extras is installed once: test.sh ('.[dev]') then demo.sh ('.') twice installs each once."""
    assert run(project, "test.sh").returncode == 0
    assert run(project, "demo.sh").returncode == 0
    assert run(project, "demo.sh").returncode == 0
    assert [call.rsplit(" ", 1)[-1] for call in pip_installs(project)] == [".[dev]", "."]


def test_a_failed_install_is_shown_and_tried_again(project: Path) -> None:
    """When pip fails, demo.sh prints pip's log, stops with an error and does not run the demo; the next run
    installs again."""
    failed = run(project, "demo.sh", fail_pip=True)
    assert failed.returncode != 0
    assert "pip failed as asked" in failed.stderr
    assert "installing the project failed" in failed.stderr
    assert not [call for call in calls(project) if "examples.demo" in call]
    assert run(project, "demo.sh").returncode == 0
    assert len(pip_installs(project)) == 2
