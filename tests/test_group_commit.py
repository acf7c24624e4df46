"""Group commit in the kombu transports' publisher: who leads, what goes out together, and how a leader gathers the
senders of the previous group (on the memory transport, with the group publishing step instrumented)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from container_messaging.errors import InvalidMessageError
from container_messaging.transports._kombu_base import PublishRequest
from container_messaging.transports.base import EndpointTopology, OutboundMessage
from container_messaging.transports.memory import MemoryTransport
from container_messaging.transports.options import TransportOptions
from container_messaging.transports.rabbitmq import RabbitMqTransport

WAIT = 10.0


class _Recording(MemoryTransport):
    """The memory transport, recording each group it publishes; the first group waits for ``release`` and the
    gather window is what the test sets."""

    def __init__(self) -> None:
        super().__init__(TransportOptions(url="memory://"))
        self.groups: list[list[str]] = []
        self.release = threading.Event()
        self.window = 0.0

    def gather_window(self) -> float:
        return self.window

    def publish_group(self, group: Sequence[PublishRequest]) -> None:
        self.groups.append([request.messages[0][0].message_id for request in group])
        if len(self.groups) == 1:
            assert self.release.wait(WAIT), "the test never released the first group"
        super().publish_group(group)


@pytest.fixture
def transport() -> Iterator[_Recording]:
    MemoryTransport.reset()
    recording = _Recording()
    yield recording
    recording.release.set()
    recording.close()


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT} s: {what}")
        time.sleep(0.001)


def _send(transport: _Recording, name: str, errors: list[BaseException]) -> threading.Thread:
    """A thread sending one message called ``name`` straight to a queue."""

    def send() -> None:
        try:
            message = OutboundMessage("group.commit", b"{}", {}, "application/json", name)
            transport.send_to_queue("group.commit", message)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=send, name=name, daemon=True)  # a stuck sender must not hold up pytest
    thread.start()
    return thread


def _joined(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive(), f"{thread.name} is still sending"


def _behind_a_leader(transport: _Recording, names: list[str], errors: list[BaseException]) -> None:
    """A sender called "first" publishes a group of its own and is held there while ``names`` queue behind it; then
    it is released and every sender returns."""
    first = _send(transport, "first", errors)
    _wait_until(lambda: len(transport.groups) == 1, "the first sender publishes")
    others = [_send(transport, name, errors) for name in names]
    _wait_until(lambda: len(transport._waiting) == len(names), f"{len(names)} senders queue behind the leader")
    transport.release.set()
    _joined([first, *others])


def test_requests_queued_while_a_group_is_published_go_out_together_in_the_next_group(transport: _Recording) -> None:
    """While the leader publishes its group, five more senders queue; the first of them is handed the lead and
    publishes all five as one group, and every sender returns without error."""
    errors: list[BaseException] = []
    _behind_a_leader(transport, [f"other-{n}" for n in range(5)], errors)
    assert errors == []
    assert transport.groups[0] == ["first"]
    assert sorted(transport.groups[1]) == [f"other-{n}" for n in range(5)]
    assert len(transport.groups) == 2


def _groups_of_one_then_three(transport: _Recording, errors: list[BaseException]) -> None:
    """Publishes a group of one, then a group of three, so that the next leader gathers three."""
    _behind_a_leader(transport, [f"three-{n}" for n in range(3)], errors)
    assert [len(group) for group in transport.groups] == [1, 3]


def test_a_new_leader_waits_for_as_many_senders_as_the_previous_group_had(transport: _Recording) -> None:
    """After a group of three, a sender that finds nobody publishing gathers until two more have queued, and the
    three go out as one group (without gathering it would publish alone)."""
    errors: list[BaseException] = []
    _groups_of_one_then_three(transport, errors)
    transport.window = WAIT * 10  # only the arrivals end this gathering
    leader = _send(transport, "leader", errors)
    _wait_until(lambda: transport._gathering, "the new leader gathers")
    late = [_send(transport, f"late-{n}", errors) for n in range(2)]
    _joined([leader, *late])
    assert errors == []
    assert sorted(transport.groups[2]) == ["late-0", "late-1", "leader"]
    assert len(transport.groups) == 3


def test_a_gathering_that_ends_short_publishes_what_came_and_waits_for_no_more_next_time(
    transport: _Recording,
) -> None:
    """After a group of three, a lone sender publishes alone once the gather window passed; the next lone sender
    publishes at once even with a window far longer than the test, since the previous group had one request."""
    errors: list[BaseException] = []
    _groups_of_one_then_three(transport, errors)
    transport.window = 0.05
    _joined([_send(transport, "alone", errors)])
    assert transport.groups[2] == ["alone"]
    transport.window = WAIT * 10
    _joined([_send(transport, "alone-again", errors)])
    assert transport.groups[3] == ["alone-again"]
    assert errors == []


class _Interrupted(Exception):
    """What the test's signal handler raises in the main thread."""


def test_a_sender_interrupted_while_it_waits_leaves_the_others_going(transport: _Recording) -> None:
    """The main thread, first in line behind a leader, is interrupted by a signal while it waits: it raises, its
    message is never published, and the two senders queued behind it are still published (the lead is not handed
    to a caller that is gone)."""
    errors: list[BaseException] = []
    first = _send(transport, "first", errors)
    _wait_until(lambda: len(transport.groups) == 1, "the first sender publishes")

    def interrupt(signum: int, frame: object) -> None:
        raise _Interrupted

    def signal_once_queued() -> None:
        _wait_until(lambda: len(transport._waiting) == 1, "the main thread queues")
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        threading.Thread(target=signal_once_queued, daemon=True).start()
        message = OutboundMessage("group.commit", b"{}", {}, "application/json", "interrupted")
        with pytest.raises(_Interrupted):
            transport.send_to_queue("group.commit", message)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    others = [_send(transport, f"other-{n}", errors) for n in range(2)]
    _wait_until(lambda: len(transport._waiting) == 2, "two senders queue behind the leader")
    transport.release.set()
    _joined([first, *others])
    assert errors == []
    assert sorted(transport.groups[1]) == ["other-0", "other-1"]
    assert "interrupted" not in [name for group in transport.groups for name in group]


@pytest.mark.rabbitmq
def test_a_sender_whose_message_the_wire_cannot_carry_fails_alone_in_its_group(amqp_url: str, unique: str) -> None:
    """In one RabbitMQ group of three senders, the one whose header AMQP cannot encode gets that error and nothing
    of it is sent; the other two are confirmed and arrive."""
    transport = RabbitMqTransport(TransportOptions(url=amqp_url, confirm_publish=True))
    queue = f"group.commit.{unique}"
    topology = EndpointTopology(f"group.commit.{unique}", queue, ())
    transport.setup_endpoint(topology)
    try:
        requests = [
            PublishRequest("", [(OutboundMessage(queue, b"{}", {"n": n}, "application/json", f"m-{n}"), True)])
            for n in range(3)
        ]
        bad_header = {"a set": {1, 2}}
        requests[1] = PublishRequest("", [(OutboundMessage(queue, b"{}", bad_header, "application/json", "bad"), True)])
        transport.publish_group(requests)
        assert [request.done for request in requests] == [True, True, True]
        assert requests[0].error is None and requests[2].error is None
        assert isinstance(requests[1].error, InvalidMessageError)
        assert str(requests[1].error) == "header 'a set': AMQP cannot carry a value of type set"
        with transport.browse(queue) as deliveries:
            assert sorted(delivery.headers["n"] for delivery in deliveries) == [0, 2]
    finally:
        transport.remove_endpoint(topology)
        transport.close()
