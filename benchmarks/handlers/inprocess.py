"""The in-process command handler of scenario 4 (routed by the class of its parameter)."""

from __future__ import annotations

import attrs

from container_messaging import command_handler


@attrs.frozen
class InProcessCommand:
    person_id: str
    amount: int


class InProcessHandler:
    def __init__(self) -> None:
        self.count = 0

    @command_handler
    def handle(self, command: InProcessCommand) -> None:
        self.count += 1
