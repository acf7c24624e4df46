"""Ecotone's distributed topology and header names, in one place: every other module takes them from here.

Exchange ``ecotone.distributed`` (topic, durable); one durable queue ``distributed_<service>`` per service, bound
to ``<service>`` (commands and messages) and to each distributed event handler's key (see
:func:`container_messaging.routing.amqp_binding_key`). The headers every distributed message carries are named by
the constants below; ``routingSlip`` holds :data:`ROUTING_SLIP_VALUE`.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

from container_messaging.markers import HandlerKind
from container_messaging.routing import RoutingTable, amqp_binding_key
from container_messaging.transports.base import EndpointTopology

__all__ = [
    "DEFAULT_EXCHANGE",
    "DEFAULT_QUEUE_PREFIX",
    "DISTRIBUTED_HEADERS",
    "DISTRIBUTED_HEADER_PREFIX",
    "DistributedTopology",
    "PAYLOAD_TYPE",
    "PayloadType",
    "ROUTING_KEY",
    "ROUTING_SLIP_VALUE",
    "SERVICE_NAME",
    "SERVICE_TARGET",
    "SOURCE_SERVICE",
    "TARGET_SERVICE",
]

#: Ecotone's exchange and the prefix of each service's queue (``distribution.exchange`` / ``queue_prefix``).
DEFAULT_EXCHANGE: Final = "ecotone.distributed"
DEFAULT_QUEUE_PREFIX: Final = "distributed_"
#: What a service name may be: it is the AMQP binding of its queue and a destination others send to.
SERVICE_NAME: Final = re.compile(r"[A-Za-z0-9._-]+")

DISTRIBUTED_HEADER_PREFIX: Final = "ecotone.distributed."
PAYLOAD_TYPE: Final = "ecotone.distributed.payloadType"
ROUTING_KEY: Final = "ecotone.distributed.routingKey"
TARGET_SERVICE: Final = "ecotone.distributed.targetServiceName"
SOURCE_SERVICE: Final = "ecotone.distributed.sourceServiceName"
SERVICE_TARGET: Final = "ecotone.amqp.distributed.service_target"
#: Every header the distributed bus writes on a message it sends (never taken from the sender's metadata).
DISTRIBUTED_HEADERS: Final = frozenset({PAYLOAD_TYPE, ROUTING_KEY, TARGET_SERVICE, SOURCE_SERVICE, SERVICE_TARGET})
#: The ``routingSlip`` header's value: it sends the message to the receiving service's distributed gate.
ROUTING_SLIP_VALUE: Final = "ecotone.distributed.invoke"


class PayloadType:
    """The values of the ``ecotone.distributed.payloadType`` header."""

    COMMAND: Final = "command"
    EVENT: Final = "event"
    MESSAGE: Final = "message"


@attrs.frozen
class DistributedTopology:
    """Names of the exchange and queues; the defaults are Ecotone's."""

    exchange: str = DEFAULT_EXCHANGE
    queue_prefix: str = DEFAULT_QUEUE_PREFIX

    def queue(self, service_name: str) -> str:
        """The queue ``service_name`` consumes: ``distributed_<service>`` by default."""
        return f"{self.queue_prefix}{service_name}"

    def endpoint(self, service_name: str, routes: RoutingTable) -> EndpointTopology:
        """The queue of ``service_name`` and its bindings: the service name, then each distributed event key."""
        event_keys = sorted(
            {
                amqp_binding_key(h.routing_key)
                for h in routes.distributed(HandlerKind.EVENT)
                if h.routing_key is not None
            }
        )
        bindings = (service_name, *(key for key in event_keys if key != service_name))
        return EndpointTopology(self.exchange, self.queue(service_name), bindings)
