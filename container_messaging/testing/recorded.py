"""Recorded messages: what a service of the test system sent and what its endpoint received, as users assert on it.

A :class:`RecordedMessage` is one message as it crossed the transport (the bytes and headers on the wire), with its
Ecotone identity read from the headers: payload type (command, event or generic message), routing key (a generic
message's target channel), destination and source service. A received one also says how its consumer settled it
(:class:`Outcome`). :class:`RecordedMessages` is an immutable sequence of them with the filters and views tests
use::

    billing.sent.events("billing.detailsWereChanged").payloads()              # [{"personId": "1", ...}]
    billing.sent.events("billing.*").payloads(BillingDetailsWereChanged)      # [BillingDetailsWereChanged(...)]
    user.sent.commands(to="billing").routing_keys()                           # ["billing.changeDetails"]
    ticket.received.events().headers()[0]["correlationId"]

Payloads are converted by the recording service's own converter, exactly as its handlers would receive them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from container_messaging.conversion import Converter
from container_messaging.distributed.topology import PAYLOAD_TYPE, ROUTING_KEY, SOURCE_SERVICE, TARGET_SERVICE
from container_messaging.messages import CONTENT_TYPE, ID, FailureHeader, Headers, MediaType
from container_messaging.routing import glob_pattern

__all__ = ["Outcome", "RecordedMessage", "RecordedMessages"]


class Outcome(enum.Enum):
    """How the receiving endpoint settled a message."""

    #: acknowledged: handled (or an event no handler here subscribes to, or a duplicate skipped)
    ACKNOWLEDGED = "acknowledged"
    #: a handler failed; a delayed retry copy was put back on the queue, then the message was acknowledged
    RETRIED_LATER = "retried later"
    #: a handler failed for good (or the message was poison); it went to the endpoint's dead letter
    DEAD_LETTERED = "dead-lettered"
    #: put back on its queue by the consumer (``stop_on_failure``)
    REQUEUED = "requeued"
    #: never settled: back on its queue when the consumer stopped (the test system's fail-fast stop)
    RETURNED = "returned"


def _headers(value: Mapping[str, Any]) -> Headers:
    return value if isinstance(value, Headers) else Headers(value)


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@attrs.frozen
class RecordedMessage:
    """One message a service sent (``outcome`` None) or its endpoint received."""

    service: str
    body: bytes = attrs.field(repr=lambda body: f"<{len(body)} bytes>")
    content_type: str
    headers: Headers = attrs.field(converter=_headers, repr=False)
    outcome: Outcome | None = None
    #: the ``failure.*`` headers of its dead letter copy (a received message that was dead-lettered)
    failure: Headers | None = attrs.field(default=None, converter=attrs.converters.optional(_headers), repr=False)
    converter: Converter = attrs.field(kw_only=True, eq=False, repr=False)

    @property
    def id(self) -> str | None:
        return _optional_str(self.headers.get(ID))

    @property
    def payload_type(self) -> str | None:
        """``command``, ``event`` or ``message`` (None for a message the distributed bus did not send)."""
        return _optional_str(self.headers.get(PAYLOAD_TYPE))

    @property
    def routing_key(self) -> str | None:
        """The distributed routing key (a generic message's target channel name)."""
        return _optional_str(self.headers.get(ROUTING_KEY))

    @property
    def destination(self) -> str | None:
        """The target service of a command or generic message (None for an event)."""
        return _optional_str(self.headers.get(TARGET_SERVICE))

    @property
    def source(self) -> str | None:
        """The service that sent it."""
        return _optional_str(self.headers.get(SOURCE_SERVICE))

    @property
    def text(self) -> str:
        """The body as UTF-8 text."""
        return self.body.decode("utf-8")

    def payload(self, as_type: Any = Any) -> Any:
        """The body converted as a handler whose payload parameter is annotated ``as_type`` receives it: decoded JSON
        (or text, or bytes, by content type) by default, an attrs class or dataclass structured from it, ..."""
        return self.converter.to_python(self.body, self.content_type, as_type)

    @property
    def error(self) -> str | None:
        """``module.ErrorClass: message`` of a dead-lettered message's failure."""
        if self.failure is None:
            return None
        return f"{self.failure.get(FailureHeader.EXCEPTION_CLASS)}: {self.failure.get(FailureHeader.MESSAGE)}"

    def __str__(self) -> str:
        kind = self.payload_type or "message"
        route = f"{self.routing_key!r}" + (f" to {self.destination!r}" if self.destination else "")
        if self.outcome is None:
            return f"{kind} {route} sent by {self.service!r} (id {self.id})"
        return f"{kind} {route} received by {self.service!r} (id {self.id}, {self.outcome.value})"

    @classmethod
    def of(
        cls,
        service: str,
        body: bytes,
        headers: Mapping[str, Any],
        content_type: str | None,
        converter: Converter,
        outcome: Outcome | None = None,
        failure: Mapping[str, Any] | None = None,
    ) -> RecordedMessage:
        """A record of a message as it was on the wire (its headers copied)."""
        content_type = content_type or str(headers.get(CONTENT_TYPE) or MediaType.OCTET_STREAM)
        return cls(service, body, content_type, Headers(headers), outcome, failure, converter=converter)


def _matches(pattern: str | None, value: str | None) -> bool:
    return pattern is None or (value is not None and glob_pattern(pattern).match(value) is not None)


class RecordedMessages(tuple[RecordedMessage, ...]):
    """Recorded messages, oldest first: a tuple, with filters that return :class:`RecordedMessages` again and views
    for assertions. Routing keys are matched as Ecotone globs (``billing.*``; an exact key matches itself)."""

    __slots__ = ()

    def __new__(cls, messages: Iterable[RecordedMessage] = ()) -> RecordedMessages:
        return super().__new__(cls, messages)

    def __repr__(self) -> str:
        return f"RecordedMessages([{', '.join(str(message) for message in self)}])"

    def _where(self, payload_type: str, routing_key: str | None, destination: str | None) -> RecordedMessages:
        return RecordedMessages(
            message
            for message in self
            if message.payload_type == payload_type
            and _matches(routing_key, message.routing_key)
            and (destination is None or message.destination == destination)
        )

    def commands(self, routing_key: str | None = None, *, to: str | None = None) -> RecordedMessages:
        """The commands (of ``routing_key``, to service ``to``)."""
        return self._where("command", routing_key, to)

    def events(self, routing_key: str | None = None) -> RecordedMessages:
        """The events (of ``routing_key``)."""
        return self._where("event", routing_key, None)

    def messages(self, channel: str | None = None, *, to: str | None = None) -> RecordedMessages:
        """The generic messages (``send_message``: to target ``channel``, to service ``to``)."""
        return self._where("message", channel, to)

    def with_outcome(self, outcome: Outcome) -> RecordedMessages:
        """The received messages their consumer settled that way."""
        return RecordedMessages(message for message in self if message.outcome is outcome)

    def payloads(self, as_type: Any = Any) -> list[Any]:
        """Each message's payload (see :meth:`RecordedMessage.payload`)."""
        return [message.payload(as_type) for message in self]

    def headers(self) -> list[Headers]:
        return [message.headers for message in self]

    def routing_keys(self) -> list[str | None]:
        return [message.routing_key for message in self]

    def ids(self) -> list[str | None]:
        return [message.id for message in self]
