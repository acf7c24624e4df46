"""The distributed event subscriber of scenario 2 (each of the three services scans this module)."""

from __future__ import annotations

from benchmarks.payloads import EVENT_PATTERN, PROBE, BenchCommand
from container_messaging import distributed, event_handler


class BenchEventSubscriber:
    def __init__(self) -> None:
        self.count = 0

    @distributed
    @event_handler(EVENT_PATTERN)
    def on_event(self, event: BenchCommand) -> None:
        self.count += 1
        PROBE.handled(event.sent_at)
