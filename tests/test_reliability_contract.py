"""The reliability contract: retries, the dead letter, poison messages and deduplication, the same on every transport
(memory, embedded, RabbitMQ, Redis).

Every test builds the ``billing`` service on the transport under test and sends it messages (through its own
distributed bus, or raw with ``transport.publish``). Delayed retries are short (100-200 ms); the consumer runs with
``handled_message_limit`` (the number of transport messages the test expects, delayed copies included) and a generous
``execution_time_limit`` that only stops a broken run.
"""

from __future__ import annotations

import math
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from container_messaging import DistributedBus, MessagingContainer
from container_messaging.bounds import FAILURE_TEXT_LIMIT, FAILURE_TRACE_LIMIT, MAX_RETRY_NUMBER
from container_messaging.distributed.topology import PAYLOAD_TYPE, ROUTING_KEY
from container_messaging.errors import DeadLetterError
from container_messaging.messages import RETRY_NUMBER, TARGET_HANDLER, FailureHeader
from container_messaging.transports import OutboundMessage

from conftest import forget_endpoint, transport_section

HANDLERS = """
import attrs
from container_messaging import Headers, command_handler, distributed, event_handler
from container_messaging.markers import retries

CALLS = []  # (what, payload, headers) for every handler call, in order
FLAKY_FAILURES_LEFT = [2]
FIXABLE_BROKEN = [True]
UNPICKLED = []


def unpickled(tag):
    # referenced by a pickle body: if it ever runs, that body was deserialized
    UNPICKLED.append(tag)
    return tag


@attrs.frozen
class ChangeBillingDetails:
    person_id: str
    billing_details: str


class Billing:
    @distributed
    @command_handler("billing.change")
    def change(self, command: ChangeBillingDetails, headers: Headers) -> None:
        CALLS.append(("change", command, dict(headers)))

    @distributed
    @command_handler("billing.flaky")
    def flaky(self, command: dict, headers: Headers) -> None:
        CALLS.append(("flaky", command, dict(headers)))
        if FLAKY_FAILURES_LEFT[0] > 0:
            FLAKY_FAILURES_LEFT[0] -= 1
            raise RuntimeError("flaky failure")
        CALLS.append(("flaky succeeded", command, dict(headers)))

    @distributed
    @command_handler("billing.fail")
    def fail(self, command: dict, headers: Headers) -> None:
        CALLS.append(("fail", command, dict(headers)))
        raise ValueError(f"always fails: {command.get('n')}")

    @distributed
    @command_handler("billing.raw")
    def raw(self, payload, headers: Headers) -> None:  # unannotated: it would get whatever body arrives
        CALLS.append(("raw", payload, dict(headers)))

    @retries(immediate=0, delayed=[])
    @distributed
    @command_handler("billing.failFast")
    def fail_fast(self, command: dict, headers: Headers) -> None:
        CALLS.append(("fail_fast", command, dict(headers)))
        raise ValueError("fails fast")

    @distributed
    @command_handler("billing.fixable")
    def fixable(self, command: dict, headers: Headers) -> None:
        CALLS.append(("fixable", command, dict(headers)))
        if FIXABLE_BROKEN[0]:
            raise RuntimeError("broken until fixed")
        CALLS.append(("fixable succeeded", command, dict(headers)))

    @command_handler("billing.local")
    def local_only(self, command: dict) -> None:
        CALLS.append(("local_only", command, {}))


class Orders:
    @distributed
    @event_handler("orders.placed")
    def record_order(self, event: dict, headers: Headers) -> None:
        CALLS.append(("record_order", event, dict(headers)))

    @distributed
    @event_handler("orders.placed")
    def notify_order(self, event: dict, headers: Headers) -> None:
        CALLS.append(("notify_order", event, dict(headers)))
        raise RuntimeError("notification service down")


INVOICE_FAILURES_LEFT = {"mail_invoice": 1, "charge_invoice": 1}


def _fail_once(name):
    if INVOICE_FAILURES_LEFT[name] > 0:
        INVOICE_FAILURES_LEFT[name] -= 1
        raise RuntimeError(f"{name} failed")


class Invoices:
    @distributed
    @event_handler("invoices.due")
    def book_invoice(self, event: dict, headers: Headers) -> None:
        CALLS.append(("book_invoice", event, dict(headers)))

    @distributed
    @event_handler("invoices.due")
    def mail_invoice(self, event: dict, headers: Headers) -> None:
        CALLS.append(("mail_invoice", event, dict(headers)))
        _fail_once("mail_invoice")

    @distributed
    @event_handler("invoices.due")
    def charge_invoice(self, event: dict, headers: Headers) -> None:
        CALLS.append(("charge_invoice", event, dict(headers)))
        _fail_once("charge_invoice")
"""

