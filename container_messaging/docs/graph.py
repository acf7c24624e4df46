"""The message flow of a system of services, as a picture: Mermaid (rendered by GitHub) and Graphviz DOT.

Drawn from the services' descriptions (:mod:`container_messaging.docs.services`), not from traffic:

* the code that sends (its sending declarations) points at the command, event or message it sends;
* a command or message points at the distributed handler of its destination service that takes it;
* an event is every routing key some service publishes (declared) or some distributed handler names exactly; each
  event points at every distributed handler whose key or glob matches it (Ecotone's globs: ``*`` is any
  characters, case-insensitive), and, dashed, at the local handlers that run when their service receives it;
* a glob that matches no event, and a command or message that no handler of its (known) destination takes, are
  drawn dashed: something is missing.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from typing import Final

import attrs

from container_messaging.docs.services import ReceivedMessage, ServiceDescription
from container_messaging.markers import HandlerKind
from container_messaging.routing import glob_pattern

__all__ = ["FlowEdge", "FlowNode", "MessageFlow", "NodeKind", "message_flow"]

_ID_CHARACTER: Final = re.compile(r"[^A-Za-z0-9_]")
_MERMAID_SHAPES: Final = {
    "code": ('["', '"]'),
    "command": ('(["', '"])'),
    "event": ('{{"', '"}}'),
    "message": ('[/"', '"/]'),
}
_MERMAID_STYLES: Final = (
    "classDef command fill:#e8f0fe,stroke:#4a6fa5",
    "classDef event fill:#fff4e0,stroke:#c77d00",
    "classDef message fill:#eef7ee,stroke:#3d8b3d",
    "classDef missing stroke:#b00020,stroke-dasharray:5 5",
)
#: shape, styles and fill colour per node kind
_DOT_SHAPES: Final = {
    "code": ("box", (), None),
    "command": ("box", ("rounded", "filled"), "#e8f0fe"),
    "event": ("hexagon", ("filled",), "#fff4e0"),
    "message": ("parallelogram", ("filled",), "#eef7ee"),
}


class NodeKind(enum.Enum):
    CODE = "code"  # a handler or sending function, inside its service
    COMMAND = "command"
    EVENT = "event"
    MESSAGE = "message"  # a message to a service activator's channel


@attrs.frozen
class FlowNode:
    """A box of the picture: ``lines`` of text; ``service`` for code; ``missing`` drawn dashed."""

    id: str
    kind: NodeKind
    lines: tuple[str, ...]
    service: str | None = None
    missing: bool = False


@attrs.frozen
class FlowEdge:
    """An arrow; ``local`` (dashed) for a local handler run by an event its service received."""

    source: str
    target: str
    label: str | None = None
    local: bool = False


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


@attrs.frozen
class MessageFlow:
    """The picture: services (in order), nodes and edges; :meth:`mermaid` and :meth:`dot` render it."""

    services: tuple[str, ...]
    nodes: tuple[FlowNode, ...]
    edges: tuple[FlowEdge, ...]

    def mermaid(self) -> str:
        """A Mermaid flowchart (without the Markdown fence), ending with a newline."""
        lines = ["flowchart LR"]
        for index, service in enumerate(self.services):
            lines.append(f'    subgraph service_{index}["{_mermaid_text(service)}"]')
            for node in self.nodes:
                if node.service == service:
                    lines.append(f"        {self._mermaid_node(node)}")
            lines.append("    end")
        lines += [f"    {self._mermaid_node(node)}" for node in self.nodes if node.service is None]
        for edge in self.edges:
            arrow = "-.->" if edge.local else "-->"
            label = f'|"{_mermaid_text(edge.label)}"|' if edge.label else ""
            lines.append(f"    {edge.source} {arrow}{label} {edge.target}")
        lines += [f"    {style}" for style in _MERMAID_STYLES]
        for kind in (NodeKind.COMMAND, NodeKind.EVENT, NodeKind.MESSAGE):
            ids = [node.id for node in self.nodes if node.kind is kind]
            if ids:
                lines.append(f"    class {','.join(ids)} {kind.value}")
        missing = [node.id for node in self.nodes if node.missing]
        if missing:
            lines.append(f"    class {','.join(missing)} missing")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _mermaid_node(node: FlowNode) -> str:
        opening, closing = _MERMAID_SHAPES[node.kind.value]
        return f"{node.id}{opening}{'<br/>'.join(_mermaid_text(line) for line in node.lines)}{closing}"

    def dot(self) -> str:
        """A Graphviz DOT digraph, ending with a newline."""
        lines = [
            "digraph message_flow {",
            "    rankdir=LR;",
            '    graph [fontname="Helvetica"];',
            '    node [fontname="Helvetica", fontsize=11];',
            '    edge [fontname="Helvetica", fontsize=10];',
        ]
        for index, service in enumerate(self.services):
            lines.append(f"    subgraph cluster_{index} {{")
            lines.append(f'        label="{_dot_text(service)}";')
            lines += [f"        {self._dot_node(node)}" for node in self.nodes if node.service == service]
            lines.append("    }")
        lines += [f"    {self._dot_node(node)}" for node in self.nodes if node.service is None]
        for edge in self.edges:
            attributes = [f'label="{_dot_text(edge.label)}"'] if edge.label else []
            if edge.local:
                attributes.append("style=dashed")
            suffix = f" [{', '.join(attributes)}]" if attributes else ""
            lines.append(f"    {edge.source} -> {edge.target}{suffix};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _dot_node(node: FlowNode) -> str:
        label = "\\n".join(_dot_text(line) for line in node.lines)
        shape, styles, fill = _DOT_SHAPES[node.kind.value]
        attributes = [f'label="{label}"', f"shape={shape}"]
        if node.missing:
            styles = (*styles, "dashed")
            attributes.append('color="#b00020"')
        if styles:
            attributes.append(f'style="{",".join(styles)}"')
        if fill:
            attributes.append(f'fillcolor="{fill}"')
        return f"{node.id} [{', '.join(attributes)}];"


class _Builder:
    def __init__(self) -> None:
        self.nodes: dict[tuple[str, ...], FlowNode] = {}
        self.edges: dict[FlowEdge, None] = {}  # ordered, without repeats
        self._ids: set[str] = set()

    def node(
        self,
        key: tuple[str, ...],
        kind: NodeKind,
        lines: tuple[str, ...],
        service: str | None = None,
        *,
        hint: str = "",
    ) -> FlowNode:
        """The node of ``key``, made on first use; its id is made of ``hint`` (default: the key), unique."""
        node = self.nodes.get(key)
        if node is None:
            base = _ID_CHARACTER.sub("_", hint or "__".join(key))
            node_id, number = base, 1
            while node_id in self._ids:
                number += 1
                node_id = f"{base}_{number}"
            self._ids.add(node_id)
            node = self.nodes[key] = FlowNode(node_id, kind, lines, service)
        return node

    def code(self, service: str, name: str, label: str) -> FlowNode:
        return self.node(("code", service, name), NodeKind.CODE, (label,), service, hint=f"{service}__{label}")

    def edge(self, source: FlowNode, target: FlowNode, label: str | None = None, *, local: bool = False) -> None:
        self.edges[FlowEdge(source.id, target.id, label, local)] = None

    def mark_missing(self, key: tuple[str, ...], line: str) -> None:
        node = self.nodes[key]
        if not node.missing:
            self.nodes[key] = attrs.evolve(node, lines=(*node.lines, line), missing=True)


def _matches(pattern: str, routing_key: str) -> bool:
    return glob_pattern(pattern).match(routing_key) is not None


def _event_handlers(service: ServiceDescription, *, distributed: bool) -> list[ReceivedMessage]:
    return [r for r in service.receives if r.kind is HandlerKind.EVENT and r.distributed is distributed]


def _events(services: Iterable[ServiceDescription]) -> list[str]:
    """The events that exist: published (declared) somewhere, or named exactly by a distributed handler."""
    keys: set[str] = set()
    for service in services:
        keys.update(sent.routing_key for sent in service.sends if sent.kind is HandlerKind.EVENT)
        keys.update(r.routing_key for r in _event_handlers(service, distributed=True) if "*" not in r.routing_key)
    return sorted(keys)


def _message_node(builder: _Builder, kind: HandlerKind, key: str, destination: str | None) -> FlowNode:
    if kind is HandlerKind.EVENT:
        return builder.node(("event", key), NodeKind.EVENT, (key, "event"))
    assert destination is not None
    if kind is HandlerKind.COMMAND:
        return builder.node(("command", destination, key), NodeKind.COMMAND, (key, f"command to {destination}"))
    return builder.node(("message", destination, key), NodeKind.MESSAGE, (key, f"message to {destination}"))


def message_flow(services: Sequence[ServiceDescription]) -> MessageFlow:
    """The message flow of the services (sorted by name, so the picture does not depend on their order)."""
    ordered = sorted(services, key=lambda service: service.name)
    builder = _Builder()
    for service in ordered:
        for sent in sorted(service.sends, key=lambda s: (s.label, s.kind.value, s.routing_key)):
            sender = builder.code(service.name, sent.sender, sent.label)
            target = _message_node(builder, sent.kind, sent.routing_key, sent.destination)
            builder.edge(sender, target, "publishes" if sent.kind is HandlerKind.EVENT else "sends")

    handled: set[tuple[str, ...]] = set()
    for service in ordered:
        for received in sorted(service.receives, key=lambda r: (r.label, r.routing_key)):
            if not received.distributed or received.kind is HandlerKind.EVENT:
                continue
            handler = builder.code(service.name, received.handler, received.label)
            builder.edge(_message_node(builder, received.kind, received.routing_key, service.name), handler)
            handled.add((received.kind.value, service.name, received.routing_key))

    events = _events(ordered)
    for event in events:
        for service in ordered:
            subscribed = [r for r in _event_handlers(service, distributed=True) if _matches(r.routing_key, event)]
            if not subscribed:
                continue  # the event does not reach this service: its local handlers do not run either
            node = _message_node(builder, HandlerKind.EVENT, event, None)
            for received in sorted(subscribed, key=lambda r: r.label):
                label = received.routing_key if "*" in received.routing_key else None
                builder.edge(node, builder.code(service.name, received.handler, received.label), label)
            for received in sorted(_event_handlers(service, distributed=False), key=lambda r: r.label):
                if _matches(received.routing_key, event):
                    builder.edge(
                        node, builder.code(service.name, received.handler, received.label), "local", local=True
                    )
    for service in ordered:
        for received in _event_handlers(service, distributed=True):
            if not any(_matches(received.routing_key, event) for event in events):
                pattern = builder.node(("pattern", received.routing_key), NodeKind.EVENT, (received.routing_key,))
                builder.mark_missing(("pattern", received.routing_key), "no event matches")
                builder.edge(pattern, builder.code(service.name, received.handler, received.label))

    names = {service.name for service in ordered}
    for key in list(builder.nodes):
        kind, *rest = key
        if kind in ("command", "message") and rest[0] in names:
            handler_kind = HandlerKind.COMMAND if kind == "command" else HandlerKind.SERVICE_ACTIVATOR
            if (handler_kind.value, rest[0], rest[1]) not in handled:
                builder.mark_missing(key, f"no handler in {rest[0]}")

    nodes = sorted(builder.nodes.values(), key=lambda n: (n.service or "", n.kind.value, n.lines))
    position = {node.id: index for index, node in enumerate(nodes)}
    edges = sorted(builder.edges, key=lambda e: (position[e.source], position[e.target], e.label or ""))
    return MessageFlow(tuple(service.name for service in ordered), tuple(nodes), tuple(edges))
