"""The AsyncAPI 3.0 document of one service, or of several.

Channels follow Ecotone's RabbitMQ topology: each service's durable queue ``distributed_<service>`` (its receive
operations, one per distributed handler), and each routing key published on the topic exchange
``ecotone.distributed`` (the send operations: a command or message goes out with the destination service's name,
an event with its own key). Messages carry the Ecotone headers (``ecotone.distributed.*``, ``id``,
``correlationId``, ...) as their headers schema and the JSON Schema of their payload type (see
:mod:`container_messaging.docs.schema`). What a service receives comes from its handlers' first parameters; what it
sends, from its sending declarations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Final

from container_messaging.distributed.topology import (
    PAYLOAD_TYPE,
    ROUTING_KEY,
    ROUTING_SLIP_VALUE,
    SERVICE_TARGET,
    SOURCE_SERVICE,
    TARGET_SERVICE,
    PayloadType,
)
from container_messaging.docs.schema import SchemaBuilder
from container_messaging.docs.services import ServiceDescription
from container_messaging.errors import ConfigurationError
from container_messaging.markers import HandlerKind
from container_messaging.messages import CONTENT_TYPE, CORRELATION_ID, ID, PARENT_ID, ROUTING_SLIP, TIMESTAMP, TYPE_ID

__all__ = ["ASYNCAPI_VERSION", "asyncapi_document", "asyncapi_json"]

ASYNCAPI_VERSION: Final = "3.0.0"
_AMQP_BINDING_VERSION: Final = "0.3.0"
_PERSISTENT: Final = 2
_ID_CHARACTER: Final = re.compile(r"[^\w.\-]")
_PAYLOAD_TYPES: Final = {
    HandlerKind.COMMAND: PayloadType.COMMAND,
    HandlerKind.EVENT: PayloadType.EVENT,
    HandlerKind.SERVICE_ACTIVATOR: PayloadType.MESSAGE,
}
_UUID: Final = {"type": "string", "format": "uuid"}
#: The headers every distributed message carries, as Ecotone and this framework write them.
_COMMON_HEADERS: Final[dict[str, Any]] = {
    ID: {**_UUID, "description": "the message id (UUID v7)"},
    CORRELATION_ID: {**_UUID, "description": "the id of the first message of the conversation (default: id)"},
    PARENT_ID: {**_UUID, "description": "the id of the message whose handler sent this one"},
    TIMESTAMP: {"type": "integer", "description": "when it was sent, in unix seconds"},
    CONTENT_TYPE: {"type": "string", "description": "the media type of the body (also the AMQP content_type)"},
    SOURCE_SERVICE: {"type": "string", "description": "the service that sent it"},
    ROUTING_SLIP: {"const": ROUTING_SLIP_VALUE},
    TYPE_ID: {"type": "string", "description": "the sender's type name of a converted object (informational)"},
}


def _identifier(text: str) -> str:
    """A component key AsyncAPI accepts (letters, digits, ``.``, ``-``, ``_``)."""
    return _ID_CHARACTER.sub("_", text)


def _glob(routing_key: str) -> bool:
    return "*" in routing_key


class _Document:
    """Collects channels, operations, messages and schemas; equal messages are defined once."""

    def __init__(self) -> None:
        self.channels: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.schemas = SchemaBuilder()

    @staticmethod
    def _free(table: dict[str, Any], base: str) -> str:
        name, number = base, 1
        while name in table:
            number += 1
            name = f"{base}_{number}"
        return name

    def queue_channel(self, service: ServiceDescription) -> str:
        channel_id = _identifier(f"queue.{service.queue}")
        bindings = ", ".join(service.bindings)
        self.channels[channel_id] = {
            "address": service.queue,
            "title": f"queue of {service.name}",
            "description": (
                f"The durable queue the {service.name} service consumes, bound to the topic exchange "
                f"{service.exchange} with the routing keys {bindings} (commands and messages for {service.name}, "
                "then each event subscription)."
            ),
            "messages": {},
            "bindings": {
                "amqp": {
                    "is": "queue",
                    "queue": {"name": service.queue, "durable": True, "exclusive": False, "autoDelete": False},
                    "bindingVersion": _AMQP_BINDING_VERSION,
                }
            },
        }
        return channel_id

    def routing_key_channel(self, exchange: str, amqp_key: str, description: str) -> str:
        channel_id = _identifier(f"routingKey.{amqp_key}")
        if channel_id not in self.channels:
            self.channels[channel_id] = {
                "address": amqp_key,
                "title": f"routing key {amqp_key}",
                "description": description,
                "messages": {},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {"name": exchange, "type": "topic", "durable": True, "autoDelete": False},
                        "bindingVersion": _AMQP_BINDING_VERSION,
                    }
                },
            }
        return channel_id

    def message(
        self,
        kind: HandlerKind,
        routing_key: str,
        destination: str | None,
        payload_type: Any,
        *,
        where: str,
        camel_case: bool,
    ) -> str:
        """The id of the message component for this kind, key, destination and payload (defined on first use)."""
        payload_kind = _PAYLOAD_TYPES[kind]
        content_type = self.schemas.content_type(payload_type)
        payload = self.schemas.payload_schema(payload_type, where=where, camel_case=camel_case)
        specific: dict[str, Any] = {PAYLOAD_TYPE: {"const": payload_kind}}
        if _glob(routing_key):
            described = f"a key the glob {routing_key} matches (* is any characters, dots included; case-insensitive)"
            specific[ROUTING_KEY] = {"type": "string", "description": described}
            specific[SERVICE_TARGET] = {"type": "string", "description": described}
        else:
            specific[ROUTING_KEY] = {"const": routing_key}
            specific[SERVICE_TARGET] = {"const": routing_key if destination is None else destination}
        required = [ID, CORRELATION_ID, TIMESTAMP, CONTENT_TYPE, PAYLOAD_TYPE, ROUTING_KEY]
        if destination is not None:
            specific[TARGET_SERVICE] = {"const": destination}
            required.append(TARGET_SERVICE)
        titles = {
            PayloadType.COMMAND: f"command {routing_key} to {destination}",
            PayloadType.EVENT: f"event {routing_key}",
            PayloadType.MESSAGE: f"message to channel {routing_key} of {destination}",
        }
        title = titles[payload_kind]
        definition: dict[str, Any] = {
            "name": routing_key,
            "title": title,
            "contentType": content_type,
            "headers": {
                "type": "object",
                "description": "Ecotone's distributed-bus headers; the sender's metadata travels as further headers.",
                "properties": {**_COMMON_HEADERS, **specific},
                "required": required,
            },
            "payload": payload,
        }
        base = _identifier(f"{payload_kind}.{routing_key}")
        for name, existing in self.messages.items():
            if existing == definition and (name == base or name.startswith(base + "_")):
                return name
        name = self._free(self.messages, base)
        self.messages[name] = definition
        return name

    def operation(self, base: str, definition: dict[str, Any]) -> None:
        self.operations[self._free(self.operations, _identifier(base))] = definition

    def link(self, channel_id: str, message_id: str) -> dict[str, str]:
        """Adds the message to the channel; the reference an operation of that channel uses."""
        self.channels[channel_id]["messages"][message_id] = {"$ref": f"#/components/messages/{message_id}"}
        return {"$ref": f"#/channels/{channel_id}/messages/{message_id}"}


def _add_receives(document: _Document, service: ServiceDescription) -> None:
    channel_id = document.queue_channel(service)
    for received in service.receives:
        if not received.distributed:
            continue  # never reachable from another service
        destination = None if received.kind is HandlerKind.EVENT else service.name
        message_id = document.message(
            received.kind,
            received.routing_key,
            destination,
            received.payload_type,
            where=f"handler {received.handler}",
            camel_case=service.camel_case,
        )
        document.operation(
            f"{service.name}.receive.{received.label}",
            {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "messages": [document.link(channel_id, message_id)],
                "summary": f"{received.label} handles the {document.messages[message_id]['title']}",
                "tags": [{"name": service.name}],
                "bindings": {"amqp": {"ack": True, "bindingVersion": _AMQP_BINDING_VERSION}},
            },
        )


def _add_sends(document: _Document, service: ServiceDescription) -> None:
    senders: dict[tuple[str, str, bool], list[str]] = {}  # (channel, message, is an event) -> sending code
    for sent in service.sends:
        amqp_key = sent.amqp_routing_key
        if sent.destination is None:
            description = f"Events {amqp_key}, published on the topic exchange {service.exchange}."
        else:
            description = (
                f"Commands and messages for the {sent.destination} service, sent on the topic exchange "
                f"{service.exchange}; its queue is bound to {sent.destination}."
            )
        channel_id = document.routing_key_channel(service.exchange, amqp_key, description)
        message_id = document.message(
            sent.kind,
            sent.routing_key,
            sent.destination,
            sent.payload_type,
            where=f"sending declaration of {sent.sender}",
            camel_case=service.camel_case,
        )
        senders.setdefault((channel_id, message_id, sent.kind is HandlerKind.EVENT), []).append(sent.label)
    for (channel_id, message_id, event), labels in senders.items():
        message = document.messages[message_id]
        verb = "publishes" if event else "sends"
        document.operation(
            f"{service.name}.send.{message_id}",
            {
                "action": "send",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "messages": [document.link(channel_id, message_id)],
                "summary": f"{', '.join(sorted(set(labels)))} {verb} the {message['title']}",
                "tags": [{"name": service.name}],
                "bindings": {
                    "amqp": {
                        "deliveryMode": _PERSISTENT,
                        "mandatory": not event,  # a command or message nobody can receive is an error
                        "bindingVersion": _AMQP_BINDING_VERSION,
                    }
                },
            },
        )


def asyncapi_document(services: Sequence[ServiceDescription], *, version: str = "1.0.0") -> dict[str, Any]:
    """The AsyncAPI 3.0 document (as JSON-ready data) of one service, or of several in one document.

    A handler's payload type or a declared payload type that has no JSON form is a HandlerDefinitionError naming
    the handler or the sending code.
    """
    if not services:
        raise ConfigurationError("no service to describe: the AsyncAPI document needs at least one service")
    document = _Document()
    for service in services:
        _add_receives(document, service)
        _add_sends(document, service)
    names = [service.name for service in services]
    title = names[0] if len(names) == 1 else ", ".join(names)
    exchange = ", ".join(sorted({service.exchange for service in services}))
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": (
                f"The distributed messaging of {'the service' if len(names) == 1 else 'the services'} {title}: "
                f"Ecotone's Distributed Bus over the topic exchange {exchange}, written by container_messaging "
                "from the handlers and sending declarations found by scanning."
            ),
            "tags": [{"name": name} for name in names],
        },
        "defaultContentType": "application/json",
        "channels": document.channels,
        "operations": document.operations,
        "components": {"messages": document.messages, "schemas": document.schemas.definitions},
    }


def asyncapi_json(document: dict[str, Any]) -> str:
    """The document as indented JSON text, ending with a newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