#: Safety net for every run: a correct run stops long before, on its handled_message_limit.
TIME_LIMIT_MS = 20_000
DELAYS_USED = (100, 200)
FAILURE_HEADER_NAMES = frozenset(FailureHeader.ALL)


class Billing:
    """The ``billing`` service on the transport under test, scanning a fresh copy of the handler module."""

    def __init__(
        self, kind: str, tmp_path: Path, distribution: dict[str, str], make_module: Callable[[str, str], str]
    ) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.distribution = distribution
        self.module_name = make_module(f"reliability_{uuid.uuid4().hex[:8]}", HANDLERS)
        self.module: Any = __import__(self.module_name)
        self.containers: list[MessagingContainer] = []

    def container(self, *, setup: bool = True, **sections: Any) -> MessagingContainer:
        container = MessagingContainer.from_dict(
            {
                "service_name": "billing",
                "scan": [self.module_name],
                "transport": transport_section(self.kind, self.tmp_path),
                "distribution": self.distribution,
                **sections,
            }
        )
        self.containers.append(container)
        if setup:
            container.setup()
        return container

    def handler_name(self, qualname: str) -> str:
        return f"{self.module_name}.{qualname}"

    def calls(self, what: str) -> list[tuple[str, Any, dict[str, Any]]]:
        return [call for call in self.module.CALLS if call[0] == what]

    def close(self) -> None:
        for container in self.containers:
            _forget(container)
            container.close()


def _forget(container: MessagingContainer) -> None:
    forget_endpoint(container, container.topology.queue("billing"), DELAYS_USED)


def _delayed_pending(container: MessagingContainer) -> int:
    """How many delayed retry copies of the billing queue are waiting, wherever the transport keeps them."""
    transport: Any = container.transport
    return int(transport.waiting_for_delay(container.topology.queue("billing")))


@pytest.fixture
def billing(
    transport_kind: str, tmp_path: Path, distribution: dict[str, str], make_module: Callable[[str, str], str]
) -> Iterator[Billing]:
    built = Billing(transport_kind, tmp_path, distribution, make_module)
    yield built
    built.close()


def policy(immediate: int, delayed: list[int]) -> dict[str, Any]:
    return {"recoverability": {"immediate_retries": immediate, "delayed_retries": delayed}}


def run(container: MessagingContainer, messages: int, **options: Any) -> Any:
    """Consumes exactly ``messages`` transport messages (the time limit only stops a broken run)."""
    return container.run("billing", handled_message_limit=messages, execution_time_limit=TIME_LIMIT_MS, **options)


def send(container: MessagingContainer, routing_key: str, payload: str, metadata: dict[str, Any] | None = None) -> None:
    container.get(DistributedBus).send_command("billing", routing_key, payload, "application/json", metadata)


def command_headers(routing_key: str | None, **extra: Any) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "ecotone.distributed.payloadType": "command",
        "ecotone.distributed.targetServiceName": "billing",
    }
    if routing_key is not None:
        headers["ecotone.distributed.routingKey"] = routing_key
    headers.update(extra)
    return headers


def publish_raw(
    container: MessagingContainer,
    headers: dict[str, Any],
    body: bytes,
    content_type: str = "application/json",
    message_id: str | None = None,
) -> None:
    message_id = message_id if message_id is not None else str(headers.get("id", uuid.uuid4()))
    container.transport.publish(
        container.topology.exchange,
        OutboundMessage("billing", body, headers, content_type, message_id),
        mandatory=True,
    )


