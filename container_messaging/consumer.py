"""The endpoint consumer: the run loop behind ``container.run(name)`` and ``container-messaging run NAME``.

It declares the endpoint's queue and bindings, then takes one message at a time: the dispatcher handles it and only
then is it acknowledged. A message that fails goes to the queue's dead letter queue with the failure's details
(or, with ``stop_on_failure``, back to its queue, and the consumer stops). SIGINT/SIGTERM stop the loop after the
message in hand; a second signal stops at once (the message in hand is not acknowledged, so the broker keeps it).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Final

import attrs

from container_messaging.distributed.dispatcher import DistributedDispatcher, Outcome, inbound_message
from container_messaging.messages import ID
from container_messaging.transports.base import BaseTransport, Delivery, EndpointTopology

__all__ = ["EndpointConsumer", "RunOptions", "RunResult", "failure_headers"]

log = logging.getLogger("container_messaging.consumer")

_POLL_SECONDS: Final = 0.5


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


@attrs.frozen
class RunOptions:
    """Ecotone's run options: the limits count transport messages (one event with two local handlers counts once)."""

    handled_message_limit: int | None = attrs.field(default=None, validator=_positive)
    execution_time_limit: int | None = attrs.field(default=None, validator=_positive)  # milliseconds
    memory_limit: int | None = attrs.field(default=None, validator=_positive)  # megabytes
    stop_on_failure: bool = False
    finish_when_no_messages: bool = False


@attrs.frozen
class RunResult:
    """What one run did: messages handled (dropped events included), failed, and why it stopped."""

    endpoint: str
    handled: int
    failed: int
    stop_reason: str


def _rss_megabytes() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        import os  # noqa: PLC0415

        return pages * os.sysconf("SC_PAGE_SIZE") / 1_048_576
    except (OSError, ValueError, IndexError):
        import resource  # noqa: PLC0415

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def failure_headers(exc: BaseException, endpoint: str, attempts: int) -> dict[str, Any]:
    """The details kept with a dead-lettered message."""
    trace = "".join(traceback.format_exception(exc, limit=-8))
    return {
        "failure.endpoint": endpoint,
        "failure.exceptionClass": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "failure.message": str(exc),
        "failure.trace": trace[-4000:],
        "failure.time": int(time.time()),
        "failure.attempts": attempts,
    }


class EndpointConsumer:
    """Consumes one endpoint's queue until a limit, a signal, or (optionally) a failure stops it."""

    def __init__(
        self,
        *,
        name: str,
        transport: BaseTransport,
        topology: EndpointTopology,
        dispatcher: DistributedDispatcher,
        prefetch_count: int,
        idle_timeout: float,
    ) -> None:
        self.name = name
        self._transport = transport
        self._topology = topology
        self._dispatcher = dispatcher
        self._prefetch_count = prefetch_count
        self._idle_timeout = idle_timeout
        self._stop_reason: str | None = None

    def stop(self, reason: str = "stopped") -> None:
        """Asks the loop to stop after the message in hand (safe to call from a signal handler or thread)."""
        self._stop_reason = reason

    def run(self, options: RunOptions | None = None) -> RunResult:
        options = options or RunOptions()
        self._stop_reason = None
        self._transport.setup_endpoint(self._topology)
        handled = failed = 0
        started = time.monotonic()
        deadline = started + options.execution_time_limit / 1000 if options.execution_time_limit else None
        log.info(
            "endpoint %r consuming queue %r on %s",
            self.name,
            self._topology.queue,
            getattr(self._transport, "description", self._transport),
        )
        with (
            self._signals(),
            self._transport.open_receiver(self._topology.queue, prefetch_count=self._prefetch_count) as receiver,
        ):
            while self._stop_reason is None:
                timeout = _POLL_SECONDS
                if options.finish_when_no_messages:
                    timeout = self._idle_timeout
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._stop_reason = "execution time limit reached"
                        break
                    timeout = min(timeout, remaining)
                delivery = receiver.receive(timeout)
                if delivery is None:
                    if options.finish_when_no_messages:
                        self._stop_reason = "no more messages"
                    continue
                if self._handle(delivery, options):
                    handled += 1
                else:
                    failed += 1
                    if options.stop_on_failure:
                        self._stop_reason = "a message failed (stop_on_failure)"
                if options.handled_message_limit is not None and handled + failed >= options.handled_message_limit:
                    self._stop_reason = self._stop_reason or "handled message limit reached"
                if options.memory_limit is not None and _rss_megabytes() >= options.memory_limit:
                    self._stop_reason = self._stop_reason or "memory limit reached"
        result = RunResult(self.name, handled, failed, self._stop_reason or "stopped")
        log.info("endpoint %r stopped: %s (handled %d, failed %d)", self.name, result.stop_reason, handled, failed)
        return result

    def _handle(self, delivery: Delivery, options: RunOptions) -> bool:
        message = inbound_message(delivery.body, delivery.headers, delivery.content_type)
        try:
            outcome = self._dispatcher.dispatch(message)
        except Exception as exc:
            log.error(
                "endpoint %r: message %r failed: %s: %s",
                self.name,
                delivery.headers.get(ID),
                type(exc).__name__,
                exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            if options.stop_on_failure:
                delivery.requeue()
            else:
                delivery.dead_letter(failure_headers(exc, self.name, 1))
            return False
        delivery.ack()
        if outcome is Outcome.DROPPED:
            log.debug("endpoint %r: event %r has no subscriber here; dropped", self.name, message.headers.get(ID))
        else:
            log.debug("endpoint %r: handled %r", self.name, message)
        return True

    @contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            if self._stop_reason is not None:
                raise KeyboardInterrupt  # second signal: stop at once; the message in hand stays on the broker
            log.info("signal %s: stopping after the current message", signal.Signals(signum).name)
            self.stop(f"signal {signal.Signals(signum).name}")

        previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
