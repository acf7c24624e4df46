"""``python -m benchmarks``: runs the scenarios, prints the table and writes ``benchmarks/results.json``.

Every scenario measures the framework and its baseline in the same run, alternating (framework, baseline,
framework, baseline, ...), and reports medians and the ratio framework/baseline.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import AMQP_URL, BenchError, Broker, Context, Row, ScenarioResult
from benchmarks.payloads import body
from benchmarks.scenarios import (
    amqp_commands,
    amqp_fanout,
    bootstrap,
    concurrency,
    embedded,
    inprocess,
    observability,
    others,
    outbox,
)

SCENARIOS: dict[str, tuple[str, Callable[[Context], ScenarioResult]]] = {
    "1": ("distributed commands over RabbitMQ", amqp_commands.run),
    "2": ("event fan-out to 3 services", amqp_fanout.run),
    "3": ("embedded transport, 2 processes", embedded.run),
    "4": ("in-process CommandBus", inprocess.run),
    "5": ("bootstrap and idle RSS", bootstrap.run),
    "6": ("other libraries (if installed)", others.run),
    "7": ("outbox on PostgreSQL + RabbitMQ", outbox.run),
    "8": ("concurrency: threads, batch, consumer, concurrency N, processes", concurrency.run),
    "9": ("middleware hooks: no-op and OpenTelemetry", observability.run),
}
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="container_messaging against raw kombu (and other baselines); see BENCHMARKS.md",
    )
    parser.add_argument("--quick", action="store_true", help="small N, 1 repetition unless --repeat: a smoke run")
    parser.add_argument("--repeat", type=int, help="repetitions per side (default 3; 1 with --quick)")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios to run (default all: {','.join(SCENARIOS)})",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"results file (default {DEFAULT_OUTPUT})")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the workers' logs and results")
    parser.add_argument("--verbose", action="store_true", help="print every worker command line")
    args = parser.parse_args(argv)
    args.repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    unknown = [key for key in args.only.split(",") if key not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return args


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _rabbitmqctl_version() -> str | None:
    if shutil.which("rabbitmqctl") is None:
        return None
    try:
        done = subprocess.run(["rabbitmqctl", "version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else None


def machine(ctx: Context, scenarios: list[str]) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_physical": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "kombu": _version("kombu"),
        "amqp": _version("amqp"),
        "dependency_injector": _version("dependency-injector"),
        "attrs": _version("attrs"),
        "cattrs": _version("cattrs"),
        "container_messaging": _version("container-messaging"),
        "message_body_bytes": len(body(123, time.time())),
        "quick": ctx.quick,
        "repeat": ctx.repeat,
        "scenarios": scenarios,
    }
    if any(key in scenarios for key in ("1", "2", "5", "7", "8")):
        with Broker(ctx.amqp_url) as broker:
            info["rabbitmq"] = broker.server_version()
    info["rabbitmqctl_version"] = _rabbitmqctl_version()
    return info


# -- the table -----------------------------------------------------------------------------------------------------


def _number(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if unit == "msgs/s":
        return f"{value:,.0f}"
    if unit in ("us/msg", "ms"):
        return f"{value:.2f}"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:.1f}"


def _verdict(row: Row) -> str:
    passed = row.passed
    return "" if passed is None else ("PASS" if passed else "FAIL")


def table(results: list[ScenarioResult], repeat: int) -> str:
    header = ["#", "measure", "unit", "framework", "baseline", "baseline is", "fw/base", "target", "result"]
    lines: list[list[str]] = []
    for scenario in results:
        for row in scenario.rows:
            ratio = row.ratio
            lines.append(
                [
                    row.scenario,
                    row.name,
                    row.unit,
                    _number(row.framework_median, row.unit),
                    _number(row.baseline_median, row.unit),
                    row.baseline_name if row.baseline else "",
                    f"{ratio:.2f}" if ratio is not None else "",
                    row.target_text,
                    _verdict(row),
                ]
            )
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    right = {3, 4, 6}

    def fmt(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    out = [
        fmt(header),
        "|" + "|".join(("-" * (w + 1) + ":" if i in right else "-" * (w + 2)) for i, w in enumerate(widths)) + "|",
    ]
    out += [fmt(line) for line in lines]
    out.append(f"(medians of {repeat} repetition(s) per side; fw/base = framework median / baseline median)")
    return "\n".join(out)


# -- main ------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = args.only.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="container-messaging-bench-"))
    ctx = Context(quick=args.quick, repeat=args.repeat, tmp=tmp, amqp_url=AMQP_URL, verbose=args.verbose)
    results: list[ScenarioResult] = []
    report: dict[str, Any] = {"machine": {}, "scenarios": [], "error": None}
    started = time.monotonic()
    code = 0
    try:
        report["machine"] = machine(ctx, selected)
        ctx.log(
            f"benchmarks: run {ctx.run_id}, scenarios {','.join(selected)}, {ctx.repeat} repetition(s) per side"
            f"{' (quick)' if ctx.quick else ''}; worker logs in {tmp}"
        )
        for key in selected:
            title, scenario = SCENARIOS[key]
            ctx.log(f"scenario {key}: {title}")
            begun = time.monotonic()
            result = scenario(ctx)
            result.seconds = time.monotonic() - begun
            result.load_at_end = round(os.getloadavg()[0], 2)
            results.append(result)
            ctx.log(f"scenario {key} done in {result.seconds:.0f} s (load average {result.load_at_end})")
    except BenchError as exc:
        report["error"] = str(exc)
        print(f"\nBENCHMARK FAILED: {exc}\n(worker logs kept in {tmp})", file=sys.stderr, flush=True)
        args.keep_tmp = True
        code = 1
    except KeyboardInterrupt:
        report["error"] = "interrupted"
        print(f"\ninterrupted (worker logs kept in {tmp})", file=sys.stderr, flush=True)
        args.keep_tmp = True
        code = 130
    finally:
        report["scenarios"] = [result.as_dict() for result in results]
        report["total_seconds"] = round(time.monotonic() - started, 1)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    info = report["machine"]
    print()
    if info:
        print(
            f"machine: {info['cpu_count']} CPUs, {info['memory_gib']} GiB, Python {info['python']}, "
            f"kombu {info['kombu']}, RabbitMQ {info.get('rabbitmq', 'n/a')}, {info['date']}; "
            f"message body {info['message_body_bytes']} bytes"
        )
    print(table(results, ctx.repeat))
    for result in results:
        for note in result.notes:
            print(f"note [{result.key}]: {note}")
    print(f"results: {args.output} ({report['total_seconds']:.0f} s)")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
