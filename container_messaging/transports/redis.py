"""Redis (``redis://``, ``rediss://``), through kombu's Redis transport.

Exchanges are routed here (see ``_virtual.py``): one copy per matching queue, a Redis list each. kombu keeps a
taken, unacknowledged message in its ``unacked`` hash and restores it when the consumer closes, or after
``visibility_timeout`` when the consumer was killed. A delayed retry waits in a sorted set per queue,
``<queue>.delayed``, scored by its due time; a consumer of the queue moves the due ones onto it atomically (a Lua
script) every 0.1 s.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable
from typing import Any, Final

import kombu
import kombu.transport.redis  # here, a missing dependency (redis, packaging) is reported at creation
from kombu.utils.json import dumps
from redis import exceptions as redis_errors

from container_messaging.transports._kombu_base import KombuDelivery, KombuReceiver
from container_messaging.transports._virtual import VirtualTransport
from container_messaging.transports.base import EndpointTopology, dead_letter_queue

__all__ = ["RedisTransport"]

#: Moves up to 100 due messages from the sorted set KEYS[1] onto the list KEYS[2] (ARGV[1]: now, unix seconds).
_MOVE_DUE: Final = """
    local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
    for _, item in ipairs(due) do
        redis.call('ZREM', KEYS[1], item)
        redis.call('LPUSH', KEYS[2], item)
    end
    return #due
"""


def delayed_set(queue: str) -> str:
    """The sorted set that holds the delayed copies for ``queue``."""
    return f"{queue}.delayed"


class RedisTransport(VirtualTransport):
    """The Redis adapter."""

    requeues_in_place = False  # a requeue pushes a clean copy onto the tail (see requeue)
    poll_step = 0.1

    def new_connection(self) -> kombu.Connection:
        o = self.options
        return kombu.Connection(
            o.url,
            heartbeat=0,
            connect_timeout=o.connect_timeout,
            ssl=self._tls(),
            transport_options={
                "polling_interval": o.polling_interval,  # kombu also makes it BRPOP's timeout
                "visibility_timeout": o.visibility_timeout,
                # every network wait has a bound: connecting (and the TLS handshake), and any reply, BRPOP's too
                "socket_connect_timeout": o.connect_timeout,
                "socket_timeout": o.connect_timeout + o.polling_interval,
            },
        )

    def _tls(self) -> dict[str, Any] | None:
        """redis-py's TLS options; always a dict, since kombu's Redis transport ignores ``ssl=True`` (no TLS)."""
        o = self.options
        if not (o.ssl or o.scheme == "rediss"):
            return None
        self.check_tls_files()
        return {
            "ssl_cert_reqs": ssl.CERT_REQUIRED if o.ssl_verify else ssl.CERT_NONE,
            "ssl_ca_certs": o.ssl_ca_certs,
            "ssl_certfile": o.ssl_certfile,
            "ssl_keyfile": o.ssl_keyfile,
        }

    def refused(self, error: BaseException) -> bool:
        """AUTH failures (WRONGPASS, NOAUTH) and missing ACL permissions (NOPERM)."""
        return isinstance(error, redis_errors.AuthenticationError | redis_errors.NoPermissionError)

    def requeue(self, receiver: KombuReceiver, delivery: KombuDelivery) -> None:
        # kombu's Redis requeue writes a "redelivered" key into the application headers: put a clean copy back.
        receiver.send(delivery.queue, delivery.body, dict(delivery.headers), delivery.content_type)
        delivery.message.ack()

    # -- delays ----------------------------------------------------------------------------------------------------

    def delay(self, receiver: KombuReceiver, delivery: KombuDelivery, delay_ms: int, headers: dict[str, Any]) -> None:
        channel, content_type = receiver.channel, delivery.content_type or "application/octet-stream"
        message = channel.prepare_message(delivery.body, 0, content_type, "binary", headers, {"delivery_mode": 2})
        # The Lua script pushes the stored JSON as it is onto the queue's list, so it must be exactly what kombu's
        # Redis channel stores: ``_inplace_augment_message`` (a kombu internal, needed only here) adds the delivery
        # tag and the delivery info, as kombu's own publish does.
        channel._inplace_augment_message(message, "", delivery.queue)
        # a pooled client: the channel's own connection may be waiting on BRPOP, and replies would mix
        with channel.conn_or_acquire() as client:
            client.zadd(delayed_set(delivery.queue), {dumps(message): time.time() + delay_ms / 1000})

    def before_poll(self, receiver: KombuReceiver) -> None:
        with receiver.channel.conn_or_acquire() as client:
            client.eval(_MOVE_DUE, 2, delayed_set(receiver.queue), receiver.queue, time.time())

    def waiting_for_delay(self, queue: str) -> int:
        with self.connection(f"counting the delayed copies of {queue!r}") as channel:
            return int(channel.client.zcard(delayed_set(queue)))

    def remove_endpoint(self, topology: EndpointTopology, delays: Iterable[int] = ()) -> None:
        # kombu's virtual queue_delete only removes the bindings its own channel declared: delete the keys
        with self.connection(f"deleting the keys of {topology.queue!r}") as channel:
            channel.client.delete(
                topology.queue,
                dead_letter_queue(topology.queue),
                delayed_set(topology.queue),
                channel.keyprefix_queue % topology.exchange,
                channel.keyprefix_binding_permanent % topology.exchange,
            )