def run_bounded(container: MessagingContainer, messages: int, seconds: float = 60) -> Any:
    """``run`` in a thread: a consumer stuck on a message (a CPU loop) fails the test instead of hanging it."""
    outcome: dict[str, Any] = {}

    def consume() -> None:
        try:
            outcome["result"] = run(container, messages)
        except BaseException as exc:  # handed to the test thread below
            outcome["error"] = exc

    thread = threading.Thread(target=consume, name="bounded-consumer", daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the consumer did not finish within {seconds} s: it is stuck"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def dead_letter_ids(container: MessagingContainer) -> list[str]:
    return [entry.message_id for entry in container.dead_letter().list()]


# -- retries ---------------------------------------------------------------------------------------------------------


def test_handler_succeeding_within_its_immediate_retries_is_handled_once(billing: Billing) -> None:
    """A handler that fails twice then succeeds, with two immediate retries, handles the message once and nothing
    reaches the dead letter."""
    container = billing.container(**policy(2, []))
    send(container, "billing.flaky", '{"n": 1}')

    result = run(container, 1)

    assert (result.handled, result.failed) == (1, 0)
    assert len(billing.calls("flaky")) == 3
    assert len(billing.calls("flaky succeeded")) == 1
    assert container.dead_letter().list() == []


def test_always_failing_handler_runs_every_attempt_then_reaches_the_dead_letter(billing: Billing) -> None:
    """With immediate_retries=1 and delayed_retries=[100, 200] an always failing handler runs (1+1)*(1+2)=6 times,
    the delayed copies carrying ecotone_retry_number 1 then 2, the run counts it retried twice and failed once, and
    the dead letter keeps the message with every detail of its failure."""
    container = billing.container(**policy(1, [100, 200]))
    send(container, "billing.fail", '{"n": 7}', {"tenant": "acme"})
    started = time.time()

    result = run(container, 3)

    assert (result.handled, result.retried, result.failed) == (0, 2, 1)
    calls = billing.calls("fail")
    assert len(calls) == 6
    assert [headers.get(RETRY_NUMBER) for _, _, headers in calls] == [None, None, 1, 1, 2, 2]
    original = calls[0][2]
    [entry] = container.dead_letter().list()
    assert entry.message_id == original["id"]
    assert entry.reason == "retries exhausted"
    assert entry.attempts == 6
    assert entry.error_class == "builtins.ValueError"
    assert entry.error_message == "always fails: 7"
    assert entry.endpoint == "billing"
    assert entry.handler == billing.handler_name("Billing.fail")
    assert entry.trace is not None and "ValueError: always fails: 7" in entry.trace
    assert entry.failed_at is not None and started - 1 <= entry.failed_at <= time.time() + 1
    assert entry.routing_key == "billing.fail"
    assert entry.payload_type == "command"
    assert entry.body == b'{"n": 7}'
    assert entry.headers["tenant"] == "acme"
    assert entry.headers["correlationId"] == original["correlationId"]
    assert not FAILURE_HEADER_NAMES & set(entry.headers)
    queue = container.topology.queue("billing")
    assert container.transport.queue_size(queue) == 0
    assert _delayed_pending(container) == 0


def test_retries_marker_overrides_the_configured_policy(billing: Billing) -> None:
    """``@retries(immediate=0, delayed=[])`` sends its handler's failure to the dead letter after one attempt, while
    a handler without it gets the configured (1+2)*(1+1) attempts."""
    container = billing.container(**policy(2, [100]))
    send(container, "billing.failFast", "{}")
    send(container, "billing.fail", '{"n": 1}')

    result = run(container, 3)

    assert (result.retried, result.failed) == (1, 2)
    assert len(billing.calls("fail_fast")) == 1
    assert len(billing.calls("fail")) == 6
    entries = {entry.handler: entry for entry in container.dead_letter().list()}
    fast = entries[billing.handler_name("Billing.fail_fast")]
    assert (fast.reason, fast.attempts) == ("retries exhausted", 1)
    assert entries[billing.handler_name("Billing.fail")].attempts == 6


# -- the dead letter -------------------------------------------------------------------------------------------------


def test_replayed_message_is_handled_with_its_original_identity(billing: Billing) -> None:
    """A dead-lettered message replayed after the handler is fixed is handled, keeps its id, correlationId and user
    headers, carries no failure.* or retry header, and leaves the dead letter empty."""
    container = billing.container(**policy(0, [100]))
    send(container, "billing.fixable", '{"n": 1}', {"tenant": "acme"})
    first = run(container, 2)
    assert (first.retried, first.failed) == (1, 1)
    original = billing.calls("fixable")[0][2]
    assert dead_letter_ids(container) == [original["id"]]

    billing.module.FIXABLE_BROKEN[0] = False
    assert container.dead_letter().replay(original["id"]) == 1
    result = run(container, 1)

    assert (result.handled, result.failed) == (1, 0)
    [(_, payload, headers)] = billing.calls("fixable succeeded")
    assert payload == {"n": 1}
    assert headers["id"] == original["id"]
    assert headers["correlationId"] == original["correlationId"]
    assert headers["tenant"] == "acme"
    assert not {key for key in headers if key.startswith("failure.")}
    assert RETRY_NUMBER not in headers
    assert container.dead_letter().list() == []


def test_dead_letter_get_delete_and_replay_all(billing: Billing) -> None:
    """get returns a message's entries, delete removes them for good, replay_all sends every remaining entry back to
    the endpoint's queue, and an unknown id raises DeadLetterError naming the id and the endpoint."""
    container = billing.container(**policy(0, []))
    send(container, "billing.fixable", '{"n": 1}')
    send(container, "billing.fixable", '{"n": 2}')
    assert run(container, 2).failed == 2
    first, second = (headers["id"] for _, _, headers in billing.calls("fixable"))
    dead_letter = container.dead_letter()

    [entry] = dead_letter.get(first)
    assert (entry.message_id, entry.body) == (first, b'{"n": 1}')
    assert dead_letter.delete(first) == 1
    assert dead_letter_ids(container) == [second]
    unknown = f"^no dead letter entry with message id '{first}' for endpoint 'billing'$"
    with pytest.raises(DeadLetterError, match=unknown):
        dead_letter.get(first)
    with pytest.raises(DeadLetterError, match=unknown):
        dead_letter.replay(first)
    with pytest.raises(DeadLetterError, match=unknown):
        dead_letter.delete(first)

    billing.module.FIXABLE_BROKEN[0] = False
    assert dead_letter.replay_all() == 1
    assert dead_letter.list() == []
    assert container.transport.queue_size(container.topology.queue("billing")) == 1
    assert run(container, 1).handled == 1
    assert [headers["id"] for _, _, headers in billing.calls("fixable succeeded")] == [second]


def test_dead_letter_of_an_endpoint_never_set_up_is_empty(billing: Billing) -> None:
    """The dead letter of an endpoint whose queues were never declared lists no entry and replays nothing."""
    container = billing.container(setup=False)
    assert container.dead_letter().list() == []
    assert container.dead_letter().replay_all() == 0


# -- poison ----------------------------------------------------------------------------------------------------------


class _PickledCall:
    """Pickles to a call of the handler module's ``unpickled``: unpickling the body would record it."""

    def __init__(self, function: Any) -> None:
        self.function = function

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return self.function, ("deserialized",)


def test_poison_messages_go_straight_to_the_dead_letter_and_the_consumer_goes_on(billing: Billing) -> None:
    """Poison (malformed JSON, a missing field, a refused content type, an unknown payloadType, no routing key, no
    distributed handler, another service's command, a body over max_message_size) reaches the dead letter after one
    attempt without running the handler or any retry, and the good message after them is handled in the same run."""
    container = billing.container(**policy(2, [100]), consumer={"max_message_size": 1024})
    pickled = pickle.dumps(_PickledCall(billing.module.unpickled))
    change = billing.handler_name("Billing.change")
    too_large = b'{"personId": "1", "billingDetails": "%s"}' % (b"x" * 2000)
    # label: (headers, body, content type, error class, text in the error message, handler)
    cases: dict[str, tuple[dict[str, Any], bytes, str, str, str, str]] = {
        "malformed JSON": (
            command_headers("billing.change"),
            b'{"personId": ',
            "application/json",
            "container_messaging.errors.ConversionError",
            "invalid JSON",
            change,
        ),
        "missing field": (
            command_headers("billing.change"),
            b'{"billingDetails": "x"}',
            "application/json",
            "container_messaging.errors.ConversionError",
            "$.personId",
            change,
        ),
        "refused content type": (
            command_headers("billing.change"),
            pickled,
            "application/x-python-serialize",
            "container_messaging.errors.UnsupportedMediaTypeError",
            "application/x-python-serialize",
            change,
        ),
        "unknown payloadType": (
            command_headers("billing.change", **{"ecotone.distributed.payloadType": "query"}),
            b"{}",
            "application/json",
            "container_messaging.errors.DistributionError",
            "'query'",
            "routing",
        ),
        "no routing key": (
            command_headers(None),
            b"{}",
            "application/json",
            "container_messaging.errors.DistributionError",
            "ecotone.distributed.routingKey",
            "routing",
        ),
        "no distributed handler": (
            command_headers("billing.local"),
            b"{}",
            "application/json",
            "container_messaging.errors.DistributionError",
            "There is no Distributed Command Handler registered with routing key: billing.local",
            "routing",
        ),
        "another service's command": (
            command_headers("billing.change", **{"ecotone.distributed.targetServiceName": "shipping"}),
            b'{"personId": "1", "billingDetails": "x"}',
            "application/json",
            "container_messaging.errors.DistributionError",
            "'shipping'",
            "routing",
        ),
        "too large": (
            command_headers("billing.change"),
            too_large,
            "application/json",
            "container_messaging.errors.MessageTooLargeError",
            "max_message_size",
            "routing",
        ),
    }
    for headers, body, content_type, *_ in cases.values():
        publish_raw(container, headers, body, content_type)
    good = command_headers("billing.change")
    publish_raw(container, good, b'{"personId": "1", "billingDetails": "x"}')

    result = run(container, len(cases) + 1)

    assert (result.handled, result.failed) == (1, len(cases))
    assert [headers["id"] for _, _, headers in billing.calls("change")] == [good["id"]]
    assert billing.calls("local_only") == []
    assert billing.module.UNPICKLED == []
    entries = {entry.message_id: entry for entry in container.dead_letter().list()}
    found = {}
    for label, (headers, body, content_type, error_class, text, handler) in cases.items():
        entry = entries[headers["id"]]
        found[label] = (entry.reason, entry.attempts, entry.error_class, text in (entry.error_message or ""))
        assert (entry.handler, entry.body, entry.content_type) == (handler, body, content_type), label
    assert found == {
        label: ("poison message", 1, error_class, True) for label, (_, _, _, error_class, _, _) in cases.items()
    }
    assert len(entries) == len(cases)
    assert container.transport.queue_size(container.topology.queue("billing")) == 0
    assert _delayed_pending(container) == 0


# -- several handlers ------------------------------------------------------------------------------------------------


def test_failing_event_handler_is_retried_alone(billing: Billing) -> None:
    """When one of two distributed handlers of an event fails, the other runs once only, the retry copy is addressed
    to the failing handler alone, and its dead letter entry names that handler."""
    container = billing.container(**policy(0, [100]))
    container.get(DistributedBus).publish_event("orders.placed", '{"orderId": "o-1"}', "application/json")

    result = run(container, 2)

    assert (result.handled, result.retried, result.failed) == (0, 1, 1)
    notify = billing.handler_name("Orders.notify_order")
    assert len(billing.calls("record_order")) == 1
    [first, retry] = [headers for _, _, headers in billing.calls("notify_order")]
    assert TARGET_HANDLER not in first
    assert (retry[TARGET_HANDLER], retry[RETRY_NUMBER]) == (notify, 1)
    [entry] = container.dead_letter().list()
    assert entry.handler == notify
    assert entry.headers[TARGET_HANDLER] == notify
    assert (entry.reason, entry.attempts, entry.payload_type) == ("retries exhausted", 2, "event")


DEDUP_STORES = [
    pytest.param("none", id="store-none"),
    pytest.param("sqlite", id="sqlite-store"),
]


def _dedup_section(billing: Billing, store: str) -> dict[str, Any]:
    if store == "sqlite":
        return {"deduplication": {"store": f"sqlite:///{billing.tmp_path / 'dedup.sqlite3'}"}}
    return {"deduplication": {"store": store}}


@pytest.mark.parametrize("store", DEDUP_STORES)
def test_retry_copies_of_two_failed_event_handlers_each_run_their_handler(billing: Billing, store: str) -> None:
    """When two handlers of one event fail once, each gets its own retry copy and each runs again and succeeds,
    whatever the deduplication store; the handler that succeeded at first does not run again."""
    container = billing.container(**policy(0, [100]), **_dedup_section(billing, store))
    container.get(DistributedBus).publish_event("invoices.due", '{"invoiceId": "i-1"}', "application/json")

    result = run(container, 3)

    assert (result.retried, result.failed, result.handled, result.duplicates) == (1, 0, 2, 0)
    counts = {name: len(billing.calls(name)) for name in ("book_invoice", "mail_invoice", "charge_invoice")}
    assert counts == {"book_invoice": 1, "mail_invoice": 2, "charge_invoice": 2}
    assert container.dead_letter().list() == []


@pytest.mark.parametrize("store", DEDUP_STORES)
def test_replaying_an_event_runs_each_failed_handler_once_more(billing: Billing, store: str) -> None:
    """An event whose two handlers failed has one dead letter entry per handler under the event's id; replaying that
    id runs each failed handler once more (and not the one that succeeded), whatever the deduplication store."""
    container = billing.container(**policy(0, []), **_dedup_section(billing, store))
    container.get(DistributedBus).publish_event("invoices.due", '{"invoiceId": "i-1"}', "application/json")
    assert run(container, 1).failed == 1
    [(_, _, headers)] = billing.calls("book_invoice")
    entries = container.dead_letter().get(headers["id"])
    assert sorted(entry.handler or "" for entry in entries) == [
        billing.handler_name("Invoices.charge_invoice"),
        billing.handler_name("Invoices.mail_invoice"),
    ]

    assert container.dead_letter().replay(headers["id"]) == 2
    result = run(container, 2)

    assert (result.handled, result.failed, result.duplicates) == (2, 0, 0)
    counts = {name: len(billing.calls(name)) for name in ("book_invoice", "mail_invoice", "charge_invoice")}
    assert counts == {"book_invoice": 1, "mail_invoice": 2, "charge_invoice": 2}
    assert container.dead_letter().list() == []


# -- deduplication ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("store", "handled", "duplicates"),
    [
        pytest.param("default", 1, 1, id="memory-store-by-default"),
        pytest.param("sqlite", 1, 1, id="sqlite-store"),
        pytest.param("none", 2, 0, id="store-none"),
    ],
)
def test_message_delivered_twice_is_handled_once_unless_deduplication_is_off(
    billing: Billing, store: str, handled: int, duplicates: int
) -> None:
    """The same message id delivered twice is handled once and counted as a duplicate with the default memory store
    (and with a SQLite store), and handled twice with ``store: none``."""
    sections = {} if store == "default" else _dedup_section(billing, store)
    container = billing.container(**policy(0, []), **sections)
    headers = command_headers("billing.change")
    for _ in range(2):
        publish_raw(container, headers, b'{"personId": "1", "billingDetails": "x"}')

    result = run(container, 2)

    assert (result.handled, result.duplicates, result.failed) == (handled, duplicates, 0)
    assert len(billing.calls("change")) == handled


