"""The distributed command handler of scenario 1 and 3."""

from __future__ import annotations

from benchmarks.payloads import COMMAND_KEY, PROBE, BenchCommand
from container_messaging import command_handler, distributed


class BenchCommandHandler:
    def __init__(self) -> None:
        self.count = 0

    @distributed
    @command_handler(COMMAND_KEY)
    def handle(self, command: BenchCommand) -> None:
        self.count += 1
        PROBE.handled(command.sent_at)
