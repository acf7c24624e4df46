"""RabbitMQ (``pyamqp://``, ``amqp://`` mapped to it, ``amqps://``), through kombu's py-amqp transport.

The broker routes (durable topic exchange), reports unroutable mandatory messages and confirms publishes
(``confirm_publish``). A delayed retry goes to a durable TTL queue ``<queue>.delay.<ms>`` that dead-letters back to
the service's queue when the time is up; nothing is held unacknowledged meanwhile. A consumer
(:class:`RabbitMqReceiver`) takes py-amqp's deliveries without kombu's Consumer and acknowledges them in groups of at
most :data:`ACK_EVERY`; its connection runs a heartbeat thread so that a long handler does not get the connection
closed by the broker.

A cluster is reached through a failover list (``url1;url2;url3``): each connection tries the URLs in turn, from the
one that answered last, with TLS options built afresh for each URL. A publish the broker refuses (``basic.nack``, as
a quorum queue without a leader does during a failover) is retried like a lost connection: on a new connection,
after a back-off. Queues are classic, or quorum queues (``queue_type``): see :func:`queue_arguments`.
"""

from __future__ import annotations

import logging
import select
import ssl
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import attrs
import kombu
from amqp.exceptions import MessageNacked, UnexpectedFrame
from amqp.transport import TCPTransport
from kombu import Queue

from container_messaging.errors import BrokerRefusedError, TransportError, UnroutableMessageError
from container_messaging.redaction import mask_url
from container_messaging.transports._amqp_frames import publish_frames
from container_messaging.transports._broker import causes
from container_messaging.transports._kombu_base import (
    KombuDelivery,
    KombuReceiver,
    KombuTransport,
    PublishRequest,
    not_found,
    publish_kwargs,
    publishing,
)
from container_messaging.transports.base import EndpointTopology, OutboundMessage, Receiver, dead_letter_queue
from container_messaging.transports.options import TransportOptions

__all__ = [
    "ACK_EVERY",
    "DeferredAcks",
    "RabbitMqDelivery",
    "RabbitMqReceiver",
    "RabbitMqTransport",
    "delay_queue",
    "queue_arguments",
]

log = logging.getLogger("container_messaging.transport")

#: How the name of every dead letter queue ends.
_DEAD_LETTER: Final = dead_letter_queue("")
#: ACCESS_REFUSED (bad credentials, no permission), NOT_ALLOWED (unknown vhost, vhost access refused) and
#: PRECONDITION_FAILED (a queue or exchange that exists with other arguments, a message over the broker's size limit)
_REFUSALS: Final = frozenset({"403", "530", "406"})
#: The delivery limit of a quorum dead letter queue: none in practice. Listing the dead letter returns every entry
#: to the queue, which counts as a delivery; RabbitMQ 4 would drop an entry listed 20 times (its default limit), and
#: RabbitMQ 3 reads -1 (RabbitMQ 4's "no limit") as a limit of 0.
_DEAD_LETTER_DELIVERY_LIMIT: Final = 2**31 - 1
#: Dead-letter at least once: RabbitMQ keeps a message until the target queue confirms it (needs reject-publish).
_AT_LEAST_ONCE: Final = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
#: The longest a leader of senders waits for the previous group's senders to come back (see ``gather_window``).
_MAX_GATHER: Final = 0.02
#: Encoded frames are written in chunks of about this many bytes.
_WRITE_CHUNK: Final = 256 * 1024
#: A consumer sends its acknowledgements in groups of at most this many (fewer with a small prefetch): one
#: ``basic.ack`` frame instead of ten saves about 20 us of CPU per message, a third of the consumer's (BENCHMARKS.md,
#: scenario 8). After a crash (SIGKILL) at most this many handled messages are redelivered; see
#: :class:`RabbitMqReceiver`.
ACK_EVERY: Final = 10
#: How many bytes a consumer's connection reads at once (py-amqp's frames are cut from them).
_READ_SIZE: Final = 65536
#: An AMQP frame: type (octet), channel (short), payload size (long), the payload, then the frame-end octet 0xCE.
_FRAME_HEADER: Final = struct.Struct(">BHI")
_FRAME_END: Final = 0xCE


def delay_queue(queue: str, delay_ms: int) -> str:
    """The TTL queue that holds copies for ``queue`` during ``delay_ms``."""
    return f"{queue}.delay.{delay_ms}"


def queue_arguments(
    options: TransportOptions, queue: str, *, dead_letter: bool = False, delay_ms: int | None = None
) -> dict[str, Any]:
    """The ``x-`` arguments of an endpoint's ``queue``, of its dead letter queue (``dead_letter``, ``queue`` being
    the dead letter queue's name) or of its delay queue for ``delay_ms`` (``queue`` being the endpoint's queue).

    Classic queues (the default, what an Ecotone service declares) take none, but a delay queue's TTL and where it
    dead-letters to. Quorum queues are replicated on the cluster's nodes. An endpoint's quorum queue dead-letters a
    message returned more than ``delivery_limit`` times (requeued, or unacknowledged when a consumer's connection
    was lost) to its dead letter queue, at least once: never dropped. A quorum delay queue dead-letters back at least
    once too; a quorum dead letter queue has no practical delivery limit (see ``_DEAD_LETTER_DELIVERY_LIMIT``).
    """
    quorum = options.queue_type == "quorum"
    arguments: dict[str, Any] = {"x-queue-type": "quorum"} if quorum else {}
    if delay_ms is not None:
        arguments |= {"x-message-ttl": delay_ms, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}
        return (arguments | _AT_LEAST_ONCE) if quorum else arguments
    if not quorum:
        return arguments
    if dead_letter:
        return arguments | {"x-delivery-limit": _DEAD_LETTER_DELIVERY_LIMIT}
    return arguments | {
        "x-delivery-limit": options.delivery_limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_letter_queue(queue),
        **_AT_LEAST_ONCE,
    }


