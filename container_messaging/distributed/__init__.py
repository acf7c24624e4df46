"""The distributed bus: outbound (:mod:`.bus`), inbound (:mod:`.dispatcher`) and names (:mod:`.topology`)."""

from container_messaging.distributed.bus import AsyncDistributedBus, DistributedBus
from container_messaging.distributed.dispatcher import DistributedDispatcher
from container_messaging.distributed.topology import DistributedTopology

__all__ = ["AsyncDistributedBus", "DistributedBus", "DistributedDispatcher", "DistributedTopology"]
