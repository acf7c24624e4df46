"""What the outbox tests share: a service with the outbox installed the way the container wires it, a transport
wrapper that records what reaches the broker (and can play a broker that is down), table clean-up."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from dependency_injector import containers, providers
from sqlalchemy import create_engine, text

from container_messaging import MessagingContainer, TransportError
from container_messaging.outbox import Outbox, OutboxSettings, install
from container_messaging.transports import BaseTransport, EndpointTopology, OutboundMessage, Receiver


def real_transport(transport: Mapping[str, Any]) -> BaseTransport:
    """The transport the container would build for this ``transport`` group."""
    return MessagingContainer.from_dict({"transport": dict(transport)}).transport


class Service:
    """A service whose container has the outbox installed: the real transport decorated by the outbox transport,
    the unit of work provided by type (what the container does when ``outbox.enabled`` is set)."""

    def __init__(self, settings: OutboxSettings, config: Mapping[str, Any], real: BaseTransport) -> None:
        self.real = real
        self.outbox: Outbox = install(settings, real)
        app = containers.DynamicContainer()
        app.unit_of_work = providers.Object(self.outbox.unit_of_work)
        self.container = MessagingContainer.from_dict(config, transport=self.outbox.transport, app=app)

    def close(self) -> None:
        self.container.close()
        self.outbox.close()


class RecordingTransport(BaseTransport):
    """Passes everything to ``inner`` and records the ids of what it published; while ``down``, every publish and
    declaration raises :class:`TransportError` as an unreachable broker does."""

    def __init__(self, inner: BaseTransport) -> None:
        self.inner = inner
        self.description = f"recording {inner.description}"
        self.published: list[str] = []
        self.refused = 0  # publishes and declarations refused while down
        self.down = False
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self.down:
            with self._lock:
                self.refused += 1
            raise TransportError("the broker is down (test)")

    def _record(self, messages: Sequence[OutboundMessage]) -> None:
        with self._lock:
            self.published.extend(message.message_id for message in messages)

    def declare_exchange(self, exchange: str) -> None:
        self._check()
        self.inner.declare_exchange(exchange)

    def setup_endpoint(self, topology: EndpointTopology) -> None:
        self.inner.setup_endpoint(topology)

    def publish(self, exchange: str, message: OutboundMessage, *, mandatory: bool) -> None:
        self._check()
        self.inner.publish(exchange, message, mandatory=mandatory)
        self._record([message])

    def publish_many(self, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> None:
        self._check()
        self.inner.publish_many(exchange, messages)
        self._record([message for message, _ in messages])

    def send_to_queue(self, queue: str, message: OutboundMessage) -> None:
        self._check()
        self.inner.send_to_queue(queue, message)
        self._record([message])

    def open_receiver(self, queue: str, *, prefetch_count: int) -> Receiver:
        return self.inner.open_receiver(queue, prefetch_count=prefetch_count)

    def browse(self, queue: str) -> AbstractContextManager[Any]:
        return self.inner.browse(queue)

    def queue_size(self, queue: str) -> int:
        return self.inner.queue_size(queue)

    def close(self) -> None:
        self.inner.close()


def drop_tables(url: str, *tables: str) -> None:
    """Drops the tables a test created (the outbox's and the application's), if they exist."""
    if url.startswith("postgresql://"):
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for table in tables:
                connection.execute(text(f'DROP TABLE IF EXISTS "{table}"'))
    finally:
        engine.dispose()
