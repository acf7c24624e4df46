"""The endpoint consumer: the run loop behind ``container.run(name)`` and ``container-messaging run NAME``.

It declares the endpoint's queue and bindings (with ``wait_for_broker``, waiting for a broker that does not answer
yet), then takes one message at a time:

1. a body over ``consumer.max_message_size``, a malformed ``ecotone_retry_number`` and whatever breaks Ecotone's
   rules (the dispatcher's gate) is a failure before any handler runs;
2. the dispatcher chooses the handlers (Ecotone's rules); those that already handled this message id within the
   deduplication window are skipped (all of them: the message is acknowledged as a duplicate);
3. each other handler runs; when it fails, :mod:`container_messaging.recoverability` decides (retry now, retry
   after a delay, dead letter) and this loop carries the decision out; each success is remembered for
   deduplication;
4. success: the message is acknowledged (only after its handlers returned);
   failure: a delayed retry or a dead letter copy per failed handler, then the acknowledgement
   (or, with ``stop_on_failure``, the message goes back to its queue and the consumer stops).

This is the only place that settles a delivery (ack, requeue, its copies). A copy that cannot be published (the
broker refused it, the connection dropped) is remembered: when the message comes back, its dead letter copy is
reduced to the essential headers, so one message never blocks the queue.

With ``concurrency`` N above 1, up to N messages are handled at once: plain handlers on N worker threads, a message
whose handlers are all coroutines as a task on the consumer's event loop (:mod:`container_messaging.concurrency`).
This thread alone still receives and settles: each message is acknowledged once its own handlers returned, in the
order they finish. Coroutine handlers are awaited on the one loop the consumer owns, whatever the concurrency.

Middleware (:mod:`container_messaging.middleware`: tracing, metrics), when the container has any, is entered around
the run (``consuming``), around each message from routing to settling (``receiving``, on this thread) and around
each handler run (``handling``, on the thread or task that runs it), and told each decision (``settled``); without
it none of this is called. The per-message log lines carry their fields as ``extra=`` (endpoint, message id,
correlationId, routing key, handler, outcome, duration) for structured logs.

A lost connection is not the end: the consumer reconnects with back-off and resumes (deliveries of the dead
channel are never acknowledged; the broker redelivers them); a broker that refuses us (credentials, vhost) is never
waited for. SIGINT/SIGTERM stop the loop after the messages in hand (each handled and settled); a second signal stops
at once (the messages in hand are not acknowledged, so the broker keeps them).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Final, Protocol

import attrs

from container_messaging.bounds import MAX_ROUTING_KEY, shown
from container_messaging.concurrency import Completions, EventLoopThread, WorkerThreads
from container_messaging.deduplication import DeduplicationStore, NoDeduplication
from container_messaging.distributed.dispatcher import DistributedDispatcher, Subscription, inbound_message
from container_messaging.distributed.topology import ROUTING_KEY
from container_messaging.errors import BrokerRefusedError, ConfigurationError, MessageTooLargeError, TransportError
from container_messaging.invocation import Handler, coroutine_runner
from container_messaging.markers import RetryPolicy
from container_messaging.messages import CORRELATION_ID, ID, MediaType, Message
from container_messaging.middleware import EndpointInfo, Middleware, Outcome, messaging_system
from container_messaging.process import rss_megabytes, stopping_on_signals
from container_messaging.recoverability import (
    Failure,
    MoveToDeadLetter,
    Recoverability,
    RetryLater,
    RetryNow,
    first_failure_time,
    retry_number,
)
from container_messaging.transports.base import (
    BaseTransport,
    Delivery,
    EndpointTopology,
    OutboundMessage,
    Receiver,
    dead_letter_queue,
)

__all__ = ["Endpoint", "EndpointConsumer", "EndpointDescription", "RunOptions", "RunResult"]

log = logging.getLogger("container_messaging.consumer")

_POLL_SECONDS: Final = 0.5
#: how long a receive waits while messages are in hand at concurrency > 1 (their completions wait meanwhile)
_BUSY_POLL_SECONDS: Final = 0.002
_RECONNECT_DELAYS: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_COPY_FAILURES_KEPT: Final = 1024


def _positive_int(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise ConfigurationError(f"run option {attribute.name} must be a positive whole number, got {value!r}")


def _positive_seconds(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"run option {attribute.name} must be a positive number of seconds, got {value!r}")


@attrs.frozen
class RunOptions:
    """Ecotone's run options: the limits count transport messages (one event with two local handlers counts once).
    ``concurrency`` N handles up to N messages at once (the prefetch is at least N).

        ``wait_for_broker`` (seconds): at start, a broker that does not answer is tried again with back-off for that
        long (never one that refused us); without it, the first failure to connect ends the run. A bad value raises
        :class:`ConfigurationError` naming the option.
    """

    handled_message_limit: int | None = attrs.field(default=None, validator=_positive_int)
    execution_time_limit: int | None = attrs.field(default=None, validator=_positive_int)  # milliseconds
    memory_limit: int | None = attrs.field(default=None, validator=_positive_int)  # megabytes
    stop_on_failure: bool = False
    finish_when_no_messages: bool = False
    wait_for_broker: float | None = attrs.field(default=None, validator=_positive_seconds)
    #: how many messages are handled at once (threads for plain handlers, tasks for coroutine handlers)
    concurrency: int = attrs.field(default=1, validator=_positive_int)

    def limits(self) -> tuple[str, ...]:
        """The limits in words, for the start banner."""
        limits = []
        if self.handled_message_limit is not None:
            limits.append(f"{self.handled_message_limit} messages")
        if self.execution_time_limit is not None:
            limits.append(f"{self.execution_time_limit} ms")
        if self.memory_limit is not None:
            limits.append(f"{self.memory_limit} MB of memory")
        if self.stop_on_failure:
            limits.append("stop on failure")
        if self.finish_when_no_messages:
            limits.append("stop when no messages")
        return tuple(limits)


@attrs.frozen
class RunResult:
    """What one run did, each transport message counted once: handled (dropped events included), failed
    (dead-lettered, or kept on its queue by ``stop_on_failure``), retried (put back for a delayed retry), skipped as
    duplicates; how often it reconnected, and why it stopped."""

    endpoint: str
    handled: int
    failed: int
    stop_reason: str
    duplicates: int = 0
    reconnects: int = 0
    retried: int = 0

    def summary(self) -> str:
        """One line: ``billing: handled 3, failed 1, retried 2 (no more messages)`` (zero extras left out)."""
        extra = "".join(
            f", {label} {count}"
            for label, count in (
                ("retried", self.retried),
                ("duplicates", self.duplicates),
                ("reconnects", self.reconnects),
            )
            if count
        )
        return f"{self.endpoint}: handled {self.handled}, failed {self.failed}{extra} ({self.stop_reason})"


@attrs.frozen
class EndpointDescription:
    """What a run consumes and how (its ``str`` is the start banner); the broker's password is never part of it."""

    endpoint: str
    queue: str
    dead_letter_queue: str
    broker: str
    bindings: tuple[str, ...]
    subscriptions: tuple[Subscription, ...]
    concurrency: int
    limits: tuple[str, ...]
    max_message_size: int

    def __str__(self) -> str:
        handlers = [str(subscription) for subscription in self.subscriptions] or ["none"]
        rows = [
            ("dead letter", self.dead_letter_queue),
            ("bound to", ", ".join(self.bindings) or "nothing"),
            ("concurrency", str(self.concurrency)),
            ("limits", ", ".join(self.limits) or "none (until SIGINT or SIGTERM)"),
            ("max message", f"{self.max_message_size} bytes"),
            ("handlers", handlers[0]),
            *(("", handler) for handler in handlers[1:]),
        ]
        lines = [f"{self.endpoint}: consuming {self.queue} on {self.broker}"]
        lines += [f"  {label:<12} {value}" for label, value in rows]
        return "\n".join(lines)


