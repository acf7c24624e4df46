"""Recoverability: what happens when a handler fails.

A failing handler is tried again at once (``immediate_retries``), then the message is put back on its queue after
each delay of ``delayed_retries`` (never held unacknowledged meanwhile), with the attempt count in the header
``ecotone_retry_number`` (as Ecotone), and finally goes to the dead letter with the failure's details. Poison
(a message that can never succeed: malformed or ill-typed payload, refused content type, broken Ecotone routing,
no handler, too large) goes straight to the dead letter, without retries. When several handlers of one event fail,
each gets its own retry copy addressed to it (the header ``container_messaging.handler``), so the handlers that
succeeded do not run again.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Sequence
from typing import Any, Final

import attrs

from container_messaging.errors import (
    ConversionError,
    DistributionError,
    MessageTooLargeError,
    MissingHeaderError,
    NoHandlerError,
)
from container_messaging.invocation import Handler
from container_messaging.markers import RetryPolicy, retry_policy_of
from container_messaging.messages import ID, RETRY_NUMBER, TARGET_HANDLER, Message
from container_messaging.transports.base import Delivery

__all__ = [
    "FAILURE_HEADERS",
    "Failure",
    "Recoverability",
    "is_poison",
]

log = logging.getLogger("container_messaging.recoverability")

#: The headers a dead letter entry carries about its failure.
FAILURE_HEADERS: Final = (
    "failure.endpoint",
    "failure.handler",
    "failure.reason",
    "failure.exceptionClass",
    "failure.message",
    "failure.trace",
    "failure.time",
    "failure.attempts",
)


_POISON: Final = (ConversionError, DistributionError, MissingHeaderError, NoHandlerError, MessageTooLargeError)


def is_poison(error: BaseException) -> bool:
    """Whether retrying can never help: the message itself is wrong."""
    return isinstance(error, _POISON)


@attrs.frozen
class Failure:
    """One handler's failure on one message (``handler`` None when no handler could be chosen)."""

    handler: Handler | None
    error: Exception
    attempts: int

    @property
    def poison(self) -> bool:
        return is_poison(self.error)


class Recoverability:
    """Runs handlers with immediate retries and decides each failure's fate: a delayed retry or the dead letter."""

    def __init__(self, endpoint: str, default: RetryPolicy) -> None:
        self._endpoint = endpoint
        self._default = default
        self._policies: dict[Handler, RetryPolicy] = {}

    def policy(self, handler: Handler | None) -> RetryPolicy:
        if handler is None:
            return self._default
        try:
            return self._policies[handler]
        except KeyError:
            policy = self._policies[handler] = retry_policy_of(handler.function, self._default)
            return policy

    def run(self, handler: Handler, message: Message) -> Failure | None:
        """Runs ``handler``, again at once up to its ``immediate_retries`` while it fails (poison is not retried)."""
        try:
            handler(message)
            return None
        except Exception as exc:
            if is_poison(exc):
                return Failure(handler, exc, 1)
            first = exc
        attempts = 1 + self.policy(handler).immediate_retries
        if attempts == 1:
            return Failure(handler, first, 1)
        log.warning(
            "endpoint %r: %s failed on message %r (attempt 1 of %d), retrying at once: %s: %s",
            self._endpoint,
            handler.name,
            message.headers.get(ID),
            attempts,
            type(first).__name__,
            first,
        )
        for attempt in range(2, attempts + 1):
            try:
                handler(message)
                return None
            except Exception as exc:
                if is_poison(exc) or attempt == attempts:
                    return Failure(handler, exc, attempt)
                log.warning(
                    "endpoint %r: %s failed on message %r (attempt %d of %d), retrying at once: %s: %s",
                    self._endpoint,
                    handler.name,
                    message.headers.get(ID),
                    attempt,
                    attempts,
                    type(exc).__name__,
                    exc,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def dispose(self, delivery: Delivery, message: Message, failures: Sequence[Failure]) -> int:
        """Puts a delayed retry copy or a dead letter copy of the message out for each failure, then acknowledges
        the delivery (a crash in between gives a duplicate, never a loss). Returns how many were dead-lettered."""
        retry_number = _retry_number(message)
        dead = 0
        for failure in failures:
            delays = self.policy(failure.handler).delayed_retries
            target = {TARGET_HANDLER: failure.handler.name} if failure.handler is not None else {}
            if not failure.poison and retry_number < len(delays):
                delay = delays[retry_number]
                log.warning(
                    "endpoint %r: message %r failed in %s: %s: %s; retry %d of %d in %d ms",
                    self._endpoint,
                    message.headers.get(ID),
                    _handler_name(failure),
                    type(failure.error).__name__,
                    failure.error,
                    retry_number + 1,
                    len(delays),
                    delay,
                )
                delivery.delayed_copy(delay, {**target, RETRY_NUMBER: retry_number + 1})
                continue
            dead += 1
            reason = "poison message" if failure.poison else "retries exhausted"
            log.error(
                "endpoint %r: message %r failed in %s (%s): %s: %s; moved to the dead letter",
                self._endpoint,
                message.headers.get(ID),
                _handler_name(failure),
                reason,
                type(failure.error).__name__,
                failure.error,
                exc_info=log.isEnabledFor(logging.DEBUG) and failure.error,
            )
            attempts = failure.attempts + sum(
                1 + self.policy(failure.handler).immediate_retries for _ in range(retry_number)
            )
            delivery.dead_letter_copy({**target, **failure_headers(failure, self._endpoint, reason, attempts)})
        delivery.ack()
        return dead


def _handler_name(failure: Failure) -> str:
    return failure.handler.name if failure.handler is not None else "routing"


def _retry_number(message: Message) -> int:
    value = message.headers.get(RETRY_NUMBER, 0)
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def failure_headers(failure: Failure, endpoint: str, reason: str, attempts: int) -> dict[str, Any]:
    """The details a dead letter entry keeps about its failure."""
    error = failure.error
    trace = "".join(traceback.format_exception(error, limit=-8))
    return {
        "failure.endpoint": endpoint,
        "failure.handler": _handler_name(failure),
        "failure.reason": reason,
        "failure.exceptionClass": f"{type(error).__module__}.{type(error).__qualname__}",
        "failure.message": str(error),
        "failure.trace": trace[-4000:],
        "failure.time": int(time.time()),
        "failure.attempts": attempts,
    }
