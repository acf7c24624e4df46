"""In-process cost: ``container.get(CommandBus).send(command)`` to its handler vs calling the handler method
directly, in alternating blocks, the same command object every time."""

from __future__ import annotations

import argparse
import time

from benchmarks.common import write_result
from benchmarks.handlers.inprocess import InProcessCommand, InProcessHandler
from container_messaging import CommandBus, MessagingContainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, required=True, help="per side")
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)

    container = MessagingContainer.from_dict(
        {"scan": ["benchmarks.handlers.inprocess"], "transport": {"url": "memory://"}}
    )
    send = container.get(CommandBus).send
    handler = container.get(InProcessHandler)
    handle = handler.handle
    command = InProcessCommand("p-000123", 123)
    for _ in range(2_000):  # warm-up: caches, first-call paths
        send(command)
        handle(command)
    block = max(1, args.iterations // args.blocks)
    clock = time.perf_counter
    bus_seconds = direct_seconds = 0.0
    bus_blocks: list[float] = []
    direct_blocks: list[float] = []
    for _ in range(args.blocks):
        start = clock()
        for _ in range(block):
            send(command)
        elapsed = clock() - start
        bus_seconds += elapsed
        bus_blocks.append(elapsed / block * 1e6)
        start = clock()
        for _ in range(block):
            handle(command)
        elapsed = clock() - start
        direct_seconds += elapsed
        direct_blocks.append(elapsed / block * 1e6)
    total = block * args.blocks
    expected = 2 * (2_000 + total)
    if handler.count != expected:
        raise SystemExit(f"the handler ran {handler.count} times, expected {expected}")
    write_result(
        args.result,
        {
            "iterations": total,
            "bus_us": bus_seconds / total * 1e6,
            "direct_us": direct_seconds / total * 1e6,
            "overhead_us": (bus_seconds - direct_seconds) / total * 1e6,
            "bus_blocks_us": bus_blocks,
            "direct_blocks_us": direct_blocks,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
