"""``TestClock``: time that moves only when the test says so; the in-process transport's delayed retries use it."""

from __future__ import annotations

import math
import threading
from datetime import timedelta

from container_messaging.errors import ConfigurationError

__all__ = ["TestClock"]


class TestClock:
    """A clock in seconds that stands still until :meth:`advance` moves it.

    Give it to an :class:`~container_messaging.transports.inprocess.InProcessBroker` (the test system does): a
    delayed retry of ``1000`` ms is due once the test advanced the clock by one second, without sleeping.
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, start: float = 0.0) -> None:
        self._now = _seconds(start, "start")
        self._lock = threading.Lock()

    def now(self) -> float:
        """The current time, in seconds."""
        with self._lock:
            return self._now

    def __call__(self) -> float:
        return self.now()

    def advance(self, seconds: float | timedelta) -> float:
        """Moves the clock forward by ``seconds`` (a number or a ``timedelta``, not negative); returns the new time."""
        step = _seconds(seconds.total_seconds() if isinstance(seconds, timedelta) else seconds, "advance")
        if step < 0:
            raise ConfigurationError(f"TestClock.advance: a clock never goes back, got {seconds!r}")
        with self._lock:
            self._now += step
            return self._now

    def __repr__(self) -> str:
        return f"<TestClock at {self.now():g} s>"


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"TestClock {what}: expected a finite number of seconds, got {value!r}")
    return float(value)
