"""``embedded://``: the SQLite broker of :mod:`.sqlite`, for several processes of one machine and no server.

Exchanges are routed here (see ``_virtual.py``); a requeue puts the message back in place (its lease released); a
delayed retry is a row not visible before its time, so nothing is held unacknowledged and nobody has to move it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import kombu

from container_messaging.transports._kombu_base import KombuDelivery, KombuReceiver
from container_messaging.transports._virtual import VirtualTransport
from container_messaging.transports.embedded.sqlite import SqliteTransport

__all__ = ["EmbeddedTransport"]


class EmbeddedTransport(VirtualTransport):
    """The embedded adapter."""

    def new_connection(self) -> kombu.Connection:
        o = self.options
        return kombu.Connection(
            transport=SqliteTransport,
            transport_options={
                "data_folder": str(Path(o.data_folder).resolve()),
                "polling_interval": o.polling_interval,
                "visibility_timeout": o.visibility_timeout,
            },
        )

    def delay(self, receiver: KombuReceiver, delivery: KombuDelivery, delay_ms: int, headers: dict[str, Any]) -> None:
        content_type = delivery.content_type or "application/octet-stream"
        receiver.channel.put_later(delivery.queue, delivery.body, content_type, headers, time.time() + delay_ms / 1000)

    def waiting_for_delay(self, queue: str) -> int:
        with self.connection(f"counting the delayed copies of {queue!r}") as channel:
            return int(channel.waiting_for_delay(queue))
