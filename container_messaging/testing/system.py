"""``TestSystem``: several services in one process, built from their real configuration, talking through in-memory
channels, driven by the test, with what each sent and received recorded.

Each service is a real :class:`~container_messaging.MessagingContainer` (its scan, routing, conversion, handlers and
consumer); only its transport is substituted, in one place (:meth:`TestSystem._substitute_transport`): every service
gets an :class:`~container_messaging.transports.inprocess.InProcessTransport` on one broker of this system (or, with
``transport_url``, the real broker, under names unique to this system, removed when it closes), wrapped in a
:class:`~container_messaging.testing.recording.RecordingTransport`. Every endpoint is set up when the system is built,
so a command can be sent before its receiver ever ran.

Driving: :meth:`TestSystem.run` consumes one service's endpoint, or all of them in turn until no message is left on
any queue, with the consumer's own run limits; on the in-process broker an empty queue is noticed at once (no
polling delay). By default (``fail_fast``) the first exception a handler raises stops the run and is raised in the
test, unchanged, before any retry; its message stays on its queue. With ``fail_fast=False`` retries and the dead
letter behave as in production, and delayed retries wait for the system's :class:`TestClock`: advance it instead of
sleeping.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Final, Protocol, TypeVar, overload, runtime_checkable

import attrs

from container_messaging.buses import CommandBus, EventBus, QueryBus
from container_messaging.config import ChannelSettings, ServiceMapSettings, Settings, load_settings, settings_from_dict
from container_messaging.consumer import EndpointConsumer, RunOptions, RunResult
from container_messaging.container import MessagingContainer
from container_messaging.deadletter import DeadLetter
from container_messaging.distributed import DistributedBus
from container_messaging.errors import ConfigurationError, ContainerError, EndpointError, MessagingError
from container_messaging.invocation import Handler, handler_failure
from container_messaging.messages import Message
from container_messaging.redaction import SecretUrl
from container_messaging.testing.clock import TestClock
from container_messaging.testing.errors import MessageFailedError, TestSystemError
from container_messaging.testing.recorded import Outcome, RecordedMessage, RecordedMessages
from container_messaging.testing.recording import Recorder, RecordingTransport
from container_messaging.transports.base import BaseTransport, EndpointTopology
from container_messaging.transports.inprocess import InProcessBroker, InProcessTransport

__all__ = ["ConfigSource", "ServiceUnderTest", "SystemRun", "TestSystem"]

T = TypeVar("T")

log = logging.getLogger("container_messaging.testing")

ConfigSource = str | os.PathLike[str] | Mapping[str, Any] | Settings
"""A service's configuration: a file (YAML or INI, by extension), a mapping of its keys, or loaded settings."""

#: Messages one run may take in all before the system suspects services that keep messaging each other.
DEFAULT_MESSAGE_LIMIT: Final = 10_000
_FAILED: Final = (Outcome.DEAD_LETTERED, Outcome.RETRIED_LATER)


@runtime_checkable
class _Tooling(Protocol):
    """What every transport adapter offers besides the port, for tests and tooling."""

    def waiting_for_delay(self, queue: str) -> int: ...

    def remove_endpoint(self, topology: EndpointTopology, delays: Iterable[int] = ()) -> None: ...


