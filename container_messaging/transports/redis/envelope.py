"""A message as a Redis stream entry, and back; an entry that is not one becomes a raw dead letter entry.

An entry has three fields: ``body`` (the raw bytes), ``headers`` (a JSON object) and ``content_type``. Reading is
strict: an entry without a body, with headers that are not a JSON object (``NaN`` and ``Infinity`` are not JSON),
or with a content type that is not text is *malformed*. It is never dropped and never stops a consumer:
:func:`malformed` turns it into a message carrying it raw, with an ``id`` (its entry id) and ``failure.*`` headers
saying what is wrong, which is what goes to the dead letter.

A delayed copy waits in a sorted set as one string, a nonce (two equal copies stay two members) and the entry's
fields, each as ``<length>:<bytes>``: what the Lua script that moves due copies takes apart.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any, Final

import attrs

from container_messaging.errors import InvalidMessageError
from container_messaging.messages import ID, FailureHeader, MediaType

__all__ = ["Envelope", "MALFORMED", "MalformedEntryError", "decode", "delayed_member", "encode", "malformed"]

BODY: Final = b"body"
HEADERS: Final = b"headers"
CONTENT_TYPE: Final = b"content_type"
#: The dead letter reason of an entry that is not a message.
MALFORMED: Final = "malformed entry"
#: How much of a malformed headers field the reason quotes.
_QUOTED: Final = 500


class MalformedEntryError(ValueError):
    """A stream entry that is not a message of this transport (the reason says why)."""


@attrs.frozen
class Envelope:
    """A message read from (or written to) a stream entry."""

    body: bytes = attrs.field(repr=lambda body: f"<{len(body)} bytes>")
    headers: dict[str, Any]
    content_type: str | None


def encode(envelope: Envelope) -> dict[bytes, bytes]:
    """The fields of ``envelope``'s stream entry. Headers must be JSON values (the sender checks them)."""
    try:
        headers = json.dumps(envelope.headers, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidMessageError(
            f"message {envelope.headers.get(ID)!r}: its headers cannot travel on Redis, which carries JSON values "
            f"only: {exc}"
        ) from exc
    return {
        BODY: envelope.body,
        HEADERS: headers.encode(),
        CONTENT_TYPE: (envelope.content_type or MediaType.OCTET_STREAM).encode(),
    }


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode(fields: Mapping[bytes, bytes]) -> Envelope:
    """The message of a stream entry's ``fields``; :class:`MalformedEntryError` when they are not one."""
    if BODY not in fields:
        raise MalformedEntryError(f"no field 'body' (fields: {sorted(_text(name) for name in fields)})")
    raw_headers = fields.get(HEADERS)
    if raw_headers is None:
        raise MalformedEntryError("no field 'headers'")
    try:
        headers = json.loads(raw_headers.decode(), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
        raise MalformedEntryError(
            f"field 'headers' is not JSON ({exc}): {_text(raw_headers)[:_QUOTED]!r}"
            + ("..." if len(raw_headers) > _QUOTED else "")
        ) from None
    if not isinstance(headers, dict):
        raise MalformedEntryError(f"field 'headers' is JSON but not an object: {type(headers).__name__}")
    content_type = fields.get(CONTENT_TYPE)
    try:
        text = content_type.decode("ascii") if content_type else None
    except UnicodeDecodeError:
        raise MalformedEntryError(f"field 'content_type' is not ASCII text: {content_type!r}") from None
    return Envelope(bytes(fields[BODY]), headers, text or None)


def malformed(entry_id: str, fields: Mapping[bytes, bytes], reason: str) -> Envelope:
    """A malformed entry as a message: its body raw (the ``body`` field, or else every field as JSON text), an
    ``id`` (the entry id) and ``failure.*`` headers with the reason, dated when the entry was added."""
    if BODY in fields:
        body = bytes(fields[BODY])
    else:
        body = json.dumps({_text(name): _text(value) for name, value in fields.items()}, ensure_ascii=False).encode()
    added = entry_id.partition("-")[0]
    headers: dict[str, Any] = {
        ID: entry_id,
        FailureHeader.HANDLER: "transport",
        FailureHeader.REASON: MALFORMED,
        FailureHeader.MESSAGE: reason,
        FailureHeader.ATTEMPTS: 0,
    }
    if added.isdigit():
        headers[FailureHeader.TIME] = int(added) // 1000
    return Envelope(body, headers, MediaType.OCTET_STREAM)


def delayed_member(fields: Mapping[bytes, bytes]) -> bytes:
    """The sorted set member of a delayed copy with these entry ``fields`` (see the module docstring)."""
    parts = [uuid.uuid4().hex.encode()]
    for name, value in fields.items():
        parts += [name, value]
    return b"".join(b"%d:%s" % (len(part), part) for part in parts)


def _text(value: bytes) -> str:
    return value.decode(errors="backslashreplace")
