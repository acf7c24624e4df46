"""What the distributed bus refuses to send: messages no consumer could ever take.

Everything is checked before anything is published (by the API, and thereby by the CLI's send commands), and each
refusal names its culprit:

- a destination that is not a service name (:data:`~container_messaging.distributed.topology.SERVICE_NAME`: what
  ``service_name`` may be, since it is the AMQP routing key of the service's queue);
- a routing key or target channel name that can never match: words of letters, digits, ``_``, ``-``, ``:`` or
  ``\\`` (PHP class names) separated by single dots, no wildcard (``*`` and ``#`` belong to handler keys), at most
  255 bytes (AMQP's limit);
- a content type no consumer accepts (:func:`~container_messaging.conversion.check_wire_media_type`);
- metadata that sets a reserved header, gives a header a sender may set in the wrong shape, or holds a value the
  wire cannot carry (see :func:`check_metadata` and the README's "Wire format").

A refused routing key, destination or header is an :class:`~container_messaging.errors.InvalidMessageError`; a
refused content type an :class:`~container_messaging.errors.UnsupportedMediaTypeError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from container_messaging.conversion import check_wire_media_type
from container_messaging.distributed.topology import (
    DISTRIBUTED_HEADER_PREFIX,
    DISTRIBUTED_HEADERS,
    ROUTING_SLIP_VALUE,
    SERVICE_NAME,
)
from container_messaging.errors import InvalidMessageError, UnsupportedMediaTypeError
from container_messaging.messages import (
    CONTENT_TYPE,
    CORRELATION_ID,
    ID,
    PARENT_ID,
    RETRY_NUMBER,
    ROUTING_SLIP,
    TARGET_HANDLER,
    TIMESTAMP,
    TYPE_ID,
    FailureHeader,
    MediaType,
)

__all__ = ["MAX_ROUTING_KEY_BYTES", "check_destination", "check_media_type", "check_metadata", "check_routing_key"]

#: AMQP's limit for a routing key (a short string).
MAX_ROUTING_KEY_BYTES: Final = 255
_WORD: Final = r"[\w\-:\\]+"
_ROUTING_KEY: Final = re.compile(rf"{_WORD}(?:\.{_WORD})*")
_WORD_CHARACTER: Final = re.compile(r"[\w\-:\\.]")
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_INT64: Final = range(-(2**63), 2**63)
_MAX_NESTING: Final = 32
_SHOWN: Final = 60

#: Headers only the framework writes, and who writes them.
_RESERVED: Final = {
    ROUTING_SLIP: f"the distributed bus sets it to {ROUTING_SLIP_VALUE!r}",
    **dict.fromkeys(DISTRIBUTED_HEADERS, "the distributed bus sets it from its arguments"),
    RETRY_NUMBER: "the consumer counts the attempts in it",
    TARGET_HANDLER: "the consumer addresses retry copies with it",
    **dict.fromkeys(FailureHeader.ALL, "only dead letter entries carry it"),
}


def _shown(value: str) -> str:
    """``value`` quoted, cut short when long (a 30 KB routing key must not flood the error)."""
    if len(value) <= _SHOWN:
        return repr(value)
    return f"{value[:_SHOWN]!r}... ({len(value)} characters)"


def _value_shown(value: object) -> str:
    return _shown(value) if isinstance(value, str) else repr(value)[:_SHOWN]


def _text(value: object, argument: str) -> str:
    if not isinstance(value, str):
        raise InvalidMessageError(f"the {argument} must be a str, got {type(value).__name__} {_value_shown(value)}")
    return value


def _routing_key_problem(key: str) -> str:
    size = len(key.encode("utf-8", "surrogatepass"))
    if not key:
        return "it is empty"
    if size > MAX_ROUTING_KEY_BYTES:
        return f"it is {size} bytes long, over AMQP's limit of {MAX_ROUTING_KEY_BYTES}"
    if any(c.isspace() for c in key):
        return "it contains whitespace"
    if "*" in key or "#" in key:
        return "a sent key names one message: '*' and '#' are wildcards of handler keys, not of sent ones"
    if key.startswith(".") or key.endswith(".") or ".." in key:
        return "it has an empty word (a leading, trailing or doubled dot)"
    bad = next(c for c in key if not _WORD_CHARACTER.fullmatch(c))
    return (
        f"character {bad!r} is not allowed (routing keys are words of letters, digits, '_', '-', ':' or '\\' "
        "separated by dots)"
    )


def check_routing_key(value: object, argument: str = "routing key") -> str:
    """``value`` when it is a routing key a handler can match; else an :class:`InvalidMessageError` saying why.

    ``argument`` names it in the error: ``routing key`` or ``target channel name``.
    """
    key = _text(value, argument)
    if _ROUTING_KEY.fullmatch(key) and len(key.encode("utf-8")) <= MAX_ROUTING_KEY_BYTES:
        return key
    raise InvalidMessageError(f"the {argument} {_shown(key)} can never match a handler: {_routing_key_problem(key)}")


def check_destination(value: object) -> str:
    """``value`` when it can be a service's name; else an :class:`InvalidMessageError` naming it."""
    name = _text(value, "destination")
    if SERVICE_NAME.fullmatch(name) and len(name) <= MAX_ROUTING_KEY_BYTES:
        return name
    problem = "it is empty" if not name else "a service name is letters, digits, '.', '_' and '-' only"
    if len(name) > MAX_ROUTING_KEY_BYTES:
        problem = f"it is {len(name)} characters long, over AMQP's limit of {MAX_ROUTING_KEY_BYTES} bytes"
    raise InvalidMessageError(f"the destination {_shown(name)} can never be a service: {problem}")