# -- stop_on_failure -------------------------------------------------------------------------------------------------


def test_stop_on_failure_leaves_the_failing_message_on_its_queue(billing: Billing) -> None:
    """With stop_on_failure a message still failing after its immediate retries stays on its queue as it was: no
    delayed retry copy, no dead letter entry."""
    container = billing.container(**policy(1, [100]))
    send(container, "billing.fail", '{"n": 1}')

    result = run(container, 1, stop_on_failure=True)

    assert (result.handled, result.failed) == (0, 1)
    assert "stop_on_failure" in result.stop_reason
    calls = billing.calls("fail")
    assert len(calls) == 2
    with container.transport.browse(container.topology.queue("billing")) as deliveries:
        assert [(d.headers["id"], d.headers.get(RETRY_NUMBER)) for d in deliveries] == [(calls[0][2]["id"], None)]
    assert container.dead_letter().list() == []
    assert _delayed_pending(container) == 0


def test_an_unreachable_deduplication_store_does_not_stop_handling(tmp_path: Path, make_module: Any) -> None:
    """With the deduplication store down (Redis on a closed port) messages are still handled and acknowledged once
    each, without redelivery loops."""
    module = make_module(
        f"dedupdown_{uuid.uuid4().hex[:8]}",
        """
        from container_messaging import command_handler, distributed
        HANDLED = []
        class Billing:
            @distributed
            @command_handler("billing.change")
            def change(self, command: dict) -> None:
                HANDLED.append(command["n"])
        """,
    )
    config = {
        "service_name": "billing",
        "scan": [module],
        "transport": {"url": "memory://"},
        "deduplication": {"store": "redis://:s3cret@127.0.0.1:1/0"},
    }
    with MessagingContainer.from_dict(config) as container:
        container.setup()
        for n in range(3):
            container.get(DistributedBus).send_command("billing", "billing.change", f'{{"n": {n}}}', "application/json")
        result = container.run("billing", finish_when_no_messages=True)
        assert (result.handled, result.failed, result.reconnects) == (3, 0, 0)
        assert __import__(module).HANDLED == [0, 1, 2]
        assert container.transport.queue_size(container.topology.queue("billing")) == 0


