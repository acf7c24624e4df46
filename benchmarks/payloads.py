"""What every worker shares: the message class, the wire bodies and the probe that records handling times.

The framework's handlers and the raw kombu baseline call the same :meth:`Probe.handled`, so both sides pay the
same bookkeeping per message.
"""

from __future__ import annotations

import time
from typing import Final

import attrs

COMMAND_KEY: Final = "bench.command"
EVENT_KEY: Final = "bench.event.created"
#: the framework's event handlers subscribe to this glob; the baseline binds its queues with the same AMQP pattern
EVENT_PATTERN: Final = "bench.event.*"

# ~100 bytes of JSON: 22 to 26 characters of identifiers and money, plus the send time (for latency).
_TEMPLATE: Final = '{"personId":"p-%06d","billingDetails":"IBAN-DE89-%06d","amount":%d,"currency":"EUR","sentAt":%.6f}'

#: camelCase wire keys -> attrs field names (what the framework's converter does by default)
WIRE_TO_FIELD: Final = {
    "personId": "person_id",
    "billingDetails": "billing_details",
    "amount": "amount",
    "currency": "currency",
    "sentAt": "sent_at",
}


@attrs.frozen
class BenchCommand:
    person_id: str
    billing_details: str
    amount: int
    currency: str
    sent_at: float


def body(index: int, sent_at: float) -> bytes:
    """The JSON body of message ``index``; ``sent_at`` (unix seconds) lets the consumer compute latency."""
    return (_TEMPLATE % (index, index, index % 1000, sent_at)).encode()


class Probe:
    """Per-process record of handled messages: count, first and last handling time, optional latencies."""

    def __init__(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.latencies: list[float] | None = None

    def handled(self, sent_at: float) -> None:
        now = time.time()
        self.count += 1
        if self.count == 1:
            self.first = now
        self.last = now
        if self.latencies is not None:
            self.latencies.append(now - sent_at)

    def as_dict(self) -> dict[str, object]:
        return {"count": self.count, "first": self.first, "last": self.last, "latencies": self.latencies}


#: the one probe of a worker process (the handler modules and the baseline consumer both use it)
PROBE: Final = Probe()
