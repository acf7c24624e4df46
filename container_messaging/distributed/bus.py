"""``DistributedBus``: Ecotone's five distribution operations, in snake_case (the outbound side)."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from container_messaging.conversion import Converter
from container_messaging.distributed.topology import (
    PAYLOAD_TYPE,
    ROUTING_KEY,
    ROUTING_SLIP_VALUE,
    SERVICE_TARGET,
    SOURCE_SERVICE,
    TARGET_SERVICE,
    DistributedTopology,
    PayloadType,
)
from container_messaging.distributed.validation import (
    check_destination,
    check_media_type,
    check_metadata,
    check_routing_key,
)
from container_messaging.errors import ConversionError
from container_messaging.invocation import current_message
from container_messaging.messages import ID, ROUTING_SLIP, TYPE_ID, MediaType, new_headers
from container_messaging.transports.base import BaseTransport, OutboundMessage

__all__ = ["DistributedBus"]

Metadata = Mapping[str, Any] | None


class DistributedBus:
    """Sends commands and messages to named services and publishes events to every subscribed service.

    Resolvable from the container by type and as ``"distributed_bus"``. A message no consumer could take is refused
    before anything is sent (:mod:`container_messaging.distributed.validation`). With ``auto_declare``, the exchange
    is declared before the first publish.
    """

    def __init__(
        self,
        *,
        service_name: str,
        transport: BaseTransport,
        converter: Converter,
        topology: DistributedTopology,
        auto_declare: bool = True,
    ) -> None:
        self._service_name = service_name
        self._transport = transport
        self._converter = converter
        self._topology = topology
        self._exchange_ready = not auto_declare
        self._batch: contextvars.ContextVar[list[tuple[OutboundMessage, bool]] | None] = contextvars.ContextVar(
            "distributed_bus_batch", default=None
        )

    def __repr__(self) -> str:
        return (
            f"<DistributedBus service={self._service_name!r} exchange={self._topology.exchange!r} {self._transport!r}>"
        )

    # -- Ecotone's API -----------------------------------------------------------------------------------------------

    def send_command(
        self,
        destination: str,
        routing_key: str,
        command: str | bytes,
        source_media_type: str = MediaType.TEXT_PLAIN,
        metadata: Metadata = None,
    ) -> None:
        """Sends ``command`` (already serialized) to ``destination``'s command handler of ``routing_key``."""
        self._send(
            PayloadType.COMMAND, destination, routing_key, self._raw(command, "command"), source_media_type, metadata
        )

    def convert_and_send_command(
        self, destination: str, routing_key: str, command: object, metadata: Metadata = None
    ) -> None:
        """Serializes ``command`` (attrs/dataclass object, dict or list) to JSON and sends it like ``send_command``."""
        body, media_type, extra = self._convert(command)
        self._send(PayloadType.COMMAND, destination, routing_key, body, media_type, _merge(metadata, extra))

    def publish_event(
        self,
        routing_key: str,
        event: str | bytes,
        source_media_type: str = MediaType.TEXT_PLAIN,
        metadata: Metadata = None,
    ) -> None:
        """Publishes ``event`` (already serialized) to every service subscribed to ``routing_key``."""
        self._send(PayloadType.EVENT, None, routing_key, self._raw(event, "event"), source_media_type, metadata)

    def convert_and_publish_event(self, routing_key: str, event: object, metadata: Metadata = None) -> None:
        """Serializes ``event`` to JSON and publishes it like ``publish_event``."""
        body, media_type, extra = self._convert(event)
        self._send(PayloadType.EVENT, None, routing_key, body, media_type, _merge(metadata, extra))

    def send_message(
        self,
        destination: str,
        target_channel_name: str,
        payload: str | bytes,
        source_media_type: str = MediaType.TEXT_PLAIN,
        metadata: Metadata = None,
    ) -> None:
        """Sends ``payload`` to the ``@service_activator`` of ``target_channel_name`` in ``destination``."""
        self._send(
            PayloadType.MESSAGE,
            destination,
            target_channel_name,
            self._raw(payload, "payload"),
            source_media_type,
            metadata,
        )

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Collects what is sent inside the block and publishes it when the block ends: with RabbitMQ publisher
        confirms, one wait confirms the whole batch instead of one round trip per message. Nothing is published if
        the block raises; when the block returns, every message was confirmed (or an error says what was not).
        Nested batches join the outer one."""
        if self._batch.get() is not None:
            yield
            return
        collected: list[tuple[OutboundMessage, bool]] = []
        token = self._batch.set(collected)
        try:
            yield
        finally:
            self._batch.reset(token)
        if collected:
            self._ensure_exchange()
            self._transport.publish_many(self._topology.exchange, collected)

    # -- the shared path -------------------------------------------------------------------------------------------

    def _ensure_exchange(self) -> None:
        if not self._exchange_ready:
            self._transport.declare_exchange(self._topology.exchange)
            self._exchange_ready = True

    @staticmethod
    def _raw(payload: str | bytes, what: str) -> bytes:
        if isinstance(payload, bytes):
            return payload
        if isinstance(payload, str):
            return payload.encode()
        raise ConversionError(
            f"the {what} must be str or bytes (already serialized), got {type(payload).__name__}; "
            f"use convert_and_send_command / convert_and_publish_event for objects"
        )

    def _convert(self, obj: object) -> tuple[bytes, str, dict[str, str]]:
        body, media_type = self._converter.to_wire(obj, MediaType.APPLICATION_JSON)
        extra = {} if isinstance(obj, (dict, list)) else {TYPE_ID: self._converter.type_name(obj)}
        return body, media_type, extra

    def _send(
        self,
        payload_type: str,
        destination: str | None,
        routing_key: str,
        body: bytes,
        media_type: str,
        metadata: Metadata,
    ) -> None:
        """Checks the message (:mod:`.validation`: nothing a consumer would refuse leaves), builds its headers and
        publishes it, or adds it to the batch."""
        if payload_type != PayloadType.EVENT:
            check_destination(destination)
        check_routing_key(routing_key, "target channel name" if payload_type == PayloadType.MESSAGE else "routing key")
        check_media_type(media_type)
        if metadata is not None:
            check_metadata(metadata, media_type)
        amqp_key = destination if destination is not None else routing_key
        headers = new_headers(media_type, metadata, current_message.get())
        headers[PAYLOAD_TYPE] = payload_type
        headers[ROUTING_KEY] = routing_key
        headers[SOURCE_SERVICE] = self._service_name
        headers[SERVICE_TARGET] = amqp_key
        headers[ROUTING_SLIP] = ROUTING_SLIP_VALUE
        if destination is not None:
            headers[TARGET_SERVICE] = destination
        outbound = OutboundMessage(amqp_key, body, headers, media_type, headers[ID])
        mandatory = payload_type != PayloadType.EVENT
        batch = self._batch.get()
        if batch is not None:
            batch.append((outbound, mandatory))
            return
        self._ensure_exchange()
        self._transport.publish(self._topology.exchange, outbound, mandatory=mandatory)


def _merge(metadata: Metadata, extra: dict[str, str]) -> Metadata:
    """The converter's headers with the sender's metadata over them (a non-mapping is left for the check to name)."""
    if metadata is None:
        return extra
    return {**extra, **metadata} if isinstance(metadata, Mapping) else metadata
