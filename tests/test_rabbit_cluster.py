"""A real three-node RabbitMQ cluster (tests/support/rabbit_cluster.py): it forms, and a quorum queue on it keeps
what it confirmed when its leader dies (kombu directly: the broker's own guarantee). Then a service of the package
(its consumer and a sender in this process, quorum queues, every node's URL as the failover list) while a node is
killed hard under the publisher, killed hard under the consumer, and restarted under both: each test counts sent /
confirmed / handled / lost / handled twice (printed with ``-s``; the README's "Running in production" table comes
from them) and asserts that no confirmed message is lost.

Run alone with ``pytest -m cluster``; the cluster is started once for the module and stopped at its end; a test that
stops a node starts it again."""

from __future__ import annotations

import importlib
import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import kombu
import pytest

from container_messaging import DistributedBus, MessagingContainer
from container_messaging.consumer import RunOptions, RunResult
from container_messaging.errors import TransportError

from conftest import forget_endpoint
from support.rabbit_cluster import RabbitCluster, RabbitNode, require_rabbitmq_server

pytestmark = pytest.mark.cluster

FAILOVER_DEADLINE = 60.0  # seconds a test waits for a condition (a message confirmed, handled...) during a failover
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


# -- through the package: a service with quorum queues and the failover list, nodes killed under it ----------------

HANDLERS = """
from container_messaging import command_handler, distributed

HANDLED = []  # the seq of every command handled, in order, a second handling included
HOOKS = []  # called with each seq once it is recorded (a test kills a node from one)


class Work:
    @distributed
    @command_handler("cluster.work")
    def work(self, command: dict) -> None:
        HANDLED.append(command["seq"])
        for hook in HOOKS:
            hook(command["seq"])
"""


def failover_url(cluster: RabbitCluster, first: RabbitNode) -> str:
    """Every node's URL, ``first``'s first: the node a new connection goes to while all are up."""
    return ";".join([first.url, *(node.url for node in cluster.nodes if node is not first)])


def node_of(cluster: RabbitCluster, masked_url: str) -> RabbitNode:
    return cluster.node_on_port(int(masked_url.rsplit(":", 1)[1].strip("/")))


class ClusterService:
    """A service whose consumer and sender run in this process, on the cluster, with quorum queues."""

    def __init__(self, cluster: RabbitCluster, make_module: Callable[[str, str], str], unique: str) -> None:
        self.cluster = cluster
        self.name = f"cluster{unique}"
        self.exchange = f"test.cluster.{unique}"
        self.module_name = make_module(f"cluster_handlers_{unique}", HANDLERS)
        self.handlers = importlib.import_module(self.module_name)
        self.containers: list[MessagingContainer] = []

    def container(self, first: RabbitNode, *, consumer: bool) -> MessagingContainer:
        """The consumer's container (``consumer``: it scans the handlers) or a sender's, whose connections go to
        ``first`` while it is up."""
        container = MessagingContainer.from_dict(
            {
                "service_name": self.name if consumer else f"{self.name}sender",
                "scan": [self.module_name] if consumer else [],
                "transport": {
                    "url": failover_url(self.cluster, first),
                    "queue_type": "quorum",
                    "connect_timeout": 2,
                    "heartbeat": 10,
                    "prefetch_count": 10,
                },
                "distribution": {"exchange": self.exchange},
                "recoverability": {"immediate_retries": 0, "delayed_retries": []},
            }
        )
        self.containers.append(container)
        return container

    @property
    def handled(self) -> list[int]:
        return list(self.handlers.HANDLED)

    def remove(self) -> None:
        """Deletes the service's queues and exchange, and closes every container."""
        try:
            if self.containers:
                forget_endpoint(self.containers[0], f"distributed_{self.name}")
        finally:
            for container in self.containers:
                container.close()


@pytest.fixture
def service(cluster: RabbitCluster, make_module: Callable[[str, str], str], unique: str) -> Iterator[ClusterService]:
    """A service on the cluster; afterwards every node runs again, clustered, and the service's queues are gone."""
    created = ClusterService(cluster, make_module, unique)
    yield created
    for node in cluster.nodes:
        if not node.running:
            node.restart()
    cluster.wait_until_clustered()
    created.remove()


