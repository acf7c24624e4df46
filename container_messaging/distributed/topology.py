"""Ecotone's distributed topology and header names, in one place.

Exchange ``ecotone.distributed`` (topic, durable); one durable queue ``distributed_<service>`` per service, bound
to ``<service>`` (commands and messages) and to each distributed event handler's key with ``*`` bound as ``#``.
"""

from __future__ import annotations

from typing import Final

import attrs

from container_messaging.markers import HandlerKind
from container_messaging.routing import RoutingTable, amqp_binding_key
from container_messaging.transports.base import EndpointTopology

__all__ = [
    "PAYLOAD_TYPE",
    "ROUTING_KEY",
    "ROUTING_SLIP_VALUE",
    "SERVICE_TARGET",
    "SOURCE_SERVICE",
    "TARGET_SERVICE",
    "DistributedTopology",
    "PayloadType",
]

PAYLOAD_TYPE: Final = "ecotone.distributed.payloadType"
ROUTING_KEY: Final = "ecotone.distributed.routingKey"
TARGET_SERVICE: Final = "ecotone.distributed.targetServiceName"
SOURCE_SERVICE: Final = "ecotone.distributed.sourceServiceName"
SERVICE_TARGET: Final = "ecotone.amqp.distributed.service_target"
ROUTING_SLIP_VALUE: Final = "ecotone.distributed.invoke"


class PayloadType:
    COMMAND: Final = "command"
    EVENT: Final = "event"
    MESSAGE: Final = "message"


@attrs.frozen
class DistributedTopology:
    """Names of the exchange and queues; the defaults are Ecotone's."""

    exchange: str = "ecotone.distributed"
    queue_prefix: str = "distributed_"

    def queue(self, service_name: str) -> str:
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
