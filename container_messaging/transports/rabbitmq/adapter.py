"""The RabbitMQ adapter: :class:`RabbitMqTransport` (see the package's docstring)."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final

import kombu
from amqp.exceptions import MessageNacked
from kombu import Queue

from container_messaging.errors import BrokerRefusedError, InvalidMessageError, TransportError, UnroutableMessageError
from container_messaging.redaction import mask_url
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
from container_messaging.transports.rabbitmq.batch import WRITE_CHUNK, Batch, raise_for_nacks, write_frames
from container_messaging.transports.rabbitmq.frames import publish_frames
from container_messaging.transports.rabbitmq.queues import DEAD_LETTER, delay_queue, queue_arguments
from container_messaging.transports.rabbitmq.receiver import RabbitMqReceiver

__all__ = ["RabbitMqTransport"]

log = logging.getLogger("container_messaging.transport")

#: ACCESS_REFUSED (bad credentials, no permission), NOT_ALLOWED (unknown vhost, vhost access refused) and
#: PRECONDITION_FAILED (a queue or exchange that exists with other arguments, a message over the broker's size limit)
_REFUSALS: Final = frozenset({"403", "530", "406"})
#: The longest a leader of senders waits for the previous group's senders to come back (see ``gather_window``).
_MAX_GATHER: Final = 0.02

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
        if not exchange and message.routing_key.endswith(DEAD_LETTER) and not self.options.confirm_publish:
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
        batch = Batch.of(exchange, messages)
        try:
            self._with_retries(
                f"publishing a batch of {len(messages)} to {exchange!r}",
                lambda producer: self._publish_batch(producer, batch),
            )
        except TransportError as exc:
            raise type(exc)(f"{exc}. {batch.report()}") from exc
        returned = {message_id for _, message_id in batch.returned}
        if returned:
            unrouted = [message for message, _ in messages if message.message_id in returned]
            raise self.unroutable_among(exchange, unrouted, len(messages), outcome="were returned")

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
        batch = Batch([])
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
        batch: Batch,
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
        return self.unroutable_among(exchange, unrouted, len(own), outcome="were returned") if unrouted else None

    def _publish_batch(self, producer: kombu.Producer, batch: Batch) -> None:
        """Publishes the messages of ``batch`` the broker has not confirmed yet, then waits for their confirms (one
        wait for all). The frames are encoded here (``frames.py``) and written a large chunk at a time rather than
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
                if len(chunk) >= WRITE_CHUNK:
                    write_frames(connection, chunk)
                    chunk = bytearray()
            write_frames(connection, chunk)
            self._wait_for_confirms(producer, batch)
            raise_for_nacks(batch, self.description)
        finally:
            channel.events["basic_ack"].discard(batch.on_ack)
            channel.events["basic_nack"].discard(batch.on_nack)
            batch.returned += self._returned  # the broker confirms a message after returning it

    def _encode(self, batch: Batch, channel: int, frame_max: int) -> dict[int, bytes]:
        """The frames of each message of ``batch`` still to publish, by index. In a group, a sender with a message
        the wire cannot carry is refused alone (none of its messages is sent); one sender's batch is refused whole."""
        frames: dict[int, bytes] = {}
        for sender in batch.senders or [range(len(batch.messages))]:
            pending = [i for i in sender if i not in batch.confirmed and i not in batch.refused]
            try:
                frames |= {i: self._frames(channel, frame_max, *batch.messages[i]) for i in pending}
            except InvalidMessageError as error:
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

    def _wait_for_confirms(self, producer: kombu.Producer, batch: Batch) -> None:
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
