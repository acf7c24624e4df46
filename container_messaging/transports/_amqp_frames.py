"""The frames of one AMQP 0-9-1 ``basic.publish`` (method, content header, body frames), encoded here for the
RabbitMQ adapter's pipelined publishing (``rabbitmq.py``: a batch, or a group of concurrent senders, written to the
socket in one go).

The bytes are the ones py-amqp writes for the same message (``tests/test_amqp_frames.py`` compares them), at about a
fifth of the cost: py-amqp encodes every property and every header value through a generic format interpreter and
writes each message with a system call of its own. That cost is most of the publisher's time (benchmarks/, scenario
8, ``batch(100)``). Header values of the common types (str, bytes, bool, int, float, None, tables and arrays of
them) are encoded here; any other type goes through py-amqp's own table writer, so what py-amqp accepts stays the
same. What the wire cannot carry (a short string over 255 bytes, a value of another type) is an
:class:`~container_messaging.errors.InvalidMessageError` naming the field or the header.
"""

from __future__ import annotations

from collections.abc import Mapping
from io import BytesIO
from struct import Struct
from typing import Any, Final

from amqp import serialization

from container_messaging.errors import InvalidMessageError

__all__ = ["publish_frames"]

_FRAME_HEAD: Final = Struct(">BHI")
_FRAME_END: Final = b"\xce"
_METHOD_FRAME, _HEADER_FRAME, _BODY_FRAME = 1, 2, 3
#: the frame header and the frame end octet
_FRAME_OVERHEAD: Final = 8
#: basic.publish: class 60, method 40, then its reserved short
_PUBLISH: Final = Struct(">HHH").pack(60, 40, 0)
#: the content header's class (basic), weight 0, then the body size
_CONTENT_HEADER: Final = Struct(">HHQ")
_SHORT: Final = Struct(">H")
_LONG: Final = Struct(">I")
_LONG_INT: Final = Struct(">i")
_LONG_STRING: Final = Struct(">cI")
_LONG_LONG_INT: Final = Struct(">q")
_DOUBLE: Final = Struct(">d")
#: basic's property flags (AMQP 0-9-1: the bit of each property, highest first)
_CONTENT_TYPE, _CONTENT_ENCODING, _HEADERS, _DELIVERY_MODE, _PRIORITY = 1 << 15, 1 << 14, 1 << 13, 1 << 12, 1 << 11
_MESSAGE_ID: Final = 1 << 7
_INT32: Final = 2147483647
#: header names already encoded (a plain dict: its reads and writes are atomic under the GIL), and how many to keep
_NAMES: dict[str | bytes, bytes] = {}
_NAMES_KEPT: Final = 4096


def publish_frames(
    channel: int,
    exchange: str,
    routing_key: str,
    *,
    mandatory: bool,
    body: bytes,
    content_type: str | None,
    content_encoding: str | None,
    headers: Mapping[str, Any] | None,
    delivery_mode: int | None,
    priority: int | None,
    message_id: str | None,
    frame_max: int,
) -> bytes:
    """The frames of ``basic.publish`` of ``body`` on ``channel`` (a property that is None is left out, as py-amqp
    does); the body is cut into frames of ``frame_max`` bytes at most, the connection's negotiated maximum."""
    bits = b"\x01" if mandatory else b"\x00"  # mandatory, then immediate (never set)
    method = b"".join((_PUBLISH, _short_string(exchange, "exchange"), _short_string(routing_key, "routing key"), bits))
    flags, properties = 0, []
    if content_type is not None:
        flags |= _CONTENT_TYPE
        properties.append(_short_string(content_type, "content type"))
    if content_encoding is not None:
        flags |= _CONTENT_ENCODING
        properties.append(_short_string(content_encoding, "content encoding"))
    if headers is not None:
        flags |= _HEADERS
        properties.append(_table(headers))
    if delivery_mode is not None:
        flags |= _DELIVERY_MODE
        properties.append(bytes((delivery_mode,)))
    if priority is not None:
        flags |= _PRIORITY
        properties.append(bytes((priority,)))
    if message_id is not None:
        flags |= _MESSAGE_ID
        properties.append(_short_string(message_id, "message id"))
    header = b"".join((_CONTENT_HEADER.pack(60, 0, len(body)), _SHORT.pack(flags), *properties))
    parts = [_frame(_METHOD_FRAME, channel, method), _frame(_HEADER_FRAME, channel, header)]
    chunk = frame_max - _FRAME_OVERHEAD
    parts += (_frame(_BODY_FRAME, channel, body[start : start + chunk]) for start in range(0, len(body), chunk))
    return b"".join(parts)


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return b"".join((_FRAME_HEAD.pack(kind, channel, len(payload)), payload, _FRAME_END))


def _short_string(value: str, what: str) -> bytes:
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) > 255:
        raise InvalidMessageError(
            f"the {what} {value[:80]!r}... is {len(encoded)} bytes long; AMQP allows 255 at most"
        )
    return bytes((len(encoded),)) + encoded


def _table(table: Mapping[Any, Any]) -> bytes:
    """A field table: each key as a short string, then its value's type octet and value."""
    parts = []
    for key, value in table.items():
        name = _NAMES.get(key)
        if name is None:
            name = _name(key)
        parts.append(name)
        try:
            parts.append(_value(value))
        except InvalidMessageError as exc:
            raise InvalidMessageError(f"header {key!r}: {exc}") from None
    data = b"".join(parts)
    return _LONG.pack(len(data)) + data


def _name(key: str | bytes) -> bytes:
    """A header name as a short string, kept for the next message: the same few names come with every one."""
    name = _short_string(key, "header name") if isinstance(key, str) else bytes((len(key),)) + key
    if len(_NAMES) >= _NAMES_KEPT:
        _NAMES.clear()
    _NAMES[key] = name
    return name


def _value(value: Any) -> bytes:
    if isinstance(value, str):
        encoded = value.encode("utf-8", "surrogatepass")
        return _LONG_STRING.pack(b"S", len(encoded)) + encoded
    if isinstance(value, bytes):
        return _LONG_STRING.pack(b"S", len(value)) + value
    if isinstance(value, bool):  # before int: a bool is an int
        return b"t\x01" if value else b"t\x00"
    if isinstance(value, int):
        if -_INT32 <= value <= _INT32:
            return b"I" + _LONG_INT.pack(value)
        return b"L" + _LONG_LONG_INT.pack(value)
    if isinstance(value, float):
        return b"d" + _DOUBLE.pack(value)
    if value is None:
        return b"V"
    if isinstance(value, dict):
        return b"F" + _table(value)
    if isinstance(value, list | tuple):
        data = b"".join(_value(item) for item in value)
        return b"A" + _LONG.pack(len(data)) + data
    # anything else (Decimal, datetime...) exactly as py-amqp writes it, or refused where py-amqp refuses it
    out = BytesIO()
    try:
        serialization._write_item(value, out.write, [])  # py-amqp's table item writer: its one encoder for these
    except ValueError:
        raise InvalidMessageError(f"AMQP cannot carry a value of type {type(value).__name__}") from None
    return out.getvalue()
