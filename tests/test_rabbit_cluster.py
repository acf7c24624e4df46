"""A real three-node RabbitMQ cluster (tests/support/rabbit_cluster.py): it forms, a quorum queue on it keeps what
it confirmed when its leader dies, and a kombu publisher (with publisher confirms) and a kombu consumer given
failover URLs survive the hard kill of the node they are connected to, losing nothing; the killed node restarts and
rejoins. kombu is used directly: the package cannot be configured for several URLs yet.

Run alone with ``pytest -m cluster``; the cluster is started once for the module and stopped at its end."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import kombu
import pytest
from amqp.exceptions import MessageNacked

from support.rabbit_cluster import RabbitCluster, RabbitNode, require_rabbitmq_server

pytestmark = pytest.mark.cluster

CONFIRM_TIMEOUT = 10.0  # seconds a publish waits for the broker's confirm
FAILOVER_DEADLINE = 60.0  # seconds one message may take to be confirmed while the cluster fails over
QUORUM = {"x-queue-type": "quorum"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """Three clustered nodes for the whole module; a test that kills one restarts it before it ends."""
    require_rabbitmq_server()
    with RabbitCluster(tmp_path_factory.mktemp("rabbit-cluster"), size=3) as started:
        sys.stderr.write(
            f"\n{started!r}: booted in {started.boot_seconds:.1f} s, clustered in {started.cluster_seconds:.1f} s\n"
        )
        yield started


@pytest.fixture
def quorum_queue(cluster: RabbitCluster, unique: str) -> Iterator[kombu.Queue]:
    """A durable quorum queue declared through node 1 (so its leader starts there), deleted after the test."""
    queue = kombu.Queue(
        f"cm_cluster_{unique}", routing_key=f"cm_cluster_{unique}", durable=True, queue_arguments=QUORUM
    )
    with kombu.Connection(cluster.nodes[0].url) as connection:
        queue(connection.default_channel).declare()
    yield queue
    with kombu.Connection(cluster.failover_url) as connection:
        connection.ensure_connection(max_retries=len(cluster.nodes))
        connection.default_channel.queue_delete(queue.name)


def queue_info(node: RabbitNode, queue: str) -> dict[str, Any]:
    """What ``rabbitmqctl list_queues`` says of ``queue``: type, leader, members, online members."""
    rows = node.ctl_json("list_queues", "name", "type", "leader", "members", "online")
    [row] = [row for row in rows if row["name"] == queue]
    return dict(row)


def wait_for_online_members(node: RabbitNode, queue: str, expected: set[str], timeout: float = 60.0) -> None:
    """Waits until ``node`` reports exactly ``expected`` as the online members of ``queue``."""
    deadline = time.monotonic() + timeout
    while set((info := queue_info(node, queue))["online"]) != expected:
        assert time.monotonic() < deadline, f"{queue} online members {info['online']} never became {expected}"
        time.sleep(0.2)


def drain(url: str, queue: str) -> list[int]:
    """Every message body's ``n`` in ``queue``, taken (and acknowledged) through the node at ``url``."""
    numbers = []
    with kombu.Connection(url) as connection:
        channel = connection.channel()
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            numbers.append(json.loads(message.body)["n"])
    return numbers


def connected_node(cluster: RabbitCluster, connection: kombu.Connection) -> RabbitNode:
    return cluster.node_on_port(int(connection.host.rsplit(":", 1)[1]))


def test_three_nodes_form_one_cluster(cluster: RabbitCluster) -> None:
    """Every one of the three nodes sees all three nodes running in its cluster."""
    assert len(cluster.nodes) == 3
    for node in cluster.nodes:
        assert node.running_nodes() == cluster.names, node.name


def test_quorum_queue_keeps_confirmed_messages_when_its_leader_is_killed(
    cluster: RabbitCluster, quorum_queue: kombu.Queue
) -> None:
    """A quorum queue has a member on each node, and the messages confirmed to it are all still there, read
    through another node, after its leader node is killed hard."""
    first = cluster.nodes[0]
    info = queue_info(first, quorum_queue.name)
    assert info["type"] == "quorum"
    assert set(info["members"]) == set(info["online"]) == cluster.names

    with kombu.Connection(first.url, transport_options={"confirm_publish": True}) as connection:
        producer = kombu.Producer(connection.default_channel)
        for n in range(50):
            producer.publish({"n": n}, routing_key=quorum_queue.routing_key, delivery_mode=2, serializer="json")

    leader = next(node for node in cluster.nodes if node.name == info["leader"])
    survivor = next(node for node in cluster.nodes if node is not leader)
    leader.kill()
    try:
        assert leader.name not in survivor.running_nodes()
        wait_for_online_members(survivor, quorum_queue.name, cluster.names - {leader.name})
        assert sorted(drain(survivor.url, quorum_queue.name)) == list(range(50))
    finally:
        leader.restart()
        cluster.wait_until_clustered()


