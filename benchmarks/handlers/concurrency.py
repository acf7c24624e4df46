"""The handlers of scenario 8 (concurrency): a no-op, an I/O-bound one (sleeps 10 ms, plain and coroutine) and a
CPU-bound one."""

from __future__ import annotations

import asyncio
import time

from container_messaging import command_handler, distributed

SLEEP_SECONDS = 0.010
CPU_ITERATIONS = 60_000


class ConcurrencyHandlers:
    @distributed
    @command_handler("bench.noop")
    def noop(self, command: dict) -> None:
        pass

    @distributed
    @command_handler("bench.sleep")
    def sleep(self, command: dict) -> None:
        time.sleep(SLEEP_SECONDS)

    @distributed
    @command_handler("bench.sleepAsync")
    async def sleep_async(self, command: dict) -> None:
        await asyncio.sleep(SLEEP_SECONDS)

    @distributed
    @command_handler("bench.cpu")
    def cpu(self, command: dict) -> None:
        total = 0
        for i in range(CPU_ITERATIONS):
            total += i * i
