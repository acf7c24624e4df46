"""The endpoint consumer as a user sees it: run options, the start banner and the stop line, one log line per
message, attempts counted overall, signals, waiting for the broker and the memory limit; and the pieces it is made
of (recoverability's decisions, inbound headers, bounds), each checked alone."""

from __future__ import annotations

import logging
import math
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from container_messaging import DistributedBus, MessagingContainer, RunOptions, RunResult
from container_messaging.bounds import FAILURE_TEXT_LIMIT, FAILURE_TRACE_LIMIT, shown, truncated
from container_messaging.cli import EXIT_BROKER, main
from container_messaging.distributed.dispatcher import Subscription, inbound_message
from container_messaging.errors import BrokerRefusedError, ConfigurationError, TransportError
from container_messaging.markers import RetryPolicy
from container_messaging.messages import RETRY_NUMBER, TARGET_HANDLER, FailureHeader
from container_messaging.recoverability import MoveToDeadLetter, Recoverability, RetryLater, RetryNow

HANDLERS = """
from container_messaging import Headers, command_handler, distributed, event_handler, service_activator

HANDLED = []
SIGNALS = []


class Billing:
    @distributed
    @command_handler("billing.change")
    def change(self, command: dict) -> None:
        HANDLED.append(command)

    @distributed
    @command_handler("billing.fail")
    def fail(self, command: dict) -> None:
        raise RuntimeError("billing is down")

    @distributed
    @command_handler("billing.huge")
    def huge(self, command: dict) -> None:
        raise RuntimeError("x" * 1_000_000)

    @distributed
    @command_handler("billing.interrupted")
    def interrupted(self, command: dict) -> None:
        import os, signal
        for _ in range(2):
            SIGNALS.append("sent")
            os.kill(os.getpid(), signal.SIGINT)
        HANDLED.append(command)

    @distributed
    @event_handler("orders.*")
    def on_order(self, event: dict) -> None:
        HANDLED.append(event)

    @distributed
    @service_activator("billing.inbox")
    def inbox(self, payload: str) -> None:
        HANDLED.append(payload)
"""

OUTCOME = re.compile(r"endpoint 'billing': (\S+) \(message '[^']+'\) -> (\S+): (.+) in \d+\.\d ms$")


class Service:
    """The ``billing`` service on the memory transport, scanning a fresh copy of :data:`HANDLERS`."""

    def __init__(self, make_module: Callable[[str, str], str], tmp_path: Path) -> None:
        self.module_name = make_module(f"consumer_{uuid.uuid4().hex[:8]}", HANDLERS)
        self.module: Any = __import__(self.module_name)
        self.tmp_path = tmp_path

    def config(self, url: str = "memory://", **sections: Any) -> dict[str, Any]:
        return {"service_name": "billing", "scan": [self.module_name], "transport": {"url": url}, **sections}

    def container(self, url: str = "memory://", **sections: Any) -> MessagingContainer:
        container = MessagingContainer.from_dict(self.config(url, **sections))
        return container

    def config_file(self, url: str = "memory://") -> Path:
        path = self.tmp_path / "billing.yaml"
        path.write_text(
            f"service_name: billing\nscan: [{self.module_name}]\ntransport:\n  url: {url!r}\n"
            "recoverability:\n  immediate_retries: 0\n  delayed_retries: []\n",
            encoding="utf-8",
        )
        return path

    def handler(self, qualname: str) -> str:
        return f"{self.module_name}.{qualname}"


@pytest.fixture
def service(make_module: Callable[[str, str], str], tmp_path: Path) -> Service:
    return Service(make_module, tmp_path)


@pytest.fixture
def container(service: Service) -> Iterator[MessagingContainer]:
    with service.container(recoverability={"immediate_retries": 0, "delayed_retries": []}) as built:
        built.setup()
        yield built


def send(container: MessagingContainer, key: str, payload: str = "{}") -> None:
    container.get(DistributedBus).send_command("billing", key, payload, "application/json")