@attrs.define
class _Counts:
    handled: int = 0
    failed: int = 0
    retried: int = 0
    duplicates: int = 0
    reconnects: int = 0

    @property
    def messages(self) -> int:
        return self.handled + self.failed + self.retried + self.duplicates


@attrs.define
class _Job:
    """A message on its way: routed, not yet settled; ``decisions`` and ``succeeded`` are what its handlers did."""

    delivery: Delivery
    message: Message
    handlers: Sequence[Handler]
    pending: Sequence[tuple[Handler, str]]  # (handler, deduplication key) still to run
    retries_before: int
    copy_failures: int
    started: float
    decisions: list[RetryLater | MoveToDeadLetter] = attrs.Factory(list)
    succeeded: list[str] = attrs.Factory(list)  # deduplication keys of the handlers that returned
    receiving: AbstractContextManager[None] | None = None  # the middleware's receiving hook, left once settled


def _field(value: object) -> str | None:
    """A header as a structured log field: its text when it is short text, else a bounded description."""
    if value is None or (isinstance(value, str) and len(value) <= MAX_ROUTING_KEY):
        return value
    return shown(value)


def _routing_key(message: Message) -> str:
    key = message.headers.get(ROUTING_KEY)
    return key if isinstance(key, str) and len(key) <= MAX_ROUTING_KEY else shown(key)


