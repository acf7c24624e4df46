"""The main job: three example services, each its own OS process, talk over the embedded transport.

``python -m examples.demo`` declares the services' queues, starts the billing, ticket and user consumers, then the
user service sends three ``billing.changeDetails`` commands. Billing handles each and publishes
``billing.detailsWereChanged``, which the user and ticket services both receive. Every consumer stops by itself
after its messages (``--handled-message-limit``), and the demo checks that each handled what it should.
Set CONTAINER_MESSAGING_URL (e.g. ``pyamqp://guest:guest@127.0.0.1:5672//``) to run the same over RabbitMQ.

``--mode amqp`` (the default) runs the services of ``configs/`` with Ecotone's AMQP distributed bus (one endpoint
per service, named after it); ``--mode service_map`` runs those of ``configs/service_map/`` with the Service Map of
``configs/shared/service_map.yaml`` (one endpoint per service, named after its channel). The handlers are the same.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"billing": "billing.yaml", "ticket": "ticket.ini", "user": "user.yaml"}
#: per mode: the folder of the services' configurations, and each service's endpoint
MODES = {
    "amqp": (ROOT / "configs", {"billing": "billing", "ticket": "ticket", "user": "user"}),
    "service_map": (
        ROOT / "configs" / "service_map",
        {"billing": "distributed_billing", "ticket": "distributed_ticket", "user": "distributed_user"},
    ),
}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "container_messaging", *args]


def _pump(name: str, stream: object, lines: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.append(line)
        print(f"{name:>8} | {line}", end="", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3, help="how many commands the user service sends")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the consumers")
    parser.add_argument("--mode", choices=sorted(MODES), default="amqp", help="the distributed bus's mode")
    parser.add_argument(
        "--config-dir", help="where billing.yaml, ticket.ini and user.yaml are (default: the mode's folder)"
    )
    args = parser.parse_args(argv)
    default_dir, endpoints = MODES[args.mode]

    data = tempfile.mkdtemp(prefix="container-messaging-demo-")
    env = {
        **os.environ,
        "CONTAINER_MESSAGING_DATA": data,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    url = env.get("CONTAINER_MESSAGING_URL", "embedded://")
    print(
        f"mode: {args.mode}   transport: {url.split('@')[-1] if '@' in url else url}   data folder: {data}\n",
        flush=True,
    )

    configs = {name: str(Path(args.config_dir or default_dir) / file) for name, file in SERVICES.items()}
    for name, config in configs.items():
        subprocess.run(_cli("--config", config, "setup", endpoints[name]), cwd=ROOT, env=env, check=True)

    consumers: dict[str, subprocess.Popen[str]] = {}
    outputs: dict[str, list[str]] = {}
    pumps: list[threading.Thread] = []
    for name, config in configs.items():
        process = subprocess.Popen(
            _cli(
                "--config",
                config,
                "run",
                endpoints[name],
                "--handled-message-limit",
                str(args.count),
                "--execution-time-limit",
                str(int(args.timeout * 1000)),
            ),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        consumers[name] = process
        outputs[name] = []
        pump = threading.Thread(target=_pump, args=(name, process.stdout, outputs[name]), daemon=True)
        pump.start()
        pumps.append(pump)

    sender = subprocess.run(
        [sys.executable, "-m", "examples.user.main", "--count", str(args.count), "--config", configs["user"]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in (sender.stdout + sender.stderr).splitlines():
        print(f"{'sender':>8} | {line}", flush=True)

    failed = sender.returncode != 0
    for process in consumers.values():
        try:
            process.wait(timeout=args.timeout + 10)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(timeout=10)
            failed = True
    for pump in pumps:
        pump.join(timeout=5)

    expected = {"billing": "[billing] changed details", "user": "[user] person", "ticket": "[ticket] opened"}
    print()
    for name, marker in expected.items():
        got = sum(marker in line for line in outputs[name])
        ok = got == args.count and consumers[name].returncode == 0
        failed |= not ok
        print(f"{'ok ' if ok else 'FAIL'} {name}: handled {got} of {args.count} (exit {consumers[name].returncode})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