def check_media_type(value: object) -> str:
    """``value`` when a consumer accepts it (else :class:`UnsupportedMediaTypeError`, from the converter)."""
    media_type = _text(value, "source media type")
    if MediaType.base(media_type) == MediaType.PYTHON_OBJECT:
        raise UnsupportedMediaTypeError(
            f"content type {media_type!r} never leaves the process: send the payload serialized, or an object "
            "with convert_and_send_command / convert_and_publish_event"
        )
    check_wire_media_type(media_type)
    return media_type


# -- metadata ------------------------------------------------------------------------------------------------------


def _uuid(key: str, value: Any, _media_type: str) -> None:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise InvalidMessageError(
            f"metadata header {key!r} must be a UUID as text (like '01890a5d-ac96-774b-bcce-b302099a8057'), "
            f"got {type(value).__name__} {_value_shown(value)}"
        )


def _timestamp(key: str, value: Any, _media_type: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidMessageError(
            f"metadata header {key!r} must be unix seconds as an int, got {type(value).__name__} {_value_shown(value)}"
        )


def _content_type(key: str, value: Any, media_type: str) -> None:
    if not isinstance(value, str) or MediaType.base(value) != MediaType.base(media_type):
        raise InvalidMessageError(
            f"metadata header {key!r} {_value_shown(value)} disagrees with the media type {media_type!r}; "
            "leave it out: the media type sets it"
        )


def _type_id(key: str, value: Any, _media_type: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidMessageError(
            f"metadata header {key!r} must name the payload's type as a non-empty str, got {_value_shown(value)}"
        )


#: The framework's headers a sender may set, and the shape each must have.
_SETTABLE: Final[Mapping[str, Callable[[str, Any, str], None]]] = {
    ID: _uuid,
    CORRELATION_ID: _uuid,
    PARENT_ID: _uuid,
    TIMESTAMP: _timestamp,
    CONTENT_TYPE: _content_type,
    TYPE_ID: _type_id,
}


def _wire_value_problem(value: Any, depth: int = 0) -> str | None:
    """Why the wire cannot carry ``value`` as a header (every transport, and Ecotone on the other side), or None."""
    if value is None or isinstance(value, str | bool | float):
        return None
    if isinstance(value, int):
        return None if value in _INT64 else f"the int {value} does not fit in 64 bits"
    if depth >= _MAX_NESTING:
        return f"it is nested more than {_MAX_NESTING} levels deep"
    if isinstance(value, list | tuple):
        return next((p for p in (_wire_value_problem(item, depth + 1) for item in value) if p), None)
    if isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str):
                return f"its key {name!r} is not a str"
            problem = _wire_value_problem(item, depth + 1)
            if problem:
                return problem
        return None
    return (
        f"{type(value).__name__} values cannot cross the wire (headers hold str, int, float, bool, None and lists "
        "or dicts of them: convert it, e.g. to ISO text or to JSON)"
    )


def check_metadata(metadata: object, media_type: str) -> Mapping[str, Any]:
    """``metadata`` when every header in it may be sent; else an :class:`InvalidMessageError` naming the header.

    A sender may set ``id``, ``correlationId`` and ``parentId`` (UUIDs as text), ``timestamp`` (unix seconds, an
    int), ``__TypeId__`` (the payload's type name) and ``contentType`` (only equal to ``media_type``, which sets
    it anyway). The headers the bus, the consumer and the dead letter write (``routingSlip``,
    ``ecotone.distributed.*``, ``ecotone.amqp.distributed.service_target``, ``ecotone_retry_number``,
    ``container_messaging.handler``, ``failure.*``) are refused. Every other header is
    the user's, sent as is, if the wire can carry its value.
    """
    if not isinstance(metadata, Mapping):
        raise InvalidMessageError(
            f"metadata must be a mapping of header names to values, got {type(metadata).__name__}"
        )
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise InvalidMessageError(f"metadata header names must be str, got {type(key).__name__} {key!r}")
        rule = _SETTABLE.get(key)
        if rule is not None:
            rule(key, value, media_type)
        elif key in _RESERVED or key.startswith(DISTRIBUTED_HEADER_PREFIX):
            why = _RESERVED.get(key, "the distributed bus sets the ecotone.distributed.* headers")
            raise InvalidMessageError(f"metadata header {_shown(key)} is reserved: {why}")
        problem = _wire_value_problem(value)
        if problem:
            raise InvalidMessageError(f"metadata header {_shown(key)} cannot be sent: {problem}")
    return metadata