def outcome_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, str]]:
    found = []
    for record in caplog.records:
        match = OUTCOME.match(record.getMessage())
        if match is not None and record.levelno == logging.INFO:
            found.append((match.group(1), match.group(2), match.group(3)))
    return found


# -- options ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("handled_message_limit", 0),
        ("handled_message_limit", "5"),
        ("handled_message_limit", True),
        ("execution_time_limit", -1),
        ("execution_time_limit", 2.5),
        ("memory_limit", 0),
        ("wait_for_broker", 0),
        ("wait_for_broker", -3.0),
        ("wait_for_broker", math.inf),
        ("wait_for_broker", math.nan),
        ("wait_for_broker", "10"),
    ],
)
def test_a_bad_run_option_is_a_configuration_error_naming_it(option: str, value: object) -> None:
    """A run option that is not a positive number raises ConfigurationError naming the option and the value."""
    with pytest.raises(
        ConfigurationError, match=rf"^run option {option} must be a positive .*, got {re.escape(repr(value))}$"
    ):
        RunOptions(**{option: value})


def test_the_cli_refuses_a_bad_wait_for_broker_with_exit_code_2(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --wait-for-broker 0` exits 2 with one error line naming the option."""
    code = main(["--config", str(service.config_file()), "run", "billing", "--wait-for-broker", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert (
        err == "container-messaging: error: run option wait_for_broker must be a positive number of seconds, got 0.0\n"
    )


# -- what a run says --------------------------------------------------------------------------------------------------


def test_description_names_endpoint_queue_masked_broker_handlers_keys_concurrency_and_limits(service: Service) -> None:
    """The description of a run names the endpoint, its queues, the broker without its password, each distributed
    handler with its routing key or channel, concurrency 1 and the limits; its str is the multi-line banner."""
    container = service.container("pyamqp://billing:s3cret-pw@127.0.0.1:5672//")
    options = RunOptions(handled_message_limit=10, memory_limit=300, stop_on_failure=True)

    description = container.endpoint("billing").description(options)

    assert (description.endpoint, description.queue, description.dead_letter_queue) == (
        "billing",
        "distributed_billing",
        "distributed_billing.dead_letter",
    )
    assert description.broker == "pyamqp://billing:***@127.0.0.1:5672//"
    assert set(description.subscriptions) == {
        Subscription("command", "billing.change", service.handler("Billing.change")),
        Subscription("command", "billing.fail", service.handler("Billing.fail")),
        Subscription("command", "billing.huge", service.handler("Billing.huge")),
        Subscription("command", "billing.interrupted", service.handler("Billing.interrupted")),
        Subscription("event", "orders.*", service.handler("Billing.on_order")),
        Subscription("service_activator", "billing.inbox", service.handler("Billing.inbox")),
    }
    assert description.concurrency == 1
    assert description.limits == ("10 messages", "300 MB of memory", "stop on failure")
    banner = str(description)
    assert "s3cret-pw" not in banner
    lines = banner.splitlines()
    assert lines[0] == "billing: consuming distributed_billing on pyamqp://billing:***@127.0.0.1:5672//"
    assert "  concurrency  1" in lines
    assert "  limits       10 messages, 300 MB of memory, stop on failure" in lines
    assert f"  handlers     command billing.change -> {service.handler('Billing.change')}" in lines
    assert f"               event orders.* -> {service.handler('Billing.on_order')}" in lines


def test_stop_line_has_the_counts_and_the_reason() -> None:
    """RunResult.summary() is one line with handled and failed, the non-zero other counts, and the stop reason."""
    assert RunResult("billing", 3, 0, "no more messages").summary() == "billing: handled 3, failed 0 (no more messages)"
    assert (
        RunResult("billing", 3, 1, "signal SIGTERM", duplicates=2, reconnects=1, retried=4).summary()
        == "billing: handled 3, failed 1, retried 4, duplicates 2, reconnects 1 (signal SIGTERM)"
    )


def test_cli_run_prints_the_banner_before_and_the_stop_line_after_without_verbose(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` without -v prints the start banner (on stderr) before consuming and the stop line (on stdout) after."""
    config = service.config_file()
    with service.container() as sender:
        sender.setup()
        send(sender, "billing.change", '{"n": 1}')
        send(sender, "billing.fail")

        code = main(["--config", str(config), "run", "billing", "--finish-when-no-messages"])

    out, err = capsys.readouterr()
    assert code == 0
    assert out == "billing: handled 1, failed 1 (no more messages)\n"
    assert err.startswith("billing: consuming distributed_billing on memory://\n")
    assert "  limits       stop when no messages\n" in err
    assert f"command billing.change -> {service.handler('Billing.change')}" in err


def test_each_message_gets_one_info_line_with_key_handler_outcome_and_duration(
    container: MessagingContainer, service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """At INFO the consumer logs exactly one line per message: routing key, handler, outcome and duration in ms."""
    send(container, "billing.change", '{"n": 1}')
    send(container, "billing.fail")
    container.get(DistributedBus).publish_event("orders.placed", '{"n": 2}')
    container.get(DistributedBus).publish_event("other.thing", '{"n": 3}')  # bound to nothing here: never arrives
    send(container, "billing.unknown")

    with caplog.at_level(logging.INFO, logger="container_messaging"):
        result = container.run("billing", finish_when_no_messages=True)

    assert (result.handled, result.failed) == (2, 2)
    assert outcome_lines(caplog) == [
        ("billing.change", service.handler("Billing.change"), "handled"),
        ("billing.fail", service.handler("Billing.fail"), "failed: dead-lettered"),
        ("orders.placed", service.handler("Billing.on_order"), "handled"),
        ("billing.unknown", "routing", "failed: dead-lettered"),
    ]


def test_retry_lines_count_attempts_overall_and_a_failing_message_counts_once_as_failed(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """With 1 immediate retry and one delay, the log numbers the attempts 1 to 4 of 4 across the delayed retry,
    the dead letter says 4 attempts, and the run counts the message once as failed (and its retry copy as retried)."""
    with service.container(recoverability={"immediate_retries": 1, "delayed_retries": [100]}) as container:
        container.setup()
        send(container, "billing.fail")
        with caplog.at_level(logging.INFO, logger="container_messaging"):
            result = container.run("billing", handled_message_limit=2, execution_time_limit=20_000)
        [entry] = container.dead_letter().list()

    attempts = [
        re.search(r"attempt (\d+ of \d+): RuntimeError: billing is down; (.*)$", record.getMessage())
        for record in caplog.records
    ]
    assert [(m.group(1), m.group(2)) for m in attempts if m is not None] == [
        ("1 of 4", "retrying at once"),
        ("2 of 4", "retrying in 100 ms (delayed retry 1 of 1)"),
        ("3 of 4", "retrying at once"),
        ("4 of 4", "moved to the dead letter (retries exhausted)"),
    ]
    assert entry.attempts == 4
    assert (result.handled, result.retried, result.failed) == (0, 1, 1)


def test_the_dead_letter_keeps_when_the_message_first_failed(service: Service) -> None:
    """The delayed retry copy carries the time of the first failure into the dead letter: first_failed_at falls in
    the first run (before the delayed retry), failed_at at or after it."""
    with service.container(recoverability={"immediate_retries": 0, "delayed_retries": [1]}) as container:
        container.setup()
        send(container, "billing.fail")
        before = int(time.time())
        assert container.run("billing", handled_message_limit=1).retried == 1
        after_first_run = int(time.time())
        assert container.run("billing", handled_message_limit=1, execution_time_limit=10_000).failed == 1
        [entry] = container.dead_letter().list()
    assert entry.first_failed_at is not None and before <= entry.first_failed_at <= after_first_run
    assert entry.failed_at is not None and entry.failed_at >= entry.first_failed_at


def test_failure_headers_are_bounded(container: MessagingContainer) -> None:
    """A handler error with a 1,000,000-character message reaches the dead letter with its message cut to
    FAILURE_TEXT_LIMIT characters and its trace to FAILURE_TRACE_LIMIT, both keeping the start of the text."""
    send(container, "billing.huge")
    assert container.run("billing", finish_when_no_messages=True).failed == 1
    [entry] = container.dead_letter().list()
    assert entry.error_message is not None and entry.trace is not None
    assert len(entry.error_message) <= FAILURE_TEXT_LIMIT
    assert entry.error_message.startswith("x" * 100)
    assert len(entry.trace) <= FAILURE_TRACE_LIMIT
    assert entry.trace.startswith("Traceback (most recent call last):")


# -- signals, the broker, limits -------------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_second_signal_logs_that_it_is_stopping_now(
    container: MessagingContainer, service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """A first SIGINT asks to stop after the message in hand; a second one logs that the consumer stops now and
    ends the run at once with KeyboardInterrupt."""
    send(container, "billing.interrupted")
    with caplog.at_level(logging.WARNING, logger="container_messaging"), pytest.raises(KeyboardInterrupt):
        container.run("billing", execution_time_limit=10_000)
    messages = [record.getMessage() for record in caplog.records]
    assert service.module.SIGNALS == ["sent", "sent"]
    assert "signal SIGINT: stopping after the current message (a second signal stops at once)" in messages
    assert "second signal SIGINT: stopping now; the message in hand stays on the broker" in messages
    assert service.module.HANDLED == []


def _failing_first(
    monkeypatch: pytest.MonkeyPatch, container: MessagingContainer, error: Exception, times: int
) -> list[float]:
    """Makes the transport's setup_endpoint raise ``error`` ``times`` times; returns when each call happened."""
    transport = container.transport
    real = transport.setup_endpoint
    calls: list[float] = []

    def setup_endpoint(topology: Any) -> None:
        calls.append(time.monotonic())
        if len(calls) <= times:
            raise error
        real(topology)

    monkeypatch.setattr(transport, "setup_endpoint", setup_endpoint)
    return calls


def test_wait_for_broker_tries_again_with_back_off_until_the_broker_answers(
    container: MessagingContainer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With wait_for_broker, a broker that fails twice at start is tried again after 0.5 s then 1 s, with one INFO
    line per failed attempt, and the run then handles the waiting message."""
    send(container, "billing.change", '{"n": 1}')
    calls = _failing_first(monkeypatch, container, TransportError("connecting failed: connection refused"), 2)

    with caplog.at_level(logging.INFO, logger="container_messaging"):
        result = container.run("billing", finish_when_no_messages=True, wait_for_broker=30)

    assert result.handled == 1
    waits = [r.getMessage() for r in caplog.records if "waiting for the broker" in r.getMessage()]
    assert [w.split(", attempt ")[1].split(" failed")[0] for w in waits] == ["1", "2"]
    assert all(r.levelno == logging.INFO for r in caplog.records if "waiting for the broker" in r.getMessage())
    assert calls[1] - calls[0] >= 0.5 and calls[2] - calls[1] >= 1.0


def test_wait_for_broker_gives_up_when_the_time_is_up(service: Service, caplog: pytest.LogCaptureFixture) -> None:
    """With wait_for_broker=3 and nothing listening on the broker's port, the run tries again for 3 s, one INFO line
    per failed attempt but the last, then raises TransportError saying how long it waited and how often it tried."""
    with service.container("pyamqp://guest:guest@127.0.0.1:1//") as container:
        started = time.monotonic()
        with (
            caplog.at_level(logging.INFO, logger="container_messaging"),
            pytest.raises(TransportError, match=r"the broker did not answer within 3 s \((\d+) attempts\)") as raised,
        ):
            container.run("billing", wait_for_broker=3)
        elapsed = time.monotonic() - started
    attempts = int(re.search(r"\((\d+) attempts\)", str(raised.value)).group(1))  # type: ignore[union-attr]
    waits = [r for r in caplog.records if "waiting for the broker" in r.getMessage()]
    assert attempts >= 2
    assert len(waits) == attempts - 1
    assert {r.levelno for r in waits} == {logging.INFO}
    assert 3 <= elapsed < 20


def test_a_broker_that_refused_us_is_never_waited_for(
    container: MessagingContainer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A BrokerRefusedError at start ends the run at once, even with wait_for_broker, without any waiting line."""
    calls = _failing_first(monkeypatch, container, BrokerRefusedError("ACCESS_REFUSED for user 'guest'"), 1)
    with caplog.at_level(logging.INFO, logger="container_messaging"), pytest.raises(BrokerRefusedError):
        container.run("billing", wait_for_broker=30)
    assert len(calls) == 1
    assert not [r for r in caplog.records if "waiting for the broker" in r.getMessage()]


def test_the_cli_waits_for_the_broker_then_fails_with_one_error_line(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --wait-for-broker 1` against a port where nothing listens prints the banner, gives up after about a
    second and exits 3 (the broker's exit code) with one error line saying it waited."""
    config = service.config_file("pyamqp://guest:guest@127.0.0.1:1//")
    code = main(["--config", str(config), "run", "billing", "--wait-for-broker", "1"])
    out, err = capsys.readouterr()
    assert code == EXIT_BROKER
    assert out == ""
    assert err.startswith("billing: consuming distributed_billing on pyamqp://guest:***@127.0.0.1:1//\n")
    [error] = [line for line in err.splitlines() if line.startswith("container-messaging: error:")]
    assert "the broker did not answer within 1 s" in error


def test_an_idle_consumer_over_its_memory_limit_stops(container: MessagingContainer) -> None:
    """A consumer with no message to handle, already over its memory limit (1 MB), stops for that reason within a
    poll instead of running until its execution time limit."""
    started = time.monotonic()
    result = container.run("billing", memory_limit=1, execution_time_limit=20_000)
    assert result.stop_reason == "memory limit reached"
    assert result.handled == result.failed == 0
    assert time.monotonic() - started < 10


# -- the parts -------------------------------------------------------------------------------------------------------


def test_inbound_message_fills_the_content_type_without_changing_the_transports_headers() -> None:
    """The AMQP content type fills a missing contentType in the message's headers; the dict the transport handed
    over stays as it was."""
    wire = {"id": "m-1", "tenant": "acme"}
    message = inbound_message(b"{}", wire, "application/json")
    assert dict(message.headers) == {"id": "m-1", "tenant": "acme", "contentType": "application/json"}
    assert wire == {"id": "m-1", "tenant": "acme"}
    typed = {"id": "m-2", "contentType": "text/plain"}
    assert inbound_message(b"x", typed, "application/json").headers["contentType"] == "text/plain"
    assert inbound_message(b"x", {}, None).headers["contentType"] == "application/octet-stream"


class _Handler:
    """A stand-in for a Handler: recoverability reads only its name and function (for @retries)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.function = lambda: None


def test_recoverability_decides_retry_now_then_later_then_dead_letter() -> None:
    """For 1 immediate retry and delays [100, 200], recoverability decides: retry now, retry in 100 ms (retry
    number 1, addressed to the handler, carrying when the message first failed), ..., and the dead letter on the 6th
    attempt with its failure headers, the first failure's time kept."""
    recoverability = Recoverability("billing", RetryPolicy(1, (100, 200)))
    handler: Any = _Handler("mod.Billing.fail")
    error = RuntimeError("down")
    decisions = [
        recoverability.decide(handler, error, attempt=attempt, retries_before=retries, first_failed_at=1234)
        for retries in range(3)
        for attempt in (1, 2)
    ]
    assert [type(d) for d in decisions] == [RetryNow, RetryLater, RetryNow, RetryLater, RetryNow, MoveToDeadLetter]
    assert [d.failure.attempt for d in decisions] == [1, 2, 3, 4, 5, 6]
    assert {d.failure.attempts for d in decisions} == {6}
    first_later, second_later, last = decisions[1], decisions[3], decisions[5]
    assert isinstance(first_later, RetryLater) and isinstance(second_later, RetryLater)
    assert (first_later.delay_ms, dict(first_later.headers)) == (
        100,
        {RETRY_NUMBER: 1, TARGET_HANDLER: handler.name, FailureHeader.FIRST_TIME: 1234},
    )
    assert (second_later.delay_ms, second_later.headers[RETRY_NUMBER]) == (200, 2)
    assert isinstance(last, MoveToDeadLetter)
    assert (last.reason, last.reduced) == ("retries exhausted", False)
    assert last.headers[FailureHeader.ATTEMPTS] == 6
    assert last.headers[TARGET_HANDLER] == handler.name
    assert set(FailureHeader.ALL) <= set(last.headers)
    assert last.headers[FailureHeader.FIRST_TIME] == 1234


def test_after_failed_copies_recoverability_decides_a_reduced_dead_letter_copy() -> None:
    """After one failed copy a dead letter copy is reduced; after two, a delayed retry gives way to a reduced dead
    letter copy; the reduced headers keep only the essential original ones, each cut to 255 characters."""
    recoverability = Recoverability("billing", RetryPolicy(0, (100,)))
    handler: Any = _Handler("mod.Billing.fail")
    error = RuntimeError("down")
    assert isinstance(recoverability.decide(handler, error, attempt=1, retries_before=0, copy_failures=1), RetryLater)
    gave_way = recoverability.decide(handler, error, attempt=1, retries_before=0, copy_failures=2)
    exhausted = recoverability.decide(handler, error, attempt=1, retries_before=1, copy_failures=1)
    assert isinstance(gave_way, MoveToDeadLetter) and isinstance(exhausted, MoveToDeadLetter)
    assert gave_way.reduced and exhausted.reduced
    assert gave_way.reason.startswith("its delayed retry copy could not be published twice; copy reduced")
    assert exhausted.reason.startswith("retries exhausted; copy reduced to its essential headers")
    original = {
        "id": "m-1",
        "ecotone.distributed.routingKey": "billing.fail",
        "ecotone.distributed.payloadType": "command",
        "correlationId": "c" * 300,
        "timestamp": 1_700_000_000,
        "note": "n" * 130_000,
        "nested": {"a": [1, 2]},
    }
    reduced = exhausted.reduced_headers(original)
    assert {k: v for k, v in reduced.items() if not k.startswith("failure.")} == {
        "id": "m-1",
        "ecotone.distributed.routingKey": "billing.fail",
        "ecotone.distributed.payloadType": "command",
        "correlationId": truncated("c" * 300, 255),
        "timestamp": 1_700_000_000,
        TARGET_HANDLER: handler.name,
    }
    assert len(reduced["correlationId"]) == 255
    assert reduced[FailureHeader.REASON] == exhausted.reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("x" * 1_000_000, f"{'x' * 120!r}...(1000000 characters)"),
        (b"y" * 500, f"{b'y' * 120!r}...(500 bytes)"),
        (2**62, repr(2**62)),
        (2**4000, "<int of 4001 bits>"),
        (math.inf, "inf"),
        ([[[]]] * 7, "<list of 7 items>"),
        ({"a": {"b": 1}}, "<dict of 1 items>"),
        (object(), "<object>"),
        ("short", "'short'"),
    ],
)
def test_shown_is_a_short_repr_whatever_the_value(value: object, expected: str) -> None:
    """shown() describes any wire value in a bounded string: long text cut with its length, huge ints and
    containers by their size."""
    assert shown(value) == expected


def test_truncated_keeps_within_the_limit_and_says_what_it_cut() -> None:
    """truncated() returns short text as is, and long text within the limit with the cut marked (start kept, or
    start and end kept)."""
    assert truncated("abc", 10) == "abc"
    cut = truncated("a" * 5000 + "z" * 5000, 200)
    assert len(cut) == 200 and cut.startswith("aaa") and "[9800 of 10000 characters cut]" in cut
    both = truncated("a" * 5000 + "z" * 5000, 200, keep_end=True)
    assert len(both) == 200 and both.startswith("aaa") and both.endswith("zzz")


def test_signal_handlers_are_restored_after_a_run(container: MessagingContainer) -> None:
    """After a run in the main thread, SIGINT and SIGTERM have the handlers they had before it."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    container.run("billing", finish_when_no_messages=True)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
