"""Scenario 5: bootstrap time with 1,000 handler classes, and the memory of an idle consumer.

Bootstrap: a generated package (10 modules of 100 handler classes, each with one ``@command_handler`` method taking
its own attrs class) scanned by ``MessagingContainer.from_dict`` in a fresh process. Idle RSS: the
``container-messaging run`` command with an example-sized configuration (the billing example's handlers) on
RabbitMQ, read with psutil once it is consuming. Baselines, for context: a process that only imports kombu,
dependency_injector, attrs and cattrs (import time, RSS), and a raw kombu consumer idling on a queue (RSS).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

from benchmarks.common import ROOT, BenchError, Broker, Context, Row, ScenarioResult, Worker, wait_for

MODULES = 10
IDLE_SETTLE_SECONDS = 1.0
MIB = 1024 * 1024
IMPORTS = "kombu, dependency_injector, attrs, cattrs"
_TIMED_IMPORTS = (
    "import json, sys, time\n"
    "start = time.perf_counter()\n"
    f"import {IMPORTS}\n"
    "json.dump({'import_s': time.perf_counter() - start}, open(sys.argv[1], 'w'))\n"
)
_IDLE_IMPORTS = f"import time\nimport {IMPORTS}\nprint('ready', flush=True)\ntime.sleep(600)\n"


def generate(folder: Path, package: str, classes: int) -> None:
    """Writes ``package`` (``MODULES`` modules) with ``classes`` handler classes into ``folder``."""
    root = folder / package
    root.mkdir(parents=True)
    (root / "__init__.py").write_text('"""Generated handlers for the bootstrap benchmark."""\n')
    per_module = classes // MODULES
    for module in range(MODULES):
        parts = [
            f'"""Generated: handlers {module * per_module} to {(module + 1) * per_module - 1}."""\n\n'
            "from __future__ import annotations\n\n"
            "import attrs\n\n"
            "from container_messaging import command_handler\n"
        ]
        for i in range(module * per_module, (module + 1) * per_module):
            parts.append(
                f"\n\n@attrs.frozen\nclass Command{i}:\n    person_id: str\n    amount: int\n\n\n"
                f"class Handler{i}:\n"
                f'    @command_handler("bench.k{i}")\n'
                f"    def handle(self, command: Command{i}) -> None:\n"
                "        pass\n"
            )
        (root / f"handlers_{module}.py").write_text("".join(parts))


def _rss(worker: Worker) -> float:
    return float(psutil.Process(worker.pid).memory_info().rss) / MIB


def idle_framework(ctx: Context, broker: Broker) -> float:
    service = ctx.unique("benchidle")
    exchange = f"bench.{service}"
    config = ctx.tmp / f"{service}.yaml"
    config.write_text(
        f"service_name: {service}\nscan: [examples.billing]\n"
        f"transport:\n  url: '{ctx.amqp_url}'\ndistribution:\n  exchange: {exchange}\n"
    )
    worker = Worker(ctx, None, ["-m", "container_messaging", "--config", config, "run", service], label="cli-run")
    try:
        broker.wait_consumers([f"distributed_{service}"], [worker])
        time.sleep(IDLE_SETTLE_SECONDS)
        worker.check_alive()
        return _rss(worker)
    finally:
        worker.terminate()
        broker.delete_service(service, exchange)


def idle_imports(ctx: Context) -> float:
    worker = Worker(ctx, None, ["-c", _IDLE_IMPORTS], label="imports-idle")
    try:
        wait_for(lambda: "ready" in worker.output(), 60, "the import-only process", [worker])
        time.sleep(IDLE_SETTLE_SECONDS)
        return _rss(worker)
    finally:
        worker.kill()


def idle_kombu(ctx: Context, broker: Broker) -> float:
    name = ctx.unique("benchidlekombu")
    queue, exchange = f"bench.{name}.queue", f"bench.{name}"
    worker = Worker(
        ctx,
        "kombu_consumer",
        [
            "--url",
            ctx.amqp_url,
            "--queue",
            queue,
            "--exchange",
            exchange,
            "--binding",
            name,
            "--count",
            1,
            "--idle",
            "--timeout",
            600,
        ],
    )
    try:
        broker.wait_consumers([queue], [worker])
        time.sleep(IDLE_SETTLE_SECONDS)
        worker.check_alive()
        return _rss(worker)
    finally:
        worker.kill()
        broker.delete(queues=[queue], exchanges=[exchange])


def run(ctx: Context) -> ScenarioResult:
    classes = 1_000
    result = ScenarioResult("5", f"Bootstrap ({classes:,} handler classes) and idle consumer memory")
    folder = ctx.folder("bootstrap")
    package = f"benchboot{ctx.run_id}"
    generate(folder, package, classes)
    env = {"PYTHONPATH": f"{folder}{os.pathsep}{ROOT}"}
    baseline = "imports only"

    def bootstrap() -> tuple[dict[str, float], float]:
        start = time.perf_counter()
        figures = Worker(ctx, "bootstrap", [package], env=env).wait(120)
        wall = time.perf_counter() - start
        if figures["handlers"] != classes:
            raise BenchError(f"the container found {figures['handlers']} handlers, expected {classes}")
        return figures, wall

    warm_up, warm_wall = bootstrap()  # compiles the generated modules to bytecode; not counted
    result.notes.append(
        f"A first, discarded run compiled the generated modules to bytecode: from_dict took "
        f"{warm_up['from_dict_s']:.3f} s, the whole process {warm_wall:.3f} s."
    )
    from_dict = Row("5", f"from_dict scanning {classes:,} handlers", "s", higher_is_better=False, target=("below", 1.0))
    imports = Row(
        "5", "import time: container_messaging vs the 4 libraries", "s", baseline_name=baseline, higher_is_better=False
    )
    wall = Row("5", "process wall: start, build container, exit", "s", baseline_name=baseline, higher_is_better=False)
    rss = Row(
        "5",
        "idle consumer RSS vs import-only process",
        "MiB",
        baseline_name=baseline,
        higher_is_better=False,
        target=("below", 60.0),
    )
    rss_kombu = Row("5", "idle consumer RSS vs raw kombu idle consumer", "MiB", higher_is_better=False)
    with Broker(ctx.amqp_url) as broker:
        for rep in range(ctx.repeat):
            ctx.log(f"  5 repetition {rep + 1}/{ctx.repeat}")
            fw, fw_wall = bootstrap()
            start = time.perf_counter()
            bl = Worker(ctx, None, ["-c", _TIMED_IMPORTS, "{result}"], label="imports").wait(120)
            bl_wall = time.perf_counter() - start
            from_dict.framework.append(fw["from_dict_s"])
            imports.framework.append(fw["import_s"])
            imports.baseline.append(bl["import_s"])
            wall.framework.append(fw_wall)
            wall.baseline.append(bl_wall)
            fw_rss = idle_framework(ctx, broker)
            rss.framework.append(fw_rss)
            rss.baseline.append(idle_imports(ctx))
            rss_kombu.framework.append(fw_rss)
            rss_kombu.baseline.append(idle_kombu(ctx, broker))
            result.raw.append(
                {
                    "repetition": rep + 1,
                    "framework": {**fw, "wall_s": fw_wall, "idle_rss_mib": fw_rss},
                    "baseline": {
                        **bl,
                        "wall_s": bl_wall,
                        "imports_rss_mib": rss.baseline[-1],
                        "kombu_idle_rss_mib": rss_kombu.baseline[-1],
                    },
                }
            )
    result.rows += [from_dict, imports, wall, rss, rss_kombu]
    result.notes.append(f"'imports only' is a fresh `python -c 'import {IMPORTS}'` process.")
    result.notes.append(
        "RSS in MiB (psutil rss) after the consumer has been idle for 1 s; the framework's consumer is the "
        "`container-messaging run` command with the billing example's handlers on RabbitMQ."
    )
    return result
