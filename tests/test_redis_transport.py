"""The Redis transport's own promises, beyond the port's contract (tests/test_transport_contract.py): who takes over
what a consumer held, where a requeued entry goes, what a malformed entry becomes, what is moved over from the
former kombu transport, and what a failed publish says. Everything runs against the real Redis; a consumer that is
gone or alive is played with raw commands (``XREADGROUP`` under a name, its alive key set or not)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from container_messaging.errors import InvalidMessageError, TransportError, UnroutableMessageError
from container_messaging.transports import EndpointTopology, OutboundMessage, TransportOptions, create_transport
from container_messaging.transports.base import dead_letter_queue
from container_messaging.transports.redis import keys

pytestmark = pytest.mark.redis


class Endpoint:
    """A Redis transport with one endpoint (queue bound to ``billing.#`` on a private exchange) and a raw client."""

    def __init__(self, url: str, unique: str, **options: Any) -> None:
        self.transport: Any = create_transport(TransportOptions(url=url, polling_interval=0.01, **options))
        self.topology = EndpointTopology(f"test.redis.{unique}", f"test_redis_{unique}", ("billing.#",))
        self.queue = self.topology.queue
        self.stream = keys.queue_key(self.queue)
        self.raw = redis.Redis.from_url(url)
        self.receivers: list[Any] = []

    def publish(self, **headers: Any) -> OutboundMessage:
        message_id = str(uuid.uuid4())
        message = OutboundMessage(
            "billing.changed", b"{}", {"id": message_id, **headers}, "application/json", message_id
        )
        self.transport.publish(self.topology.exchange, message, mandatory=True)
        return message

    def open(self) -> Any:
        receiver = self.transport.open_receiver(self.queue, prefetch_count=10)
        self.receivers.append(receiver)
        return receiver

    def take_as(self, consumer: str, *, alive: bool) -> str:
        """Takes the next entry as a consumer of this name, alive (its alive key set) or gone; returns its id."""
        if alive:
            self.raw.set(keys.alive_key(self.queue, consumer), b"1", px=60_000)
        [[_stream, [(entry_id, _fields)]]] = self.raw.xreadgroup(keys.GROUP, consumer, {self.stream: ">"}, count=1)
        return str(entry_id.decode())

    def close(self) -> None:
        for receiver in self.receivers:
            receiver.close()
        self.transport.remove_endpoint(self.topology)
        for key in self.raw.scan_iter(match=keys.alive_prefix(self.queue) + "*"):
            self.raw.delete(key)
        self.raw.delete(self.queue, keys.legacy_delayed_key(self.queue))
        self.transport.close()
        self.raw.close()


@pytest.fixture
def endpoint(redis_url: str, unique: str) -> Iterator[Endpoint]:
    built = Endpoint(redis_url, unique, heartbeat=1)
    built.transport.setup_endpoint(built.topology)
    yield built
    built.close()


def _ids(receiver: Any, count: int, within: float = 5.0) -> list[str]:
    found = []
    for _ in range(count):
        delivery = receiver.receive(within)
        assert delivery is not None, f"only {len(found)} of {count} arrived within {within} s"
        found.append(delivery.headers["id"])
        delivery.ack()
    return found


# -- who takes over what a consumer held --------------------------------------------------------------------------


def test_the_entries_of_a_consumer_that_is_gone_are_taken_over(endpoint: Endpoint) -> None:
    """An entry held by a consumer without an alive key (killed, its key expired) goes to the next consumer that
    looks, within a couple of seconds, and is then gone from the stream once acknowledged."""
    sent = endpoint.publish()
    endpoint.take_as("killed", alive=False)
    started = time.monotonic()
    assert _ids(endpoint.open(), 1) == [sent.message_id]
    assert time.monotonic() - started < 3
    assert endpoint.raw.xlen(endpoint.stream) == 0


def test_the_entries_of_a_live_consumer_stay_with_it_until_its_key_expires(endpoint: Endpoint) -> None:
    """An entry held by a consumer whose alive key is there is not handed to another consumer; once the key is gone
    (expired, as when the consumer is frozen or killed), it is."""
    sent = endpoint.publish()
    endpoint.take_as("working", alive=True)
    receiver = endpoint.open()
    assert receiver.receive(2.5) is None
    endpoint.raw.delete(keys.alive_key(endpoint.queue, "working"))
    assert _ids(receiver, 1) == [sent.message_id]


def test_an_entry_held_longer_than_the_visibility_timeout_is_taken_over(redis_url: str, unique: str) -> None:
    """Even from a live consumer, an entry held longer than visibility_timeout is handed to another consumer (as the
    embedded transport's lease)."""
    endpoint = Endpoint(redis_url, unique, heartbeat=30, visibility_timeout=1)
    try:
        endpoint.transport.setup_endpoint(endpoint.topology)
        sent = endpoint.publish()
        endpoint.take_as("slow", alive=True)
        started = time.monotonic()
        assert _ids(endpoint.open(), 1) == [sent.message_id]
        assert time.monotonic() - started >= 0.9
    finally:
        endpoint.close()


def test_a_receiver_keeps_its_alive_key_while_it_runs_and_removes_it_when_it_closes(endpoint: Endpoint) -> None:
    """An open receiver's alive key outlives its one-second lifetime (it is renewed); after close() it is gone and
    the consumer has left the group."""
    receiver = endpoint.open()
    alive = keys.alive_key(endpoint.queue, receiver.consumer)
    until = time.monotonic() + 2.5  # more than two lifetimes of the key: it must have been renewed
    while time.monotonic() < until:
        assert endpoint.raw.exists(alive)
        time.sleep(0.05)
    receiver.close()
    assert not endpoint.raw.exists(alive)
    names = [c["name"].decode() for c in endpoint.raw.xinfo_consumers(endpoint.stream, keys.GROUP)]
    assert receiver.consumer not in names


def test_a_requeued_entry_comes_back_before_newer_ones(endpoint: Endpoint) -> None:
    """A requeued entry keeps its place: the next receive gives it again, before a message published after it."""
    first, second = endpoint.publish(), endpoint.publish()
    receiver = endpoint.open()
    delivery = receiver.receive(5)
    assert delivery is not None and delivery.headers["id"] == first.message_id
    delivery.requeue()
    assert _ids(receiver, 2) == [first.message_id, second.message_id]


def test_queue_size_counts_released_and_abandoned_entries_but_not_held_ones(endpoint: Endpoint) -> None:
    """Of three entries, one held by a live consumer, one by a gone consumer and one ready: the size is 2."""
    for _ in range(3):
        endpoint.publish()
    endpoint.take_as("working", alive=True)
    endpoint.take_as("gone", alive=False)
    assert endpoint.transport.queue_size(endpoint.queue) == 2


def test_a_queue_exists_once_set_up_even_empty(endpoint: Endpoint) -> None:
    """queue_exists is true for the endpoint's queue and its dead letter queue (set up, empty), false for another."""
    exists = endpoint.transport.queue_exists
    assert (exists(endpoint.queue), exists(dead_letter_queue(endpoint.queue)), exists("never_set_up")) == (
        True,
        True,
        False,
    )


def test_a_receiver_of_a_queue_never_set_up_is_an_error_naming_it(endpoint: Endpoint) -> None:
    """Opening a receiver on a queue that was never declared is a TransportError naming the queue and the setup."""
    with pytest.raises(TransportError, match=r"'nowhere_\w+'.*no such queue.*container-messaging setup"):
        endpoint.transport.open_receiver(f"nowhere_{uuid.uuid4().hex[:6]}", prefetch_count=1)


# -- malformed entries --------------------------------------------------------------------------------------------


def test_a_malformed_entry_is_moved_to_the_dead_letter_with_its_reason_and_the_receiver_goes_on(
    endpoint: Endpoint,
) -> None:
    """An entry whose headers are not JSON is not handed out: it is in the dead letter with its body as it was, its
    entry id as message id and the reason; the good message behind it is received."""
    entry_id = endpoint.raw.xadd(endpoint.stream, {b"body": b"\x00raw\xff", b"headers": b"{oops"}).decode()
    good = endpoint.publish()
    assert _ids(endpoint.open(), 1) == [good.message_id]
    with endpoint.transport.browse(dead_letter_queue(endpoint.queue)) as entries:
        [entry] = entries
        assert entry.body == b"\x00raw\xff"
        assert entry.headers["id"] == entry_id
        assert entry.headers["failure.reason"] == "malformed entry"
        assert "field 'headers' is not JSON" in entry.headers["failure.message"]
    assert endpoint.raw.xlen(endpoint.stream) == 0


def test_a_malformed_delayed_copy_goes_to_the_dead_letter(endpoint: Endpoint) -> None:
    """A member of the delayed set that is not a delayed copy is moved, when due, to the dead letter as it is."""
    endpoint.raw.zadd(keys.delayed_key(endpoint.queue), {b"garbage member": 0})
    receiver = endpoint.open()
    assert receiver.receive(0.5) is None
    with endpoint.transport.browse(dead_letter_queue(endpoint.queue)) as entries:
        assert [(e.headers["failure.reason"], b"garbage member" in e.body) for e in entries] == [
            ("malformed entry", True)
        ]
    assert endpoint.raw.zcard(keys.delayed_key(endpoint.queue)) == 0


def test_browsing_shows_a_malformed_entry_raw_and_acknowledging_deletes_it(endpoint: Endpoint) -> None:
    """browse gives a malformed entry as a message with its raw body and the reason; acknowledging it deletes it."""
    endpoint.raw.xadd(endpoint.stream, {b"payload": b"hello"})
    with endpoint.transport.browse(endpoint.queue) as entries:
        [entry] = entries
        assert json.loads(entry.body) == {"payload": "hello"}
        assert entry.headers["failure.message"].startswith("no field 'body'")
        entry.ack()
    assert endpoint.raw.xlen(endpoint.stream) == 0


# -- the former kombu transport -----------------------------------------------------------------------------------


def _kombu(body: bytes, **headers: Any) -> bytes:
    payload = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "binary",
        "content-type": "application/json",
        "headers": headers,
        "properties": {"body_encoding": "base64", "delivery_mode": 2, "priority": 0},
    }
    return json.dumps(payload).encode()