def test_publisher_with_failover_urls_loses_no_confirmed_message_when_its_node_is_killed(
    cluster: RabbitCluster, quorum_queue: kombu.Queue
) -> None:
    """A kombu publisher given every node's URL (``url1;url2;url3``) with publisher confirms keeps publishing on
    another node after the node it is connected to is killed mid-stream; every confirmed message is in the quorum
    queue (0 lost); the killed node then restarts, rejoins and the queue has all three members online again."""
    total, kill_after = 400, 100
    confirmed: list[int] = []
    failures: list[str] = []
    killed: list[RabbitNode] = []
    connection = kombu.Connection(
        cluster.failover_url, transport_options={"confirm_publish": True}, connect_timeout=5, heartbeat=0
    )
    connection.ensure_connection(max_retries=len(cluster.nodes))
    retryable = (MessageNacked, *connection.recoverable_connection_errors, *connection.recoverable_channel_errors)
    first_node = connected_node(cluster, connection)
    producer = kombu.Producer(connection.default_channel)

    def kill_the_publishers_node() -> None:  # runs beside the publishing loop: the kill lands mid-stream
        deadline = time.monotonic() + FAILOVER_DEADLINE
        while len(confirmed) < kill_after and time.monotonic() < deadline:
            time.sleep(0.001)
        killed.append(first_node)
        first_node.kill()

    def publish(n: int) -> None:
        """Publishes until the broker confirms. A lost connection is retried on the next node (kombu's failover
        cycle); a nack (the queue had no leader for a moment) on a new channel: RabbitMQ 3.10 goes on nacking
        every publish on a channel that published while the quorum queue had no leader."""
        deadline = time.monotonic() + FAILOVER_DEADLINE
        while True:
            try:
                producer.publish(
                    {"n": n},
                    routing_key=quorum_queue.routing_key,
                    delivery_mode=2,
                    serializer="json",
                    confirm_timeout=CONFIRM_TIMEOUT,
                )
                return
            except retryable as exc:
                failures.append(f"message {n}: {exc!r}")
                assert time.monotonic() < deadline, f"message {n} unconfirmed after {FAILOVER_DEADLINE} s: {failures}"
                time.sleep(0.1)
                if connection.connected:
                    stale = producer.channel
                    producer.revive(connection.channel())
                    with contextlib.suppress(*retryable):
                        stale.close()
                else:
                    connection.ensure_connection(max_retries=2 * len(cluster.nodes), interval_start=0.2)
                    producer.revive(connection.default_channel)

    killer = threading.Thread(target=kill_the_publishers_node, daemon=True)
    killer.start()
    try:
        for n in range(total):
            publish(n)
            confirmed.append(n)
        killer.join(FAILOVER_DEADLINE)
        now_on = connected_node(cluster, connection)
    finally:
        connection.release()
    try:
        assert killed == [first_node], "the publisher's node was not killed during the test"
        assert now_on is not first_node
        assert failures, "killing the publisher's node interrupted no publish: the kill did not land mid-stream"

        received = Counter(drain(now_on.url, quorum_queue.name))
        lost = set(confirmed) - set(received)
        duplicated = sorted(n for n, times in received.items() if times > 1)
        sys.stderr.write(
            f"\nfailover: sent {total}, confirmed {len(confirmed)}, received {sum(received.values())}, "
            f"lost {len(lost)}, duplicated {len(duplicated)}, {len(failures)} failed attempts: {failures}\n"
        )
        assert lost == set()
        assert set(received) <= set(range(total))
    finally:
        first_node.restart()
        cluster.wait_until_clustered()
    wait_for_online_members(cluster.nodes[1], quorum_queue.name, cluster.names)


def test_consumer_with_failover_urls_handles_every_message_when_its_node_is_killed(
    cluster: RabbitCluster, quorum_queue: kombu.Queue
) -> None:
    """A kombu consumer given every node's URL, acknowledging after handling, whose node is killed while it
    handles a message, reconnects to another node and handles every message (0 lost); a message handled twice
    is one the broker redelivered (flagged ``redelivered``); the killed node then restarts and rejoins."""
    total, kill_at, prefetch = 300, 100, 10
    with kombu.Connection(cluster.nodes[2].url, transport_options={"confirm_publish": True}) as publisher:
        producer = kombu.Producer(publisher.default_channel)
        for n in range(total):
            producer.publish({"n": n}, routing_key=quorum_queue.routing_key, delivery_mode=2, serializer="json")

    handled: Counter[int] = Counter()
    second_deliveries_not_flagged: list[int] = []
    killed: list[RabbitNode] = []
    failures: list[str] = []
    connection = kombu.Connection(cluster.failover_url, connect_timeout=5, heartbeat=0)
    connection.ensure_connection(max_retries=len(cluster.nodes))
    first_node = connected_node(cluster, connection)

    def handle(body: Any, message: Any) -> None:
        n = body["n"]
        if handled[n] and not message.delivery_info.get("redelivered"):
            second_deliveries_not_flagged.append(n)
        handled[n] += 1
        if sum(handled.values()) == kill_at and not killed:
            killed.append(first_node)
            first_node.kill()  # the message in hand, and the prefetched ones, are not acknowledged yet
        message.ack()

    consumer = kombu.Consumer(
        connection.default_channel,
        queues=[quorum_queue],
        callbacks=[handle],
        accept=["application/json"],
        prefetch_count=prefetch,
    )
    retryable = (*connection.recoverable_connection_errors, *connection.recoverable_channel_errors)
    deadline = time.monotonic() + FAILOVER_DEADLINE
    consumer.consume()
    try:
        while len(handled) < total:
            assert time.monotonic() < deadline, f"handled {len(handled)} of {total}; failures: {failures}"
            try:
                connection.drain_events(timeout=1)
            except TimeoutError:
                continue
            except retryable as exc:
                failures.append(repr(exc))
                connection.ensure_connection(max_retries=2 * len(cluster.nodes), interval_start=0.2)
                consumer.revive(connection.default_channel)
                consumer.consume()
        now_on = connected_node(cluster, connection)
    finally:
        connection.release()
    try:
        assert killed == [first_node]
        assert now_on is not first_node
        twice = sorted(n for n, times in handled.items() if times > 1)
        sys.stderr.write(
            f"\nconsumer failover: sent {total}, handled {sum(handled.values())}, lost {total - len(handled)}, "
            f"handled twice {len(twice)} {twice}, failures: {failures}\n"
        )
        assert set(handled) == set(range(total))
        assert second_deliveries_not_flagged == []
    finally:
        first_node.restart()
        cluster.wait_until_clustered()
