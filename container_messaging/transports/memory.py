"""``memory://``: kombu's in-process transport, for several containers in one process (tests); lost with it.

kombu keeps the memory broker (queues, exchanges, bindings) at class level, shared by every connection of the
process. Exchanges are routed here (see ``_virtual.py``). A delayed retry waits in a heap per queue, shared by the
process the same way, and a consumer of the queue moves the due ones onto it every 0.1 s. :meth:`MemoryTransport.reset`
empties all of it (between tests).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Iterable
from typing import Any, ClassVar

import attrs
import kombu
from kombu.transport import memory

from container_messaging.transports._kombu_base import KombuDelivery, KombuReceiver
from container_messaging.transports._virtual import VirtualTransport
from container_messaging.transports.base import EndpointTopology, dead_letter_queue

__all__ = ["MemoryTransport"]


class _Channel(memory.Channel):  # type: ignore[misc]
    # kombu's memory channel drops the unacknowledged messages of a closing consumer; every publish here goes to
    # the default exchange, so kombu's restore puts each back on its own queue.
    do_restore = True


class _Broker(memory.Transport):  # type: ignore[misc]
    Channel = _Channel


@attrs.frozen
class _Delayed:
    """A copy waiting for its time."""

    body: bytes
    headers: dict[str, Any]
    content_type: str | None


class MemoryTransport(VirtualTransport):
    """The memory adapter."""

    requeues_in_place = False  # kombu's memory requeue appends to the queue
    poll_step = 0.1

    #: queue -> (due time, order, copy): shared by the process, like kombu's memory broker
    _heaps: ClassVar[dict[str, list[tuple[float, int, _Delayed]]]] = {}
    _order: ClassVar[itertools.count[int]] = itertools.count()
    _heaps_lock: ClassVar[threading.Lock] = threading.Lock()

    def new_connection(self) -> kombu.Connection:
        options = {"polling_interval": self.options.polling_interval}
        return kombu.Connection(transport=_Broker, transport_options=options)

    @classmethod
    def reset(cls) -> None:
        """Empties the process-wide memory broker (queues, exchanges, bindings, delayed copies)."""
        _Broker.global_state.clear()
        _Channel.queues.clear()
        _Channel.events.clear()
        with cls._heaps_lock:
            cls._heaps.clear()

    def delay(self, receiver: KombuReceiver, delivery: KombuDelivery, delay_ms: int, headers: dict[str, Any]) -> None:
        copy = _Delayed(delivery.body, headers, delivery.content_type)
        entry = (time.time() + delay_ms / 1000, next(self._order), copy)
        with self._heaps_lock:
            heapq.heappush(self._heaps.setdefault(delivery.queue, []), entry)

    def before_poll(self, receiver: KombuReceiver) -> None:
        now, due = time.time(), []
        with self._heaps_lock:
            heap = self._heaps.get(receiver.queue, [])
            while heap and heap[0][0] <= now:
                due.append(heapq.heappop(heap)[2])
        for copy in due:
            receiver.send(receiver.queue, copy.body, copy.headers, copy.content_type)

    def remove_endpoint(self, topology: EndpointTopology, delays: Iterable[int] = ()) -> None:
        with self._heaps_lock:
            self._heaps.pop(topology.queue, None)
        with self.connection(f"deleting the queues of {topology.queue!r}") as channel:
            for name in (topology.queue, dead_letter_queue(topology.queue)):
                channel.queue_delete(name)
            if topology.exchange in channel.state.exchanges:  # kombu's memory broker fails on a missing one
                channel.exchange_delete(topology.exchange)

    def waiting_for_delay(self, queue: str) -> int:
        with self._heaps_lock:
            return len(self._heaps.get(queue, []))
