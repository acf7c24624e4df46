"""Bounds on what comes off the wire, and on what is written about it.

A header value read from a broker may be anything: a 100 KB string, ``Infinity``, 2**62, a nested structure.
What the framework computes from one is linear in its size and bounded, and what it writes about one (an error
message, a log line, a dead letter's ``failure.*`` headers) is cut to the lengths below.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "FAILURE_TEXT_LIMIT",
    "FAILURE_TRACE_LIMIT",
    "MAX_RETRY_NUMBER",
    "MAX_ROUTING_KEY",
    "SHOWN_LIMIT",
    "shown",
    "truncated",
]

#: The largest ``ecotone_retry_number`` accepted from the wire; a larger one makes the message poison.
MAX_RETRY_NUMBER: Final = 1000
#: The longest routing key header accepted (characters; AMQP's own routing keys stop at 255 bytes).
MAX_ROUTING_KEY: Final = 255
#: The most characters of each text ``failure.*`` header but the trace (error message, handler, reason, ...).
FAILURE_TEXT_LIMIT: Final = 2000
#: The most characters of the ``failure.trace`` header (its start and its end are kept).
FAILURE_TRACE_LIMIT: Final = 4000
#: The most characters of a header value quoted in an error message or a log line.
SHOWN_LIMIT: Final = 120


def truncated(text: str, limit: int, *, keep_end: bool = False) -> str:
    """``text`` when it has at most ``limit`` characters; else cut to ``limit`` characters, the cut marked
    (``keep_end``: the start and the end are kept, the middle is cut)."""
    if len(text) <= limit:
        return text
    marker = f"...[{len(text) - limit} of {len(text)} characters cut]..."
    room = max(0, limit - len(marker))
    if keep_end:
        head = room // 2
        return f"{text[:head]}{marker}{text[len(text) - (room - head) :]}"
    return f"{text[:room]}{marker}"


def shown(value: Any, limit: int = SHOWN_LIMIT) -> str:
    """A short, bounded ``repr`` of a value read off the wire, in time linear in ``limit`` (never in the value)."""
    if isinstance(value, str | bytes):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}...({len(value)} {'characters' if isinstance(value, str) else 'bytes'})"
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else f"<int of {value.bit_length()} bits>"
    if isinstance(value, list | tuple | dict | set | frozenset):
        return f"<{type(value).__name__} of {len(value)} items>"
    return f"<{type(value).__name__}>"
