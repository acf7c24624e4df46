"""``DistributedBus``: Ecotone's five distribution operations, in snake_case (the outbound side), and
``AsyncDistributedBus``, the same for code on an event loop.

``DistributedBus`` is safe to share between threads: the transport's publisher takes every caller's message and
returns when *that* message was confirmed (group commit: concurrent callers share one confirm wait).

Where a message goes is the bus's :class:`Route`, one per mode, chosen per bus by its configuration; the API, the
checks and the headers are the same in both:

- :class:`ExchangeRoute`, Ecotone's AMQP distributed bus: everything is published on the topic exchange
  (``ecotone.distributed``) with the target service (commands, messages) or the event's key as routing key, and the
  broker's bindings route it; ``ecotone.amqp.distributed.service_target`` names that routing key.
- :class:`ServiceMapRoute`, Ecotone's Distributed Bus with Service Map: the map picks the channel(s) and each copy is
  put on the channel's queue, on whichever broker that channel lives.
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import attrs

from container_messaging.conversion import Converter
from container_messaging.distributed.channels import Channels
from container_messaging.distributed.service_map import ServiceMap
from container_messaging.distributed.topology import (
    PAYLOAD_TYPE,
    ROUTING_KEY,
    ROUTING_SLIP_VALUE,
    SERVICE_TARGET,
    SOURCE_SERVICE,
    TARGET_SERVICE,
    PayloadType,
)
from container_messaging.distributed.validation import (
    check_destination,
    check_media_type,
    check_metadata,
    check_routing_key,
)
from container_messaging.errors import ConversionError, UnroutableMessageError
from container_messaging.invocation import current_message
from container_messaging.messages import ID, ROUTING_SLIP, TYPE_ID, MediaType, new_headers
from container_messaging.transports.base import BaseTransport, OutboundMessage

__all__ = ["Address", "AsyncDistributedBus", "DistributedBus", "ExchangeRoute", "Route", "ServiceMapRoute"]

Metadata = Mapping[str, Any] | None


@attrs.frozen
class Address:
    """Where one message goes, decided before it is built: the AMQP routing key and mandatory flag (exchange mode),
    or the channels (service map mode), and the headers the mode adds."""

    routing_key: str
    mandatory: bool = False
    channels: tuple[str, ...] = ()
    headers: Mapping[str, str] = attrs.field(factory=dict)


class Route(abc.ABC):
    """Where a distributed bus puts what it sends: :meth:`address` decides (and refuses what can go nowhere, before
    anything is sent); :meth:`publish` sends addressed messages, one or a batch."""

    #: the mode's name, for reprs and errors
    mode: str

    @abc.abstractmethod
    def address(self, source: str, payload_type: str, destination: str | None, routing_key: str) -> Address:
        """Where a message of ``payload_type`` from service ``source`` to ``destination`` (None for events) with
        ``routing_key`` goes."""

    @abc.abstractmethod
    def publish(self, messages: Sequence[tuple[Address, OutboundMessage]]) -> None:
        """Sends each message where its address says."""


class ExchangeRoute(Route):
    """Ecotone's AMQP distributed bus: the topic exchange routes. Commands and messages are mandatory (a destination
    without a queue is an :class:`UnroutableMessageError`); events too when ``events_mandatory`` (Ecotone 1.326's
    behaviour), else an event no service is bound to is dropped. With ``auto_declare``, the exchange is declared
    before the first publish."""

    mode = "amqp"

    def __init__(
        self, transport: BaseTransport, exchange: str, *, auto_declare: bool = True, events_mandatory: bool = False
    ) -> None:
        self._transport = transport
        self.exchange = exchange
        self._exchange_ready = not auto_declare
        self._events_mandatory = events_mandatory

    def __repr__(self) -> str:
        return f"<ExchangeRoute exchange={self.exchange!r} {self._transport!r}>"

    def address(self, source: str, payload_type: str, destination: str | None, routing_key: str) -> Address:
        amqp_key = destination if destination is not None else routing_key
        mandatory = payload_type != PayloadType.EVENT or self._events_mandatory
        return Address(amqp_key, mandatory, headers={SERVICE_TARGET: amqp_key})

    def publish(self, messages: Sequence[tuple[Address, OutboundMessage]]) -> None:
        if not self._exchange_ready:
            self._transport.declare_exchange(self.exchange)
            self._exchange_ready = True
        if len(messages) == 1:
            address, message = messages[0]
            self._transport.publish(self.exchange, message, mandatory=address.mandatory)
        else:
            self._transport.publish_many(self.exchange, [(message, address.mandatory) for address, message in messages])


class ServiceMapRoute(Route):
    """Ecotone's Distributed Bus with Service Map: the map picks the channel of a command's or message's target, or
    the channels an event goes to, and each copy is put on the channel's queue (``send_to_queue``), or appended once
    to an event stream channel, on the broker that channel lives on (:meth:`Channels.send`). An event no channel
    wants is dropped, or, with ``events_mandatory``, an :class:`UnroutableMessageError`."""

    mode = "service map"

    def __init__(self, service_map: ServiceMap, channels: Channels, *, events_mandatory: bool = False) -> None:
        self.service_map = service_map
        self._channels = channels
        self._events_mandatory = events_mandatory

    def __repr__(self) -> str:
        return f"<ServiceMapRoute channels={list(self.service_map.channels)!r}>"

    def address(self, source: str, payload_type: str, destination: str | None, routing_key: str) -> Address:
        if destination is not None:
            return Address(routing_key, True, (self.service_map.channel_for(destination),))
        channels = self.service_map.event_channels(source, routing_key)
        if not channels and self._events_mandatory:
            raise UnroutableMessageError(
                f"no channel of the service map subscribes to event {routing_key!r} published by {source!r} "
                "(distribution.unsubscribed_events is 'error'); map a channel to it under events"
            )
        return Address(routing_key, False, channels)

    def publish(self, messages: Sequence[tuple[Address, OutboundMessage]]) -> None:
        for address, message in messages:
            for channel in address.channels:
                self._channels.send(channel, message)


class DistributedBus:
    """Sends commands and messages to named services and publishes events to every subscribed service.

    The default bus is resolvable from the container by type and as ``"distributed_bus"``; other buses by their
    reference name (``container.get("internal_bus")``, ``Annotated[DistributedBus, Named("internal_bus")]``). A
    message no consumer could take is refused before anything is sent
    (:mod:`container_messaging.distributed.validation`); where it goes is the bus's :class:`Route`.
    """

    def __init__(
        self,
        *,
        service_name: str,
        converter: Converter,
        route: Route,
        name: str = "distributed_bus",
    ) -> None:
        self._service_name = service_name
        self._converter = converter
        self._route = route
        self.name = name
        self._batch: contextvars.ContextVar[list[tuple[Address, OutboundMessage]] | None] = contextvars.ContextVar(
            f"distributed_bus_batch_{name}", default=None
        )

    def __repr__(self) -> str:
        route = self._route
        return f"<DistributedBus {self.name!r} service={self._service_name!r} mode={route.mode!r} {route!r}>"

    @property
    def mode(self) -> str:
        """How this bus decides where messages go: ``"amqp"`` (Ecotone's AMQP distributed bus) or ``"service map"``."""
        return self._route.mode

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
        confirms, one wait confirms the whole batch instead of one round trip per message (exchange mode). Nothing
        is published if the block raises; when the block returns, every message was confirmed (or an error says
        what was not). Nested batches join the outer one. Where each message goes is decided when it is sent."""
        with self._collecting() as collected:
            yield
        self._publish_collected(collected)

    @contextmanager
    def _collecting(self) -> Iterator[list[tuple[Address, OutboundMessage]]]:
        """What is sent in the block, collected (nothing when a batch is open already: the outer one collects)."""
        collected: list[tuple[Address, OutboundMessage]] = []
        if self._batch.get() is not None:
            yield collected
            return
        token = self._batch.set(collected)
        try:
            yield collected
        finally:
            self._batch.reset(token)

    def _publish_collected(self, collected: list[tuple[Address, OutboundMessage]]) -> None:
        if collected:
            self._route.publish(collected)

    def _batching(self) -> bool:
        """Whether a batch is collecting in this context (a send then only collects)."""
        return self._batch.get() is not None

    # -- the shared path -------------------------------------------------------------------------------------------

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
        """Checks the message (:mod:`.validation`: nothing a consumer would refuse leaves), asks the route where it
        goes, builds its headers and publishes it, or adds it to the batch."""
        if payload_type != PayloadType.EVENT:
            check_destination(destination)
        check_routing_key(routing_key, "target channel name" if payload_type == PayloadType.MESSAGE else "routing key")
        check_media_type(media_type)
        if metadata is not None:
            check_metadata(metadata, media_type)
        address = self._route.address(self._service_name, payload_type, destination, routing_key)
        headers = new_headers(media_type, metadata, current_message.get())
        headers[PAYLOAD_TYPE] = payload_type
        headers[ROUTING_KEY] = routing_key
        headers[SOURCE_SERVICE] = self._service_name
        headers[ROUTING_SLIP] = ROUTING_SLIP_VALUE
        if destination is not None:
            headers[TARGET_SERVICE] = destination
        headers.update(address.headers)
        outbound = OutboundMessage(address.routing_key, body, headers, media_type, headers[ID])
        batch = self._batch.get()
        if batch is not None:
            batch.append((address, outbound))
            return
        self._route.publish([(address, outbound)])


class AsyncDistributedBus:
    """:class:`DistributedBus` for code on an event loop: ``await bus.send_command(...)`` returns once the broker
    confirmed the message, like the synchronous bus, without blocking the loop (the publish runs in a worker thread,
    ``asyncio.to_thread``, and joins the other callers' group commit). Resolvable from the container by type and as
    ``"async_distributed_bus"``; it shares the synchronous bus's transport."""

    def __init__(self, bus: DistributedBus) -> None:
        self._bus = bus

    def __repr__(self) -> str:
        return f"<Async{self._bus!r}"[:-1] + ">"

    async def _run(self, send: Callable[..., None], *args: Any) -> None:
        if self._bus._batching():  # only collected: nothing to wait for
            send(*args)
            return
        await asyncio.to_thread(send, *args)

    async def send_command(
        self,
        destination: str,
        routing_key: str,
        command: str | bytes,
        source_media_type: str = MediaType.TEXT_PLAIN,
        metadata: Metadata = None,
    ) -> None:
        """Sends ``command`` (already serialized) to ``destination``'s command handler of ``routing_key``."""
        await self._run(self._bus.send_command, destination, routing_key, command, source_media_type, metadata)

    async def convert_and_send_command(
        self, destination: str, routing_key: str, command: object, metadata: Metadata = None
    ) -> None:
        """Serializes ``command`` to JSON and sends it like ``send_command``."""
        await self._run(self._bus.convert_and_send_command, destination, routing_key, command, metadata)

    async def publish_event(
        self,
        routing_key: str,
        event: str | bytes,
        source_media_type: str = MediaType.TEXT_PLAIN,
        metadata: Metadata = None,
    ) -> None:
        """Publishes ``event`` (already serialized) to every service subscribed to ``routing_key``."""
        await self._run(self._bus.publish_event, routing_key, event, source_media_type, metadata)

    async def convert_and_publish_event(self, routing_key: str, event: object, metadata: Metadata = None) -> None:
        """Serializes ``event`` to JSON and publishes it like ``publish_event``."""
        await self._run(self._bus.convert_and_publish_event, routing_key, event, metadata)

    async def send_message(
        self,
        destination: str,
        target_channel_name: str,
        payload: str | bytes,
        source_media_type: str = MediaType.TEXT_PLAIN,
        metadata: Metadata = None,
    ) -> None:
        """Sends ``payload`` to the ``@service_activator`` of ``target_channel_name`` in ``destination``."""
        await self._run(self._bus.send_message, destination, target_channel_name, payload, source_media_type, metadata)

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """``async with bus.batch():`` collects what is sent in the block and publishes it when the block ends, with
        one confirm wait, as :meth:`DistributedBus.batch` (nothing is published if the block raises)."""
        with self._bus._collecting() as collected:
            yield
        if collected:
            await asyncio.to_thread(self._bus._publish_collected, collected)


def _merge(metadata: Metadata, extra: dict[str, str]) -> Metadata:
    """The converter's headers with the sender's metadata over them (a non-mapping is left for the check to name)."""
    if metadata is None:
        return extra
    return {**extra, **metadata} if isinstance(metadata, Mapping) else metadata
