"""What the scenarios share: the run context, worker processes with bounded waits, the broker's admin side,
statistics and the result rows."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kombu

ROOT = Path(__file__).resolve().parent.parent
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "pyamqp://guest:guest@127.0.0.1:5672//")

#: the framework's default delayed retries: their TTL queues only exist after a failure, deleted just in case
_DELAY_QUEUE_SUFFIXES = (".delay.1000", ".delay.10000", ".delay.60000")


class BenchError(RuntimeError):
    """A benchmark could not run (timeout, a worker failed, the broker is unreachable): the run stops loudly."""


# -- statistics ----------------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.95 for p95)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


# -- result rows ---------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: the framework's and the baseline's raw numbers per repetition, and their medians."""

    scenario: str
    name: str
    unit: str
    framework: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    baseline_name: str = "raw kombu"
    higher_is_better: bool = True
    #: ("ratio", 0.85): framework/baseline >= 0.85; ("max", 10.0): framework median <= 10; ("below", 1.0): < 1
    target: tuple[str, float] | None = None
    note: str = ""

    @property
    def framework_median(self) -> float:
        return median(self.framework)

    @property
    def baseline_median(self) -> float | None:
        return median(self.baseline) if self.baseline else None

    @property
    def ratio(self) -> float | None:
        base = self.baseline_median
        if base is None or base == 0:
            return None
        return self.framework_median / base

    @property
    def target_text(self) -> str:
        if self.target is None:
            return ""
        kind, value = self.target
        if kind == "ratio":
            return f"ratio >= {value:g}"
        if kind == "max":
            return f"<= {value:g} {self.unit}"
        return f"< {value:g} {self.unit}"

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        kind, value = self.target
        if kind == "ratio":
            ratio = self.ratio
            return ratio is not None and ratio >= value
        if kind == "max":
            return self.framework_median <= value
        return self.framework_median < value

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "name": self.name,
            "unit": self.unit,
            "framework": self.framework,
            "baseline_name": self.baseline_name if self.baseline else None,
            "baseline": self.baseline or None,
            "framework_median": self.framework_median,
            "baseline_median": self.baseline_median,
            "ratio_framework_over_baseline": self.ratio,
            "higher_is_better": self.higher_is_better,
            "target": self.target_text or None,
            "passed": self.passed,
            "note": self.note or None,
        }


@dataclass
class ScenarioResult:
    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    #: the machine's 1-minute load average when the scenario ended (other work on the machine shows here)
    load_at_end: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "seconds": round(self.seconds, 1),
            "load_average_1min_at_end": self.load_at_end,
            "rows": [row.as_dict() for row in self.rows],
            "notes": self.notes,
            "repetitions": self.raw,
        }


# -- the run context -----------------------------------------------------------------------------------------------


@dataclass
class Context:
    """One benchmark run: options, a temp folder and a run id that makes every broker name unique."""

    quick: bool
    repeat: int
    tmp: Path
    amqp_url: str = AMQP_URL
    verbose: bool = False
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _counter: Iterator[int] = field(default_factory=itertools.count)

    def unique(self, prefix: str) -> str:
        """A name unique to this run, made of letters and digits (valid as a service name and in queue names)."""
        return f"{prefix}{self.run_id}n{next(self._counter)}"

    def folder(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=False)
        return path

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def debug(self, text: str) -> None:
        if self.verbose:
            self.log(text)


# -- worker processes ----------------------------------------------------------------------------------------------


class Worker:
    """A worker module run as ``sys.executable -m benchmarks.workers.<name> ... --result FILE``.

    Its output goes to a log file (a pipe nobody reads could block it); its result is the JSON it writes.
    """

    def __init__(
        self,
        ctx: Context,
        module: str | None,
        args: Sequence[object],
        *,
        env: Mapping[str, str] | None = None,
        label: str | None = None,
    ) -> None:
        tag = ctx.unique("w")
        self.label = f"{label or (module or 'python').rsplit('.', 1)[-1]}[{tag}]"
        self.log_path = ctx.tmp / f"{tag}.log"
        self.result_path = ctx.tmp / f"{tag}.json"
        if module is None:  # any Python command line; an argument "{result}" becomes the result file's path
            command = [sys.executable, *(str(self.result_path) if a == "{result}" else str(a) for a in args)]
        else:
            command = [
                sys.executable,
                "-m",
                f"benchmarks.workers.{module}",
                *map(str, args),
                "--result",
                str(self.result_path),
            ]
        ctx.debug(f"  $ {' '.join(command)}")
        full_env = {**os.environ, "PYTHONPATH": _pythonpath(), **(env or {})}
        with self.log_path.open("w") as output:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=full_env, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self, tail: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no output)"
        return "\n".join(lines[-tail:]) or "(no output)"

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(
                f"{self.label} exited early with code {self.process.returncode}; its output:\n{self.output()}"
            )

    def wait(self, timeout: float) -> dict[str, Any]:
        """Waits (bounded) for the worker to end; its JSON result, or a BenchError with its output."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(
                f"{self.label} did not finish within {timeout:.0f} s; its output:\n{self.output()}"
            ) from None
        if self.process.returncode != 0:
            raise BenchError(
                f"{self.label} failed with exit code {self.process.returncode}; its output:\n{self.output()}"
            )
        try:
            result: dict[str, Any] = json.loads(self.result_path.read_text())
        except (OSError, ValueError) as exc:
            raise BenchError(f"{self.label} wrote no readable result ({exc}); its output:\n{self.output()}") from exc
        return result

    def terminate(self, timeout: float = 30) -> None:
        """SIGTERM (a graceful stop), then SIGKILL if it is still running after ``timeout`` seconds."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)


