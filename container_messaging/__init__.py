"""container_messaging: Ecotone's Distributed Bus for Python, in a dependency-injection container, over kombu.

The public API, re-exported; every name is defined in the module that owns the concept.
"""

from container_messaging.buses import CommandBus, EventBus, MessageChannels, QueryBus
from container_messaging.config import (
    ConsumerSettings,
    ConversionSettings,
    DeduplicationSettings,
    DistributionSettings,
    RecoverabilitySettings,
    Settings,
    TransportSettings,
    load_settings,
)
from container_messaging.consumer import EndpointConsumer, EndpointDescription, RunOptions, RunResult
from container_messaging.container import MessagingContainer
from container_messaging.conversion import Converter
from container_messaging.deadletter import DeadLetter, DeadLetterEntry
from container_messaging.deduplication import DeduplicationStore
from container_messaging.distributed import DistributedBus
from container_messaging.distributed.dispatcher import Subscription
from container_messaging.errors import (
    AmbiguousDependencyError,
    BrokerRefusedError,
    ConfigurationError,
    ContainerError,
    ConversionError,
    DeadLetterError,
    DistributionError,
    EndpointError,
    HandlerDefinitionError,
    InvalidMessageError,
    MessageHandlingError,
    MessageTooLargeError,
    MessagingError,
    MissingDependencyError,
    MissingHeaderError,
    NoHandlerError,
    ScanError,
    TransportError,
    UnroutableMessageError,
    UnsupportedMediaTypeError,
)
from container_messaging.markers import (
    RetryPolicy,
    command_handler,
    distributed,
    event_handler,
    publishes,
    query_handler,
    retries,
    sends_command,
    sends_message,
    service_activator,
)
from container_messaging.messages import Header, Headers, MediaType, Message
from container_messaging.middleware import EndpointInfo, Middleware, Outcome
from container_messaging.observability.health import Check, HealthReport
from container_messaging.redaction import SecretUrl

__all__ = [
    "AmbiguousDependencyError",
    "BrokerRefusedError",
    "Check",
    "CommandBus",
    "ConfigurationError",
    "ConsumerSettings",
    "ContainerError",
    "ConversionError",
    "ConversionSettings",
    "Converter",
    "DeadLetter",
    "DeadLetterEntry",
    "DeadLetterError",
    "DeduplicationSettings",
    "DeduplicationStore",
    "DistributedBus",
    "DistributionError",
    "DistributionSettings",
    "EndpointConsumer",
    "EndpointDescription",
    "EndpointError",
    "EndpointInfo",
    "EventBus",
    "HandlerDefinitionError",
    "Header",
    "Headers",
    "HealthReport",
    "InvalidMessageError",
    "MediaType",
    "Message",
    "MessageChannels",
    "MessageHandlingError",
    "MessageTooLargeError",
    "MessagingContainer",
    "MessagingError",
    "Middleware",
    "MissingDependencyError",
    "MissingHeaderError",
    "NoHandlerError",
    "Outcome",
    "QueryBus",
    "RecoverabilitySettings",
    "RetryPolicy",
    "RunOptions",
    "RunResult",
    "ScanError",
    "SecretUrl",
    "Settings",
    "Subscription",
    "TransportError",
    "TransportSettings",
    "UnroutableMessageError",
    "UnsupportedMediaTypeError",
    "command_handler",
    "distributed",
    "event_handler",
    "load_settings",
    "publishes",
    "query_handler",
    "retries",
    "sends_command",
    "sends_message",
    "service_activator",
]
