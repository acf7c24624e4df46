"""The distributed command handler of scenario 8 (counts what it handles)."""

from __future__ import annotations

from container_messaging import command_handler, distributed


class ObservedHandler:
    def __init__(self) -> None:
        self.count = 0

    @distributed
    @command_handler("bench.observed")
    def handle(self, command: bytes) -> None:
        self.count += 1
