"""Recoverability: what happens when a handler fails. It decides; the consumer carries the decision out.

A failing handler is tried again at once (``immediate_retries``), then the message is put back on its queue after
each delay of ``delayed_retries`` (never held unacknowledged meanwhile), with the count of delayed retries in the
header ``ecotone_retry_number`` (as Ecotone), and finally goes to the dead letter with the failure's details.
Attempts are counted overall: with 1 immediate retry and 1 delay a handler has 4 attempts, and the third one is
"attempt 3 of 4". Poison (a message that can never succeed: malformed or ill-typed payload, refused content type,
broken Ecotone routing, a malformed header, no handler, too large) goes straight to the dead letter, without
retries. When several handlers of one event fail, each gets its own retry copy addressed to it (the header
``container_messaging.handler``), so the handlers that succeeded do not run again.

:meth:`Recoverability.decide` returns a :class:`Decision` for one failed attempt: :class:`RetryNow`,
:class:`RetryLater` (the copy's headers and delay) or :class:`MoveToDeadLetter` (the reason and the ``failure.*``
headers). It never touches a delivery. The ``failure.*`` headers are bounded (see :mod:`container_messaging.bounds`).
A message whose copy could not be published before (the broker refused the frame, the connection dropped) goes to
the dead letter in a *reduced* form: its body and only its essential headers, each bounded
(:meth:`MoveToDeadLetter.reduced_headers`).
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

import attrs

from container_messaging.bounds import (
    FAILURE_TEXT_LIMIT,
    FAILURE_TRACE_LIMIT,
    MAX_RETRY_NUMBER,
    shown,
    truncated,
)
from container_messaging.distributed.topology import PAYLOAD_TYPE, ROUTING_KEY, SOURCE_SERVICE, TARGET_SERVICE
from container_messaging.errors import (
    ConversionError,
    DistributionError,
    MessageTooLargeError,
    MissingHeaderError,
    NoHandlerError,
)
from container_messaging.invocation import Handler
from container_messaging.markers import RetryPolicy, retry_policy_of
from container_messaging.messages import (
    CONTENT_TYPE,
    CORRELATION_ID,
    ID,
    PARENT_ID,
    RETRY_NUMBER,
    TARGET_HANDLER,
    TIMESTAMP,
    TYPE_ID,
    FailureHeader,
    Message,
)

__all__ = [
    "Decision",
    "Failure",
    "MoveToDeadLetter",
    "Recoverability",
    "RetryLater",
    "RetryNow",
    "is_poison",
    "retry_number",
]

POISON: Final = "poison message"
EXHAUSTED: Final = "retries exhausted"
_COPY_FAILED: Final = "its delayed retry copy could not be published twice"
_REDUCED: Final = "copy reduced to its essential headers (a full copy could not be published)"

_POISON: Final = (ConversionError, DistributionError, MissingHeaderError, NoHandlerError, MessageTooLargeError)

#: The original headers a reduced dead letter copy keeps (each bounded): what identifies and routes the message.
_ESSENTIAL: Final = (
    ID,
    CORRELATION_ID,
    PARENT_ID,
    TIMESTAMP,
    CONTENT_TYPE,
    TYPE_ID,
    PAYLOAD_TYPE,
    ROUTING_KEY,
    TARGET_SERVICE,
    SOURCE_SERVICE,
    TARGET_HANDLER,
)
_ESSENTIAL_LIMIT: Final = 255


def is_poison(error: BaseException) -> bool:
    """Whether retrying can never help: the message itself is wrong."""
    return isinstance(error, _POISON)


def first_failure_time(message: Message) -> int | None:
    """When ``message`` first failed (unix seconds, the header its delayed retry copies carry), or None; a value that
    is not a plausible time (from the wire) counts as none."""
    value = message.headers.get(FailureHeader.FIRST_TIME)
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 40 else None


def retry_number(message: Message) -> int:
    """How many delayed retries the message had (``ecotone_retry_number``; 0 when absent).

    Raises :class:`DistributionError` naming the header when its value is not a whole number from 0 to
    ``MAX_RETRY_NUMBER`` (an int, or its decimal text): such a message is poison.
    """
    value = message.headers.get(RETRY_NUMBER)
    if value is None:
        return 0
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and 0 < len(value) <= len(str(MAX_RETRY_NUMBER)) and value.isascii():
        number = int(value) if value.isdigit() else None
    if number is None or not 0 <= number <= MAX_RETRY_NUMBER:
        raise DistributionError(
            f"message {shown(message.headers.get(ID))} has header {RETRY_NUMBER!r} = {shown(value)}: expected a "
            f"whole number from 0 to {MAX_RETRY_NUMBER}"
        )
    return number


@attrs.frozen
class Failure:
    """One failed attempt of a handler on a message (``handler`` None: no handler could be chosen).

    ``attempt`` and ``attempts`` count overall, immediate and delayed retries together.
    """

    handler: Handler | None
    error: Exception
    attempt: int
    attempts: int

    @property
    def poison(self) -> bool:
        return is_poison(self.error)

    @property
    def handler_name(self) -> str:
        return self.handler.name if self.handler is not None else "routing"

    @property
    def error_text(self) -> str:
        """``ErrorClass: message``, bounded."""
        return f"{type(self.error).__name__}: {truncated(str(self.error), FAILURE_TEXT_LIMIT)}"


@attrs.frozen
class RetryNow:
    """Run the handler again at once."""

    failure: Failure


@attrs.frozen
class RetryLater:
    """Put a copy of the message back on its queue, visible after ``delay_ms``, with ``headers`` added (the retry
    number, and the handler the copy is for): delayed retry ``retry`` of ``retries``."""

    failure: Failure
    delay_ms: int
    retry: int
    retries: int
    headers: Mapping[str, Any] = attrs.field(repr=False)


@attrs.frozen
class MoveToDeadLetter:
    """Put a copy of the message on the dead letter with ``headers`` added (the ``failure.*`` details, and the
    handler the entry is for). ``reduced``: the copy keeps the body and only the essential original headers
    (see :meth:`reduced_headers`), because a full copy could not be published."""

    failure: Failure
    reason: str
    headers: Mapping[str, Any] = attrs.field(repr=False)
    reduced: bool = False

    def reduced_headers(self, original: Mapping[str, Any]) -> dict[str, Any]:
        """The headers of the reduced copy: the essential original ones (scalars only, text cut to 255
        characters), then this decision's headers."""
        kept: dict[str, Any] = {}
        for name in _ESSENTIAL:
            value = original.get(name)
            if isinstance(value, str):
                kept[name] = truncated(value, _ESSENTIAL_LIMIT)
            elif (isinstance(value, float) and math.isfinite(value)) or (
                isinstance(value, int) and value.bit_length() <= 63  # bool is an int: kept as it is
            ):
                kept[name] = value
        return {**kept, **self.headers}


