"""The embedded transport (SQLite-backed kombu virtual transport), exercised with plain kombu."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue, binding
from kombu.exceptions import ChannelError

from container_messaging.transports.embedded import DATABASE_FILE_NAME, SqliteTransport

EXCHANGE = "ecotone.distributed"
ACCEPT = ["application/json", "text/plain"]
PROJECT_ROOT = Path(__file__).resolve().parents[1]


# -- helpers ------------------------------------------------------------------------------------------------------


def connect(folder: Path, **options) -> Connection:
    return Connection(
        transport=SqliteTransport,
        transport_options={"data_folder": str(folder), "polling_interval": 0.01, **options},
    )


def topic_exchange() -> Exchange:
    return Exchange(EXCHANGE, "topic", durable=True)


def declare_queue(conn: Connection, name: str, *keys: str) -> Queue:
    """Declares durable queue ``name`` bound to the topic exchange with ``keys``; returns it bound to the channel."""
    queue = Queue(name, bindings=[binding(topic_exchange(), routing_key=key) for key in keys], durable=True)
    bound = queue(conn.default_channel)
    bound.declare()
    return bound


def publish(conn: Connection, routing_key: str, body, **kwargs) -> None:
    exchange = topic_exchange()
    Producer(conn.default_channel, exchange=exchange).publish(
        body, routing_key=routing_key, serializer="json", declare=[exchange], **kwargs
    )


def rows(folder: Path, queue: str) -> int:
    """Rows of ``queue`` in the database, leased ones included."""
    with sqlite3.connect(folder / DATABASE_FILE_NAME) as db:
        return int(db.execute("SELECT count(*) FROM messages WHERE queue = ?", (queue,)).fetchone()[0])


def size(folder: Path, queue: str) -> int:
    """Ready messages of ``queue`` as kombu reports them (passive declare), from a fresh connection."""
    with connect(folder) as conn:
        return conn.default_channel.queue_declare(queue=queue, passive=True).message_count


def get_all(queue: Queue) -> list:
    messages = []
    while (message := queue.get(accept=ACCEPT)) is not None:
        messages.append(message)
    return messages


def get_within(queue: Queue, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = queue.get(accept=ACCEPT)
        if message is not None:
            return message
        time.sleep(0.02)
    return None


CHILD_PRELUDE = textwrap.dedent(
    """
    import json, sys, time
    from kombu import Connection, Exchange, Producer, Queue, binding
    from container_messaging.transports.embedded import SqliteTransport

    folder = sys.argv[1]
    conn = Connection(transport=SqliteTransport, transport_options={"data_folder": folder, "polling_interval": 0.01})
    exchange = Exchange("ecotone.distributed", "topic", durable=True)
    """
)


def run_child(code: str, folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(code), str(folder)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )


# -- tests --------------------------------------------------------------------------------------------------------


def test_publish_and_consume_preserves_body_headers_and_content_type(tmp_path):
    """A consumed message has the published body, application headers and content type."""
    with connect(tmp_path) as conn:
        queue = declare_queue(conn, "distributed_billing", "billing.#")
        headers = {"x-id": "42", "routingKey": "billing.details.changed", "nested": {"n": 1}}
        publish(conn, "billing.details.changed", {"amount": 10}, headers=headers)
        Producer(conn.default_channel, exchange=topic_exchange()).publish(
            "plain words", routing_key="billing.note", content_type="text/plain", content_encoding="utf-8"
        )
        received = []
        with Consumer(conn.default_channel, queues=[queue], callbacks=[lambda b, m: received.append(m)], accept=ACCEPT):
            deadline = time.monotonic() + 5
            while len(received) < 2 and time.monotonic() < deadline:
                conn.drain_events(timeout=1)
        for message in received:
            message.ack()

    first, second = received
    assert first.payload == {"amount": 10}
    assert first.headers == headers
    assert first.content_type == "application/json"
    assert first.delivery_info["routing_key"] == "billing.details.changed"
    assert first.delivery_info["redelivered"] is False
    assert second.payload == "plain words"
    assert second.content_type == "text/plain"


def test_topic_routing_with_hash_and_exact_keys(tmp_path):
    """`billing.#` and the exact key both receive `billing.details.changed`; a queue bound to another key does not."""
    with connect(tmp_path) as conn:
        wildcard = declare_queue(conn, "wildcard", "billing.#")
        exact = declare_queue(conn, "exact", "billing.details.changed")
        other = declare_queue(conn, "other", "orders.placed")
        publish(conn, "billing.details.changed", {"n": 1})

        assert [m.payload for m in get_all(wildcard)] == [{"n": 1}]
        assert [m.payload for m in get_all(exact)] == [{"n": 1}]
        assert get_all(other) == []


def test_topic_wildcards_follow_installed_kombu_semantics(tmp_path):
    """With kombu 5.7, `*` matches exactly one word and `billing.#` does not match the bare key `billing`."""
    with connect(tmp_path) as conn:
        star = declare_queue(conn, "star", "order.*")
        hash_ = declare_queue(conn, "hash", "billing.#")
        publish(conn, "order.a.b", {"k": "order.a.b"})
        publish(conn, "order.a", {"k": "order.a"})
        publish(conn, "billing", {"k": "billing"})

        assert [m.payload["k"] for m in get_all(star)] == ["order.a"]
        assert get_all(hash_) == []


def test_one_copy_per_queue_when_two_bindings_of_the_queue_match(tmp_path):
    """A queue with two bindings matching the routing key receives the message once."""
    with connect(tmp_path) as conn:
        queue = declare_queue(conn, "double", "billing.#", "billing.details.changed")
        publish(conn, "billing.details.changed", {"n": 1})

        assert [m.payload for m in get_all(queue)] == [{"n": 1}]
    assert rows(tmp_path, "double") == 1  # the unacked copy, released at close


def test_event_fans_out_to_every_bound_queue(tmp_path):
    """Two queues bound to the same topic each get one copy; two queues on a fanout exchange each get one copy."""
    with connect(tmp_path) as conn:
        first = declare_queue(conn, "first", "billing.#")
        second = declare_queue(conn, "second", "billing.details.*")
        publish(conn, "billing.details.changed", {"n": 1})

        broadcast = Exchange("broadcast", "fanout", durable=True)
        left = Queue("left", exchange=broadcast, durable=True)(conn.default_channel)
        right = Queue("right", exchange=broadcast, durable=True)(conn.default_channel)
        left.declare()
        right.declare()
        Producer(conn.default_channel, exchange=broadcast).publish({"all": True}, routing_key="ignored")

        assert [m.payload for m in get_all(first)] == [{"n": 1}]
        assert [m.payload for m in get_all(second)] == [{"n": 1}]
        assert [m.payload for m in get_all(left)] == [{"all": True}]
        assert [m.payload for m in get_all(right)] == [{"all": True}]


def test_messages_are_consumed_in_publish_order(tmp_path):
    """Messages of one queue come out in the order they were published."""
    with connect(tmp_path) as conn:
        queue = declare_queue(conn, "fifo", "seq.#")
        for n in range(30):
            publish(conn, "seq.item", {"n": n})

        received = get_all(queue)
        for message in received:
            message.ack()

    assert [m.payload["n"] for m in received] == list(range(30))


def test_unacked_message_returns_to_its_own_queue_only_when_channel_closes(tmp_path):
    """An unacked message goes back to its own queue, marked redelivered, and is not copied to other bound queues."""
    with connect(tmp_path) as conn:
        declare_queue(conn, "a", "billing.#")
        declare_queue(conn, "b", "billing.#")
        publish(conn, "billing.details.changed", {"n": 1})
        taken = declare_queue(conn, "a", "billing.#").get(accept=ACCEPT)
        assert taken is not None
        assert size(tmp_path, "a") == 0  # leased: not ready for anyone else
    # the connection (and so the channel) closed without ack

    with connect(tmp_path) as conn:
        again = get_all(declare_queue(conn, "a", "billing.#"))
        others = get_all(declare_queue(conn, "b", "billing.#"))
        for message in again + others:
            message.ack()

    assert [(m.payload, m.delivery_info["redelivered"]) for m in again] == [({"n": 1}, True)]
    assert [(m.payload, m.delivery_info["redelivered"]) for m in others] == [({"n": 1}, False)]


def test_reject_with_requeue_returns_message_to_same_queue_only(tmp_path):
    """reject(requeue=True) puts the message back on its own queue, marked redelivered, without copying it elsewhere."""
    with connect(tmp_path) as conn:
        a = declare_queue(conn, "a", "billing.#")
        b = declare_queue(conn, "b", "billing.#")
        publish(conn, "billing.details.changed", {"n": 1})
        a.get(accept=ACCEPT).requeue()

        again = get_all(a)
        others = get_all(b)
        for message in again + others:
            message.ack()

    assert [(m.payload, m.delivery_info["redelivered"]) for m in again] == [({"n": 1}, True)]
    assert [m.payload for m in others] == [{"n": 1}]
    assert rows(tmp_path, "a") == rows(tmp_path, "b") == 0


def test_reject_without_requeue_deletes_message(tmp_path):
    """reject(requeue=False) deletes the message: it is not delivered again, even after the channel closes."""
    with connect(tmp_path) as conn:
        queue = declare_queue(conn, "rejects", "billing.#")
        publish(conn, "billing.details.changed", {"n": 1})
        queue.get(accept=ACCEPT).reject()
        assert queue.get(accept=ACCEPT) is None

    assert rows(tmp_path, "rejects") == 0
    assert size(tmp_path, "rejects") == 0


def test_ack_deletes_message(tmp_path):
    """An acked message's row is deleted and the queue size is 0 afterwards."""
    with connect(tmp_path) as conn:
        queue = declare_queue(conn, "acks", "billing.#")
        publish(conn, "billing.details.changed", {"n": 1})
        assert size(tmp_path, "acks") == 1
        queue.get(accept=ACCEPT).ack()

    assert rows(tmp_path, "acks") == 0
    assert size(tmp_path, "acks") == 0