def test_retry_copy_for_a_handler_the_service_no_longer_has_goes_to_the_dead_letter(billing: Billing) -> None:
    """An event copy addressed (header container_messaging.handler) to a handler this service does not have is not
    dropped: it goes to the dead letter with an error naming that handler."""
    container = billing.container(**policy(0, []))
    headers = {
        "id": str(uuid.uuid4()),
        "ecotone.distributed.payloadType": "event",
        "ecotone.distributed.routingKey": "orders.placed",
        TARGET_HANDLER: "gone.Handler.removed_in_the_last_deploy",
    }
    publish_raw(container, headers, b'{"orderId": "o-1"}')
    result = run(container, 1)
    assert (result.handled, result.failed) == (0, 1)
    assert billing.calls("record_order") == [] and billing.calls("notify_order") == []
    [entry] = container.dead_letter().list()
    assert entry.message_id == headers["id"]
    assert "gone.Handler.removed_in_the_last_deploy" in (entry.error_message or "")
    assert entry.reason == "poison message"


# -- hostile input ---------------------------------------------------------------------------------------------------

HOSTILE_RETRY_NUMBERS: dict[str, Any] = {
    # not on RabbitMQ, whose broker refuses an infinite double (INTERNAL_ERROR), nor on Redis, whose JSON has none
    "Infinity": math.inf,
    "Infinity text": "Infinity",
    "2**62": 2**62,
    "text": "abc",
    "negative": -1,
    "negative text": "-1",
    "1e308": 1e308,
    "nested": {"a": [1, {"b": 2}]},
    "list": [1, 2],
    "bool": True,
    "above the maximum": MAX_RETRY_NUMBER + 1,
}