@pytest.fixture
def private_database(redis_url: str, unique: str) -> Iterator[Endpoint]:
    """An endpoint in database 13 of the Redis server: kombu's ``unacked`` keys are shared by a whole database, and
    kombu consumers elsewhere on the server (database 0) would restore test entries there themselves."""
    parts = urlsplit(redis_url)
    built = Endpoint(urlunsplit((parts.scheme, parts.netloc, "/13", "", "")), unique, heartbeat=1)
    yield built
    built.close()


def test_setup_moves_the_former_transports_messages_over(private_database: Endpoint) -> None:
    """Setting the endpoint up moves what kombu's Redis transport left: its list (oldest first), its delayed set
    (keeping the due time) and its taken messages older than the visibility timeout (not younger ones, nor other
    queues'); an envelope that cannot be read goes to the dead letter as it is."""
    endpoint = private_database
    raw, queue = endpoint.raw, endpoint.queue
    raw.lpush(queue, _kombu(b"1", id="old-1"))
    raw.lpush(queue, b"\x00 not kombu")
    raw.lpush(queue, _kombu(b"2", id="old-2", redelivered=True))
    raw.zadd(keys.legacy_delayed_key(queue), {_kombu(b"3", id="delayed-due"): 1.0})
    raw.zadd(keys.legacy_delayed_key(queue), {_kombu(b"4", id="delayed-later"): time.time() + 3600})
    taken = {
        "tag-old": (json.dumps([json.loads(_kombu(b"5", id="taken-long-ago")), "", queue]), time.time() - 400),
        "tag-new": (json.dumps([json.loads(_kombu(b"6", id="taken-now")), "", queue]), time.time()),
        "tag-other": (json.dumps([json.loads(_kombu(b"7", id="other-queue")), "", "another"]), time.time() - 400),
    }
    try:
        for tag, (stored, at) in taken.items():
            raw.hset("unacked", tag, stored)
            raw.zadd("unacked_index", {tag: at})
        endpoint.transport.setup_endpoint(endpoint.topology)
        receiver = endpoint.open()
        received = []
        while (delivery := receiver.receive(1.5)) is not None:
            received.append((delivery.headers["id"], delivery.body, "redelivered" in delivery.headers))
            delivery.ack()
        assert received == [
            ("old-1", b"1", False),
            ("old-2", b"2", False),
            ("taken-long-ago", b"5", False),
            ("delayed-due", b"3", False),
        ]
        assert raw.llen(queue) == 0
        assert endpoint.transport.waiting_for_delay(queue) == 1
        assert sorted(t.decode() for t in raw.hkeys("unacked")) == ["tag-new", "tag-other"]
        with endpoint.transport.browse(dead_letter_queue(queue)) as entries:
            assert [(e.body, e.headers["failure.reason"]) for e in entries] == [(b"\x00 not kombu", "malformed entry")]
    finally:
        for tag in taken:
            raw.hdel("unacked", tag)
            raw.zrem("unacked_index", tag)


