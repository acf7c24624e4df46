"""Message channels: named pipes between services, each a durable queue named after the channel on some broker.

A service map sends to channels; a service consumes its own channels (``consume``), each an endpoint of its own under
the channel's name, run by the same consumer as the AMQP endpoint. A channel is a plain queue reached through the
broker's default exchange (``send_to_queue``): no exchange and no bindings, so an Ecotone service whose channel of
the same name is backed by the same RabbitMQ queue reads and writes the same messages. A channel the service only
sends to is *send-only*: never listed, never consumed.

A channel may be an *event stream* (``stream``, on Redis): each event is appended to it once (``append_to_stream``),
and each service consuming it reads it in a consumer group named after the service, keeping its own position. Its
endpoint's queue is the service's subscription (``<channel>@<service>``): its delayed retries, replays and dead
letter are this service's alone.

:class:`Channels` knows every channel of one container and the transport of each; the container creates the
transports (one per distinct URL) and hands them in through ``transport_of``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final, Protocol, runtime_checkable

import attrs

from container_messaging.errors import ConfigurationError, EndpointError
from container_messaging.redaction import mask_url
from container_messaging.transports.base import BaseTransport, EndpointTopology, OutboundMessage
from container_messaging.transports.redis.keys import subscription_queue

__all__ = ["CHANNEL_EXCHANGE", "Channel", "Channels", "StreamTransport"]

#: A channel's endpoint has no exchange: messages reach its queue through the broker's default exchange.
CHANNEL_EXCHANGE: Final = ""


@runtime_checkable
class StreamTransport(Protocol):
    """A transport that carries event streams (Redis)."""

    def append_to_stream(self, channel: str, message: OutboundMessage) -> None: ...


@attrs.frozen
class Channel:
    """One message channel: its name (also its queue's), the broker URL it lives on, whether this service consumes
    it, and whether it is an event stream (then ``service``, this service's name, is its consumer group)."""

    name: str
    url: str = attrs.field(repr=mask_url)
    consumed: bool = False
    stream: bool = False
    service: str | None = None

    @property
    def queue(self) -> str:
        """The durable queue behind the channel: named after it; for a stream, this service's subscription."""
        if self.stream:
            if self.service is None:
                raise ConfigurationError(f"consuming event stream {self.name!r} needs a service_name")
            return subscription_queue(self.name, self.service)
        return self.name

    @property
    def topology(self) -> EndpointTopology:
        """What consuming the channel declares: its queue (and the dead letter queue), no exchange, no bindings."""
        return EndpointTopology(CHANNEL_EXCHANGE, self.queue, ())


class Channels:
    """Every channel one container knows, by name, and the transport each lives on."""

    def __init__(
        self, channels: Iterable[Channel], transport_of: Callable[[str], BaseTransport], *, auto_declare: bool = True
    ) -> None:
        self._channels: Mapping[str, Channel] = {channel.name: channel for channel in channels}
        self._transport_of = transport_of
        self._auto_declare = auto_declare
        self._declared: set[str] = set()

    def __repr__(self) -> str:
        return f"<Channels {', '.join(self._channels) or 'none'}>"

    def __contains__(self, name: object) -> bool:
        return name in self._channels

    @property
    def consumed(self) -> tuple[str, ...]:
        """The channels this service consumes (its channel endpoints), in configuration order."""
        return tuple(name for name, channel in self._channels.items() if channel.consumed)

    def get(self, name: str) -> Channel:
        try:
            return self._channels[name]
        except KeyError:
            known = ", ".join(sorted(self._channels)) or "none"
            raise ConfigurationError(f"channel {name!r} is not defined (defined channels: {known})") from None

    def endpoint(self, name: str) -> Channel:
        """The consumed channel ``name`` (an :class:`EndpointError` when this service does not consume it)."""
        channel = self._channels.get(name)
        if channel is None or not channel.consumed:
            raise EndpointError(f"channel {name!r} is not consumed by this service")
        return channel

    def transport(self, name: str) -> BaseTransport:
        """The transport of channel ``name`` (shared by every channel on the same broker URL)."""
        return self._transport_of(self.get(name).url)

    def send(self, name: str, message: OutboundMessage) -> None:
        """Sends ``message`` to channel ``name``: onto its queue, or appended once to its stream."""
        channel = self.get(name)
        transport = self.transport(name)
        if channel.stream:
            if not isinstance(transport, StreamTransport):
                raise ConfigurationError(
                    f"channel {name!r} is an event stream, but its transport {transport!r} carries none (the outbox "
                    "cannot carry event streams yet: put the stream on a broker URL of its own)"
                )
            transport.append_to_stream(name, message)
            return
        self.prepare(name)
        transport.send_to_queue(channel.queue, attrs.evolve(message, routing_key=channel.queue))

    def prepare(self, name: str) -> None:
        """Before the first send to channel ``name``, declares its durable queue (with ``auto_declare``), so that
        nothing sent before its consumer first ran is dropped by a broker that has no such queue yet. A stream
        needs nothing: the first append creates it, and each group reads it from its start."""
        if not self._auto_declare or name in self._declared or self.get(name).stream:
            return
        self.transport(name).setup_endpoint(self.get(name).topology)
        self._declared.add(name)