def _pyamqp(url: str) -> str:
    """``url`` (or each URL of a ``;`` failover list) with ``amqp://`` spelled ``pyamqp://``: the pure-Python client,
    never librabbitmq, even when it is installed."""
    return ";".join(
        "pyamqp" + part[len("amqp") :] if part.lower().startswith("amqp://") else part for part in url.split(";")
    )


def _failed_everywhere(action: str, failures: Sequence[tuple[str, str, TransportError]]) -> TransportError:
    """One error for a connection that no URL of a failover list took, from each (masked URL, what happened, the
    mapped error): a BrokerRefusedError when a node refused for good (trying again cannot help)."""
    refused = any(isinstance(mapped, BrokerRefusedError) for _, _, mapped in failures)
    listed = "; ".join(f"{url}: {what}" for url, what, _ in failures)
    kind = BrokerRefusedError if refused else TransportError
    return kind(f"{action} failed on each of the {len(failures)} URLs of the failover list: {listed}")


def _write(connection: Any, data: bytearray) -> None:
    """Writes encoded frames on py-amqp's ``connection`` (its transport's ``write``: the whole buffer, bounded by the
    write timeout) and tells its heartbeat that something was sent, as py-amqp's own frame writer does."""
    if data:
        connection.transport.write(data)
        connection.bytes_sent += 1


def _raise_for_nacks(batch: _Batch, description: str) -> None:
    """A retryable TransportError when the broker refused (nacked) messages of the batch in this attempt: RabbitMQ
    may go on nacking on the channel that was refused, so the retry publishes them again on a new connection."""
    if batch.nacked:
        raise TransportError(
            f"the broker refused {len(batch.nacked)} of {len(batch.messages)} messages (basic.nack) on {description}: "
            f"{batch.ids(batch.nacked)}"
        )


@attrs.define
class _Batch:
    """What the broker said so far about the messages of one batch, across attempts (by index): one
    ``publish_many``, or the requests of several callers published together (group commit)."""

    messages: list[tuple[str, OutboundMessage, bool]]  # (exchange, message, mandatory)
    sent: set[int] = attrs.Factory(set)
    confirmed: set[int] = attrs.Factory(set)
    #: refused by the broker (nack) in the latest attempt; published again by the next one
    nacked: set[int] = attrs.Factory(set)
    returned: list[tuple[str, str]] = attrs.Factory(list)  # (routing key, message id)
    #: delivery tag -> index, for the publishes of the current attempt the broker has not confirmed yet
    unconfirmed: dict[int, int] = attrs.Factory(dict)
    #: the messages of each sender, when the batch is several senders' (group commit): a sender with a message the
    #: wire cannot carry is left out with its error (``refused``) and the others are published; a batch of one
    #: sender (no ``senders``) is refused whole instead
    senders: list[range] = attrs.Factory(list)
    refused: dict[int, Exception] = attrs.Factory(dict)

    @classmethod
    def of(cls, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> _Batch:
        return cls([(exchange, message, mandatory) for message, mandatory in messages])

    def add(self, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> range:
        """Adds one sender's messages; their indexes."""
        start = len(self.messages)
        self.messages += [(exchange, message, mandatory) for message, mandatory in messages]
        return range(start, len(self.messages))

    def pending(self) -> list[int]:
        """The messages the broker has not confirmed (the nacked ones included), but those the wire cannot carry."""
        return [i for i in range(len(self.messages)) if i not in self.confirmed and i not in self.refused]

    def on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, self.confirmed)

    def on_nack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, self.nacked)

    def _settle(self, tag: int, multiple: bool, into: set[int]) -> None:
        for done in [t for t in self.unconfirmed if t <= tag] if multiple else [tag]:
            if done in self.unconfirmed:
                into.add(self.unconfirmed.pop(done))

    def ids(self, indexes: Iterable[int]) -> list[str]:
        return [self.messages[i][1].message_id for i in sorted(indexes)]

    def report(self, among: range | None = None) -> str:
        """Which messages (of ``among``: default all) the broker confirmed, which may or may not have reached it,
        which were never sent."""
        among = among if among is not None else range(len(self.messages))
        returned_ids = [message_id for _, message_id in self.returned if message_id in self.ids(among)]
        pending = [i for i in self.pending() if i in among]
        confirmed = [i for i in self.ids(self.confirmed & set(among)) if i not in returned_ids]
        nacked = self.nacked & set(among)
        unknown = [i for i in pending if i in self.sent and i not in nacked]
        unsent = [i for i in pending if i not in self.sent]
        return (
            f"Of the batch of {len(among)}: confirmed {confirmed}; "
            + (f"refused by the broker (nack) {self.ids(nacked)}; " if nacked else "")
            + f"not confirmed (may or may not have reached the broker) {self.ids(unknown)}; not sent {self.ids(unsent)}"
            + (f"; returned (no queue bound) {returned_ids}" if returned_ids else "")
        )


