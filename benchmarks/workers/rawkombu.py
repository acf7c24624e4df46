"""The raw kombu baseline's shared pieces: its connection options and the headers it publishes."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import kombu


def connection(url: str, *, confirm: bool = False, data_folder: str | None = None, polling: float = 0.05) -> Any:
    """An open kombu connection: RabbitMQ (``confirm_publish`` on request) or ``filesystem://`` in ``data_folder``."""
    options: dict[str, Any] = {}
    if confirm:
        options["confirm_publish"] = True
    if url.startswith("filesystem"):
        if data_folder is None:
            raise SystemExit("filesystem:// needs --data-folder")
        folder = Path(data_folder)
        (folder / "control").mkdir(parents=True, exist_ok=True)
        options.update(
            data_folder_in=str(folder),
            data_folder_out=str(folder),
            control_folder=str(folder / "control"),
            polling_interval=polling,
        )
    conn = kombu.Connection(url, connect_timeout=5, transport_options=options)
    conn.ensure_connection(max_retries=2, timeout=5)
    return conn


def headers(kind: str, routing_key: str, source: str, target: str | None) -> dict[str, Any]:
    """Application headers of the same names and sizes as the framework's (a fresh id per message)."""
    message_id = str(uuid.uuid4())
    result: dict[str, Any] = {
        "id": message_id,
        "correlationId": message_id,
        "timestamp": int(time.time()),
        "contentType": "application/json",
        "ecotone.distributed.payloadType": kind,
        "ecotone.distributed.routingKey": routing_key,
        "ecotone.distributed.sourceServiceName": source,
        "ecotone.amqp.distributed.service_target": target or routing_key,
        "routingSlip": "ecotone.distributed.invoke",
    }
    if target is not None:
        result["ecotone.distributed.targetServiceName"] = target
    return result