def _pythonpath() -> str:
    existing = os.environ.get("PYTHONPATH")
    return f"{ROOT}{os.pathsep}{existing}" if existing else str(ROOT)


def stop_all(workers: Iterable[Worker]) -> None:
    for worker in workers:
        worker.kill()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, workers: Sequence[Worker] = ()) -> None:
    """Polls ``condition`` until true; a BenchError after ``timeout`` seconds or when a worker died meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        for worker in workers:
            worker.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def write_result(path: str, data: Mapping[str, Any]) -> None:
    """What a worker hands back (written atomically, so the orchestrator never reads half a file)."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- the broker's admin side ---------------------------------------------------------------------------------------


class Broker:
    """A short-lived admin connection: waits for consumers on queues, deletes what a repetition declared."""

    def __init__(self, url: str) -> None:
        self._connection = kombu.Connection(url, connect_timeout=5)
        try:
            self._connection.ensure_connection(max_retries=2, timeout=5)
        except Exception as exc:
            raise BenchError(f"RabbitMQ is not reachable at {url.rsplit('@', maxsplit=1)[-1]}: {exc}") from exc
        self._channel = self._connection.channel()

    def close(self) -> None:
        self._connection.release()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def server_version(self) -> str:
        properties = getattr(self._connection.connection, "server_properties", {}) or {}
        version = properties.get("version", "unknown")
        return version.decode() if isinstance(version, bytes) else str(version)

    def consumers(self, queue: str) -> int | None:
        """The queue's consumer count (None when the queue does not exist yet)."""
        try:
            return int(self._channel.queue_declare(queue=queue, passive=True).consumer_count)
        except Exception as exc:
            if getattr(exc, "code", None) == 404:
                self._channel = self._connection.channel()  # NOT_FOUND closed the channel
                return None
            raise

    def wait_consumers(self, queues: Iterable[str], workers: Sequence[Worker], timeout: float = 60) -> None:
        """The start barrier: every queue exists and has its one consumer attached."""
        pending = list(queues)
        wait_for(
            lambda: all((self.consumers(q) or 0) >= 1 for q in pending),
            timeout,
            f"consumers on {', '.join(pending)}",
            workers,
        )

    def delete(self, *, queues: Iterable[str] = (), exchanges: Iterable[str] = ()) -> None:
        """Deletes exactly the names given (this run's own), never anything else."""
        for queue in queues:
            self._quietly("queue_delete", queue=queue)
        for exchange in exchanges:
            self._quietly("exchange_delete", exchange=exchange)

    def delete_service(self, service: str, exchange: str | None = None) -> None:
        """The queues the framework declares for ``service`` (and, if given, the run's exchange)."""
        queue = f"distributed_{service}"
        queues = [queue, f"{queue}.dead_letter", *(queue + suffix for suffix in _DELAY_QUEUE_SUFFIXES)]
        self.delete(queues=queues, exchanges=[exchange] if exchange else [])

    def _quietly(self, method: str, **kwargs: str) -> None:
        """Runs a channel method; NOT_FOUND (the name is already gone) is fine and reopens the channel."""
        try:
            getattr(self._channel, method)(**kwargs)
        except Exception as exc:
            if getattr(exc, "code", None) not in (404,):
                raise
            self._channel = self._connection.channel()


def worker_timeout(messages: int, floor: float = 120.0) -> float:
    """A generous bound for a worker handling ``messages`` on this 2-core machine (at >= 100 msgs/s)."""
    return floor + messages / 100
