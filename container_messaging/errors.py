"""Every error container_messaging raises, rooted in one class.

::

    MessagingError
    ├── ConfigurationError        a config file, key or value is wrong (names the file and the key)
    ├── ScanError                 a scanned module failed to import (names the module)
    ├── HandlerDefinitionError    a marked handler is malformed or clashes with another (names both)
    ├── InvalidMessageError       the sender refused a message no consumer could take (names the argument or header)
    ├── ContainerError            the container cannot be built or cannot provide something
    │   ├── MissingDependencyError     no provider for a class's parameter (names class and parameter)
    │   └── AmbiguousDependencyError   two explicit providers for one type (names both)
    ├── MessageHandlingError      a message could not be handled
    │   ├── NoHandlerError             nothing handles this routing key / class (names it)
    │   ├── MissingHeaderError         a Header("name") parameter had no value (names the header)
    │   ├── ConversionError            a payload did not fit its target type (lists every field path)
    │   │   └── UnsupportedMediaTypeError  a content type is unknown or refused (pickle, yaml, ...)
    │   ├── DistributionError          a distributed message broke Ecotone's rules (names key/service)
    │   └── MessageTooLargeError       a body over consumer.max_message_size
    ├── EndpointError             an unknown consumer endpoint (lists the available ones)
    ├── DeadLetterError           no dead letter entry with that message id (names it and the endpoint)
    └── TransportError            the broker failed; the kombu/socket exception is chained
        ├── UnroutableMessageError     the broker could not route a published message
        └── BrokerRefusedError         the broker refused us for good (credentials, vhost, permissions): never retried
"""

from __future__ import annotations

__all__ = [
    "AmbiguousDependencyError",
    "BrokerRefusedError",
    "ConfigurationError",
    "ContainerError",
    "ConversionError",
    "DeadLetterError",
    "DistributionError",
    "EndpointError",
    "HandlerDefinitionError",
    "InvalidMessageError",
    "MessageHandlingError",
    "MessageTooLargeError",
    "MessagingError",
    "MissingDependencyError",
    "MissingHeaderError",
    "NoHandlerError",
    "ScanError",
    "TransportError",
    "UnroutableMessageError",
    "UnsupportedMediaTypeError",
]


class MessagingError(Exception):
    """The root of every error raised by container_messaging."""


class ConfigurationError(MessagingError):
    """A configuration file, key or value is wrong; the message names the file and the key."""


class ScanError(MessagingError):
    """A module listed under ``scan`` (or one of its submodules) could not be imported."""


class HandlerDefinitionError(MessagingError):
    """A marked handler is malformed, or two handlers claim the same routing key or class."""


class InvalidMessageError(MessagingError):
    """The distributed bus refused to send a message that no consumer could take: a routing key or destination
    that can never match, or a reserved header in the metadata (the message names the argument or the header); or
    the RabbitMQ transport could not encode it (a header value AMQP cannot carry, a name over 255 bytes).
    A content type no consumer accepts is an :class:`UnsupportedMediaTypeError`."""


class ContainerError(MessagingError):
    """The container cannot be built, or cannot provide what was asked of it."""


class MissingDependencyError(ContainerError):
    """A constructor or handler parameter has no provider in the container."""


class AmbiguousDependencyError(ContainerError):
    """Two explicit providers offer the same type."""


class MessageHandlingError(MessagingError):
    """A message could not be handled."""


class NoHandlerError(MessageHandlingError):
    """No handler is registered for a routing key, a channel or a payload class."""


class MissingHeaderError(MessageHandlingError):
    """A handler parameter asks for a header the message does not carry."""


class ConversionError(MessageHandlingError):
    """A payload could not be converted; ``errors`` lists every problem with its field path."""

    def __init__(self, message: str, errors: tuple[str, ...] = ()) -> None:
        super().__init__(message if not errors else f"{message}: " + "; ".join(errors))
        self.errors = errors


class UnsupportedMediaTypeError(ConversionError):
    """A content type is unknown, or refused because decoding it would be unsafe."""


class DistributionError(MessageHandlingError):
    """A distributed message breaks Ecotone's rules (no distributed handler, wrong target, bad payload type)."""


class MessageTooLargeError(MessageHandlingError):
    """A message body is larger than ``consumer.max_message_size``."""


class EndpointError(MessagingError):
    """An endpoint name is unknown to the container."""


class DeadLetterError(MessagingError):
    """A dead letter entry asked for by message id does not exist."""


class TransportError(MessagingError):
    """The transport (broker connection) failed; the original exception is chained."""


class UnroutableMessageError(TransportError):
    """The broker returned a published message because no queue was bound for its routing key."""


class BrokerRefusedError(TransportError):
    """The broker answered and refused (bad credentials, unknown vhost, ACCESS_REFUSED): retrying cannot help."""