class Endpoint(Protocol):
    """What ``container.endpoint(name)`` gives: a consumer of a queue, or another loop run like one (the outbox
    relay)."""

    name: str

    def description(self, options: RunOptions | None = None) -> object:
        """What :meth:`run` with ``options`` would do; its ``str`` is the start banner."""

    def run(self, options: RunOptions | None = None) -> RunResult:
        """Runs until a limit, a signal or :meth:`stop`."""

    def stop(self, reason: str = "stopped") -> None:
        """Asks the loop to stop after the message in hand (safe from a signal handler or another thread)."""


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
        middleware: Middleware | None = None,
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
        # (message id, body size) -> how often publishing that message's copy failed (bounded)
        self._copy_failures: dict[tuple[str, int], int] = {}
        self._loop = EventLoopThread(name)  # the run's own, made by run()
        # the hooks of container_messaging.middleware; None (the default) skips every hook
        self._middleware = middleware
        self._info = EndpointInfo(
            name, topology.queue, dead_letter_queue(topology.queue), topology.exchange, messaging_system(transport)
        )

    def stop(self, reason: str = "stopped") -> None:
        """Asks the loop to stop after the message in hand (safe to call from a signal handler or thread)."""
        self._stop_reason = reason
        self._wake.set()

    def description(self, options: RunOptions | None = None) -> EndpointDescription:
        """What :meth:`run` with ``options`` consumes: queue, broker, handlers and their keys, limits."""
        queue = self.topology.queue
        return EndpointDescription(
            endpoint=self.name,
            queue=queue,
            dead_letter_queue=dead_letter_queue(queue),
            broker=self._transport.description,
            bindings=self.topology.bindings,
            subscriptions=self._dispatcher.subscriptions(),
            concurrency=(options or RunOptions()).concurrency,
            limits=(options or RunOptions()).limits(),
            max_message_size=self._max_message_size,
        )

    def run(self, options: RunOptions | None = None) -> RunResult:
        options = options or RunOptions()
        self._stop_reason = None
        self._wake.clear()
        counts = _Counts()
        deadline = time.monotonic() + options.execution_time_limit / 1000 if options.execution_time_limit else None
        log.info(
            "endpoint %r consuming queue %r on %s",
            self.name,
            self.topology.queue,
            self._transport.description,
            extra={"endpoint": self.name},
        )
        self._loop = loop = EventLoopThread(self.name)
        runner = coroutine_runner.set(loop.run)
        try:
            if self._middleware is None:
                self._run(options, counts, deadline)
            else:
                with self._middleware.consuming(self._info, self._transport.queue_size):
                    self._run(options, counts, deadline)
        finally:
            coroutine_runner.reset(runner)
            loop.close()
        result = RunResult(
            self.name,
            counts.handled,
            counts.failed,
            self._stop_reason or "stopped",
            counts.duplicates,
            counts.reconnects,
            counts.retried,
        )
        log.info("endpoint %r stopped: %s", self.name, result.summary(), extra={"endpoint": self.name})
        return result

    def _run(self, options: RunOptions, counts: _Counts, deadline: float | None) -> None:
        with self._signals():
            receiver = self._connect(options.wait_for_broker, options.concurrency)
            failures_in_a_row = 0
            try:
                while self._stop_reason is None:
                    if receiver is None:
                        receiver = self._reconnect(failures_in_a_row, deadline, options.concurrency)
                        if receiver is None:
                            break
                        counts.reconnects += 1
                    try:
                        if options.concurrency == 1:
                            self._consume(receiver, options, counts, deadline)
                        else:
                            self._consume_concurrently(receiver, options, counts, deadline)
                    except BrokerRefusedError:
                        raise
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

    # -- connecting ------------------------------------------------------------------------------------------------

    def _open(self, concurrency: int) -> Receiver:
        self._transport.setup_endpoint(self.topology)
        prefetch = max(self._prefetch_count, concurrency)
        return self._transport.open_receiver(self.topology.queue, prefetch_count=prefetch)

    def _connect(self, wait: float | None, concurrency: int) -> Receiver | None:
        """The first receiver. With ``wait`` (seconds), a broker that does not answer is tried again with back-off
        until it does or the time is up (one INFO line per attempt); a broker that refused us is never waited for.
        None when asked to stop meanwhile."""
        give_up = time.monotonic() + wait if wait is not None else None
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._open(concurrency)
            except BrokerRefusedError:
                raise
            except TransportError as exc:
                if give_up is None:
                    raise
                left = give_up - time.monotonic()
                if left <= 0:
                    raise TransportError(
                        f"endpoint {self.name!r}: the broker did not answer within {wait:g} s "
                        f"({attempt} attempts); the last error: {exc}"
                    ) from exc
                delay = min(_RECONNECT_DELAYS[min(attempt - 1, len(_RECONNECT_DELAYS) - 1)], left)
                log.info(
                    "endpoint %r: waiting for the broker, attempt %d failed (%s); next in %.1f s, %.1f s left",
                    self.name,
                    attempt,
                    exc,
                    delay,
                    left,
                )
                if self._wake.wait(delay):
                    return None

    def _reconnect(self, failures: int, deadline: float | None, concurrency: int) -> Receiver | None:
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
                receiver = self._open(concurrency)
            except BrokerRefusedError:
                raise
            except TransportError as exc:
                attempt += 1
                log.warning("endpoint %r: reconnecting failed (attempt %d): %s", self.name, attempt, exc)
                continue
            log.info("endpoint %r reconnected", self.name)
            return receiver
        return None

    # -- consuming -------------------------------------------------------------------------------------------------

    def _consume(self, receiver: Receiver, options: RunOptions, counts: _Counts, deadline: float | None) -> None:
        """Takes messages until asked to stop or a limit is reached; a TransportError means the connection died."""
        while self._stop_reason is None:
            timeout = self._receive_timeout(options, deadline)
            if timeout is None:
                return
            delivery = receiver.receive(timeout)
            if delivery is None:
                if options.finish_when_no_messages:
                    self._stop_reason = "no more messages"
                elif options.memory_limit is not None and rss_megabytes() >= options.memory_limit:
                    self._stop_reason = "memory limit reached"  # an idle consumer over its limit stops too
                continue
            job = self._prepare(delivery, options, counts)
            if job is not None:
                self._work(job)
                self._finish(job, options, counts)
            self._check_limits(options, counts)

    def _receive_timeout(self, options: RunOptions, deadline: float | None) -> float | None:
        """How long the next receive may wait; None (and the stop reason set) when the execution time is up."""
        timeout = self._idle_timeout if options.finish_when_no_messages else _POLL_SECONDS
        if deadline is None:
            return timeout
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self._stop_reason = "execution time limit reached"
            return None
        return min(timeout, remaining)

    def _check_limits(self, options: RunOptions, counts: _Counts) -> None:
        if options.handled_message_limit is not None and counts.messages >= options.handled_message_limit:
            self._stop_reason = self._stop_reason or "handled message limit reached"
        if options.memory_limit is not None and rss_megabytes() >= options.memory_limit:
            self._stop_reason = self._stop_reason or "memory limit reached"

    def _consume_concurrently(
        self, receiver: Receiver, options: RunOptions, counts: _Counts, deadline: float | None
    ) -> None:
        """Like :meth:`_consume`, with up to ``options.concurrency`` messages in hand: this thread receives, hands
        each message to a worker thread (or, when all its handlers are coroutines, to the loop) and settles it when
        it comes back. Asked to stop, it takes no more messages and waits for those in hand. The handled message
        limit counts what was taken, so no more messages than the limit are ever taken."""
        limit = options.handled_message_limit
        completions: Completions[_Job] = Completions()
        workers = WorkerThreads(options.concurrency, self.name, completions)
        in_hand = 0

        def settle(finished: tuple[_Job, BaseException | None] | None) -> None:
            nonlocal in_hand
            if finished is None:
                return
            in_hand -= 1
            job, error = finished
            if error is not None:
                raise error
            self._finish(job, options, counts)
            self._check_limits(options, counts)

        try:
            while self._stop_reason is None or in_hand:
                settle(completions.get(0))
                full = in_hand >= options.concurrency or (limit is not None and counts.messages + in_hand >= limit)
                if self._stop_reason is not None or full:
                    settle(completions.get(_POLL_SECONDS) if in_hand else None)
                    continue
                timeout = self._receive_timeout(options, deadline)
                if timeout is None:
                    continue
                delivery = receiver.receive(min(timeout, _BUSY_POLL_SECONDS) if in_hand else timeout)
                if delivery is None:
                    if options.finish_when_no_messages and not in_hand:
                        self._stop_reason = "no more messages"
                    elif options.memory_limit is not None and rss_megabytes() >= options.memory_limit:
                        self._stop_reason = "memory limit reached"
                    continue
                job = self._prepare(delivery, options, counts)
                if job is None:
                    self._check_limits(options, counts)
                    continue
                in_hand += 1
                if all(handler.is_coroutine for handler, _ in job.pending):
                    self._start_task(job, completions)
                else:
                    workers.start(self._work, job)
        except KeyboardInterrupt:  # a second signal: stop at once, the messages in hand stay on the broker
            workers.close(wait=False)
            raise
        finally:
            workers.close()
            while in_hand and (finished := completions.get(None)) is not None:  # a lost connection: wait for them
                in_hand -= 1
                self._received(finished[0])
                log.warning(
                    "endpoint %r: message %s was handled after its connection was lost; the broker redelivers it",
                    self.name,
                    shown(finished[0].message.headers.get(ID)),
                )

    def _start_task(self, job: _Job, completions: Completions[_Job]) -> None:
        def done(future: Any) -> None:
            completions.put(job, future.exception())

        self._loop.submit(self._work_async(job)).add_done_callback(done)

    def _prepare(self, delivery: Delivery, options: RunOptions, counts: _Counts) -> _Job | None:
        """Routes a delivery (on this thread): a job for its handlers, or None when it is settled already (it broke
        the rules, or every handler already handled it)."""
        started = time.perf_counter()
        message = inbound_message(delivery.body, delivery.headers, delivery.content_type)
        if self._middleware is None:
            return self._route(delivery, message, options, counts, started)
        receiving = self._middleware.receiving(self._info, message)
        receiving.__enter__()  # left when the message is settled: here, or in _finish
        try:
            job = self._route(delivery, message, options, counts, started)
        except BaseException as exc:
            receiving.__exit__(type(exc), exc, exc.__traceback__)
            raise
        if job is None:
            receiving.__exit__(None, None, None)  # settled already
        else:
            job.receiving = receiving
        return job

    def _route(
        self, delivery: Delivery, message: Message, options: RunOptions, counts: _Counts, started: float
    ) -> _Job | None:
        """:meth:`_prepare` once the message is decoded."""
        message_id = message.headers.get(ID)
        copy_failures = self._copy_failures.get(self._copy_key(message, delivery), 0) if self._copy_failures else 0
        retries_before = 0
        try:
            if len(delivery.body) > self._max_message_size:
                raise MessageTooLargeError(
                    f"message {shown(message_id)} has {len(delivery.body)} bytes, more than "
                    f"consumer.max_message_size ({self._max_message_size})"
                )
            retries_before = retry_number(message)
            handlers = self._dispatcher.targets(message)
        except Exception as exc:
            unrouted = self._recoverability.decide_unrouted(
                exc,
                retries_before=retries_before,
                copy_failures=copy_failures,
                first_failed_at=first_failure_time(message),
            )
            self._settle_failed(delivery, message, [unrouted], options, counts, started)
            return None
        # Deduplication is per handler: an event's retry copy for one handler is not a duplicate of the event
        # another handler already handled, and a redelivered event skips only what already ran.
        pending = [(h, f"{self.name}:{message_id}:{h.name}") for h in handlers]
        if message_id is not None:
            pending = [(h, key) for h, key in pending if not self._seen(key)]
        if handlers and not pending:
            delivery.ack()
            counts.duplicates += 1
            self._settled(message, Outcome.DUPLICATE)
            self._outcome(message, handlers, "already handled: skipped", started)
            return None
        return _Job(delivery, message, handlers, pending, retries_before, copy_failures, started)

    def _work(self, job: _Job) -> None:
        """Runs the job's handlers (on this thread or a worker thread)."""
        for handler, key in job.pending:
            decision = self._attempt(handler, job.message, job.retries_before, job.copy_failures)
            self._record(job, key, decision)

    async def _work_async(self, job: _Job) -> None:
        """Runs the job's handlers, all coroutines, on the consumer's loop."""
        for handler, key in job.pending:
            attempt = 1
            while True:
                try:
                    if self._middleware is None:
                        await handler.call_async(job.message)
                    else:
                        with self._middleware.handling(self._info, handler, job.message):
                            await handler.call_async(job.message)
                        self._middleware.settled(self._info, job.message, Outcome.HANDLED, handler=handler)
                    decision = None
                except Exception as exc:
                    decision = self._decide(handler, exc, job.message, attempt, job.retries_before, job.copy_failures)
                    if decision is None:
                        attempt += 1
                        continue
                break
            self._record(job, key, decision)

    @staticmethod
    def _record(job: _Job, key: str, decision: RetryLater | MoveToDeadLetter | None) -> None:
        if decision is not None:
            job.decisions.append(decision)
        elif job.message.headers.get(ID) is not None:
            job.succeeded.append(key)

    def _finish(self, job: _Job, options: RunOptions, counts: _Counts) -> None:
        """Settles a job whose handlers ran (on this thread): remembers what succeeded, then acknowledges, or carries
        out recoverability's decisions."""
        if job.receiving is None:
            self._settle(job, options, counts)
            return
        try:
            self._settle(job, options, counts)
        except BaseException as exc:
            job.receiving.__exit__(type(exc), exc, exc.__traceback__)
            raise
        job.receiving.__exit__(None, None, None)

    def _received(self, job: _Job) -> None:
        """Leaves the receiving hooks of a job that will not be settled here (its connection was lost)."""
        if job.receiving is not None:
            job.receiving.__exit__(None, None, None)

    def _settle(self, job: _Job, options: RunOptions, counts: _Counts) -> None:
        for key in job.succeeded:
            self._remember(key)
        message, delivery = job.message, job.delivery
        if job.decisions:
            self._settle_failed(delivery, message, job.decisions, options, counts, job.started)
            return
        delivery.ack()
        counts.handled += 1
        log.debug("endpoint %r: handled %r", self.name, message)
        if not job.handlers:
            self._settled(message, Outcome.DROPPED)
        outcome = "handled" if job.handlers else "no subscriber here: dropped"
        self._outcome(message, job.handlers, outcome, job.started)

    def _attempt(
        self, handler: Handler, message: Message, retries_before: int, copy_failures: int
    ) -> RetryLater | MoveToDeadLetter | None:
        """Runs ``handler``, again at once while recoverability says so; None when it succeeded."""
        attempt = 1
        middleware = self._middleware
        while True:
            try:
                if middleware is None:
                    handler(message)
                else:
                    with middleware.handling(self._info, handler, message):
                        handler(message)
            except Exception as exc:
                decision = self._decide(handler, exc, message, attempt, retries_before, copy_failures)
            else:
                if middleware is not None:
                    middleware.settled(self._info, message, Outcome.HANDLED, handler=handler)
                return None
            if decision is not None:
                return decision
            attempt += 1

    def _decide(
        self, handler: Handler, exc: Exception, message: Message, attempt: int, retries_before: int, copy_failures: int
    ) -> RetryLater | MoveToDeadLetter | None:
        """Recoverability's decision on a failed attempt; None (logged) to retry at once."""
        decision = self._recoverability.decide(
            handler,
            exc,
            attempt=attempt,
            retries_before=retries_before,
            copy_failures=copy_failures,
            first_failed_at=first_failure_time(message),
        )
        if not isinstance(decision, RetryNow):
            return decision
        self._settled(message, Outcome.RETRIED_NOW, decision.failure)
        log.warning(
            "%s; retrying at once",
            self._failed(message, decision.failure),
            extra=self._fields(message, decision.failure.handler_name, "retried now", decision.failure),
        )
        return None

    def _settle_failed(
        self,
        delivery: Delivery,
        message: Message,
        decisions: Sequence[RetryLater | MoveToDeadLetter],
        options: RunOptions,
        counts: _Counts,
        started: float,
    ) -> None:
        """Carries out recoverability's decisions (a copy each), then acknowledges; with ``stop_on_failure``, puts
        the message back on its queue and stops instead."""
        failures = [decision.failure for decision in decisions]
        if options.stop_on_failure:
            log.error(
                "%s; stop_on_failure keeps it on its queue",
                self._failed(message, failures[0]),
                extra=self._fields(message, failures[0].handler_name, "requeued", failures[0]),
            )
            delivery.requeue()
            for failure in failures:
                self._settled(message, Outcome.REQUEUED, failure)
            counts.failed += 1
            self._stop_reason = "a message failed (stop_on_failure)"
            self._outcome(message, failures, "failed: kept on its queue (stop_on_failure)", started)
            return
        try:
            for decision in decisions:
                if isinstance(decision, RetryLater):
                    log.warning(
                        "%s; retrying in %d ms (delayed retry %d of %d)",
                        self._failed(message, decision.failure),
                        decision.delay_ms,
                        decision.retry,
                        decision.retries,
                        extra=self._fields(message, decision.failure.handler_name, "retried later", decision.failure),
                    )
                    delivery.delayed_copy(decision.delay_ms, decision.headers)
                    continue
                log.error(
                    "%s; moved to the dead letter (%s)",
                    self._failed(message, decision.failure),
                    decision.reason,
                    exc_info=log.isEnabledFor(logging.DEBUG) and decision.failure.error,
                    extra=self._fields(message, decision.failure.handler_name, "dead-lettered", decision.failure),
                )
                if decision.reduced:
                    self._reduced_dead_letter_copy(delivery, decision)
                else:
                    delivery.dead_letter_copy(decision.headers)
        except TransportError:
            self._copy_failed(self._copy_key(message, delivery))
            raise
        delivery.ack()
        if self._copy_failures:
            self._copy_failures.pop(self._copy_key(message, delivery), None)
        for decision in decisions:
            later = isinstance(decision, RetryLater)
            self._settled(message, Outcome.RETRIED_LATER if later else Outcome.DEAD_LETTERED, decision.failure)
        if any(isinstance(decision, MoveToDeadLetter) for decision in decisions):
            counts.failed += 1
            self._outcome(message, failures, "failed: dead-lettered", started)
        else:
            counts.retried += 1
            self._outcome(message, failures, "failed: retried later", started)

    def _reduced_dead_letter_copy(self, delivery: Delivery, decision: MoveToDeadLetter) -> None:
        """The body and the essential headers only, published afresh to the dead letter queue (declared first)."""
        headers = decision.reduced_headers(delivery.headers)
        message_id = headers.get(ID)
        queue = dead_letter_queue(self.topology.queue)
        self._transport.setup_endpoint(self.topology)
        self._transport.send_to_queue(
            queue,
            OutboundMessage(
                queue,
                delivery.body,
                headers,
                delivery.content_type or MediaType.OCTET_STREAM,
                message_id if isinstance(message_id, str) and message_id.isascii() else "",
            ),
        )

    @staticmethod
    def _copy_key(message: Message, delivery: Delivery) -> tuple[str, int]:
        return shown(message.headers.get(ID)), len(delivery.body)

    def _copy_failed(self, key: tuple[str, int]) -> None:
        if len(self._copy_failures) >= _COPY_FAILURES_KEPT:
            self._copy_failures.clear()
        self._copy_failures[key] = self._copy_failures.get(key, 0) + 1

    # -- what the log says -----------------------------------------------------------------------------------------

    def _failed(self, message: Message, failure: Failure) -> str:
        return (
            f"endpoint {self.name!r}: message {shown(message.headers.get(ID))} ({_routing_key(message)}) failed in "
            f"{failure.handler_name}, attempt {failure.attempt} of {failure.attempts}: {failure.error_text}"
        )

    def _outcome(self, message: Message, ran: Sequence[Handler | Failure], outcome: str, started: float) -> None:
        """The one INFO line per message: routing key, handler(s), outcome, duration."""
        if log.isEnabledFor(logging.INFO):
            names = ", ".join(item.handler_name if isinstance(item, Failure) else item.name for item in ran)
            duration_ms = (time.perf_counter() - started) * 1000
            fields = self._fields(message, names or "-", outcome)
            fields["duration_ms"] = round(duration_ms, 3)
            log.info(
                "endpoint %r: %s (message %s) -> %s: %s in %.1f ms",
                self.name,
                fields["routing_key"],
                shown(message.headers.get(ID)),
                names or "-",
                outcome,
                duration_ms,
                extra=fields,
            )

    def _fields(self, message: Message, handler: str, outcome: str, failure: Failure | None = None) -> dict[str, Any]:
        """What a log line about ``message`` carries for structured logs (``extra=``; see observability/logs.py)."""
        fields: dict[str, Any] = {
            "endpoint": self.name,
            "message_id": _field(message.headers.get(ID)),
            "correlation_id": _field(message.headers.get(CORRELATION_ID)),
            "routing_key": _routing_key(message),
            "handler": handler,
            "outcome": outcome,
        }
        if failure is not None:
            fields["attempt"] = failure.attempt
            fields["error_type"] = type(failure.error).__name__
        return fields

    def _settled(self, message: Message, outcome: Outcome, failure: Failure | None = None) -> None:
        """Tells the middleware (if any) what was decided; a failure names its handler, attempt and error."""
        if self._middleware is None:
            return
        if failure is None:
            self._middleware.settled(self._info, message, outcome)
        else:
            self._middleware.settled(
                self._info, message, outcome, handler=failure.handler, attempt=failure.attempt, error=failure.error
            )

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

    def _signals(self) -> AbstractContextManager[None]:
        return stopping_on_signals(
            self.stop,
            lambda: self._stop_reason is not None,
            "the current message",
            "the message in hand stays on the broker",
        )