def test_what_a_sender_of_the_former_version_pushes_while_a_consumer_runs_is_received(endpoint: Endpoint) -> None:
    """A message pushed onto the former transport's list (by a sender not upgraded yet) while a consumer runs is
    moved onto the stream and received within seconds."""
    receiver = endpoint.open()
    assert receiver.receive(0.2) is None
    endpoint.raw.lpush(endpoint.queue, _kombu(b"late", id="pushed-late"))
    delivery = receiver.receive(5)
    assert delivery is not None and (delivery.headers["id"], delivery.body) == ("pushed-late", b"late")
    delivery.ack()
    assert endpoint.raw.llen(endpoint.queue) == 0


# -- what a failed publish says -----------------------------------------------------------------------------------


@pytest.fixture
def fragile(redis_url: str, unique: str) -> Iterator[Endpoint]:
    """An endpoint whose publishes are tried twice (one retry)."""
    built = Endpoint(redis_url, unique, publish_retries=1)
    built.transport.setup_endpoint(built.topology)
    yield built
    built.close()


def _failing(monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """Makes every ``command`` of redis-py's clients and pipelines fail as a lost connection."""

    def lost(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(redis.Redis, command, lost, raising=False)
    monkeypatch.setattr(redis.client.Pipeline, command, lost, raising=False)


def test_a_publish_whose_routing_read_fails_says_not_sent(fragile: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    """When reading the exchange's bindings fails on every attempt, the error says the message was not sent."""
    _failing(monkeypatch, "smembers")
    with pytest.raises(TransportError, match=r"not sent after 2 attempt\(s\)"):
        fragile.publish()


def test_a_publish_whose_write_fails_says_it_may_or_may_not_have_arrived(
    fragile: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the write itself fails, the error says the message may or may not have reached the broker."""
    _failing(monkeypatch, "xadd")
    with pytest.raises(TransportError, match="may or may not have reached the broker after 2 attempt"):
        fragile.publish()


def test_a_failed_batch_says_it_was_one_transaction(fragile: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch whose transaction fails names every message and says all of them or none were published."""
    _failing(monkeypatch, "execute")
    messages = [
        OutboundMessage("billing.changed", b"{}", {"id": f"m{n}"}, "application/json", f"m{n}") for n in range(3)
    ]
    with pytest.raises(TransportError, match=r"one transaction: all of them or none were published \['m0', 'm1'"):
        fragile.transport.publish_many(fragile.topology.exchange, [(m, True) for m in messages])


def test_a_batch_with_an_unroutable_message_names_it_and_publishes_the_others(endpoint: Endpoint) -> None:
    """In a batch, a mandatory message no queue is bound for raises UnroutableMessageError naming its id and
    routing key, and the others are on the queue."""
    good = [OutboundMessage("billing.x", b"{}", {"id": f"g{n}"}, "application/json", f"g{n}") for n in range(2)]
    lost = OutboundMessage("nobody.listens", b"{}", {"id": "lost-1"}, "application/json", "lost-1")
    with pytest.raises(UnroutableMessageError, match=r"1 of 3 messages were not published.*'nobody\.listens'.*lost-1"):
        endpoint.transport.publish_many(endpoint.topology.exchange, [(good[0], True), (lost, True), (good[1], True)])
    assert endpoint.transport.queue_size(endpoint.queue) == 2


def test_sending_to_a_queue_that_does_not_exist_is_unroutable(endpoint: Endpoint) -> None:
    """send_to_queue to a queue never declared raises UnroutableMessageError naming it, and creates nothing."""
    missing = f"missing_{uuid.uuid4().hex[:6]}"
    message = OutboundMessage(missing, b"{}", {"id": "x"}, "application/json", "x")
    with pytest.raises(UnroutableMessageError, match=f"there is no queue '{missing}'"):
        endpoint.transport.send_to_queue(missing, message)
    assert not endpoint.raw.exists(keys.queue_key(missing))


def test_headers_that_are_not_json_values_are_refused_before_anything_is_sent(endpoint: Endpoint) -> None:
    """A header value JSON cannot carry (NaN, bytes) is an InvalidMessageError naming the message; nothing is sent."""
    for value in (float("nan"), b"bytes"):
        with pytest.raises(InvalidMessageError, match="its headers cannot travel on Redis"):
            endpoint.publish(bad=value)
    assert endpoint.raw.xlen(endpoint.stream) == 0
