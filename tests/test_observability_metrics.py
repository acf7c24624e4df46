"""OpenTelemetry metrics: the counters and histograms after a run with a failure, retries and a dead letter, and
the queue gauge read from the broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from container_messaging import DistributedBus, MessagingContainer
from container_messaging.middleware import EndpointInfo
from container_messaging.observability.metrics import MetricsMiddleware

from conftest import forget_endpoint, transport_section

HANDLERS = """
from container_messaging import command_handler, distributed

class Work:
    def __init__(self) -> None:
        self.flaky_calls = 0

    @distributed
    @command_handler("work.ok")
    def ok(self, command: dict) -> None:
        pass

    @distributed
    @command_handler("work.flaky")
    def flaky(self, command: dict) -> None:
        self.flaky_calls += 1
        if self.flaky_calls == 1:
            raise RuntimeError("the first time only")

    @distributed
    @command_handler("work.broken")
    def broken(self, command: dict) -> None:
        raise ValueError("always")
"""

Points = dict[tuple[tuple[str, Any], ...], Any]


def points(reader: InMemoryMetricReader, name: str) -> Points:
    """The data points of metric ``name``, by their sorted attributes: a sum's value, a histogram's count, a
    gauge's value."""
    found: Points = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    key = tuple(sorted(point.attributes.items()))
                    found[key] = point.count if isinstance(point, HistogramDataPoint) else point.value
    return found


class Service:
    def __init__(self, container: MessagingContainer, reader: InMemoryMetricReader) -> None:
        self.container = container
        self.reader = reader
        self.handler = {h.name.rsplit(".", 1)[-1]: h.name for h in container.routes.handlers}


@pytest.fixture(params=["memory", "rabbitmq"])
def service(
    request: pytest.FixtureRequest, tmp_path: Path, make_module: Callable[[str, str], str], distribution: dict[str, str]
) -> Iterator[Service]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    module = make_module(f"metered_{distribution['queue_prefix'].strip('_')}", HANDLERS)
    container = MessagingContainer.from_dict(
        {
            "service_name": "work",
            "scan": [module],
            "transport": transport_section(str(request.param), tmp_path),
            "distribution": distribution,
            "recoverability": {"immediate_retries": 1, "delayed_retries": [10]},
        },
        middleware=[MetricsMiddleware(provider)],
    )
    container.setup()
    try:
        yield Service(container, reader)
    finally:
        forget_endpoint(container, container.topology.queue("work"), delays=[10])
        container.close()
        provider.shutdown()


def test_counters_and_histograms_after_a_run_with_a_failure_a_retry_and_a_dead_letter(service: Service) -> None:
    """After one message handled at once, one handled on its immediate retry and one that fails every attempt (an
    immediate retry, a delayed retry, another immediate retry, then the dead letter): handled, failed, retried and
    dead-lettered are counted per handler, the handler durations per outcome, and the three publishes."""
    bus = service.container.get(DistributedBus)
    for key in ("work.ok", "work.flaky", "work.broken"):
        bus.convert_and_send_command("work", key, {"n": 1})
    result = service.container.run("work", handled_message_limit=4, execution_time_limit=20_000)
    assert (result.handled, result.retried, result.failed) == (2, 1, 1), result
    ok, flaky, broken = (service.handler[name] for name in ("ok", "flaky", "broken"))
    reader = service.reader

    assert points(reader, "container_messaging.messages.handled") == {
        (("endpoint", "work"), ("handler", ok)): 1,
        (("endpoint", "work"), ("handler", flaky)): 1,
    }
    assert points(reader, "container_messaging.messages.failed") == {
        (("endpoint", "work"), ("error.type", "builtins.RuntimeError"), ("handler", flaky)): 1,
        (("endpoint", "work"), ("error.type", "builtins.ValueError"), ("handler", broken)): 4,
    }
    assert points(reader, "container_messaging.messages.retried") == {
        (("endpoint", "work"), ("handler", flaky), ("retry", "immediate")): 1,
        (("endpoint", "work"), ("handler", broken), ("retry", "immediate")): 2,
        (("endpoint", "work"), ("handler", broken), ("retry", "delayed")): 1,
    }
    assert points(reader, "container_messaging.messages.dead_lettered") == {
        (("endpoint", "work"), ("handler", broken)): 1
    }
    assert points(reader, "container_messaging.handler.duration") == {
        (("endpoint", "work"), ("handler", ok), ("outcome", "ok")): 1,
        (("endpoint", "work"), ("handler", flaky), ("outcome", "error")): 1,
        (("endpoint", "work"), ("handler", flaky), ("outcome", "ok")): 1,
        (("endpoint", "work"), ("handler", broken), ("outcome", "error")): 4,
    }
    system = "memory" if service.container.transport.description == "memory://" else "rabbitmq"
    assert points(reader, "container_messaging.publish.duration") == {
        (
            ("messaging.destination.name", service.container.topology.exchange),
            ("messaging.system", system),
            ("outcome", "ok"),
        ): 3
    }


def test_the_queue_gauge_reads_the_broker_while_an_endpoint_runs(service: Service) -> None:
    """While the consuming hook is entered, the gauge reports the messages waiting in the endpoint's queue and in
    its dead letter queue, as the broker counts them; after it is left, nothing."""
    bus = service.container.get(DistributedBus)
    bus.convert_and_send_command("work", "work.ok", {"n": 1})
    bus.convert_and_send_command("work", "work.ok", {"n": 2})
    queue = service.container.topology.queue("work")
    endpoint = EndpointInfo("work", queue, f"{queue}.dead_letter", service.container.topology.exchange, "test")
    middleware = service.container.middleware
    assert middleware is not None
    with middleware.consuming(endpoint, service.container.transport.queue_size):
        during = points(service.reader, "container_messaging.queue.messages")
    after = points(service.reader, "container_messaging.queue.messages")
    assert during == {
        (("endpoint", "work"), ("queue", queue)): 2,
        (("endpoint", "work"), ("queue", f"{queue}.dead_letter")): 0,
    }
    assert after == {}
