"""The distributed bus: outbound (:mod:`.bus`, with :mod:`.service_map` and :mod:`.channels`), inbound
(:mod:`.dispatcher`) and names (:mod:`.topology`)."""

from container_messaging.distributed.bus import (
    AsyncDistributedBus,
    DistributedBus,
    ExchangeRoute,
    Route,
    ServiceMapRoute,
)
from container_messaging.distributed.channels import Channel, Channels
from container_messaging.distributed.dispatcher import DistributedDispatcher
from container_messaging.distributed.service_map import EventSubscription, ServiceMap
from container_messaging.distributed.topology import DistributedTopology

__all__ = [
    "AsyncDistributedBus",
    "Channel",
    "Channels",
    "DistributedBus",
    "DistributedDispatcher",
    "DistributedTopology",
    "EventSubscription",
    "ExchangeRoute",
    "Route",
    "ServiceMap",
    "ServiceMapRoute",
]