def test_hostile_retry_numbers_make_the_message_poison_and_the_consumer_goes_on(billing: Billing) -> None:
    """A command whose ecotone_retry_number is not a whole number from 0 to MAX_RETRY_NUMBER (Infinity, 2**62, text,
    -1, 1e308, nested structures, ...) goes to the dead letter as poison, naming the header, without running its
    (failing) handler, raising out of the consumer or looping; the good message behind is handled."""
    container = billing.container(**policy(1, [100]))
    hostile = {
        k: v for k, v in HOSTILE_RETRY_NUMBERS.items() if not (billing.kind in ("rabbitmq", "redis") and v == math.inf)
    }
    sent = {}
    for label, value in hostile.items():
        sent[label] = command_headers("billing.fail", **{RETRY_NUMBER: value})
        publish_raw(container, sent[label], b'{"n": 1}')
    good = command_headers("billing.change")
    publish_raw(container, good, b'{"personId": "1", "billingDetails": "x"}')

    result = run_bounded(container, len(sent) + 1)

    assert (result.handled, result.failed, result.retried) == (1, len(sent), 0)
    assert billing.calls("fail") == []
    assert [headers["id"] for _, _, headers in billing.calls("change")] == [good["id"]]
    entries = {entry.message_id: entry for entry in container.dead_letter().list()}
    found = {
        label: (
            entries[headers["id"]].reason,
            entries[headers["id"]].attempts,
            entries[headers["id"]].error_class,
            RETRY_NUMBER in (entries[headers["id"]].error_message or ""),
        )
        for label, headers in sent.items()
    }
    expected = ("poison message", 1, "container_messaging.errors.DistributionError", True)
    assert found == dict.fromkeys(hostile, expected)


