"""The routing table: routing key or payload class -> handler(s), built once when the container boots.

Command and query routing keys match exactly; each has exactly one handler. Event handler keys are Ecotone globs:
``*`` matches any characters including dots, the match is anchored and case-insensitive, so ``userService.*``
matches ``userService.billing.DetailsWereChanged``. Events go to zero or more handlers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from container_messaging.errors import HandlerDefinitionError
from container_messaging.invocation import Handler
from container_messaging.markers import HandlerKind

__all__ = ["RoutingTable", "amqp_binding_key", "glob_pattern"]

_CACHE_LIMIT: Final = 4096


def glob_pattern(pattern: str) -> re.Pattern[str]:
    """Ecotone's routing-key glob as a compiled regular expression: its ``match()`` anchors the start, ``\\Z`` the
    very end (a trailing newline is not ignored)."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")) + r"\Z", re.IGNORECASE | re.DOTALL)


def amqp_binding_key(pattern: str) -> str:
    """The AMQP topic binding that delivers every key the glob ``pattern`` matches.

    Ecotone binds ``*`` as ``#``; a whole-word ``*`` is bound here as ``*.#`` (one or more words), the exact
    equivalent of the glob: ``billing.*`` binds ``billing.*.#``, which matches ``billing.a.b`` but not the bare
    ``billing`` a service named billing receives its commands with. A ``*`` inside a word cannot be expressed in
    AMQP: the binding stops there with ``#`` and the consumer's glob check drops what does not match.
    """
    words: list[str] = []
    for word in pattern.split("."):
        if word == "*":
            words.append("*.#")
        elif "*" in word:
            words.append("#")
            break
        else:
            words.append(word)
    return ".".join(words)


class RoutingTable:
    """Every handler of one container, indexed for the per-message path (lookups only, results cached)."""

    def __init__(self, handlers: Iterable[Handler] = ()) -> None:
        self.handlers: tuple[Handler, ...] = ()
        self._by_key: dict[HandlerKind, dict[str, Handler]] = {HandlerKind.COMMAND: {}, HandlerKind.QUERY: {}}
        self._by_class: dict[HandlerKind, dict[type, Handler]] = {HandlerKind.COMMAND: {}, HandlerKind.QUERY: {}}
        self._channels: dict[str, Handler] = {}
        self._event_patterns: list[tuple[re.Pattern[str], Handler]] = []
        self._event_classes: list[tuple[type, Handler]] = []
        self._event_cache: dict[str, tuple[Handler, ...]] = {}
        self._event_class_cache: dict[type, tuple[Handler, ...]] = {}
        self._class_cache: dict[tuple[HandlerKind, type], Handler | None] = {}
        self.extend(handlers)

    def extend(self, handlers: Iterable[Handler]) -> None:
        """Adds handlers (at boot); a clash with a handler already present is a HandlerDefinitionError."""
        added = list(self.handlers)
        for handler in handlers:
            self._add(handler)
            added.append(handler)
        self.handlers = tuple(added)
        self._event_cache.clear()
        self._event_class_cache.clear()
        self._class_cache.clear()

    def _add(self, handler: Handler) -> None:
        kind, key = handler.kind, handler.routing_key
        if kind is HandlerKind.EVENT:
            if key is not None:
                self._event_patterns.append((glob_pattern(key), handler))
            else:
                assert handler.payload_class is not None
                self._event_classes.append((handler.payload_class, handler))
            return
        if kind is HandlerKind.SERVICE_ACTIVATOR:
            assert key is not None
            self._claim(self._channels, key, handler, f"input channel {key!r}")
            return
        if key is not None:
            self._claim(self._by_key[kind], key, handler, f"routing key {key!r}")
        else:
            assert handler.payload_class is not None
            cls = handler.payload_class
            self._claim(self._by_class[kind], cls, handler, f"class {cls.__module__}.{cls.__qualname__}")

    @staticmethod
    def _claim(
        index: dict[object, Handler] | dict[str, Handler] | dict[type, Handler],
        key: object,
        handler: Handler,
        what: str,
    ) -> None:
        existing = index.get(key)  # type: ignore[call-overload]
        if existing is not None:
            raise HandlerDefinitionError(
                f"two {handler.kind.value} handlers for {what}: {existing.name} and {handler.name}; "
                "exactly one is allowed"
            )
        index[key] = handler  # type: ignore[index]

    # -- lookups -------------------------------------------------------------------------------------------------

    def by_key(self, kind: HandlerKind, routing_key: str) -> Handler | None:
        return self._by_key[kind].get(routing_key)

    def by_class(self, kind: HandlerKind, cls: type) -> Handler | None:
        cache_key = (kind, cls)
        try:
            return self._class_cache[cache_key]
        except KeyError:
            index = self._by_class[kind]
            found = next((index[base] for base in cls.__mro__ if base in index), None)
            self._class_cache[cache_key] = found
            return found

    def channel(self, name: str) -> Handler | None:
        return self._channels.get(name)

    def events_for_key(self, routing_key: str) -> tuple[Handler, ...]:
        try:
            return self._event_cache[routing_key]
        except KeyError:
            found = tuple(handler for pattern, handler in self._event_patterns if pattern.match(routing_key))
            if len(self._event_cache) >= _CACHE_LIMIT:
                self._event_cache.clear()
            self._event_cache[routing_key] = found
            return found

    def events_for_class(self, cls: type) -> tuple[Handler, ...]:
        try:
            return self._event_class_cache[cls]
        except KeyError:
            found = tuple(handler for base, handler in self._event_classes if issubclass(cls, base))
            self._event_class_cache[cls] = found
            return found

    # -- what the distributed side needs ---------------------------------------------------------------------------

    def distributed(self, kind: HandlerKind) -> tuple[Handler, ...]:
        return tuple(h for h in self.handlers if h.distributed and h.kind is kind)
