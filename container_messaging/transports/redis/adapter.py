"""The Redis adapter: topology, publishing and browsing on streams (the package docstring has the whole design)."""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from container_messaging.errors import BrokerRefusedError, TransportError, UnroutableMessageError
from container_messaging.transports._broker import MAYBE_SENT, BrokerTransport
from container_messaging.transports._kombu_base import publishing
from container_messaging.transports._virtual import topic_matches
from container_messaging.transports.base import Delivery, EndpointTopology, OutboundMessage, Receiver, dead_letter_queue
from container_messaging.transports.options import TransportOptions
from container_messaging.transports.redis import envelope, keys, legacy, scripts
from container_messaging.transports.redis.receiver import ERRORS, RedisReceiver
from container_messaging.transports.redis.streams import StreamReceiver

__all__ = ["RedisTransport"]

log = logging.getLogger("container_messaging.transport")

P = TypeVar("P")

#: Entries read per round trip when browsing a queue.
_PAGE: Final = 500


class RedisTransport(BrokerTransport):
    """The Redis adapter. Connections open on first use; each receiver has its own."""

    def __init__(self, options: TransportOptions) -> None:
        super().__init__(options)
        self._client: redis.Redis | None = None
        self._abandoned: list[str] = []  # alive keys of receivers that lost their connection
        self._lock = threading.Lock()
        #: seconds a consumer waits on Redis at most before it looks for due delayed copies again
        self.step = max(options.polling_interval, 0.05)
        #: milliseconds a consumer's alive key lives without being renewed
        self.liveness_ms = int(1000 * (options.heartbeat or options.visibility_timeout))

    # -- connections -----------------------------------------------------------------------------------------------

    def new_connection(self, read_timeout: float | None = None) -> redis.Redis:
        """A redis-py client (it connects on first use) with this transport's options: every wait bounded
        (connecting by ``connect_timeout``; the TLS handshake and each reply by ``read_timeout``, ``connect_timeout``
        by default: Redis answers at once, or not at all), no retry of its own (this transport decides what to
        retry), TLS when asked."""
        o = self.options
        url = o.url
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": o.connect_timeout,
            "socket_timeout": read_timeout or o.connect_timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        if o.ssl or o.scheme == "rediss":
            self.check_tls_files()
            if o.scheme == "redis":
                url = "rediss" + url[len("redis") :]
            kwargs.update(
                ssl_cert_reqs=ssl.CERT_REQUIRED if o.ssl_verify else ssl.CERT_NONE,
                ssl_ca_certs=o.ssl_ca_certs,
                ssl_certfile=o.ssl_certfile,
                ssl_keyfile=o.ssl_keyfile,
                ssl_check_hostname=o.ssl_verify,
            )
        return redis.Redis.from_url(url, **kwargs)

    def client(self) -> redis.Redis:
        """The client of publishing and administration (thread-safe: redis-py pools its connections)."""
        with self._lock:
            if self._client is None:
                self._client = self.new_connection()
            return self._client

    def refused(self, error: BaseException) -> bool:
        """AUTH failures (WRONGPASS, NOAUTH) and missing ACL permissions (NOPERM)."""
        return isinstance(error, redis.AuthenticationError | redis.exceptions.NoPermissionError)

    def _run(self, action: str, operation: Callable[[redis.Redis], P]) -> P:
        """``operation(client)`` with broker errors mapped to TransportError naming ``action``."""
        try:
            return operation(self.client())
        except Exception as error:
            self.reraise(action, error, ERRORS)

    def abandon(self, alive_key: str) -> None:
        """Remembers the alive key of a receiver that lost its connection: the next receiver deletes it, so that
        what the lost one held is taken over at once rather than when the key expires."""
        with self._lock:
            self._abandoned.append(alive_key)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- topology --------------------------------------------------------------------------------------------------

    def declare_exchange(self, exchange: str) -> None:
        """Nothing to declare: an exchange is its bindings."""

    def setup_endpoint(self, topology: EndpointTopology) -> None:
        """Declares the queue, its dead letter queue and their groups, and the bindings; for a stream subscription's
        queue (``keys.subscription_queue``), also the service's group on the stream, at its start (a service that
        subscribes late reads every event the stream holds)."""
        subscription = keys.subscription_of(topology.queue)

        def declare(client: redis.Redis) -> None:
            pipe = client.pipeline(transaction=False)
            for key in topology.bindings:
                pipe.sadd(keys.bindings_key(topology.exchange), json.dumps([key, topology.queue]))
            for queue in (topology.queue, dead_letter_queue(topology.queue)):
                pipe.xgroup_create(keys.queue_key(queue), keys.GROUP, id="0", mkstream=True)
            if subscription is not None:
                channel, group = subscription
                pipe.xgroup_create(keys.stream_key(channel), group, id="0", mkstream=True)
            for result in pipe.execute(raise_on_error=False):
                if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                    raise result
            legacy.migrate(client, topology.queue, self.options.visibility_timeout)

        self._run(f"declaring queue {topology.queue!r}", declare)

    def queue_size(self, queue: str) -> int:
        """The entries of ``queue`` no live consumer holds (released ones and those of gone consumers count); for a
        stream subscription's queue, plus the stream's entries its group has not read yet."""
        subscription = keys.subscription_of(queue)

        def unread(client: redis.Redis) -> int:
            if subscription is None:
                return 0
            channel, group = subscription
            try:
                groups = client.xinfo_groups(keys.stream_key(channel))
            except redis.ResponseError as exc:
                if "no such key" not in str(exc):
                    raise
                return 0
            return sum(int(info.get("lag") or 0) for info in groups if _text(info["name"]) == group)

        def ready(client: redis.Redis) -> int:
            key = keys.queue_key(queue)
            length = int(client.xlen(key))
            if not length:
                return 0
            try:
                holders = client.xpending(key, keys.GROUP)["consumers"]
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                return length
            alive = _alive(client, queue, {_text(holder["name"]) for holder in holders})
            return length - sum(int(holder["pending"]) for holder in holders if _text(holder["name"]) in alive)

        return self._run(f"reading the size of queue {queue!r}", lambda client: ready(client) + unread(client))

    def queue_exists(self, queue: str) -> bool:
        """Whether ``queue``'s stream exists (setting the endpoint up creates it, empty)."""
        return self._run(f"looking for queue {queue!r}", lambda client: bool(client.exists(keys.queue_key(queue))))

    def waiting_for_delay(self, queue: str) -> int:
        """How many delayed copies for ``queue`` wait for their time."""
        return self._run(f"counting the delayed copies of {queue!r}", lambda c: int(c.zcard(keys.delayed_key(queue))))

    def remove_endpoint(self, topology: EndpointTopology, delays: Iterable[int] = ()) -> None:
        """Deletes an endpoint's queue, its dead letter queue, its delayed copies and the exchange's bindings, with
        every message in them, and a stream subscription's group (not the stream) (for tests and tooling)."""
        queues = (topology.queue, dead_letter_queue(topology.queue))
        subscription = keys.subscription_of(topology.queue)

        def remove(client: redis.Redis) -> None:
            pipe = client.pipeline(transaction=False)
            pipe.delete(
                *(keys.queue_key(queue) for queue in queues),
                *(keys.delayed_key(queue) for queue in queues),
                keys.bindings_key(topology.exchange),
            )
            if subscription is not None:
                pipe.xgroup_destroy(keys.stream_key(subscription[0]), subscription[1])
            pipe.execute(raise_on_error=False)

        self._run(f"deleting the keys of {topology.queue!r}", remove)

    def remove_stream(self, channel: str) -> None:
        """Deletes event stream ``channel`` with every entry and group (for tests and tooling)."""
        self._run(f"deleting stream {channel!r}", lambda client: client.delete(keys.stream_key(channel)))

    # -- publishing ------------------------------------------------------------------------------------------------

    def publish(self, exchange: str, message: OutboundMessage, *, mandatory: bool) -> None:
        self._publish(publishing(exchange, message), exchange, [(message, mandatory)])

    def publish_many(self, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> None:
        """Publishes the batch in one transaction (all of it or nothing); a mandatory message no queue receives is
        left out, and named by an UnroutableMessageError after the others were published."""
        if messages:
            self._publish(f"publishing a batch of {len(messages)} to {exchange!r}", exchange, messages)

    def append_to_stream(self, channel: str, message: OutboundMessage) -> None:
        """Appends ``message`` once to event stream ``channel``, for every group (service) that reads it, including
        those created later (the stream is created by the first append)."""
        what = f"appending message {message.message_id!r} to stream {channel!r}"
        fields = envelope.encode(envelope.Envelope(message.body, dict(message.headers), message.content_type))
        self.retrying(
            what,
            lambda: self._prepared(what, lambda client: None),
            lambda prepared: self._written(
                what, lambda client, _: client.xadd(keys.stream_key(channel), fields), prepared
            ),
        )

    def send_to_queue(self, queue: str, message: OutboundMessage) -> None:
        direct = OutboundMessage(queue, message.body, message.headers, message.content_type, message.message_id)
        self._publish(publishing("", direct), "", [(direct, True)])

    def _publish(self, what: str, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> None:
        entries = [
            (message, envelope.encode(envelope.Envelope(message.body, dict(message.headers), message.content_type)))
            for message, _ in messages
        ]
        unroutable: list[OutboundMessage] = []

        def route(client: redis.Redis) -> list[tuple[str, dict[bytes, bytes]]]:
            unroutable.clear()
            queues = self._route(client, exchange, {message.routing_key for message, _ in messages})
            writes = []
            for (message, mandatory), (_, fields) in zip(messages, entries, strict=True):
                targets = queues[message.routing_key]
                if not targets and mandatory:
                    unroutable.append(message)
                writes += [(keys.queue_key(queue), fields) for queue in targets]
            return writes

        def write(client: redis.Redis, writes: list[tuple[str, dict[bytes, bytes]]]) -> None:
            if len(writes) == 1:
                client.xadd(*writes[0])
            elif writes:
                pipe = client.pipeline(transaction=True)
                for key, fields in writes:
                    pipe.xadd(key, fields)
                pipe.execute()

        try:
            self.retrying(
                what, lambda: self._prepared(what, route), lambda prepared: self._written(what, write, prepared)
            )
        except TransportError as exc:
            if len(messages) > 1 and not isinstance(exc, UnroutableMessageError | BrokerRefusedError):
                raise type(exc)(f"{exc}. {_batch_report(exc, [m for m, _ in messages])}") from exc
            raise
        if unroutable:
            raise self.unroutable_among(exchange, unroutable, len(messages), outcome="were not published")

    def _prepared(self, what: str, route: Callable[[redis.Redis], P]) -> tuple[redis.Redis, P]:
        try:
            client = self.client()
            return client, route(client)
        except Exception as error:
            self.reraise(what, error, ERRORS)

    def _written(self, what: str, write: Callable[[redis.Redis, P], None], prepared: tuple[redis.Redis, P]) -> None:
        try:
            write(*prepared)
        except Exception as error:
            self.reraise(what, error, ERRORS)

    def reset_publisher(self) -> None:
        self.close()

    @staticmethod
    def _route(client: redis.Redis, exchange: str, routing_keys: Iterable[str]) -> dict[str, list[str]]:
        """The queues ``exchange`` delivers each routing key to, by AMQP topic rules (the default exchange ``""``:
        the queue named by the key, when it exists)."""
        wanted = sorted(set(routing_keys))
        if not exchange:
            pipe = client.pipeline(transaction=False)
            for key in wanted:
                pipe.exists(keys.queue_key(key))
            return {key: [key] if found else [] for key, found in zip(wanted, pipe.execute(), strict=True)}
        bindings = []
        for member in client.smembers(keys.bindings_key(exchange)):
            try:
                pattern, queue = json.loads(member)
                bindings.append((str(pattern), str(queue)))
            except (ValueError, TypeError):
                log.warning("ignoring a malformed binding of exchange %r: %r", exchange, member)
        return {key: sorted({queue for pattern, queue in bindings if topic_matches(pattern, key)}) for key in wanted}

    # -- consuming -------------------------------------------------------------------------------------------------

    def open_receiver(self, queue: str, *, prefetch_count: int) -> Receiver:
        with self._lock:
            abandoned, self._abandoned = self._abandoned, []
        if abandoned:
            try:
                self.client().delete(*abandoned)
            except ERRORS:
                log.debug("deleting the alive keys of lost receivers failed; they expire", exc_info=True)
        subscription = keys.subscription_of(queue)
        if subscription is not None:
            return StreamReceiver(self, *subscription, prefetch_count)
        return RedisReceiver(self, queue, prefetch_count)

    @contextmanager
    def browse(self, queue: str) -> Iterator[Iterator[Delivery]]:
        """The ready entries of ``queue`` (not those a live consumer holds), oldest first, read a page at a time as
        the caller iterates, up to the last entry there was at the start. They stay in place: acknowledging one
        deletes it, and nothing needs to go back."""
        action, key = f"reading queue {queue!r}", keys.queue_key(queue)

        def held(client: redis.Redis) -> tuple[set[str], str | None]:
            """The entries live consumers hold, and the id of the last entry (None: the queue is empty)."""
            last = client.xrevrange(key, "+", "-", count=1)
            if not last:
                return set(), None
            try:
                pending = client.xpending_range(key, keys.GROUP, "-", "+", 1 << 20)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                pending = []
            alive = _alive(client, queue, {_text(entry["consumer"]) for entry in pending})
            return {_text(e["message_id"]) for e in pending if _text(e["consumer"]) in alive}, _text(last[0][0])

        def page(start: str, end: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
            return self._run(action, lambda client: client.xrange(key, start, end, count=_PAGE))

        def read() -> Iterator[Delivery]:
            taken, end = self._run(action, held)
            start = "-"
            while end is not None and (entries := page(start, end)):
                for entry_id, fields in entries:
                    if _text(entry_id) not in taken:
                        yield _BrowsedEntry(self, queue, _text(entry_id), fields)
                if _text(entries[-1][0]) == end:
                    return
                start = "(" + _text(entries[-1][0])

        yield read()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _alive(client: redis.Redis, queue: str, consumers: set[str]) -> set[str]:
    """Which of these consumers of ``queue`` are alive (their entries are held; the others' are ready)."""
    names = sorted(consumers)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.exists(keys.alive_key(queue, name))
    return {name for name, live in zip(names, pipe.execute(), strict=True) if live}


def _batch_report(error: TransportError, messages: Sequence[OutboundMessage]) -> str:
    """What a failed batch (one transaction) tells of its messages."""
    ids = [message.message_id for message in messages]
    if MAYBE_SENT in str(error):
        return f"The batch of {len(ids)} is one transaction: all of them or none were published {ids}"
    return f"Of the batch of {len(ids)}: not sent {ids}"


class _BrowsedEntry(Delivery):
    """An entry seen by :meth:`RedisTransport.browse`, left in place: ``ack`` deletes it, ``requeue`` leaves it."""

    def __init__(self, transport: RedisTransport, queue: str, entry_id: str, fields: dict[bytes, bytes]) -> None:
        self._transport = transport
        self._settled = False
        self.entry_id = entry_id
        self.queue = queue
        try:
            message = envelope.decode(fields)
        except envelope.MalformedEntryError as exc:
            message = envelope.malformed(entry_id, fields, str(exc))
        self.body, self.headers, self.content_type = message.body, message.headers, message.content_type

    @property
    def settled(self) -> bool:
        return self._settled

    def _settle(self, action: str, operation: Callable[[redis.Redis], object]) -> None:
        if self._settled:
            raise TransportError(f"message {self.headers.get('id')!r} was already settled; cannot {action} it")
        self._transport._run(f"{action} of message {self.headers.get('id')!r} on queue {self.queue!r}", operation)
        self._settled = True

    def ack(self) -> None:
        key = keys.queue_key(self.queue)
        self._settle(
            "deletion",
            lambda client: (
                client.pipeline(transaction=True)
                .xack(key, keys.GROUP, self.entry_id)
                .xdel(key, self.entry_id)
                .execute(raise_on_error=False)
            ),
        )

    def requeue(self) -> None:
        self._settle("requeue", lambda _client: None)

    def dead_letter_copy(self, extra_headers: Any) -> None:
        copy = envelope.Envelope(self.body, {**self.headers, **extra_headers}, self.content_type)
        dead_letters = keys.queue_key(dead_letter_queue(self.queue))
        self._transport._run("dead-lettering", lambda client: client.xadd(dead_letters, envelope.encode(copy)))

    def delayed_copy(self, delay_ms: int, extra_headers: Any) -> None:
        copy = envelope.Envelope(self.body, {**self.headers, **extra_headers}, self.content_type)
        member = envelope.delayed_member(envelope.encode(copy))
        self._transport._run(
            "delaying",
            lambda client: client.register_script(scripts.DELAY)(
                keys=[keys.delayed_key(self.queue)], args=[delay_ms, member]
            ),
        )