def test_a_wire_message_claiming_the_in_process_media_type_is_refused(billing: Billing) -> None:
    """A message claiming application/x-python-object (in its contentType header, or only as the transport's
    content type) never reaches a handler, not even an unannotated one: it goes to the dead letter as poison, the
    error saying that media type is in-process only."""
    container = billing.container(**policy(2, [100]))
    by_header = command_headers("billing.raw", contentType="application/x-python-object")
    by_property = command_headers("billing.raw")
    publish_raw(container, by_header, b"\x80\x04K\x01.", "application/json")
    publish_raw(container, by_property, b"\x80\x04K\x01.", "application/x-python-object")
    good = command_headers("billing.raw")
    publish_raw(container, good, b'{"n": 1}')

    result = run_bounded(container, 3)

    assert (result.handled, result.failed) == (1, 2)
    assert [headers["id"] for _, _, headers in billing.calls("raw")] == [good["id"]]
    entries = {entry.message_id: entry for entry in container.dead_letter().list()}
    for refused in (by_header, by_property):
        entry = entries[refused["id"]]
        assert (entry.reason, entry.attempts) == ("poison message", 1)
        assert entry.error_class == "container_messaging.errors.UnsupportedMediaTypeError"
        assert "'application/x-python-object': that media type is in-process only" in (entry.error_message or "")
    assert len(entries) == 2


