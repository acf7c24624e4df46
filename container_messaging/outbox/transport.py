"""``OutboxTransport``: the transport port, decorated. Inside an open unit of work, what any bus publishes is written
to the outbox (in the application's transaction) instead of reaching the broker; outside one, everything passes
through to the real transport unchanged. So every bus that publishes goes through the outbox without knowing it.
"""

from __future__ import annotations

from collections.abc import Sequence

from container_messaging.outbox.unit_of_work import UnitOfWork
from container_messaging.transports.base import BaseTransport, OutboundMessage, TransportDecorator

__all__ = ["OutboxTransport"]


class OutboxTransport(TransportDecorator):
    """Wraps the real transport (``inner``): publishing inside a unit of work goes to the outbox."""

    def __init__(self, inner: BaseTransport, unit_of_work: UnitOfWork) -> None:
        super().__init__(inner)
        self._unit_of_work = unit_of_work
        self.description = f"{inner.description} (with the outbox)"
        self._owed: set[str] = set()  # exchanges asked for inside a unit of work, declared before a direct publish

    def publish(self, exchange: str, message: OutboundMessage, *, mandatory: bool) -> None:
        if not self._unit_of_work.write(exchange, None, [(message, mandatory)]):
            self._pay_owed()
            self.inner.publish(exchange, message, mandatory=mandatory)

    def publish_many(self, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> None:
        if not self._unit_of_work.write(exchange, None, messages):
            self._pay_owed()
            self.inner.publish_many(exchange, messages)

    def send_to_queue(self, queue: str, message: OutboundMessage) -> None:
        if not self._unit_of_work.write(None, queue, [(message, False)]):
            self.inner.send_to_queue(queue, message)

    def declare_exchange(self, exchange: str) -> None:
        # Inside a unit of work nothing may need the broker: whoever publishes the rows declares their exchange, and
        # the next direct publish declares it too (the caller will not ask again).
        if self._unit_of_work.in_progress:
            self._owed.add(exchange)
        else:
            self.inner.declare_exchange(exchange)

    def _pay_owed(self) -> None:
        while self._owed:
            exchange = self._owed.pop()
            try:
                self.inner.declare_exchange(exchange)
            except BaseException:
                self._owed.add(exchange)
                raise