@pytest.mark.parametrize("value", ["Infinity", 1e308, "not a number", ["nested"]])
def test_no_header_from_a_publisher_delays_or_breaks_a_message(tmp_path, value):
    """A message carrying the header an earlier version read as its delivery time (any value) is stored and visible
    at once: only the adapter's put_later delays a message."""
    with connect(tmp_path) as conn:
        queue = declare_queue(conn, "hostile", "billing.#")
        publish(conn, "billing.details.changed", {"n": 1}, headers={"x-container-messaging-deliver-at": value})
        message = queue.get(accept=ACCEPT)
        assert message is not None
        message.ack()


def test_put_later_keeps_a_message_invisible_until_its_time(tmp_path):
    """A message stored with put_later for later is counted as waiting and not taken; one whose time comes is taken."""
    with connect(tmp_path) as conn:
        queue = declare_queue(conn, "later", "billing.#")
        channel = conn.default_channel
        channel.put_later("later", b"{}", "application/json", {"id": "in an hour"}, time.time() + 3600)
        channel.put_later("later", b"{}", "application/json", {"id": "soon"}, time.time() + 0.2)
        assert channel.waiting_for_delay("later") == 2
        message = get_within(queue, 5)
        assert message is not None
        assert message.headers == {"id": "soon"}
        message.ack()
        assert queue.get(accept=ACCEPT) is None
        assert channel.waiting_for_delay("later") == 1


