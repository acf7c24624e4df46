"""The endpoint consumer: the run loop behind ``container.run(name)`` and ``container-messaging run NAME``.

It declares the endpoint's queue and bindings, then takes one message at a time:

1. a body over ``consumer.max_message_size`` goes straight to the dead letter;
2. the dispatcher chooses the handlers (Ecotone's rules); those that already handled this message id within the
   deduplication window are skipped (all of them: the message is acknowledged as a duplicate);
3. recoverability runs the others with immediate retries; each success is remembered for deduplication;
4. success: the message is acknowledged (only after its handlers returned);
   failure: a delayed retry or a dead letter copy per failed handler, then the acknowledgement
   (or, with ``stop_on_failure``, the message goes back to its queue and the consumer stops).

A lost connection is not the end: the consumer reconnects with back-off and resumes (deliveries of the dead
channel are never acknowledged; the broker redelivers them). SIGINT/SIGTERM stop the loop after the message in
hand; a second signal stops at once (the message in hand is not acknowledged, so the broker keeps it).
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Final

import attrs

from container_messaging.deduplication import DeduplicationStore, NoDeduplication
from container_messaging.distributed.dispatcher import DistributedDispatcher, inbound_message
from container_messaging.errors import MessageTooLargeError, TransportError
from container_messaging.markers import RetryPolicy
from container_messaging.messages import ID
from container_messaging.recoverability import Failure, Recoverability
from container_messaging.transports.base import BaseTransport, Delivery, EndpointTopology, Receiver

__all__ = ["EndpointConsumer", "RunOptions", "RunResult"]

log = logging.getLogger("container_messaging.consumer")

_POLL_SECONDS: Final = 0.5
_RECONNECT_DELAYS: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


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
    """What one run did: messages handled (dropped events included), failed (retried later or dead-lettered),
    skipped as duplicates, how often it reconnected, and why it stopped."""

    endpoint: str
    handled: int
    failed: int
    stop_reason: str
    duplicates: int = 0
    reconnects: int = 0


def _rss_megabytes() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1_048_576
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@attrs.define
class _Counts:
    handled: int = 0
    failed: int = 0
    duplicates: int = 0
    reconnects: int = 0

    @property
    def messages(self) -> int:
        return self.handled + self.failed + self.duplicates


class EndpointConsumer:
    """Consumes one endpoint's queue until a limit, a signal or (optionally) a failure stops it."""

    def __init__(
        self,
        *,
        name: str,
        transport: BaseTransport,
        topology: EndpointTopology,
        dispatcher: DistributedDispatcher,
        prefetch_count: int,
        idle_timeout: float,
        retry_policy: RetryPolicy | None = None,
        deduplication: DeduplicationStore | None = None,
        max_message_size: int = 1_048_576,
    ) -> None:
        self.name = name
        self.topology = topology
        self._transport = transport
        self._dispatcher = dispatcher
        self._prefetch_count = prefetch_count
        self._idle_timeout = idle_timeout
        self._recoverability = Recoverability(name, retry_policy or RetryPolicy())
        self._deduplication = deduplication if deduplication is not None else NoDeduplication()
        self._max_message_size = max_message_size
        self._stop_reason: str | None = None
        self._wake = threading.Event()
        self._dedup_warned_until = 0.0

    def stop(self, reason: str = "stopped") -> None:
        """Asks the loop to stop after the message in hand (safe to call from a signal handler or thread)."""
        self._stop_reason = reason
        self._wake.set()

    def run(self, options: RunOptions | None = None) -> RunResult:
        options = options or RunOptions()
        self._stop_reason = None
        self._wake.clear()
        self._transport.setup_endpoint(self.topology)
        counts = _Counts()
        deadline = time.monotonic() + options.execution_time_limit / 1000 if options.execution_time_limit else None
        log.info(
            "endpoint %r consuming queue %r on %s",
            self.name,
            self.topology.queue,
            getattr(self._transport, "description", self._transport),
        )
        with self._signals():
            receiver: Receiver | None = self._transport.open_receiver(
                self.topology.queue, prefetch_count=self._prefetch_count
            )
            failures_in_a_row = 0
            try:
                while self._stop_reason is None:
                    if receiver is None:
                        receiver = self._reconnect(failures_in_a_row, deadline)
                        if receiver is None:
                            break
                        counts.reconnects += 1
                    try:
                        self._consume(receiver, options, counts, deadline)
                    except TransportError as exc:
                        failures_in_a_row += 1
                        log.warning("endpoint %r lost its connection: %s; reconnecting", self.name, exc)
                        receiver.close()
                        receiver = None
                        continue
                    failures_in_a_row = 0
            finally:
                if receiver is not None:
                    receiver.close()
        result = RunResult(
            self.name,
            counts.handled,
            counts.failed,
            self._stop_reason or "stopped",
            counts.duplicates,
            counts.reconnects,
        )
        log.info(
            "endpoint %r stopped: %s (handled %d, failed %d, duplicates %d, reconnects %d)",
            self.name,
            result.stop_reason,
            result.handled,
            result.failed,
            result.duplicates,
            result.reconnects,
        )
        return result

    def _reconnect(self, failures: int, deadline: float | None) -> Receiver | None:
        """Opens a new receiver with back-off; None when asked to stop (or out of time) meanwhile."""
        attempt = max(0, failures - 1)
        while self._stop_reason is None:
            delay = _RECONNECT_DELAYS[min(attempt, len(_RECONNECT_DELAYS) - 1)]
            if deadline is not None and time.monotonic() + delay >= deadline:
                self._stop_reason = "execution time limit reached"
                return None
            if self._wake.wait(delay):
                return None
            try:
                self._transport.setup_endpoint(self.topology)
                receiver = self._transport.open_receiver(self.topology.queue, prefetch_count=self._prefetch_count)
            except TransportError as exc:
                attempt += 1
                log.warning("endpoint %r: reconnecting failed (attempt %d): %s", self.name, attempt, exc)
                continue
            log.info("endpoint %r reconnected", self.name)
            return receiver
        return None

    def _consume(self, receiver: Receiver, options: RunOptions, counts: _Counts, deadline: float | None) -> None:
        """Takes messages until asked to stop or a limit is reached; a TransportError means the connection died."""
        while self._stop_reason is None:
            timeout = self._idle_timeout if options.finish_when_no_messages else _POLL_SECONDS
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._stop_reason = "execution time limit reached"
                    return
                timeout = min(timeout, remaining)
            delivery = receiver.receive(timeout)
            if delivery is None:
                if options.finish_when_no_messages:
                    self._stop_reason = "no more messages"
                continue
            self._handle(delivery, options, counts)
            if options.handled_message_limit is not None and counts.messages >= options.handled_message_limit:
                self._stop_reason = self._stop_reason or "handled message limit reached"
            if options.memory_limit is not None and _rss_megabytes() >= options.memory_limit:
                self._stop_reason = self._stop_reason or "memory limit reached"

    def _handle(self, delivery: Delivery, options: RunOptions, counts: _Counts) -> None:
        message = inbound_message(delivery.body, delivery.headers, delivery.content_type)
        message_id = message.headers.get(ID)
        failures: list[Failure] = []
        if len(delivery.body) > self._max_message_size:
            too_large = MessageTooLargeError(
                f"message {message_id!r} has {len(delivery.body)} bytes, more than consumer.max_message_size "
                f"({self._max_message_size})"
            )
            failures.append(Failure(None, too_large, 1))
        else:
            try:
                handlers = self._dispatcher.targets(message)
            except Exception as exc:
                failures.append(Failure(None, exc, 1))
            else:
                if not handlers:
                    log.debug("endpoint %r: event %r has no subscriber here; dropped", self.name, message_id)
                # Deduplication is per handler: an event's retry copy for one handler is not a duplicate of the
                # event another handler already handled, and a redelivered event skips only what already ran.
                seen, remember = self._seen, self._remember
                pending = [(h, f"{self.name}:{message_id}:{h.name}") for h in handlers]
                if message_id is not None:
                    pending = [(h, key) for h, key in pending if not seen(key)]
                if handlers and not pending:
                    log.info("endpoint %r: message %r was already handled; skipped", self.name, message_id)
                    delivery.ack()
                    counts.duplicates += 1
                    return
                for handler, key in pending:
                    failure = self._recoverability.run(handler, message)
                    if failure is not None:
                        failures.append(failure)
                    elif message_id is not None:
                        remember(key)
        if not failures:
            delivery.ack()
            counts.handled += 1
            log.debug("endpoint %r: handled %r", self.name, message)
            return
        counts.failed += 1
        if options.stop_on_failure:
            log.error(
                "endpoint %r: message %r failed (%s: %s); stop_on_failure keeps it on its queue",
                self.name,
                message_id,
                type(failures[0].error).__name__,
                failures[0].error,
            )
            delivery.requeue()
            self._stop_reason = "a message failed (stop_on_failure)"
            return
        self._recoverability.dispose(delivery, message, failures)

    # A deduplication store that fails (Redis down) must not stop handling nor make the broker redeliver what was
    # handled: it degrades to no deduplication, with a warning, until it answers again.

    def _seen(self, key: str) -> bool:
        try:
            return self._deduplication.seen(key)
        except TransportError as exc:
            self._dedup_failed(exc)
            return False

    def _remember(self, key: str) -> None:
        try:
            self._deduplication.remember(key)
        except TransportError as exc:
            self._dedup_failed(exc)

    def _dedup_failed(self, exc: TransportError) -> None:
        now = time.monotonic()
        if now >= self._dedup_warned_until:
            self._dedup_warned_until = now + 30.0
            log.warning("endpoint %r: the deduplication store failed (%s); handling goes on without it", self.name, exc)

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
