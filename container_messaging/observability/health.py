"""Health: can this service work? What ``container.health()`` and ``container-messaging health`` check.

1. each broker the endpoints use: a connection is made and answers (one that refuses the credentials is unhealthy);
2. each endpoint's queue: it exists (where the transport can tell) and how many messages wait in it;
3. each endpoint's dead letter queue: how many messages it holds; more than ``dead_letter_threshold`` is unhealthy
   (no threshold: the size is only reported, so a pod is not restarted for messages a restart cannot fix).

Every check together is bounded by ``timeout`` seconds: a broker that does not answer makes the report unhealthy
when the time is up, it never hangs the caller (the attempt goes on in a daemon thread until the transport's own
``connect_timeout`` ends it). The report is a value: ``healthy``, one :class:`Check` per line, ``as_dict()`` for JSON.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, Final

import attrs

from container_messaging.errors import BrokerRefusedError, MessagingError
from container_messaging.transports.base import BaseTransport, dead_letter_queue

__all__ = ["Check", "DEFAULT_TIMEOUT", "HealthReport", "check_health"]

#: Seconds every check together may take.
DEFAULT_TIMEOUT: Final = 10.0


@attrs.frozen
class Check:
    """One thing checked: ``name`` (``broker``, ``queue``, ``dead letter``), what it is about (``subject``: the
    broker's masked URL, a queue name), whether it is healthy, a ``detail`` in words and, for a queue, its
    ``messages``."""

    name: str
    subject: str
    healthy: bool
    detail: str
    messages: int | None = None

    def __str__(self) -> str:
        return f"{'ok' if self.healthy else 'FAIL':<4} {self.name:<11} {self.subject}: {self.detail}"


@attrs.frozen
class HealthReport:
    """The checks of one health run and how long it took; healthy when every check is."""

    checks: tuple[Check, ...]
    seconds: float

    @property
    def healthy(self) -> bool:
        return all(check.healthy for check in self.checks)

    def __bool__(self) -> bool:
        return self.healthy

    def __str__(self) -> str:
        head = f"{'healthy' if self.healthy else 'unhealthy'} ({self.seconds:.2f} s)"
        return "\n".join([head, *(f"  {check}" for check in self.checks)])

    def as_dict(self) -> dict[str, Any]:
        """For JSON: ``{"healthy": ..., "seconds": ..., "checks": [{"name", "subject", "healthy", "detail",
        "messages"}, ...]}``."""
        return {
            "healthy": self.healthy,
            "seconds": round(self.seconds, 3),
            "checks": [attrs.asdict(check) for check in self.checks],
        }


def check_health(
    brokers: Sequence[tuple[BaseTransport, Sequence[str]]],
    *,
    dead_letter_threshold: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> HealthReport:
    """Checks each broker (a transport) and, on it, each of its ``queues`` (an endpoint's queue) and their dead
    letter queues, all within ``timeout`` seconds. A broker that fails stops the checks of its queues only."""
    if dead_letter_threshold is not None and dead_letter_threshold < 0:
        raise ValueError(f"dead_letter_threshold must be 0 or more, got {dead_letter_threshold!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    started = time.monotonic()
    done: list[Check] = []
    finished = threading.Event()

    def run() -> None:
        try:
            for transport, queues in brokers:
                _check_broker(transport, queues, dead_letter_threshold, done)
        finally:
            finished.set()

    threading.Thread(target=run, name="container-messaging-health", daemon=True).start()
    if finished.wait(timeout):
        return HealthReport(tuple(done), time.monotonic() - started)
    checks = list(done)  # what finished in time; the brokers not checked yet did not answer in time
    answered = {check.subject for check in checks if check.name == "broker"}
    for transport, _queues in brokers:
        if transport.description not in answered:
            checks.append(Check("broker", transport.description, False, f"no answer within {timeout:g} s"))
    return HealthReport(tuple(checks), time.monotonic() - started)


def _check_broker(transport: BaseTransport, queues: Sequence[str], threshold: int | None, done: list[Check]) -> None:
    """Appends the broker's check, then its queues' (when it answered), to ``done``."""
    broker = transport.description
    started = time.monotonic()
    try:
        # the first question asked is the connection check: a broker that answers it is up
        read = [
            (
                queue,
                transport.queue_exists(queue),
                transport.queue_size(queue),
                transport.queue_size(dead_letter_queue(queue)),
            )
            for queue in queues
        ]
        if not queues:
            transport.queue_size(dead_letter_queue("container-messaging-health"))  # connects; a missing queue is 0
    except BrokerRefusedError as exc:
        done.append(Check("broker", broker, False, f"refused: {exc}"))
        return
    except MessagingError as exc:
        done.append(Check("broker", broker, False, f"unreachable: {exc}"))
        return
    done.append(Check("broker", broker, True, f"answered in {time.monotonic() - started:.2f} s"))
    for queue, exists, size, dead in read:
        if exists is False:
            done.append(Check("queue", queue, False, "does not exist (run 'container-messaging setup')", size))
        else:
            done.append(Check("queue", queue, True, f"{size} messages ready", size))
        over = threshold is not None and dead > threshold
        limit = f" (threshold {threshold})" if threshold is not None else ""
        done.append(Check("dead letter", dead_letter_queue(queue), not over, f"{dead} messages{limit}", dead))