class RabbitMqTransport(KombuTransport):
    """The RabbitMQ adapter."""

    def __init__(self, options: TransportOptions) -> None:
        super().__init__(options)
        self._returned: list[tuple[str, str]] = []  # (routing key, message id) of messages the broker returned
        self._published = 0  # publish sequence number on the publisher channel (publisher confirms count them)
        self._delays: dict[str, set[int]] = {}  # queue -> delays this transport sent copies with
        self._confirming: Any = None  # without confirm_publish: the publisher's channel of confirmed dead letter copies
        #: the URL of the failover list that answered last: the first one the next connection tries
        self._preferred = options.urls[0]
        #: seconds to wait for a publisher confirm before the outcome counts as unknown
        self.confirm_timeout = options.reply_timeout
        self._group_seconds = 0.0  # how long publishing the previous group took (confirms included)

    # -- connection ------------------------------------------------------------------------------------------------

    @property
    def preferred_url(self) -> str:
        """The URL (password masked) of the failover list that answered last, which the next connection tries
        first; the first URL until a connection failed over."""
        return mask_url(self._preferred)

    def new_connection(self) -> kombu.Connection:
        """A connection to :attr:`preferred_url` alone (kombu's own failover is not used: it keeps the first URL's
        host name in the TLS options); :meth:`connect` moves it along the failover list. A sender or an administrative
        operation waits ``reply_timeout`` at most for each answer (a declaration, a deletion, a confirm)."""
        return self._connection(self.options.reply_timeout)

    def consumer_connection(self) -> kombu.Connection:
        """A receiver's connection: it waits ``connect_timeout`` at most for each answer (its declarations, its
        goodbye), so that a consumer on a connection that stopped answering stops within seconds; its copies wait
        ``reply_timeout`` for their confirms."""
        return self._connection(self.options.connect_timeout)

    def _connection(self, answer_timeout: float) -> kombu.Connection:
        o = self.options
        return kombu.Connection(
            _pyamqp(self._preferred),
            heartbeat=o.heartbeat,
            connect_timeout=o.connect_timeout,
            ssl=self._tls(),
            # every wait for the broker is bounded (py-amqp's socket timeouts); past that the connection is lost
            transport_options={
                "read_timeout": answer_timeout,
                "write_timeout": answer_timeout,
                **({"confirm_publish": True} if o.confirm_publish else {}),
            },
        )

    def connect(self, connection: kombu.Connection, action: str) -> tuple[type[BaseException], ...]:
        """Connects ``connection``, trying every URL of the failover list once, from :attr:`preferred_url` on (no
        pause between them: a dead node refuses at once, or within ``connect_timeout``); the URL that answers is
        preferred from then on. When none answers, one error names each URL and its failure (a
        :class:`~container_messaging.errors.BrokerRefusedError` when a node refused for good)."""
        urls = self.options.urls
        if len(urls) == 1:
            return super().connect(connection, action)
        first = urls.index(self._preferred)
        errors = self.errors_of(connection)
        failures: list[tuple[str, Exception, TransportError]] = []  # (URL, the client's error, mapped)
        for url in urls[first:] + urls[:first]:
            if failures:
                log.info("%s: %s failed, trying %s", action, mask_url(failures[-1][0]), mask_url(url))
                connection.switch(_pyamqp(url))
                connection.ssl = self._tls()  # afresh: kombu wrote the previous URL's host name into the old dict
            try:
                connection.ensure_connection(max_retries=0, timeout=self.options.connect_timeout)
            except Exception as error:
                mapped = self.broker_error(action, error, errors)
                if mapped is None:  # not the broker's: a bug
                    connection.release()
                    raise
                failures.append((url, error, mapped))
                continue
            if url != self._preferred:
                log.info("%s: connected to %s (failover)", action, mask_url(url))
                self._preferred = url
            return errors
        connection.release()
        listed = [(mask_url(url), self.explain(error), mapped) for url, error, mapped in failures]
        raise _failed_everywhere(action, listed) from failures[-1][1]

    def _tls(self) -> dict[str, Any] | None:
        """py-amqp's TLS options, a new dict each time. Verifying means the certificate chain and the host name:
        ``server_hostname`` None makes kombu fill in the URL's host (py-amqp checks no host name without that key,
        even with ``ssl=True``)."""
        o = self.options
        if not (o.ssl or o.scheme == "amqps"):
            return None
        self.check_tls_files()
        options: dict[str, Any] = {
            "cert_reqs": ssl.CERT_REQUIRED if o.ssl_verify else ssl.CERT_NONE,
            "ca_certs": o.ssl_ca_certs,
            "certfile": o.ssl_certfile,
            "keyfile": o.ssl_keyfile,
        }
        if o.ssl_verify:
            options["server_hostname"] = None
        return options

    def refused(self, error: BaseException) -> bool:
        """A refusal by the broker (credentials, vhost, a queue declared with other arguments...), or a broker
        certificate that does not verify: trying again cannot help."""
        return str(getattr(error, "reply_code", "")) in _REFUSALS or isinstance(error, ssl.SSLCertVerificationError)

    def explain(self, error: BaseException) -> str:
        """What went wrong; a nack and a queue declared with other arguments say what they mean and what to do."""
        if any(isinstance(cause, MessageNacked) for cause in causes(error)):
            return (
                "the broker refused the message (basic.nack) and did not take it: a quorum queue without a leader "
                "(a node failed), or a queue at its length limit that rejects publishes"
            )
        text = super().explain(error)
        if any(str(getattr(c, "reply_code", "")) == "406" and "inequivalent arg" in str(c) for c in causes(error)):
            o = self.options
            text += (
                " (RabbitMQ cannot change the type or the arguments of a queue that exists: transport.queue_type "
                f"{o.queue_type!r} and delivery_limit {o.delivery_limit} ask for other arguments than the queue has; "
                "an Ecotone service declares classic queues. Set them back to what the queue was declared with, or "
                "drain and delete the queue, its dead letter queue and its delay queues so that they are declared "
                "again)"
            )
        return text

    def heartbeat_interval(self) -> float | None:
        return max(1.0, self.options.heartbeat / 4) if self.options.heartbeat else None

    # -- publishing ------------------------------------------------------------------------------------------------

    def new_producer(self, channel: Any) -> kombu.Producer:
        return kombu.Producer(channel, on_return=self._on_return)

    def _on_return(self, exception: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self._returned.append((routing_key, str(message.properties.get("message_id"))))

    def reset_publisher(self) -> None:
        super().reset_publisher()
        self._published = 0
        self._confirming = None

    def _publish_confirmed(self, producer: kombu.Producer, queue: str, message: OutboundMessage) -> None:
        """Publishes straight to ``queue`` and waits for the broker's confirm (without ``confirm_publish``), on a
        channel of the publisher connection kept for these publishes alone (so that the next confirm on it is this
        message's)."""
        if self._confirming is None:
            self._confirming = producer.connection.channel()
            self._confirming.events["basic_return"].add(self._on_return)
        channel = self._confirming
        self._returned.clear()
        prepared = channel.prepare_message(
            message.body,
            0,
            message.content_type,
            "binary",
            dict(message.headers),
            {"delivery_mode": 2, "message_id": message.message_id},
        )
        channel.basic_publish_confirm(
            prepared, exchange="", routing_key=queue, mandatory=True, confirm_timeout=self.confirm_timeout
        )
        if self._returned:  # the broker returns a message before confirming it
            raise UnroutableMessageError(self.unroutable("", queue))

    def publish_once(self, producer: kombu.Producer, exchange: str, message: OutboundMessage, mandatory: bool) -> None:
        if not exchange and message.routing_key.endswith(_DEAD_LETTER) and not self.options.confirm_publish:
            # straight to a dead letter queue: a consumer's reduced dead letter copy, whose original is acknowledged
            # right after; confirmed whatever confirm_publish says
            self._publish_confirmed(producer, message.routing_key, message)
            return
        self._returned.clear()
        self._published += 1
        producer.publish(
            message.body,
            exchange=exchange,
            routing_key=message.routing_key,
            mandatory=mandatory,
            confirm_timeout=self.confirm_timeout,
            **publish_kwargs(message),
        )
        if self._returned:  # with confirms the broker returns a message before confirming it
            raise UnroutableMessageError(self.unroutable(exchange, message.routing_key))

    def publish_request(self, exchange: str, messages: Sequence[tuple[OutboundMessage, bool]]) -> None:
        """With publisher confirms, several messages are published, then one wait collects all their confirms. A
        retry after a lost connection or a nack publishes only what was not confirmed; a failure says which messages
        the broker confirmed, which it refused, which may or may not have reached it and which were never sent."""
        if not self.options.confirm_publish or len(messages) == 1:
            super().publish_request(exchange, messages)
            return
        batch = _Batch.of(exchange, messages)
        try:
            self._with_retries(
                f"publishing a batch of {len(messages)} to {exchange!r}",
                lambda producer: self._publish_batch(producer, batch),
            )
        except TransportError as exc:
            raise type(exc)(f"{exc}. {batch.report()}") from exc
        if batch.returned:
            keys = ", ".join(sorted({repr(key) for key, _ in batch.returned}))
            raise UnroutableMessageError(
                f"{len(batch.returned)} of {len(messages)} messages were returned: no queue is bound to routing key "
                f"{keys} on exchange {exchange!r} ({self.description}): {[i for _, i in batch.returned]}; the others "
                "were published"
            )

    def gather_window(self) -> float:
        """With publisher confirms, as long as the previous group took (its confirm round trip, at most
        ``_MAX_GATHER``): a leader that waits that long for the senders of the previous group spares them a round
        trip of their own. Without confirms nothing is shared: none."""
        return min(self._group_seconds, _MAX_GATHER) if self.options.confirm_publish else 0.0

    def publish_group(self, group: Sequence[PublishRequest]) -> None:
        """With publisher confirms, the messages of every caller queued meanwhile are published together and
        confirmed by one wait (group commit); each caller learns the outcome of its own messages only. One caller
        alone keeps the plain path (one publish, one confirm)."""
        started = time.monotonic()
        try:
            self._publish_group(group)
        finally:
            self._group_seconds = time.monotonic() - started

    def _publish_group(self, group: Sequence[PublishRequest]) -> None:
        if not self.options.confirm_publish or len(group) == 1:
            super().publish_group(group)
            return
        batch = _Batch([])
        senders = [batch.add(request.exchange, request.messages) for request in group]
        batch.senders = senders
        failure: TransportError | None = None
        try:
            self._with_retries(
                f"publishing {len(batch.messages)} messages of {len(group)} senders",
                lambda producer: self._publish_batch(producer, batch),
            )
        except TransportError as exc:
            failure = exc
        returned = {message_id for _, message_id in batch.returned}
        for request, own in zip(group, senders, strict=True):
            request.finish(self._outcome(request, batch, own, returned, failure))

    def _outcome(
        self,
        request: PublishRequest,
        batch: _Batch,
        own: range,
        returned: set[str],
        failure: TransportError | None,
    ) -> Exception | None:
        """One caller's error in a group (None: its messages were all confirmed and routed)."""
        exchange = request.exchange
        refused = [batch.refused[i] for i in own if i in batch.refused]
        if refused:  # nothing of this caller's was sent
            return refused[0]
        if failure is not None and not set(own) <= batch.confirmed:
            if len(own) == 1:
                message = batch.messages[own.start][1]
                what = f"{publishing(exchange, message)}: published together with other senders' messages"
            else:
                what = f"publishing a batch of {len(own)} to {exchange!r}"
            return type(failure)(f"{what}: {failure}. {batch.report(own)}")
        unrouted = [message for _, message, _ in batch.messages[own.start : own.stop] if message.message_id in returned]
        if not unrouted:
            return None
        if len(own) == 1:
            return UnroutableMessageError(self.unroutable(exchange, unrouted[0].routing_key))
        keys = ", ".join(sorted({repr(message.routing_key) for message in unrouted}))
        return UnroutableMessageError(
            f"{len(unrouted)} of {len(own)} messages were returned: no queue is bound to routing key {keys} on "
            f"exchange {exchange!r} ({self.description}): {[m.message_id for m in unrouted]}; the others were "
            "published"
        )

    def _publish_batch(self, producer: kombu.Producer, batch: _Batch) -> None:
        """Publishes the messages of ``batch`` the broker has not confirmed yet, then waits for their confirms (one
        wait for all). The frames are encoded here (``_amqp_frames``) and written a large chunk at a time rather than
        by py-amqp one message per system call: most of the publisher's time otherwise (benchmarks/, scenario 8).
        Nothing is counted as sent before every frame of the attempt was encoded."""
        channel = producer.channel
        connection = channel.connection
        # py-amqp's confirm_publish mode waits for each confirm inside basic_publish. A batch pipelines them
        # instead: it selects confirm mode itself (``_confirm_selected`` is py-amqp's own flag for that).
        if not channel._confirm_selected:
            channel._confirm_selected = True
            channel.confirm_select()
        frames = self._encode(batch, channel.channel_id, connection.frame_max)
        batch.unconfirmed.clear()  # delivery tags count again from 1 on a new channel
        batch.nacked.clear()  # published again now
        channel.events["basic_ack"].add(batch.on_ack)
        channel.events["basic_nack"].add(batch.on_nack)
        self._returned.clear()
        try:
            chunk = bytearray()
            for index, encoded in frames.items():
                self._published += 1
                batch.unconfirmed[self._published] = index
                batch.sent.add(index)
                chunk += encoded
                if len(chunk) >= _WRITE_CHUNK:
                    _write(connection, chunk)
                    chunk = bytearray()
            _write(connection, chunk)
            self._wait_for_confirms(producer, batch)
            _raise_for_nacks(batch, self.description)
        finally:
            channel.events["basic_ack"].discard(batch.on_ack)
            channel.events["basic_nack"].discard(batch.on_nack)
            batch.returned += self._returned  # the broker confirms a message after returning it

    def _encode(self, batch: _Batch, channel: int, frame_max: int) -> dict[int, bytes]:
        """The frames of each message of ``batch`` still to publish, by index. In a group, a sender with a message
        the wire cannot carry is refused alone (none of its messages is sent); one sender's batch is refused whole."""
        frames: dict[int, bytes] = {}
        for sender in batch.senders or [range(len(batch.messages))]:
            pending = [i for i in sender if i not in batch.confirmed and i not in batch.refused]
            try:
                frames |= {i: self._frames(channel, frame_max, *batch.messages[i]) for i in pending}
            except Exception as error:
                if not batch.senders:
                    raise
                batch.refused |= dict.fromkeys(sender, error)
        return frames

    @staticmethod
    def _frames(channel: int, frame_max: int, exchange: str, message: OutboundMessage, mandatory: bool) -> bytes:
        """The frames of one persistent message, with the properties ``publish_once`` gives it through kombu."""
        return publish_frames(
            channel,
            exchange,
            message.routing_key,
            mandatory=mandatory,
            body=message.body,
            content_type=message.content_type,
            content_encoding="binary",
            headers=message.headers,
            delivery_mode=2,
            priority=0,
            message_id=message.message_id,
            frame_max=frame_max,
        )

    def _wait_for_confirms(self, producer: kombu.Producer, batch: _Batch) -> None:
        """Reads the broker's answers until every publish of this attempt is confirmed or nacked."""
        deadline = time.monotonic() + self.confirm_timeout
        while batch.unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportError(
                    f"{len(batch.unconfirmed)} publishes were not confirmed by {self.description} within "
                    f"{self.confirm_timeout:g} s"
                )
            producer.connection.drain_events(timeout=remaining)

    # -- queues --------------------------------------------------------------------------------------------------

    def queue_arguments(self, queue: str, *, dead_letter: bool = False) -> dict[str, Any] | None:
        return queue_arguments(self.options, queue, dead_letter=dead_letter) or None

    # -- consuming: copies and delays ------------------------------------------------------------------------------

    def open_receiver(self, queue: str, *, prefetch_count: int) -> Receiver:
        return RabbitMqReceiver(self, queue, prefetch_count)

    def dead_letter(self, receiver: KombuReceiver, delivery: KombuDelivery, headers: dict[str, Any]) -> None:
        queue = dead_letter_queue(delivery.queue)
        arguments = self.queue_arguments(queue, dead_letter=True)
        declaration = Queue(queue, durable=True, auto_delete=False, queue_arguments=arguments)
        self._send_copy(receiver, declaration, delivery, headers)

    def delay(self, receiver: KombuReceiver, delivery: KombuDelivery, delay_ms: int, headers: dict[str, Any]) -> None:
        name = delay_queue(delivery.queue, delay_ms)
        arguments = queue_arguments(self.options, delivery.queue, delay_ms=delay_ms)
        declaration = Queue(name, durable=True, auto_delete=False, queue_arguments=arguments)
        self._delays.setdefault(delivery.queue, set()).add(delay_ms)
        self._send_copy(receiver, declaration, delivery, headers)

    def _send_copy(
        self, receiver: KombuReceiver, queue: Queue, delivery: KombuDelivery, headers: dict[str, Any]
    ) -> None:
        """A copy to ``queue``, confirmed by the broker whatever ``confirm_publish`` says, since the original is
        acknowledged only after it. It is mandatory: a copy the broker returns (its queue is missing, deleted while the
        consumer runs) makes the queue be declared and the copy sent once more. A copy returned again, refused (nack)
        or not confirmed in time raises, and the original stays unacknowledged."""
        if isinstance(receiver, RabbitMqReceiver):
            receiver.flush_acks()  # nothing else goes on the channel while acknowledgements wait
        for attempt in (1, 2):
            if not self._copy_returned(receiver, queue.name, delivery, headers):
                return
            if attempt == 1:
                queue(receiver.channel).declare()
        raise TransportError(
            f"the copy of message {delivery.headers.get('id')!r} to queue {queue.name!r} was returned by "
            f"{self.description} although the queue was declared again; the message stays on {delivery.queue!r}"
        )

    def _copy_returned(
        self, receiver: KombuReceiver, queue: str, delivery: KombuDelivery, headers: dict[str, Any]
    ) -> bool:
        """Publishes one copy and waits for the broker's confirm; whether the broker returned it (no such queue)."""
        channel, returned = receiver.channel, []

        def on_return(exception: Exception, exchange: str, routing_key: str, message: Any) -> None:
            returned.append(routing_key)

        message = channel.prepare_message(
            delivery.body,
            0,
            delivery.content_type or "application/octet-stream",
            "binary",
            headers,
            {"delivery_mode": 2},
        )
        channel.events["basic_return"].add(on_return)
        try:
            # py-amqp's own confirmed publish (it selects confirm mode on the channel once): the copies of a consumer
            # are confirmed even when its connection publishes without confirms
            channel.basic_publish_confirm(
                message, exchange="", routing_key=queue, mandatory=True, confirm_timeout=self.confirm_timeout
            )
        finally:
            channel.events["basic_return"].discard(on_return)
        return bool(returned)

    def queue_exists(self, queue: str) -> bool:
        with self.connection(f"looking for queue {queue!r}") as channel:
            try:
                channel.queue_declare(queue, passive=True)
            except Exception as exc:
                if not_found(exc):
                    return False
                raise
            return True

    def waiting_for_delay(self, queue: str) -> int:
        """Copies in the delay queues of ``queue`` this transport sent copies to (AMQP cannot list queues)."""
        return sum(self.queue_size(delay_queue(queue, ms)) for ms in sorted(self._delays.get(queue, ())))

    def remove_endpoint(self, topology: EndpointTopology, delays: Iterable[int] = ()) -> None:
        all_delays = sorted({*delays, *self._delays.get(topology.queue, ())})
        super().remove_endpoint(topology)
        with self.connection(f"deleting the delay queues of {topology.queue!r}") as channel:
            for ms in all_delays:
                channel.queue_delete(delay_queue(topology.queue, ms))


class DeferredAcks:
    """A consumer's acknowledgements, deferred to be sent in groups: which to send, and when.

    Delivery tags count up on a channel. :meth:`acknowledge` defers an acknowledgement and says when ``every`` wait;
    :meth:`flush` gives the ``basic.ack`` frames that send them all: one with ``multiple`` up to the highest deferred
    tag below every unsettled one (received, and neither acknowledged nor requeued: prefetched or in hand), which
    therefore acknowledges no delivery in hand, and one without ``multiple`` for each deferred tag above that one
    (deliveries that finished before an earlier one, at concurrency N)."""

    __slots__ = ("deferred", "every", "unsettled")

    def __init__(self, every: int) -> None:
        self.every = every
        self.unsettled: set[int] = set()
        self.deferred: list[int] = []  # acknowledged by the consumer, not sent yet

    def received(self, tag: int) -> None:
        self.unsettled.add(tag)

    def settled(self, tag: int) -> None:
        """Delivery ``tag`` is settled otherwise (requeued)."""
        self.unsettled.discard(tag)

    def acknowledge(self, tag: int) -> bool:
        """Defers the acknowledgement of ``tag``; whether :meth:`flush` is due (``every`` of them wait)."""
        self.unsettled.discard(tag)
        deferred = self.deferred
        deferred.append(tag)
        return len(deferred) >= self.every

    def flush(self) -> list[tuple[int, bool]]:
        """The ``(delivery tag, multiple)`` of the ``basic.ack`` frames that send every deferred acknowledgement;
        none is deferred afterwards."""
        deferred, self.deferred = self.deferred, []
        if not deferred:
            return []
        lowest = min(self.unsettled) if self.unsettled else None
        if lowest is None:
            return [(max(deferred), True)]
        below = [tag for tag in deferred if tag < lowest]
        frames = [(max(below), True)] if below else []
        return frames + [(tag, False) for tag in deferred if tag > lowest]


class RabbitMqReceiver(KombuReceiver):
    """A consumer on py-amqp's channel itself: deliveries made straight from py-amqp's messages, frames read from a
    buffer, acknowledgements sent in groups.

    Each of the three makes the consumer's rate (benchmarks, scenario 8): py-amqp's ``basic_consume`` hands each
    message to :meth:`_on_delivery`, which makes the :class:`RabbitMqDelivery` from it (kombu's Consumer would wrap it
    in a kombu Message first); a plain TCP connection cuts its frames out of one large read (:class:`_Frames`)
    instead of three system calls per frame, and waits with ``poll`` rather than switching the socket's timeout twice
    per frame; one ``basic.ack`` with ``multiple`` acknowledges several handled messages.

    An acknowledgement is deferred; the deferred ones are sent (:meth:`flush_acks`) when there are ``ack_every``
    (:data:`ACK_EVERY`, at most half the prefetch), before this receiver waits for the network with nothing to read
    (an idle consumer holds nothing handled unacknowledged), before a requeue or a copy goes on the channel, by the
    heartbeat thread (a long handler holds them no longer than a heartbeat interval) and on close. ``multiple``
    covers the deferred tags below the lowest tag not settled yet (prefetched or in hand), so it never acknowledges
    a message in hand; a deferred tag above that one (at concurrency N messages finish out of order) is acknowledged
    on its own. A crash (SIGKILL) loses at most ``ack_every`` acknowledgements: the broker redelivers those messages
    (a persistent deduplication store skips them); deferred acknowledgements of a lost connection are void likewise.
    """

    def __init__(
        self, transport: KombuTransport, queue: str, prefetch_count: int, *, ack_every: int = ACK_EVERY
    ) -> None:
        self._acks = DeferredAcks(max(1, min(ack_every, prefetch_count // 2)) if prefetch_count else ack_every)
        self._consumer_tag: str | None = None
        super().__init__(transport, queue, prefetch_count)

    def _open(self, prefetch_count: int, consume: bool) -> None:
        self.channel = self._connection.channel()
        self.producer = kombu.Producer(self.channel)
        self._amqp = self._connection.connection  # py-amqp's connection
        transport = self._amqp.transport
        self._frames = _Frames(transport) if isinstance(transport, TCPTransport) else None
        self._on_frame = self._amqp.on_inbound_frame  # py-amqp's frame handler: it dispatches whole methods
        self._ready = _readiness(transport.sock)
        if consume:
            self.channel.basic_qos(0, prefetch_count, False)
            self._consumer_tag = self.channel.basic_consume(self.queue, callback=self._on_delivery)

    def _on_delivery(self, message: Any) -> None:
        tag = message.delivery_info["delivery_tag"]
        self._acks.received(tag)
        self._buffer.append(RabbitMqDelivery(self, tag, message))

    def _wait(self, seconds: float) -> None:
        """Reads what the broker sends until a whole method arrived (a delivery, mostly) or ``seconds`` passed;
        the deferred acknowledgements are sent first whenever there is nothing to read."""
        frames, ready, on_frame = self._frames, self._ready, self._on_frame
        deadline = time.monotonic() + seconds
        while True:
            if not ((frames is not None and frames.holds()) or ready(0.0)):
                if self._acks.deferred:
                    self.flush_acks()
                left = deadline - time.monotonic()
                if left <= 0 or not ready(left):
                    return
            try:
                if frames is not None:  # plain TCP: see _Frames
                    frame = frames.read_frame()
                else:  # TLS: py-amqp reads with a timeout set on the socket
                    with self._amqp.transport.having_timeout(max(deadline - time.monotonic(), 0.001)):
                        frame = self._amqp.transport.read_frame()
            except TimeoutError:
                return
            if on_frame(frame):
                return

    def acknowledge(self, tag: int) -> None:
        """Acknowledges delivery ``tag`` (from inside :meth:`exclusively`), deferred as the class docstring says."""
        if self._acks.acknowledge(tag):
            self.flush_acks()

    def reject(self, tag: int) -> None:
        """Puts delivery ``tag`` back on its queue (from inside :meth:`exclusively`)."""
        self.flush_acks()
        self._acks.settled(tag)
        self.channel.basic_reject(tag, requeue=True)

    def flush_acks(self) -> None:
        """Sends the deferred acknowledgements (from inside :meth:`exclusively`)."""
        if self._acks.deferred:
            channel = self.channel
            for tag, multiple in self._acks.flush():
                channel.basic_ack(tag, multiple=multiple)

    def _heartbeat(self) -> None:
        if not self._closed.is_set():
            self.flush_acks()
        super()._heartbeat()

    def _cancel_consumer(self) -> None:
        if self._consumer_tag is not None:
            self.channel.basic_cancel(self._consumer_tag)

    def close(self) -> None:
        if self.dead is None and self._acks.deferred and not self._closed.is_set():
            try:
                self.exclusively("acknowledging the handled messages of", self.queue, self.flush_acks)
            except TransportError:
                log.warning("acknowledging the handled messages of %r failed; the broker redelivers them", self.queue)
        super().close()


class _Frames:
    """How a consumer reads a plain TCP connection: py-amqp reads each frame's header, payload and end with a
    system call each (three per frame, nine per message); here one large read holds many frames, and
    :meth:`read_frame` cuts a whole frame out of it, or leaves the frame to py-amqp's ``read_frame``, whose reads
    (:meth:`recv`, in place of the socket's) take what is left in the large read first.

    The socket is blocking with a receive timeout (py-amqp's ``read_timeout``); a read that times out raises
    ``TimeoutError`` (``socket.timeout``), as on a socket with a timeout, so that py-amqp keeps a partial frame and
    gives up (it would retry a bare ``EAGAIN`` in the middle of a frame for ever).

    py-amqp internals, needed here alone: ``TCPTransport._quick_recv`` (what its reads call) and ``_read_buffer``
    (a partial frame it kept after a timeout: while it holds one, py-amqp reads the next frame)."""

    __slots__ = ("_at", "_data", "_recv", "_transport")

    def __init__(self, transport: TCPTransport) -> None:
        self._transport = transport
        self._recv: Callable[[int], bytes] = transport._quick_recv
        self._data = b""
        self._at = 0
        transport._quick_recv = self.recv

    def holds(self) -> bool:
        """Whether bytes read from the socket wait here."""
        return self._at < len(self._data)

    def read_frame(self) -> tuple[int, int, bytes]:
        """The next frame: ``(type, channel, payload)``, as py-amqp's ``read_frame`` gives it."""
        data, at = self._data, self._at
        if len(data) - at > 7 and not self._transport._read_buffer:
            kind, channel, size = _FRAME_HEADER.unpack_from(data, at)
            end = at + 7 + size
            if end < len(data):  # the whole frame is here, its end octet included
                if data[end] != _FRAME_END:
                    raise UnexpectedFrame(f"Received frame_end {data[end]:#04x} while expecting 0xce")
                self._at = end + 1
                return kind, channel, data[at + 7 : end]
        frame: tuple[int, int, bytes] = self._transport.read_frame()
        return frame

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes: what the last large read left, else a new large read."""
        at = self._at
        data = self._data
        if at < len(data):
            end = at + size
            self._at = end
            return data[at:end]
        try:
            data = self._recv(max(size, _READ_SIZE))
        except BlockingIOError as exc:  # EAGAIN: the socket's receive timeout
            raise TimeoutError("timed out") from exc
        if len(data) <= size:
            return data
        self._data, self._at = data, size
        return data[:size]


def _readiness(sock: Any) -> Callable[[float], bool]:
    """``ready(seconds)``: whether ``sock`` has bytes to read (TLS: decrypted bytes it holds count too), waiting up to
    ``seconds`` for them."""
    pending = getattr(sock, "pending", None)
    poller = select.poll() if hasattr(select, "poll") else None  # not on Windows
    if poller is not None:
        poller.register(sock, select.POLLIN)

    def ready(seconds: float) -> bool:
        if pending is not None and pending():
            return True
        if poller is not None:
            return bool(poller.poll(seconds * 1000))
        return bool(select.select([sock], [], [], seconds)[0])

    return ready


class RabbitMqDelivery(KombuDelivery):
    """A message handed over by py-amqp to a :class:`RabbitMqReceiver`, settled through it by delivery tag."""

    def __init__(self, receiver: RabbitMqReceiver, tag: int, message: Any) -> None:
        self._receiver = self._rabbit = receiver
        self._settled = False
        self.tag = tag
        body = message.body
        self.body = body if type(body) is bytes else body.encode() if isinstance(body, str) else bytes(body)
        properties = message.properties
        # py-amqp decoded this dict for this message alone and nothing else keeps it: it is the delivery's own
        self.headers = properties.get("application_headers") or {}
        self.content_type = properties.get("content_type") or None
        self.queue = receiver.queue

    def ack(self) -> None:
        self._settle("ack", self._rabbit.acknowledge, self.tag)

    def requeue(self) -> None:
        self._settle("requeue", self._rabbit.reject, self.tag)