LONG_HEADERS = {
    "routing key": {ROUTING_KEY: "billing." + "k" * 100_000},
    "id": {"id": "i" * 100_000, PAYLOAD_TYPE: "query"},
}


@pytest.mark.parametrize("transport_kind", ["rabbitmq"])
@pytest.mark.parametrize("long_header", list(LONG_HEADERS))
def test_a_100_kb_routing_key_or_id_is_not_repeated_in_the_dead_letter_copy(billing: Billing, long_header: str) -> None:
    """On RabbitMQ (frames of at most 131,072 bytes) a poison command with a 100 KB routing key (or id, quoted by
    its error) reaches the dead letter at once, the original header kept and every failure header bounded, and the
    good command behind it is handled in the same run without a reconnect."""
    container = billing.container(**policy(0, []))
    hostile = command_headers("billing.change", **LONG_HEADERS[long_header])
    publish_raw(container, hostile, b"{}", message_id="hostile")
    good = command_headers("billing.change")
    publish_raw(container, good, b'{"personId": "1", "billingDetails": "x"}')

    result = run_bounded(container, 2)

    assert (result.handled, result.failed, result.reconnects) == (1, 1, 0)
    assert [headers["id"] for _, _, headers in billing.calls("change")] == [good["id"]]
    [entry] = container.dead_letter().list()
    name, value = next(iter(LONG_HEADERS[long_header].items()))
    assert entry.headers[name] == value
    assert entry.reason == "poison message"
    assert entry.error_message is not None and entry.trace is not None
    assert len(entry.error_message) <= FAILURE_TEXT_LIMIT and len(entry.trace) <= FAILURE_TRACE_LIMIT
    assert value[10:100] in entry.error_message  # named, then cut
    assert value not in entry.error_message


@pytest.mark.parametrize("transport_kind", ["rabbitmq"])
def test_a_dead_letter_copy_the_broker_refuses_goes_out_reduced_and_the_queue_moves_on(billing: Billing) -> None:
    """On RabbitMQ a failed command whose headers (a 130,000-character one) fit a frame but whose dead letter copy
    with the failure headers does not: the broker refuses the copy and closes the connection, the consumer
    reconnects, and on redelivery the copy goes out reduced (body and essential headers only), so the good command
    behind it is handled in the same run."""
    container = billing.container(**policy(0, []))
    hostile = command_headers("billing.failFast", note="n" * 130_000)
    publish_raw(container, hostile, b'{"n": 1}')
    good = command_headers("billing.change")
    publish_raw(container, good, b'{"personId": "1", "billingDetails": "x"}')

    result = run_bounded(container, 2)

    assert (result.handled, result.failed, result.reconnects) == (1, 1, 1)
    assert len(billing.calls("fail_fast")) == 2  # once before the refused copy, once on redelivery
    assert [headers["id"] for _, _, headers in billing.calls("change")] == [good["id"]]
    [entry] = container.dead_letter().list()
    assert (entry.message_id, entry.body, entry.routing_key) == (hostile["id"], b'{"n": 1}', "billing.failFast")
    assert entry.reason is not None and entry.reason.startswith("retries exhausted; copy reduced to its essential")
    assert (entry.error_message, entry.handler) == ("fails fast", billing.handler_name("Billing.fail_fast"))
    assert "note" not in entry.headers
    assert container.transport.queue_size(container.topology.queue("billing")) == 0