def test_taken_message_is_hidden_until_its_lease_expires(tmp_path):
    """A message taken by a live consumer is invisible to others until visibility_timeout, then redelivered."""
    with connect(tmp_path, visibility_timeout=0.5) as holder, connect(tmp_path, visibility_timeout=0.5) as other:
        declare_queue(holder, "leases", "billing.#")
        publish(holder, "billing.details.changed", {"n": 1})
        taken = declare_queue(holder, "leases", "billing.#").get(accept=ACCEPT)
        assert taken is not None
        other_queue = declare_queue(other, "leases", "billing.#")
        assert other_queue.get(accept=ACCEPT) is None

        again = get_within(other_queue, 5)
        assert again is not None
        assert again.payload == {"n": 1}
        assert again.delivery_info["redelivered"] is True
        again.ack()


def test_message_published_by_child_process_is_consumed_by_parent(tmp_path):
    """Messages published by another process reach the parent's queue in order."""
    with connect(tmp_path) as conn:
        queue = declare_queue(conn, "from_child", "billing.#")
        run_child(
            """
            producer = Producer(conn.default_channel, exchange=exchange)
            for n in range(3):
                producer.publish({"n": n}, routing_key="billing.details.changed", headers={"x-from": "child"})
            conn.release()
            """,
            tmp_path,
        )
        received = [get_within(queue, 5) for _ in range(3)]
        for message in received:
            message.ack()

    assert [(m.payload["n"], m.headers["x-from"]) for m in received] == [(0, "child"), (1, "child"), (2, "child")]


def test_message_published_by_parent_is_consumed_and_acked_by_child_process(tmp_path):
    """A child process consumes and acks the parent's message, which then leaves the queue."""
    with connect(tmp_path) as conn:
        declare_queue(conn, "to_child", "billing.#")
        publish(conn, "billing.details.changed", {"n": 7}, headers={"x-from": "parent"})

    result = run_child(
        """
        queue = Queue("to_child", channel=conn.default_channel)
        deadline = time.monotonic() + 10
        message = None
        while message is None and time.monotonic() < deadline:
            message = queue.get(accept=["application/json"])
        message.ack()
        print(json.dumps({"body": message.payload, "headers": message.headers}))
        conn.release()
        """,
        tmp_path,
    )

    assert json.loads(result.stdout) == {"body": {"n": 7}, "headers": {"x-from": "parent"}}
    assert rows(tmp_path, "to_child") == 0


