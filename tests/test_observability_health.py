"""Health: container.health() and `container-messaging health` check the broker, the queue and the dead letter."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from container_messaging import MessagingContainer
from container_messaging.observability.health import Check, HealthReport, check_health
from container_messaging.transports.base import BaseTransport, OutboundMessage

from conftest import forget_endpoint


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def rabbit(amqp_url: str, distribution: dict[str, str]) -> Iterator[MessagingContainer]:
    container = MessagingContainer.from_dict(
        {"service_name": "billing", "transport": {"url": amqp_url}, "distribution": distribution}
    )
    yield container
    forget_endpoint(container, container.topology.queue("billing"))
    container.close()


def test_health_fails_within_its_timeout_when_the_broker_is_unreachable() -> None:
    """With nothing listening on the broker's port, the report is unhealthy, names the broker, and comes back
    within the time given."""
    port = closed_port()
    container = MessagingContainer.from_dict(
        {"service_name": "billing", "transport": {"url": f"pyamqp://guest:secret@127.0.0.1:{port}//"}}
    )
    started = time.monotonic()
    report = container.health(timeout=5.0)
    assert time.monotonic() - started < 5.5
    assert not report.healthy
    assert [(check.name, check.healthy) for check in report.checks] == [("broker", False)]
    assert f"127.0.0.1:{port}" in report.checks[0].subject
    assert "secret" not in str(report)


def test_health_gives_up_at_the_timeout_on_a_broker_that_never_answers() -> None:
    """A transport whose calls never return makes an unhealthy report when the timeout is up, instead of hanging."""

    release = threading.Event()

    class Stuck(BaseTransport):
        description = "stuck://"

        def queue_size(self, queue: str) -> int:
            release.wait(30)
            return 0

        declare_exchange = setup_endpoint = publish = open_receiver = send_to_queue = browse = close = None

    started = time.monotonic()
    try:
        report = check_health([(Stuck(), ["q"])], timeout=0.3)
    finally:
        release.set()
    assert time.monotonic() - started < 2.0
    assert not report.healthy
    assert report.checks == (Check("broker", "stuck://", False, "no answer within 0.3 s"),)


def test_health_passes_when_the_broker_is_up_and_reports_queue_and_dead_letter(rabbit: MessagingContainer) -> None:
    """With RabbitMQ up and the endpoint set up, the broker, the queue and the dead letter are healthy, with sizes."""
    rabbit.setup()
    report = rabbit.health("billing")
    assert report.healthy, str(report)
    queue = rabbit.topology.queue("billing")
    assert [(c.name, c.subject, c.healthy, c.messages) for c in report.checks] == [
        ("broker", rabbit.transport.description, True, None),
        ("queue", queue, True, 0),
        ("dead letter", f"{queue}.dead_letter", True, 0),
    ]


def test_a_missing_queue_and_dead_letters_over_the_threshold_are_unhealthy(rabbit: MessagingContainer) -> None:
    """Before setup the endpoint's queue does not exist on RabbitMQ: unhealthy; after setup, a dead letter over the
    threshold is unhealthy and one within it is not."""
    missing = rabbit.health("billing")
    assert not missing.healthy
    assert [(c.name, c.healthy) for c in missing.checks][:2] == [("broker", True), ("queue", False)]
    assert "does not exist" in missing.checks[1].detail
    rabbit.setup()
    queue = rabbit.topology.queue("billing")
    rabbit.transport.send_to_queue(
        f"{queue}.dead_letter", OutboundMessage(f"{queue}.dead_letter", b"{}", {}, "application/json", "m-1")
    )
    assert not rabbit.health(dead_letter_threshold=0).healthy
    assert rabbit.health(dead_letter_threshold=1).healthy


def test_the_report_as_a_dict_and_as_text() -> None:
    """as_dict() carries healthy, seconds and every check; str() has one line per check under the verdict."""
    report = HealthReport((Check("broker", "memory://", True, "answered"), Check("queue", "q", False, "gone", 0)), 0.1)
    assert not report
    assert report.as_dict() == {
        "healthy": False,
        "seconds": 0.1,
        "checks": [
            {"name": "broker", "subject": "memory://", "healthy": True, "detail": "answered", "messages": None},
            {"name": "queue", "subject": "q", "healthy": False, "detail": "gone", "messages": 0},
        ],
    }
    assert str(report).splitlines() == [
        "unhealthy (0.10 s)",
        "  ok   broker      memory://: answered",
        "  FAIL queue       q: gone",
    ]


def test_health_checks_each_broker_the_endpoints_use(tmp_path: Path, unique: str) -> None:
    """A service consuming a channel on another broker than its own gets a broker check for each, each followed by
    its endpoint's queue and dead letter; a broker that is down fails only its own checks."""
    channel = f"work_{unique}"
    port = closed_port()
    container = MessagingContainer.from_dict(
        {
            "service_name": "billing",
            "transport": {"url": "embedded://", "data_folder": str(tmp_path / "data")},
            "channels": {channel: {"url": f"pyamqp://guest:guest@127.0.0.1:{port}//"}},
            "consume": [channel],
        }
    )
    try:
        container.setup("billing")
        report = container.health(timeout=5.0)
    finally:
        container.close()
    assert [(c.name, c.subject.split("://")[0], c.healthy) for c in report.checks] == [
        ("broker", "embedded", True),
        ("queue", "distributed_billing", True),
        ("dead letter", "distributed_billing.dead_letter", True),
        ("broker", "pyamqp", False),
    ]
    assert not report.healthy