#: One failed attempt's fate.
Decision: TypeAlias = RetryNow | RetryLater | MoveToDeadLetter


class Recoverability:
    """Decides each failure's fate by the handler's retry policy (its ``@retries``, else the endpoint's)."""

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

    def decide(
        self,
        handler: Handler,
        error: Exception,
        *,
        attempt: int,
        retries_before: int,
        copy_failures: int = 0,
        first_failed_at: int | None = None,
    ) -> Decision:
        """What to do after ``handler`` failed with ``error`` on attempt ``attempt`` of this delivery, the message
        having had ``retries_before`` delayed retries (its valid ``ecotone_retry_number``).

        ``copy_failures`` counts how often publishing this message's copy failed before: after one, a dead letter
        copy is reduced; after two, a delayed retry gives way to a reduced dead letter copy (the consumer never
        loops on one message). ``first_failed_at``: when the message first failed (its retry copy says so), else now.
        """
        policy = self.policy(handler)
        failure = self._failure(policy, handler, error, attempt, retries_before)
        if not failure.poison and attempt <= policy.immediate_retries:
            return RetryNow(failure)
        return self._fate(policy, failure, retries_before, copy_failures, first_failed_at)

    def decide_unrouted(
        self, error: Exception, *, retries_before: int, copy_failures: int = 0, first_failed_at: int | None = None
    ) -> RetryLater | MoveToDeadLetter:
        """What to do when no handler could be chosen (a routing error, a malformed header, a body too large):
        never retried at once; otherwise as :meth:`decide`, by the endpoint's policy."""
        failure = self._failure(self._default, None, error, 1, retries_before)
        return self._fate(self._default, failure, retries_before, copy_failures, first_failed_at)

    @staticmethod
    def _failure(
        policy: RetryPolicy, handler: Handler | None, error: Exception, attempt: int, retries_before: int
    ) -> Failure:
        per_delivery = 1 + policy.immediate_retries
        overall = per_delivery * (1 + len(policy.delayed_retries))
        return Failure(handler, error, retries_before * per_delivery + attempt, overall)

    def _fate(
        self,
        policy: RetryPolicy,
        failure: Failure,
        retries_before: int,
        copy_failures: int,
        first_failed_at: int | None,
    ) -> RetryLater | MoveToDeadLetter:
        delays = policy.delayed_retries
        first = int(time.time()) if first_failed_at is None else first_failed_at
        if failure.poison:
            return self._dead_letter(failure, POISON, first, reduced=copy_failures >= 1)
        if retries_before >= len(delays):
            return self._dead_letter(failure, EXHAUSTED, first, reduced=copy_failures >= 1)
        if copy_failures >= 2:
            return self._dead_letter(failure, _COPY_FAILED, first, reduced=True)
        headers: dict[str, Any] = {RETRY_NUMBER: retries_before + 1, FailureHeader.FIRST_TIME: first}
        if failure.handler is not None:
            headers[TARGET_HANDLER] = failure.handler.name
        return RetryLater(failure, delays[retries_before], retries_before + 1, len(delays), headers)

    def _dead_letter(self, failure: Failure, reason: str, first_failed_at: int, *, reduced: bool) -> MoveToDeadLetter:
        if reduced:
            reason = f"{reason}; {_REDUCED}"
        headers = failure_headers(failure, self._endpoint, reason)
        headers[FailureHeader.FIRST_TIME] = first_failed_at
        if failure.handler is not None:
            headers[TARGET_HANDLER] = failure.handler.name
        return MoveToDeadLetter(failure, reason, headers, reduced)


def failure_headers(failure: Failure, endpoint: str, reason: str) -> dict[str, Any]:
    """The details a dead letter entry keeps about its failure, each text cut to ``FAILURE_TEXT_LIMIT`` characters
    (the trace to ``FAILURE_TRACE_LIMIT``, keeping its start and its end)."""
    error = failure.error
    trace = "".join(traceback.format_exception(error, limit=-8))
    return {
        FailureHeader.ENDPOINT: truncated(endpoint, FAILURE_TEXT_LIMIT),
        FailureHeader.HANDLER: truncated(failure.handler_name, FAILURE_TEXT_LIMIT),
        FailureHeader.REASON: truncated(reason, FAILURE_TEXT_LIMIT),
        FailureHeader.EXCEPTION_CLASS: truncated(
            f"{type(error).__module__}.{type(error).__qualname__}", FAILURE_TEXT_LIMIT
        ),
        FailureHeader.MESSAGE: truncated(str(error), FAILURE_TEXT_LIMIT),
        FailureHeader.TRACE: truncated(trace, FAILURE_TRACE_LIMIT, keep_end=True),
        FailureHeader.TIME: int(time.time()),
        FailureHeader.ATTEMPTS: failure.attempt,
    }
