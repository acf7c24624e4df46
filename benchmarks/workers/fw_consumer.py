"""A framework consumer process: ``container.run(service, handled_message_limit=N)`` on one endpoint.

The handler module (``--scan``) counts through :data:`benchmarks.payloads.PROBE`; the result has the time of the
first and the last handled message. ``--profile FILE`` writes cProfile stats of the run (for finding hot spots).
"""

from __future__ import annotations

import argparse
import cProfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import median, percentile, write_result
from benchmarks.payloads import PROBE
from container_messaging import MessagingContainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--scan", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--data-folder")
    parser.add_argument("--polling-interval", type=float, default=0.05)
    parser.add_argument("--latencies", action="store_true")
    parser.add_argument("--setup-only", action="store_true", help="declare the endpoint, then exit")
    parser.add_argument("--ready", help="a file touched once the endpoint is declared, just before run()")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--profile")
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)

    transport: dict[str, Any] = {
        "url": args.url,
        "prefetch_count": args.prefetch,
        "polling_interval": args.polling_interval,
    }
    if args.data_folder:
        transport["data_folder"] = args.data_folder
    container = MessagingContainer.from_dict(
        {
            "service_name": args.service,
            "scan": [args.scan],
            "transport": transport,
            "distribution": {"exchange": args.exchange},
        }
    )
    if args.latencies:
        PROBE.latencies = []
    with container:
        container.setup(args.service)
        if args.setup_only:
            write_result(args.result, {"setup": True})
            return 0
        if args.ready:
            Path(args.ready).touch()
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        result = container.run(
            args.service, handled_message_limit=args.count, execution_time_limit=int(args.timeout * 1000)
        )
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
    latencies = PROBE.latencies or []
    write_result(
        args.result,
        {
            "count": PROBE.count,
            "first": PROBE.first,
            "last": PROBE.last,
            "handled": result.handled,
            "failed": result.failed,
            "duplicates": result.duplicates,
            "stop_reason": result.stop_reason,
            "latency_median": median(latencies) if latencies else None,
            "latency_p95": percentile(latencies, 0.95) if latencies else None,
            "latency_max": max(latencies) if latencies else None,
            "stopped": time.time(),
        },
    )
    if PROBE.count != args.count or result.failed:
        print(f"expected {args.count} handled, got {PROBE.count} ({result})", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
