"""Messages, their headers and media types.

A :class:`Message` is a payload plus headers. The header names are Ecotone's, so a message read off the wire
by an Ecotone service means the same thing to it (see README, "Wire format").
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from typing import Any, Final

import attrs

__all__ = [
    "CONTENT_TYPE",
    "CORRELATION_ID",
    "ECOTONE_FRAMEWORK_HEADERS",
    "FRAMEWORK_HEADERS",
    "FailureHeader",
    "Header",
    "Headers",
    "ID",
    "MediaType",
    "Message",
    "PARENT_ID",
    "RETRY_NUMBER",
    "ROUTING_SLIP",
    "TARGET_HANDLER",
    "TIMESTAMP",
    "TYPE_ID",
    "new_headers",
    "new_message_id",
    "user_metadata",
]

ID: Final = "id"
CORRELATION_ID: Final = "correlationId"
PARENT_ID: Final = "parentId"
TIMESTAMP: Final = "timestamp"
CONTENT_TYPE: Final = "contentType"
TYPE_ID: Final = "__TypeId__"
ROUTING_SLIP: Final = "routingSlip"
RETRY_NUMBER: Final = "ecotone_retry_number"
#: The one handler a retry copy or a dead letter entry is for (the other handlers of an event do not run again).
TARGET_HANDLER: Final = "container_messaging.handler"

#: Ecotone's framework headers (``MessageHeaders`` and its consumers' headers): they describe one message's trip
#: through an Ecotone service (the channel it was polled from, its acknowledgement, its reply channel...) and, like
#: Ecotone, this framework never copies them onto the messages a handler sends. The ``ecotone.`` and ``amqp_``
#: headers Ecotone writes are framework headers by their prefix.
ECOTONE_FRAMEWORK_HEADERS: Final = frozenset(
    {
        "contentEncoding",
        "replyChannel",
        "errorChannel",
        "sequenceNumber",
        "sequenceSize",
        "priority",
        "duplicateMessage",
        "timeToLive",
        "deliveryDelay",
        "polledChannelName",
        "consumerPollingMetadata",
        "consumerAcknowledgeCallbackHeader",
        "replyContentType",
        "streamBasedSourced",
        "channelSendRetryNumber",
        "aggregate.id",
    }
)
#: The header whose value names another header holding an Ecotone consumer's acknowledgement callback.
_ECOTONE_ACKNOWLEDGE_LOCATION: Final = "consumerAcknowledgeCallbackHeader"

#: Headers that belong to one message and are never copied onto the messages its handler sends.
FRAMEWORK_HEADERS: Final = frozenset(
    {ID, CORRELATION_ID, PARENT_ID, TIMESTAMP, CONTENT_TYPE, TYPE_ID, ROUTING_SLIP, RETRY_NUMBER}
    | ECOTONE_FRAMEWORK_HEADERS
)
_FRAMEWORK_PREFIXES: Final = ("ecotone.", "amqp_", "failure.", "x-", "container_messaging.")


class FailureHeader:
    """The headers a dead letter entry carries about its failure (one spelling, used by every reader and writer)."""

    ENDPOINT: Final = "failure.endpoint"
    HANDLER: Final = "failure.handler"
    REASON: Final = "failure.reason"
    EXCEPTION_CLASS: Final = "failure.exceptionClass"
    MESSAGE: Final = "failure.message"
    TRACE: Final = "failure.trace"
    TIME: Final = "failure.time"
    #: when the message first failed (carried by its delayed retry copies into the dead letter)
    FIRST_TIME: Final = "failure.firstTime"
    ATTEMPTS: Final = "failure.attempts"

    ALL: Final = (ENDPOINT, HANDLER, REASON, EXCEPTION_CLASS, MESSAGE, TRACE, TIME, FIRST_TIME, ATTEMPTS)


class MediaType:
    """The media types the converter understands."""

    APPLICATION_JSON: Final = "application/json"
    TEXT_PLAIN: Final = "text/plain"
    OCTET_STREAM: Final = "application/octet-stream"
    #: an in-process Python object: never leaves the process
    PYTHON_OBJECT: Final = "application/x-python-object"

    WIRE: Final = frozenset({APPLICATION_JSON, TEXT_PLAIN, OCTET_STREAM})

    @staticmethod
    def base(content_type: str) -> str:
        """``'application/json; charset=utf-8'`` -> ``'application/json'``."""
        return content_type.split(";", 1)[0].strip().lower()


def new_message_id() -> str:
    """A UUID version 7 (time-ordered, as Ecotone uses) as text: 48 bits of unix milliseconds, version, variant,
    74 random bits."""
    ms = time.time_ns() // 1_000_000
    rand = random.getrandbits(80)  # random reseeds itself in a forked child: ids stay unique across processes
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | (rand & (1 << 62) - 1)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class Headers(Mapping[str, Any]):
    """A read-only view of a message's headers; annotate a handler parameter with it to receive them all."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = dict(data) if data else {}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:  # the Mapping mixin's get is 3x slower
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Headers({self._data!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def adopt(cls, data: dict[str, Any]) -> Headers:
        """Wraps ``data`` without copying it: the caller gives it up (it must not change it afterwards)."""
        headers = cls.__new__(cls)
        headers._data = data
        return headers

    def to_dict(self) -> dict[str, Any]:
        """A mutable copy."""
        return dict(self._data)


_NO_DEFAULT: Final[Any] = object()


@attrs.frozen
class Header:
    """Marks a handler parameter as one header: ``Annotated[str, Header("tenant")]``."""

    name: str
    default: Any = attrs.field(default=_NO_DEFAULT, repr=False)

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT


@attrs.frozen(repr=False)
class Message:
    """A payload and its headers. ``payload`` is bytes/str off the wire, or any object in-process."""

    payload: Any
    headers: Headers

    @property
    def id(self) -> str:
        return str(self.headers[ID])

    @property
    def correlation_id(self) -> str:
        return str(self.headers.get(CORRELATION_ID) or self.headers[ID])

    @property
    def content_type(self) -> str:
        return str(self.headers.get(CONTENT_TYPE, MediaType.PYTHON_OBJECT))

    def __repr__(self) -> str:
        payload = self.payload
        if isinstance(payload, (bytes, str)) and len(payload) > 80:
            unit = "bytes" if isinstance(payload, bytes) else "characters"
            shown = f"{payload[:77]!r}... ({len(payload)} {unit})"
        else:
            shown = repr(payload)
        return f"Message(id={self.headers.get(ID)!r}, content_type={self.content_type!r}, payload={shown})"

    @classmethod
    def create(
        cls,
        payload: Any,
        content_type: str,
        metadata: Mapping[str, Any] | None = None,
        parent: Message | None = None,
    ) -> Message:
        """A new message with fresh ``id`` and ``timestamp``.

        With a ``parent`` (the message being handled), the new one keeps its ``correlationId`` and user metadata
        and gets ``parentId`` = the parent's id. ``metadata`` is merged last, as Ecotone does.
        """
        return cls(payload, Headers.adopt(new_headers(content_type, metadata, parent)))


def new_headers(
    content_type: str, metadata: Mapping[str, Any] | None = None, parent: Message | None = None
) -> dict[str, Any]:
    """The headers of a new message: fresh ``id`` and ``timestamp``; with a ``parent`` (the message being handled),
    its ``correlationId`` and user metadata, and ``parentId`` = its id; ``metadata`` merged last, as Ecotone does."""
    headers: dict[str, Any] = {}
    if parent is not None:
        headers.update(user_metadata(parent.headers))
        headers[CORRELATION_ID] = parent.correlation_id
        headers[PARENT_ID] = parent.id
    if metadata:
        headers.update(metadata)
    message_id = headers.get(ID) if metadata and ID in metadata else new_message_id()
    headers[ID] = message_id
    headers.setdefault(CORRELATION_ID, message_id)
    headers.setdefault(TIMESTAMP, int(time.time()))
    headers[CONTENT_TYPE] = content_type
    return headers


def user_metadata(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The headers a user put on a message: everything but the framework's own (this framework's and Ecotone's:
    :data:`FRAMEWORK_HEADERS`, the ``ecotone.``, ``amqp_``, ``failure.``, ``x-`` and ``container_messaging.``
    headers, and the header an Ecotone consumer's ``consumerAcknowledgeCallbackHeader`` names)."""
    acknowledge = headers.get(_ECOTONE_ACKNOWLEDGE_LOCATION)
    return {
        k: v
        for k, v in headers.items()
        if k not in FRAMEWORK_HEADERS and not k.startswith(_FRAMEWORK_PREFIXES) and k != acknowledge
    }