class Sender:
    """Sends ``cluster.work`` commands with their seq through the distributed bus; counts what was confirmed (the
    send returned), what raised, and the longest send."""

    def __init__(self, container: MessagingContainer, destination: str) -> None:
        self.bus = container.get(DistributedBus)
        self.destination = destination
        self.confirmed: list[int] = []
        self.failed: list[str] = []
        self.longest = 0.0

    def send(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            began = time.monotonic()
            try:
                self.bus.send_command(self.destination, "cluster.work", json.dumps({"seq": seq}), "application/json")
            except TransportError as exc:
                self.failed.append(f"{seq}: {exc}")
            else:
                self.confirmed.append(seq)
            self.longest = max(self.longest, time.monotonic() - began)


class RunningConsumer:
    """The service's endpoint consuming in a thread until ``stop``."""

    def __init__(self, container: MessagingContainer, name: str) -> None:
        self.endpoint = container.endpoint(name)
        self.result: RunResult | None = None
        self.thread = threading.Thread(target=self._run, name=f"consumer-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.result = self.endpoint.run(RunOptions())

    def stop(self) -> RunResult:
        self.endpoint.stop("the test is done")
        self.thread.join(60)
        assert not self.thread.is_alive(), "the consumer did not stop within 60 s"
        assert self.result is not None
        return self.result


def wait_for(what: str, condition: Callable[[], bool], timeout: float = FAILOVER_DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f} s"
        time.sleep(0.02)


def handle_everything(service: ClusterService, sender: Sender, consumer: RunningConsumer, admin: Any) -> RunResult:
    """Waits until every confirmed command was handled and the queue has nothing ready, then stops the consumer."""
    queue = f"distributed_{service.name}"
    wait_for("every confirmed command handled", lambda: set(sender.confirmed) <= set(service.handled))
    wait_for("the queue drained", lambda: admin.queue_size(queue) == 0)
    return consumer.stop()


def report(
    title: str, sender: Sender, service: ClusterService, result: RunResult, retries: list[str]
) -> dict[str, Any]:
    """The test's figures (printed: run with -s to see them; the README's table comes from them)."""
    handled = Counter(service.handled)
    figures = {
        "sent": len(sender.confirmed) + len(sender.failed),
        "confirmed": len(sender.confirmed),
        "send_errors": len(sender.failed),
        "handled": len(handled),
        "lost": len(set(sender.confirmed) - set(handled)),
        "handled_twice": sum(times - 1 for times in handled.values()),
        "redeliveries_skipped_by_deduplication": result.duplicates,
        "publish_retries": len(retries),
        "of_them_nacks": sum("basic.nack" in line for line in retries),
        "consumer_reconnects": result.reconnects,
        "longest_send_s": round(sender.longest, 2),
    }
    sys.stderr.write(f"\n[cluster] {title}: " + ", ".join(f"{k}={v}" for k, v in figures.items()) + "\n")
    return figures


def publish_retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The adapter's lines about a failed publish attempt it retries."""
    lines = [r.getMessage() for r in caplog.records if r.name == "container_messaging.transport"]
    return [line for line in lines if "), reconnecting: " in line]


def test_killing_the_publishers_node_mid_stream_loses_no_confirmed_message(
    cluster: RabbitCluster, service: ClusterService, caplog: pytest.LogCaptureFixture
) -> None:
    """Node 1 holds the publisher's connection and the quorum queue's leader; killed hard while commands are sent,
    the sender fails over (a lost connection, then nacks while the queue elects a leader, each retried), every
    command is confirmed and every confirmed command is handled (0 lost)."""
    first = cluster.nodes[0]
    caplog.set_level(logging.INFO, logger="container_messaging")
    consumer_container = service.container(first, consumer=True)
    consumer_container.setup()  # through node 1: the quorum queue's leader starts there
    sender_container = service.container(first, consumer=False)
    sender = Sender(sender_container, service.name)
    sender.send(range(1))
    assert node_of(cluster, sender_container.transport.preferred_url) is first  # type: ignore[attr-defined]

    total, kill_after = 600, 150

    def kill_mid_stream() -> None:  # beside the sending loop: the kill lands between two sends, or inside one
        wait_for(f"{kill_after} confirmed", lambda: len(sender.confirmed) >= kill_after)
        first.kill()

    killer = threading.Thread(target=kill_mid_stream, daemon=True)
    killer.start()
    sender.send(range(1, total))
    killer.join(FAILOVER_DEADLINE)
    assert not first.running, "node 1 was not killed during the test"
    now_on = node_of(cluster, sender_container.transport.preferred_url)  # type: ignore[attr-defined]
    retries = publish_retries(caplog)

    consumer = RunningConsumer(consumer_container, service.name)
    result = handle_everything(service, sender, consumer, sender_container.transport)
    figures = report("publisher's node killed", sender, service, result, retries)
    assert now_on is not first
    assert retries, "killing the publisher's node interrupted no publish: the kill did not land mid-stream"
    assert figures["lost"] == 0
    assert sender.failed == []


def test_killing_the_consumers_node_mid_stream_loses_nothing(
    cluster: RabbitCluster, service: ClusterService, caplog: pytest.LogCaptureFixture
) -> None:
    """Node 1 holds the consumer's connection and the quorum queue's leader; killed hard while the consumer handles
    a message, the consumer reconnects to another node and every command is handled (0 lost); the message in hand
    and the prefetched ones come again, and deduplication skips the one already handled."""
    first = cluster.nodes[0]
    caplog.set_level(logging.INFO, logger="container_messaging")
    consumer_container = service.container(first, consumer=True)
    consumer_container.setup()  # through node 1: the quorum queue's leader starts there
    sender_container = service.container(cluster.nodes[1], consumer=False)
    sender = Sender(sender_container, service.name)
    total, kill_at = 400, 100
    sender.send(range(total))

    def kill_while_handling(seq: int) -> None:  # in the handler: the message in hand is not acknowledged yet
        if len(service.handled) == kill_at:
            first.kill()

    service.handlers.HOOKS.append(kill_while_handling)
    consumer = RunningConsumer(consumer_container, service.name)
    wait_for("the consumer's first message", lambda: bool(service.handled))
    assert node_of(cluster, consumer_container.transport.preferred_url) is first  # type: ignore[attr-defined]
    result = handle_everything(service, sender, consumer, sender_container.transport)
    figures = report("consumer's node killed", sender, service, result, publish_retries(caplog))
    assert not first.running, "node 1 was not killed during the test"
    assert node_of(cluster, consumer_container.transport.preferred_url) is not first  # type: ignore[attr-defined]
    assert result.reconnects >= 1
    assert figures["confirmed"] == total
    assert figures["lost"] == 0


def test_restarting_the_node_of_publisher_and_consumer_mid_stream_loses_nothing(
    cluster: RabbitCluster, service: ClusterService, caplog: pytest.LogCaptureFixture
) -> None:
    """While commands are sent and handled through node 3 (which also leads the quorum queue), node 3 is shut down
    and started again: publisher and consumer move to other nodes, every confirmed command is handled (0 lost),
    and node 3 rejoins with the queue's three members online."""
    node = cluster.nodes[2]
    caplog.set_level(logging.INFO, logger="container_messaging")
    consumer_container = service.container(node, consumer=True)
    consumer_container.setup()
    sender_container = service.container(node, consumer=False)
    sender = Sender(sender_container, service.name)
    consumer = RunningConsumer(consumer_container, service.name)
    total, restart_after = 600, 150
    sending = threading.Thread(target=sender.send, args=(range(total),), daemon=True)
    sending.start()
    wait_for(f"{restart_after} handled", lambda: len(service.handled) >= restart_after)
    node.stop()
    node.restart()
    cluster.wait_until_clustered()
    sending.join(FAILOVER_DEADLINE)
    assert not sending.is_alive(), "the sender did not finish"
    result = handle_everything(service, sender, consumer, sender_container.transport)
    figures = report("node of publisher and consumer restarted", sender, service, result, publish_retries(caplog))
    wait_for_online_members(node, f"distributed_{service.name}", cluster.names)
    assert result.reconnects >= 1
    assert figures["lost"] == 0
    assert sender.failed == []
