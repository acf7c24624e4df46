"""Documentation of a system of services, from their code: the AsyncAPI 3.0 document and the message-flow picture.

::

    services = describe_services(["configs/billing.yaml", "configs/user.yaml"])   # scanning, no broker
    asyncapi_json(asyncapi_document(services))                                   # AsyncAPI 3.0, JSON text
    message_flow(services).mermaid()                                             # or .dot()

The CLI has the same as ``container-messaging asyncapi`` and ``container-messaging graph``.
"""

from container_messaging.docs.asyncapi import ASYNCAPI_VERSION, asyncapi_document, asyncapi_json
from container_messaging.docs.graph import FlowEdge, FlowNode, MessageFlow, NodeKind, message_flow
from container_messaging.docs.schema import SchemaBuilder
from container_messaging.docs.services import (
    ReceivedMessage,
    SentMessage,
    ServiceDescription,
    describe_service,
    describe_services,
)

__all__ = [
    "ASYNCAPI_VERSION",
    "FlowEdge",
    "FlowNode",
    "MessageFlow",
    "NodeKind",
    "ReceivedMessage",
    "SchemaBuilder",
    "SentMessage",
    "ServiceDescription",
    "asyncapi_document",
    "asyncapi_json",
    "describe_service",
    "describe_services",
    "message_flow",
]