def test_message_taken_by_sigkilled_child_is_redelivered_to_parent(tmp_path):
    """A message leased by a child killed with SIGKILL before ack is redelivered to the parent, long before expiry."""
    with connect(tmp_path, reclaim_interval=0.1) as conn:
        queue = declare_queue(conn, "crash", "billing.#")
        publish(conn, "billing.details.changed", {"n": 1})
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD_PRELUDE
                + textwrap.dedent(
                    """
                    message = None
                    while message is None:
                        message = Queue("crash", channel=conn.default_channel).get(accept=["application/json"])
                    print("taken", json.dumps(message.payload), flush=True)
                    time.sleep(60)
                    """
                ),
                str(tmp_path),
            ],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == 'taken {"n": 1}'
            assert queue.get(accept=ACCEPT) is None  # leased by a live process (visibility_timeout is 300 s)
            os.kill(child.pid, signal.SIGKILL)  # not reaped yet: a zombie must count as dead too
            started = time.monotonic()
            again = get_within(queue, 10)
        finally:
            child.kill()
            child.wait(timeout=10)
        assert again is not None
        assert again.payload == {"n": 1}
        assert again.delivery_info["redelivered"] is True
        assert time.monotonic() - started < 10
        again.ack()
    assert rows(tmp_path, "crash") == 0


def test_bindings_declared_in_one_process_route_publishes_from_another(tmp_path):
    """A publisher that declared nothing routes by the exchange type and bindings another process declared."""
    run_child(
        """
        Queue("declared_elsewhere", bindings=[binding(exchange, routing_key="billing.#")], durable=True)(
            conn.default_channel
        ).declare()
        conn.release()
        """,
        tmp_path,
    )

    with connect(tmp_path) as conn:
        producer = Producer(conn.default_channel, exchange=Exchange(EXCHANGE), auto_declare=False)
        producer.publish({"n": 1}, routing_key="billing.details.changed")
        received = Queue("declared_elsewhere", channel=conn.default_channel).get(accept=ACCEPT)
        assert received is not None
        assert received.payload == {"n": 1}
        received.ack()


def test_passive_declare_of_unknown_queue_fails(tmp_path):
    """A passive declare of a queue no process declared raises a NOT_FOUND channel error."""
    with connect(tmp_path) as conn, pytest.raises(ChannelError, match="NOT_FOUND"):
        conn.default_channel.queue_declare(queue="nobody", passive=True)


def test_competing_consumer_processes_each_get_every_message_once(tmp_path):
    """Three processes consuming one queue together receive every message exactly once (each acks)."""
    with connect(tmp_path) as conn:
        declare_queue(conn, "work", "work.#")
        for n in range(150):
            publish(conn, "work.item", {"n": n})
    consumer = CHILD_PRELUDE + textwrap.dedent(
        """
        queue = Queue("work", channel=conn.default_channel)
        got, idle_since = [], time.monotonic()
        while time.monotonic() - idle_since < 0.5:
            message = queue.get(accept=["application/json"])
            if message is None:
                time.sleep(0.005)
                continue
            idle_since = time.monotonic()
            got.append(message.payload["n"])
            message.ack()
        print(json.dumps(got))
        """
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", consumer, str(tmp_path)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    results = [json.loads(child.communicate(timeout=30)[0]) for child in children]

    assert sorted(n for got in results for n in got) == list(range(150))
    assert all(got == sorted(got) for got in results)  # each consumer sees its share in FIFO order
    assert rows(tmp_path, "work") == 0


def test_no_ack_consumption_deletes_message_when_taken(tmp_path):
    """With no_ack (basic_get and consumer), a message is deleted when taken and not restored at close."""
    with connect(tmp_path) as conn:
        queue = declare_queue(conn, "auto", "auto.#")
        publish(conn, "auto.one", {"n": 1})
        publish(conn, "auto.two", {"n": 2})
        first = queue.get(no_ack=True, accept=ACCEPT)
        received = []
        with Consumer(
            conn.default_channel,
            queues=[queue],
            callbacks=[lambda b, m: received.append(m)],
            accept=ACCEPT,
            no_ack=True,
        ):
            conn.drain_events(timeout=2)

    assert first.payload == {"n": 1}
    assert [m.payload for m in received] == [{"n": 2}]
    assert rows(tmp_path, "auto") == 0
