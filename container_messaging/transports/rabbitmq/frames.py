"""AMQP 0-9-1 frames, written and read here rather than by py-amqp, where its per-frame cost is most of the
RabbitMQ adapter's time (benchmarks/, scenario 8).

Writing: :func:`publish_frames` encodes one ``basic.publish`` (method, content header, body frames) for the
adapter's batches and groups, written to the socket in one go. The bytes are the ones py-amqp writes for the same
message (``tests/test_amqp_frames.py`` compares them), at about a third of the cost: py-amqp encodes every property
and every header value through a generic format interpreter and writes each message with a system call of its own.
Header values of the common types (str, bytes, bool, int, float, None, tables and arrays of them) are encoded here;
any other type goes through py-amqp's own table writer, so what py-amqp accepts stays the same. What the wire cannot
carry (a short string over 255 bytes, a value of another type) is an
:class:`~container_messaging.errors.InvalidMessageError` naming the field or the header.

Reading: :class:`FrameReader` cuts a consumer's frames out of one large read of its socket, where py-amqp makes
three system calls per frame; py-amqp still decodes the methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from io import BytesIO
from struct import Struct
from typing import Any, Final

from amqp import serialization
from amqp.exceptions import UnexpectedFrame
from amqp.transport import TCPTransport

from container_messaging.errors import InvalidMessageError

__all__ = ["FrameReader", "publish_frames"]

#: A frame: type (octet), channel (short), payload size (long), the payload, then the frame-end octet 0xCE.
_FRAME_HEAD: Final = Struct(">BHI")
_FRAME_END_OCTET: Final = 0xCE
_FRAME_END: Final = bytes((_FRAME_END_OCTET,))
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


#: How many bytes a consumer's connection reads at once (py-amqp's frames are cut from them).
_READ_SIZE: Final = 65536



class FrameReader:
    """How a consumer reads a plain TCP connection: py-amqp reads each frame's header, payload and end with a
    system call each (three per frame, nine per message); here one large read holds many frames, and
    :meth:`read_frame` cuts a whole frame out of it, or leaves the frame to py-amqp's ``read_frame``, whose reads
    (:meth:`recv`, in place of the socket's) take what is left in the large read first.

    The socket is blocking with a receive timeout (py-amqp's ``read_timeout``); a read that times out raises
    ``TimeoutError`` (``socket.timeout``), as on a socket with a timeout, so that py-amqp keeps a partial frame and
    gives up (it would retry a bare ``EAGAIN`` in the middle of a frame for ever).

    py-amqp internals, needed here alone: ``TCPTransport._quick_recv`` (what its reads call) and ``_read_buffer``
    (a partial frame it kept after a timeout: while it holds one, py-amqp reads the next frame)."""

    __slots__ = ("_at", "_data", "_recv", "_transport")

    def __init__(self, transport: TCPTransport) -> None:
        self._transport = transport
        self._recv: Callable[[int], bytes] = transport._quick_recv
        self._data = b""
        self._at = 0
        transport._quick_recv = self.recv

    def holds(self) -> bool:
        """Whether bytes read from the socket wait here."""
        return self._at < len(self._data)

    def read_frame(self) -> tuple[int, int, bytes]:
        """The next frame: ``(type, channel, payload)``, as py-amqp's ``read_frame`` gives it."""
        data, at = self._data, self._at
        if len(data) - at > 7 and not self._transport._read_buffer:
            kind, channel, size = _FRAME_HEAD.unpack_from(data, at)
            end = at + 7 + size
            if end < len(data):  # the whole frame is here, its end octet included
                if data[end] != _FRAME_END_OCTET:
                    raise UnexpectedFrame(f"Received frame_end {data[end]:#04x} while expecting 0xce")
                self._at = end + 1
                return kind, channel, data[at + 7 : end]
        frame: tuple[int, int, bytes] = self._transport.read_frame()
        return frame

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes: what the last large read left, else a new large read."""
        at = self._at
        data = self._data
        if at < len(data):
            end = at + size
            self._at = end
            return data[at:end]
        try:
            data = self._recv(max(size, _READ_SIZE))
        except BlockingIOError as exc:  # EAGAIN: the socket's receive timeout
            raise TimeoutError("timed out") from exc
        if len(data) <= size:
            return data
        self._data, self._at = data, size
        return data[:size]
