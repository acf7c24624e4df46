"""The Service Map: where a distributed bus sends what it sends when the broker is a dumb pipe (Ecotone's Distributed
Bus with Service Map).

- A **command** or a **message** goes to the channel its target service is mapped to (``commands``); a target the
  map does not know is an :class:`~container_messaging.errors.InvalidMessageError` naming it and the known services.
- An **event** goes to every channel whose event mapping wants it: its subscription keys (Ecotone globs; None for
  every event, empty for none) match the routing key, and the publishing service is not excluded (or is the one
  included). The publisher's own channel (the channel its own name is mapped to for commands) is skipped unless an
  ``include_publishing_services`` names it, so that by default an event reaches every mapped service but the one
  that published it. Each channel receives an event once, however many mappings or services share it.
- The older single form (``services``: service, channel, subscription keys) maps the service's commands to the
  channel and makes the same channel an event mapping.

The map only decides; :class:`~container_messaging.distributed.bus.ServiceMapRoute` sends.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

import attrs

from container_messaging.config import ServiceMapSettings
from container_messaging.errors import InvalidMessageError
from container_messaging.routing import glob_pattern

__all__ = ["EventSubscription", "ServiceMap"]

_CACHE_LIMIT: Final = 4096


def _patterns(keys: tuple[str, ...] | None) -> tuple[re.Pattern[str], ...] | None:
    return None if keys is None else tuple(glob_pattern(key) for key in keys)


def _copy(mapping: Mapping[str, str]) -> dict[str, str]:
    return dict(mapping)


@attrs.frozen
class EventSubscription:
    """One event mapping: the events ``channel`` receives."""

    channel: str
    #: routing keys or globs; None: every event
    keys: tuple[str, ...] | None = None
    exclude: frozenset[str] = frozenset()
    include: frozenset[str] = frozenset()
    _patterns: tuple[re.Pattern[str], ...] | None = attrs.field(
        init=False, repr=False, eq=False, default=attrs.Factory(lambda self: _patterns(self.keys), takes_self=True)
    )

    def wants(self, publisher: str, routing_key: str) -> bool:
        """Whether an event ``routing_key`` published by service ``publisher`` goes to this channel."""
        if publisher in self.exclude or (self.include and publisher not in self.include):
            return False
        return self._patterns is None or any(pattern.match(routing_key) for pattern in self._patterns)


@attrs.frozen
class ServiceMap:
    """A service map, ready for the per-message path (lookups only; an event's channels are cached per key)."""

    #: target service -> channel
    commands: Mapping[str, str] = attrs.field(factory=dict, converter=_copy)
    events: tuple[EventSubscription, ...] = ()
    _event_channels: dict[tuple[str, str], tuple[str, ...]] = attrs.field(
        init=False, repr=False, eq=False, factory=dict
    )

    @classmethod
    def from_settings(cls, settings: ServiceMapSettings) -> ServiceMap:
        """The map a configuration describes (its references were checked when the settings were loaded)."""
        commands = dict(settings.commands)
        events = [
            EventSubscription(
                mapping.channel,
                mapping.subscription_keys,
                frozenset(mapping.exclude_publishing_services),
                frozenset(mapping.include_publishing_services),
            )
            for mapping in settings.events
        ]
        for service in settings.services:  # the older single form: commands and events to one channel
            commands[service.service] = service.channel
            events.append(EventSubscription(service.channel, service.subscription_keys))
        return cls(commands, tuple(events))

    @property
    def channels(self) -> tuple[str, ...]:
        """Every channel the map sends to, each once, in the order the map names them."""
        named = [*self.commands.values(), *(subscription.channel for subscription in self.events)]
        return tuple(dict.fromkeys(named))

    def channel_for(self, service: str) -> str:
        """The channel of ``service``'s commands and messages; an unknown service is an InvalidMessageError."""
        try:
            return self.commands[service]
        except KeyError:
            known = ", ".join(repr(name) for name in sorted(self.commands)) or "none"
            raise InvalidMessageError(
                f"service {service!r} is not in the service map, so nothing can be sent to it (known services: "
                f"{known}); map it to its channel under commands"
            ) from None

    def event_channels(self, publisher: str, routing_key: str) -> tuple[str, ...]:
        """The channels an event ``routing_key`` published by ``publisher`` goes to, each once (may be empty)."""
        key = (publisher, routing_key)
        try:
            return self._event_channels[key]
        except KeyError:
            pass
        own = self.commands.get(publisher)
        channels = tuple(
            dict.fromkeys(
                subscription.channel
                for subscription in self.events
                if subscription.wants(publisher, routing_key)
                and (subscription.channel != own or publisher in subscription.include)
            )
        )
        if len(self._event_channels) >= _CACHE_LIMIT:
            self._event_channels.clear()
        self._event_channels[key] = channels
        return channels
