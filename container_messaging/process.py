"""What a run loop (an endpoint's consumer, the outbox relay) needs of its process: stopping on signals, and the
memory it uses."""

from __future__ import annotations

import logging
import os
import resource
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["on_stop_signals", "rss_megabytes", "stopping_on_signals"]

log = logging.getLogger("container_messaging.consumer")


def rss_megabytes() -> float:
    """The process's resident memory in megabytes (``/proc``, or the peak where there is none)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1_048_576
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def stopping_on_signals(
    stop: Callable[[str], None], stopping: Callable[[], bool], in_hand: str, left: str
) -> Iterator[None]:
    """SIGINT and SIGTERM call ``stop``: the loop finishes ``in_hand`` ("the current message"), then stops; a second
    signal while ``stopping()`` stops at once (``KeyboardInterrupt``), and the log says what happens to what was in
    hand (``left``: "the message in hand stays on the broker"). Only the main thread can set signal handlers:
    elsewhere nothing changes. The previous handlers are put back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stopping():
            log.warning("second signal %s: stopping now; %s", name, left)
            raise KeyboardInterrupt
        log.warning("signal %s: stopping after %s (a second signal stops at once)", name, in_hand)
        stop(f"signal {name}")

    with on_stop_signals(on_signal):
        yield


@contextmanager
def on_stop_signals(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """``handler`` for SIGINT and SIGTERM while the block runs (main thread only); the previous handlers after it."""
    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, previous_handler in previous.items():
            signal.signal(signum, previous_handler)