class _HandlerFailed(BaseException):
    """Carries a handler's exception out of a consumer run at once. A BaseException (as pytest's own outcomes), so
    no ``except Exception`` on the way retries it or sends its message to the dead letter."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _stop_at_once(_handler: Handler, _message: Message, error: Exception) -> None:
    raise _HandlerFailed(error)


def _with_values(settings: Settings, values: Mapping[str, Any], source: str) -> Settings:
    """``settings`` with the configuration keys in ``values`` set (a group's keys one by one), checked as a file's."""
    given = settings_from_dict(values, source)  # the same checks and errors as a configuration file
    changes: dict[str, Any] = {}
    for key, value in values.items():
        current = getattr(settings, key)
        if attrs.has(type(current)) and isinstance(value, Mapping):
            changes[key] = attrs.evolve(current, **{name: getattr(getattr(given, key), name) for name in value})
        else:
            changes[key] = getattr(given, key)
    return attrs.evolve(settings, **changes)


def _combined(endpoint: str, results: list[RunResult]) -> RunResult:
    """The runs of a service's endpoints as one result (the reason of the last one that stopped early, if any)."""
    reasons = [result.stop_reason for result in results if result.stop_reason != "no more messages"]
    return RunResult(
        endpoint,
        sum(result.handled for result in results),
        sum(result.failed for result in results),
        reasons[-1] if reasons else "no more messages",
        duplicates=sum(result.duplicates for result in results),
        reconnects=sum(result.reconnects for result in results),
        retried=sum(result.retried for result in results),
    )


def _on_one_broker(settings: Settings) -> Settings:
    """``settings`` with every channel on ``transport.url`` (the test's broker): a channel defined with a URL of its
    own, in ``channels`` or in a service map, would otherwise reach that real broker."""

    def local(channels: Mapping[str, ChannelSettings]) -> dict[str, ChannelSettings]:
        return {name: attrs.evolve(channel, url=None) for name, channel in channels.items()}

    def local_map(service_map: ServiceMapSettings | None) -> ServiceMapSettings | None:
        return None if service_map is None else attrs.evolve(service_map, channels=local(service_map.channels))

    return attrs.evolve(
        settings,
        channels=local(settings.channels),
        service_map=local_map(settings.service_map),
        distributed_buses={
            name: attrs.evolve(bus, service_map=local_map(bus.service_map))
            for name, bus in settings.distributed_buses.items()
        },
    )


def _load(source: ConfigSource) -> Settings:
    if isinstance(source, Settings):
        return source
    if isinstance(source, Mapping):
        return settings_from_dict(source)
    return load_settings(source)


@attrs.frozen
class SystemRun:
    """What one :meth:`TestSystem.run` did: each endpoint run's result in order, every message the endpoints took
    (settled or given back), and why it stopped."""

    results: tuple[RunResult, ...]
    received: RecordedMessages
    stop_reason: str

    @property
    def handled(self) -> int:
        return sum(result.handled for result in self.results)

    @property
    def failed(self) -> int:
        return sum(result.failed for result in self.results)


class ServiceUnderTest:
    """One service of a :class:`TestSystem`: its container, its buses, what it sent and received, its endpoint."""

    def __init__(self, system: TestSystem, container: MessagingContainer, transport: RecordingTransport) -> None:
        self.system = system
        self.container = container
        self.transport = transport
        self.recorder = transport.recorder
        self.name: str = self.recorder.service
        # Every queue endpoint of the service: the AMQP endpoint and/or the Service Map channels it consumes (the
        # outbox relay, which consumes no queue, is not driven by the test system).
        self.consumers = [
            consumer for name in container.list() if isinstance(consumer := container.endpoint(name), EndpointConsumer)
        ]
        if not self.consumers:
            raise TestSystemError(
                f"service {self.name!r} consumes nothing: give it a service_name with an AMQP bus, or channels under "
                "consume"
            )
        self.consumer = self.consumers[0]
        self._overridden: list[Any] = []

    def __repr__(self) -> str:
        return f"<ServiceUnderTest {self.name!r} {self.container.transport.description}>"

    @overload
    def get(self, key: type[T]) -> T: ...
    @overload
    def get(self, key: str) -> Any: ...
    def get(self, key: Any) -> Any:
        """What the service's container gives for a type or a provider name (see ``MessagingContainer.get``)."""
        return self.container.get(key)

    @property
    def distributed_bus(self) -> DistributedBus:
        return self.container.get(DistributedBus)

    @property
    def command_bus(self) -> CommandBus:
        return self.container.get(CommandBus)

    @property
    def query_bus(self) -> QueryBus:
        return self.container.get(QueryBus)

    @property
    def event_bus(self) -> EventBus:
        return self.container.get(EventBus)

    @property
    def sent(self) -> RecordedMessages:
        """Every message this service published (commands, events, generic messages), oldest first."""
        return self.recorder.sent(self.container.converter)

    @property
    def received(self) -> RecordedMessages:
        """Every message its endpoint took off its queue, in the order they were settled, each with its outcome."""
        return self.recorder.received(self.container.converter)

    @property
    def queue(self) -> str:
        return self.consumer.topology.queue

    def queued(self) -> int:
        """How many messages wait, ready, on its queues."""
        transport = self.container.transport
        return sum(transport.queue_size(consumer.topology.queue) for consumer in self.consumers)

    def delayed(self) -> int:
        """How many delayed retry copies for its queues are not due yet (in-process: on the test clock)."""
        tooling = self._tooling("delayed()")
        return sum(tooling.waiting_for_delay(consumer.topology.queue) for consumer in self.consumers)

    def _tooling(self, what: str) -> _Tooling:
        inner = self.transport.inner
        if not isinstance(inner, _Tooling):
            raise TestSystemError(f"service {self.name!r}: {what} is not available on {inner.description}")
        return inner

    def remove_endpoint(self) -> None:
        """Deletes its queue, dead letter queue, delayed copies and the exchange from the broker (what ``close`` does
        on a real broker)."""
        delays = self.container.settings.recoverability.delayed_retries
        for consumer in self.consumers:
            self._tooling("remove_endpoint()").remove_endpoint(consumer.topology, delays)

    def dead_letter(self, endpoint: str | None = None) -> DeadLetter:
        """The dead letter of its endpoint (the first one when it has several, or ``endpoint``): ``list``, ``get``,
        ``replay``, ``replay_all``, ``delete``."""
        return self.container.dead_letter(endpoint or self.consumer.name)

    def override(self, key: type | str, fake: object) -> None:
        """Replaces what the container provides for ``key`` (a type, or a provider name) by ``fake``, with
        dependency-injector's ``override``, until the system closes. Override before anything that depends on it is
        built: before the service handles its first message, or ``get`` builds a class that takes it."""
        if isinstance(key, str):
            provider = self.container.di.providers.get(key)
            if provider is None:
                known = ", ".join(sorted(name for name in self.container.di.providers if not name.startswith("_")))
                raise ContainerError(f"service {self.name!r} has no provider named {key!r} (known: {known})")
        else:
            provider = self.container.provider_for(key, f"the override in the test of service {self.name!r}")
        provider.override(fake)
        self._overridden.append(provider)

    def reset_overrides(self) -> None:
        """Undoes :meth:`override` (an application container's providers are shared with other tests)."""
        while self._overridden:
            self._overridden.pop().reset_last_overriding()

    def run(
        self,
        *,
        handled_message_limit: int | None = None,
        execution_time_limit: int | None = None,
        memory_limit: int | None = None,
        stop_on_failure: bool = False,
        fail_fast: bool | None = None,
    ) -> SystemRun:
        """Runs this service's endpoint until its queue is empty (see :meth:`TestSystem.run`)."""
        return self.system.run(
            self.name,
            handled_message_limit=handled_message_limit,
            execution_time_limit=execution_time_limit,
            memory_limit=memory_limit,
            stop_on_failure=stop_on_failure,
            fail_fast=fail_fast,
        )


class TestSystem:
    """Several services in one process, on in-memory channels (or a real broker), driven by the test.

    ``configs``: each service's configuration (a file, a mapping or settings), which must name its ``service_name``.
    ``settings``: per service name, configuration keys to set (``{"billing": {"recoverability": {...}}}``).
    ``apps``: per service name, the application's dependency-injector container (``MessagingContainer``'s ``app``).
    ``transport_url``: a real broker instead of in-process channels; every exchange and queue name gets a suffix
    unique to this system (``suffix``), so systems never meet on a shared broker, and closing the system deletes them.
    ``fail_fast``: a handler's exception stops a run and is raised in the test (default); False lets retries and the
    dead letter behave as in production. ``clock``: the test clock the in-process delays use (default: a new one).
    ``message_limit``: how many messages one run may take before it is taken for an endless exchange.

    On the in-process broker a configured Redis or SQLite deduplication store is replaced by the memory one, so tests
    need no server and share nothing.
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(
        self,
        configs: Iterable[ConfigSource],
        *,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        apps: Mapping[str, Any] | None = None,
        transport_url: str | None = None,
        fail_fast: bool = True,
        clock: TestClock | None = None,
        message_limit: int = DEFAULT_MESSAGE_LIMIT,
    ) -> None:
        if transport_url is not None and clock is not None:
            raise ConfigurationError(
                "TestSystem: clock drives the in-process broker's delays; with transport_url, delays take real time"
            )
        if message_limit < 1:
            raise ConfigurationError(f"TestSystem: message_limit must be at least 1, got {message_limit!r}")
        self.fail_fast = fail_fast
        self.transport_url = None if transport_url is None else SecretUrl(transport_url)
        self.suffix = uuid.uuid4().hex[:10]
        self._clock: TestClock | None = None
        self._broker: InProcessBroker | None = None
        if transport_url is None:
            self._clock = clock if clock is not None else TestClock()
            self._broker = InProcessBroker(self._clock, synchronous=True)
        self._message_limit = message_limit
        self._services: dict[str, ServiceUnderTest] = {}
        self._closed = False
        try:
            self._build([_load(source) for source in configs], settings or {}, apps or {})
        except BaseException:
            self.close()
            raise

    def _build(self, loaded: list[Settings], values: Mapping[str, Mapping[str, Any]], apps: Mapping[str, Any]) -> None:
        names: list[str] = []
        for settings in loaded:
            if settings.service_name is None:
                raise ConfigurationError(
                    f"{settings.source or '<dict>'}: service_name: a service of a TestSystem needs a service_name"
                )
            if settings.service_name in names:
                raise ConfigurationError(
                    f"{settings.source or '<dict>'}: service_name: {settings.service_name!r} is in the TestSystem twice"
                )
            names.append(settings.service_name)
        for given, what in ((values, "settings"), (apps, "apps")):
            unknown = sorted(set(given) - set(names))
            if unknown:
                raise ConfigurationError(
                    f"TestSystem {what}: no service named {', '.join(map(repr, unknown))} "
                    f"(services: {', '.join(map(repr, names))})"
                )
        for name, settings in zip(names, loaded, strict=True):
            if name in values:
                source = f"{settings.source or '<dict>'} (TestSystem settings)"
                self._add(name, _with_values(settings, values[name], source), apps.get(name))
            else:
                self._add(name, settings, apps.get(name))

    def _add(self, name: str, settings: Settings, app: Any) -> None:
        settings, transport = self._substitute_transport(settings)
        container = MessagingContainer(settings, app=app, transport=transport)
        try:
            recorder = Recorder(name)
            provider = container.di.providers["transport"]
            recording = RecordingTransport(provider(), recorder)  # the inner one built by the container when None
            provider.override(recording)
            container.setup()
            self._services[name] = ServiceUnderTest(self, container, recording)
        except BaseException:
            container.close()
            raise

    def _substitute_transport(self, settings: Settings) -> tuple[Settings, BaseTransport | None]:
        """The one place a service's transport is chosen: an in-process transport on this system's broker; or, with
        ``transport_url``, the real broker's, built by the container (None) from settings under unique names."""
        source = f"{settings.source or '<dict>'} (TestSystem)"
        if self._broker is None:
            distribution = settings.distribution
            real = {
                "transport": {"url": self.transport_url},
                "distribution": {
                    "exchange": f"{distribution.exchange}.test.{self.suffix}",
                    "queue_prefix": f"test_{self.suffix}_{distribution.queue_prefix}",
                },
            }
            return _on_one_broker(_with_values(settings, real, source)), None
        settings = _on_one_broker(settings)
        if settings.deduplication.store not in ("memory", "none"):
            settings = _with_values(settings, {"deduplication": {"store": "memory"}}, source)
        return settings, InProcessTransport(self._broker, settings.service_name or "")

    # -- the services ------------------------------------------------------------------------------------------------

    @property
    def services(self) -> tuple[str, ...]:
        """The service names, in the order given."""
        return tuple(self._services)

    def service(self, name: str) -> ServiceUnderTest:
        """The service named ``name``."""
        try:
            return self._services[name]
        except KeyError:
            known = ", ".join(repr(service) for service in self._services) or "none"
            raise EndpointError(f"the TestSystem has no service named {name!r} (services: {known})") from None

    @property
    def clock(self) -> TestClock:
        """The test clock of the in-process broker's delayed retries: advance it instead of sleeping."""
        if self._clock is None:
            raise TestSystemError(
                "TestSystem.clock: with transport_url, delayed retries wait on the real broker in real time"
            )
        return self._clock

    def queued(self, service: str | None = None) -> int:
        """How many messages wait, ready, on the queue of ``service`` (on all the services' queues when None)."""
        names = self.services if service is None else (self.service(service).name,)
        return sum(self._services[name].queued() for name in names)

    def delayed(self, service: str | None = None) -> int:
        """How many delayed retry copies are not due yet, for the queue of ``service`` (of all when None)."""
        names = self.services if service is None else (self.service(service).name,)
        return sum(self._services[name].delayed() for name in names)

    def clear_recorded(self) -> None:
        """Forgets every service's recorded messages (the queues are left as they are)."""
        for service in self._services.values():
            service.recorder.clear()

    # -- driving -----------------------------------------------------------------------------------------------------

    def run(
        self,
        service: str | None = None,
        *,
        handled_message_limit: int | None = None,
        execution_time_limit: int | None = None,
        memory_limit: int | None = None,
        stop_on_failure: bool = False,
        fail_fast: bool | None = None,
    ) -> SystemRun:
        """Consumes the endpoint of ``service``, or of every service in turn, until no message is left on their
        queues (delayed copies that are not due wait for the clock), or a limit stops it.

        The limits are the consumer's, over the whole run: ``handled_message_limit`` (messages taken),
        ``execution_time_limit`` (milliseconds), ``memory_limit`` (megabytes), ``stop_on_failure``. ``fail_fast``
        overrides the system's: when true, the first exception a handler raises is raised here, before any retry (the
        message stays on its queue), and a message dead-lettered before any handler ran raises a
        :class:`MessageFailedError`. Without ``handled_message_limit``, taking the system's ``message_limit``
        messages while more are queued is a :class:`TestSystemError` (services messaging each other endlessly).
        """
        names = self.services if service is None else (self.service(service).name,)
        options = RunOptions(
            handled_message_limit=handled_message_limit,
            execution_time_limit=execution_time_limit,
            memory_limit=memory_limit,
            stop_on_failure=stop_on_failure,
            finish_when_no_messages=True,
        )
        fail_fast = self.fail_fast if fail_fast is None else fail_fast
        limit = handled_message_limit if handled_message_limit is not None else self._message_limit
        deadline = None if execution_time_limit is None else time.monotonic() + execution_time_limit / 1000
        results: list[RunResult] = []
        received: list[RecordedMessage] = []

        def finished(reason: str) -> SystemRun:
            return SystemRun(tuple(results), RecordedMessages(received), reason)

        while True:
            progressed = False
            for name in names:
                time_left = None if deadline is None else math.ceil((deadline - time.monotonic()) * 1000)
                if time_left is not None and time_left <= 0:
                    return finished("execution time limit reached")
                endpoint_options = attrs.evolve(
                    options, handled_message_limit=limit - len(received), execution_time_limit=time_left
                )
                result, taken = self._run_endpoint(self._services[name], endpoint_options, fail_fast)
                results.append(result)
                received.extend(taken)
                progressed = progressed or bool(taken)
                if len(received) >= limit:
                    if handled_message_limit is None and self.queued() > 0:
                        raise TestSystemError(self._endless(received))
                    return finished("handled message limit reached")
                if self._services[name].queued() > 0:  # stopped before its queue was empty: failure, memory, time
                    return finished(result.stop_reason)
            if not progressed:
                return finished("no more messages")

    def _run_endpoint(
        self, service: ServiceUnderTest, options: RunOptions, fail_fast: bool
    ) -> tuple[RunResult, RecordedMessages]:
        before = service.recorder.received_count
        token = handler_failure.set(_stop_at_once if fail_fast else None)
        error: Exception | None = None
        results: list[RunResult] = []
        try:
            for consumer in service.consumers:
                results.append(consumer.run(options))
        except _HandlerFailed as stop:
            error = stop.error
        finally:
            handler_failure.reset(token)
        if error is not None:
            raise error  # the handler's own exception, with its traceback
        taken = service.recorder.received(service.container.converter, since=before)
        failed = [message for message in taken if message.outcome in _FAILED]
        if fail_fast and failed:
            message = failed[0]
            raise MessageFailedError(
                f"endpoint {service.name!r} could not handle the {message}: {message.error}; it went to the dead "
                "letter (fail_fast raises what production would only dead-letter)"
            )
        return _combined(service.name, results), taken

    def _endless(self, received: list[RecordedMessage]) -> str:
        counts: dict[str, int] = {}
        for message in received:
            key = f"{message.service} <- {message.payload_type} {message.routing_key!r}"
            counts[key] = counts.get(key, 0) + 1
        busiest = ", ".join(f"{key}: {count}" for key, count in sorted(counts.items(), key=lambda kv: -kv[1])[:5])
        return (
            f"TestSystem.run took {len(received)} messages (the message_limit) and more are queued: do services keep "
            f"messaging each other? ({busiest}). Give handled_message_limit to stop quietly, or a larger "
            "message_limit to the TestSystem"
        )

    # -- the end -----------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Undoes every override, removes the services' queues and exchange from a real broker, and closes every
        service's container (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for service in reversed(self._services.values()):
            service.reset_overrides()
            try:
                if self._broker is None:
                    service.remove_endpoint()
            except MessagingError as exc:  # the broker went away: the test's own outcome matters more
                log.warning("TestSystem: removing the queues of %r failed: %s", service.name, exc)
            finally:
                service.container.close()

    def __enter__(self) -> TestSystem:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.transport_url if self.transport_url is not None else self._broker
        return f"<TestSystem services={list(self._services)} on {where!r}>"
