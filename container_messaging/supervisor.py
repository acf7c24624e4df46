"""``run NAME --processes N``: N consumer processes of one endpoint, kept running.

The supervisor starts each child as ``python -m container_messaging ... run NAME`` (the same options, without
``--processes``), each in a session of its own so that a terminal's Ctrl-C reaches the supervisor alone. A child that
crashes (an exit status other than 0, or killed by a signal) is started again after a back-off that grows with the
crashes in a row of its slot (reset once a child ran ``stable_after`` seconds); a child that ends with 0 (a run limit,
``--finish-when-no-messages``) is not; one that exits with the usage status (2: a configuration error) stops every
other (starting it again cannot help). SIGTERM or SIGINT is passed on to every child as SIGTERM: each stops after the
messages in hand, and the supervisor exits when they all did; a second signal is passed on too (stop at once).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Final

import attrs

from container_messaging.errors import ConfigurationError
from container_messaging.process import on_stop_signals

__all__ = ["Supervisor"]

log = logging.getLogger("container_messaging.supervisor")

_BACKOFF: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_EXIT_USAGE: Final = 2


@attrs.define
class _Slot:
    """One of the N children: its process, when it started, its crashes in a row and when to start it again."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    crashes: int = 0
    restart_at: float | None = None
    last_status: int = 0


class Supervisor:
    """Runs ``processes`` copies of ``command`` (the child's argv) until they end or a signal stops them."""

    def __init__(self, name: str, command: Sequence[str], processes: int, *, stable_after: float = 30.0) -> None:
        if not isinstance(processes, int) or isinstance(processes, bool) or processes <= 0:
            raise ConfigurationError(f"run option processes must be a positive whole number, got {processes!r}")
        self.name = name
        self.command = list(command)
        self.processes = processes
        self.stable_after = stable_after
        self._signals: list[int] = []
        self._wake = threading.Event()

    def run(self) -> int:
        """Supervises until every child ended; returns 0 when each ended with 0 (or stopped when told), else the
        status of a child that failed."""
        slots = [_Slot(i) for i in range(self.processes)]
        with self._handling_signals():
            for slot in slots:
                self._start(slot)
            forwarded = 0
            while True:
                if len(self._signals) > forwarded:
                    for slot in slots:
                        if slot.process is not None and slot.process.poll() is None:
                            slot.process.send_signal(signal.SIGTERM)
                    forwarded = len(self._signals)
                self._reap(slots)
                running = [slot for slot in slots if slot.process is not None]
                waiting = [slot for slot in slots if slot.restart_at is not None]
                if not running and (self._signals or not waiting):
                    break
                now = time.monotonic()
                for slot in waiting:
                    if not self._signals and slot.restart_at is not None and slot.restart_at <= now:
                        self._start(slot)
                self._wake.wait(0.1)
                self._wake.clear()
        failed = [slot.last_status for slot in slots if slot.last_status != 0]
        return 0 if self._signals or not failed else failed[0]

    def _start(self, slot: _Slot) -> None:
        slot.restart_at = None
        slot.process = subprocess.Popen(self.command, start_new_session=True)
        slot.started = time.monotonic()
        log.info(
            "endpoint %r: process %d of %d started (pid %d)",
            self.name,
            slot.index + 1,
            self.processes,
            slot.process.pid,
        )

    def _reap(self, slots: Sequence[_Slot]) -> None:
        for slot in slots:
            process = slot.process
            if process is None or (status := process.poll()) is None:
                continue
            slot.process, slot.last_status = None, status
            if self._signals or status == 0:
                log.info(
                    "endpoint %r: process %d (pid %d) ended with %d", self.name, slot.index + 1, process.pid, status
                )
                continue
            if status == _EXIT_USAGE:
                log.error(
                    "endpoint %r: process %d (pid %d) exited with a configuration error: stopping",
                    self.name,
                    slot.index + 1,
                    process.pid,
                )
                self._signals.append(signal.SIGTERM)
                continue
            ran = time.monotonic() - slot.started
            slot.crashes = 1 if ran >= self.stable_after else slot.crashes + 1
            delay = _BACKOFF[min(slot.crashes - 1, len(_BACKOFF) - 1)]
            how = f"was killed by signal {signal.Signals(-status).name}" if status < 0 else f"exited with {status}"
            log.warning(
                "endpoint %r: process %d (pid %d) %s after %.1f s; starting it again in %.1f s",
                self.name,
                slot.index + 1,
                process.pid,
                how,
                ran,
                delay,
            )
            slot.restart_at = time.monotonic() + delay

    @contextmanager
    def _handling_signals(self) -> Iterator[None]:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.warning(
                "signal %s: passing it on to the processes of endpoint %r", signal.Signals(signum).name, self.name
            )
            self._signals.append(signum)
            self._wake.set()

        with on_stop_signals(on_signal):
            yield
