"""The pytest plugin (entry point pytest11): a project's tests get a TestSystem from one fixture, configured by an ini
key or a marker, fresh for each test. Each test here runs pytest on a small project of its own (pytester)."""

from __future__ import annotations

import textwrap
import uuid

import pytest

from container_messaging.redaction import mask_url

pytest_plugins = ["pytester"]

BILLING = """
    from container_messaging import DistributedBus, command_handler, distributed

    class Repository:
        def __init__(self) -> None:
            self.details: dict[str, str] = {}

    class Billing:
        def __init__(self, repository: Repository, bus: DistributedBus) -> None:
            self.repository, self.bus = repository, bus

        @distributed
        @command_handler("billing.changeDetails")
        def change(self, command: dict) -> None:
            self.repository.details[command["personId"]] = command["details"]
            self.bus.convert_and_publish_event("billing.detailsChanged", command)
"""

USER = """
    from container_messaging import distributed, event_handler

    class Inbox:
        def __init__(self) -> None:
            self.told: list[dict] = []

    class User:
        def __init__(self, inbox: Inbox) -> None:
            self.inbox = inbox

        @distributed
        @event_handler("billing.*")
        def on_billing(self, event: dict) -> None:
            self.inbox.told.append(event)
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project with a billing and a user service (configs/ holds their YAML files and handler modules)."""
    suffix = uuid.uuid4().hex[:8]
    configs = pytester.mkdir("configs")
    (configs / f"billing_{suffix}.py").write_text(textwrap.dedent(BILLING))
    (configs / f"user_{suffix}.py").write_text(textwrap.dedent(USER))
    (configs / "billing.yaml").write_text(f"service_name: billing\nscan: [billing_{suffix}]\n")
    (configs / "user.yaml").write_text(f"service_name: user\nscan: [user_{suffix}]\n")
    pytester.makeconftest(f"SUFFIX = {suffix!r}\n")
    return pytester


def test_the_fixture_gives_each_test_a_fresh_system(project: pytest.Pytester) -> None:
    """With messaging_configs in the ini file, two tests using messaging_system each get their own system: what the
    first sent, recorded and stored is not seen by the second."""
    project.makeini(
        "[pytest]\naddopts = --strict-markers\nmessaging_configs = configs/billing.yaml configs/user.yaml\n"
    )
    project.makepyfile(
        test_flow="""
        import importlib
        from conftest import SUFFIX

        def repository(system):
            return system.service("billing").get(importlib.import_module(f"billing_{SUFFIX}").Repository)

        def test_first(messaging_system):
            bus = messaging_system.service("user").distributed_bus
            bus.convert_and_send_command("billing", "billing.changeDetails", {"personId": "1", "details": "x"})
            messaging_system.run()
            assert repository(messaging_system).details == {"1": "x"}
            assert messaging_system.service("billing").sent.events().payloads() == [{"personId": "1", "details": "x"}]

        def test_second(messaging_system):
            assert messaging_system.services == ("billing", "user")
            assert repository(messaging_system).details == {}
            assert [messaging_system.service(n).received for n in messaging_system.services] == [(), ()]
            assert messaging_system.queued() == 0
        """
    )
    result = project.runpytest()
    result.assert_outcomes(passed=2)


def test_a_marker_chooses_the_services_and_the_options(project: pytest.Pytester) -> None:
    """@pytest.mark.messaging_system(...) names the configuration files (from the rootdir) and TestSystem options; the
    factory fixture builds more systems in one test."""
    project.makeini("[pytest]\naddopts = --strict-markers\n")
    project.makepyfile(
        test_marker="""
        import pytest

        @pytest.mark.messaging_system("configs/billing.yaml", fail_fast=False)
        def test_marked(messaging_system):
            assert messaging_system.services == ("billing",)
            assert messaging_system.fail_fast is False

        def test_factory(messaging_system_factory, pytestconfig):
            system = messaging_system_factory([pytestconfig.rootpath / "configs" / "user.yaml"])
            assert system.services == ("user",)
        """
    )
    result = project.runpytest()
    result.assert_outcomes(passed=2)


def test_without_configs_the_fixture_says_what_it_needs(project: pytest.Pytester) -> None:
    """With neither a marker nor the ini key, messaging_system fails the test with a message naming both."""
    project.makepyfile(test_nothing="def test_it(messaging_system):\n    pass\n")
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*messaging_system fixture needs the services*messaging_configs*"])


FLOW = """
import importlib
from conftest import SUFFIX


def test_flow(messaging_system):
    system = messaging_system
    system.service("user").distributed_bus.convert_and_send_command(
        "billing", "billing.changeDetails", {"personId": "1", "details": "x"}
    )
    system.run()
    inbox = system.service("user").get(importlib.import_module(f"user_{SUFFIX}").Inbox)
    assert inbox.told == [{"personId": "1", "details": "x"}]
    print("TRANSPORT", system.service("billing").container.transport.description)
"""


@pytest.mark.rabbitmq
def test_the_transport_url_option_runs_the_same_tests_on_a_broker(project: pytest.Pytester, amqp_url: str) -> None:
    """The same test passes on in-process channels and, with --messaging-transport-url, on the real RabbitMQ."""
    project.makeini("[pytest]\nmessaging_configs = configs/billing.yaml configs/user.yaml\n")
    project.makepyfile(test_flow=FLOW)
    in_process = project.runpytest("-s")
    in_process.assert_outcomes(passed=1)
    in_process.stdout.fnmatch_lines(["*TRANSPORT inprocess://billing*"])
    on_rabbitmq = project.runpytest("-s", "--messaging-transport-url", amqp_url)
    on_rabbitmq.assert_outcomes(passed=1)
    on_rabbitmq.stdout.fnmatch_lines([f"*TRANSPORT {mask_url(amqp_url)}*"])


def test_nothing_is_autouse(pytester: pytest.Pytester) -> None:
    """A test that asks for no fixture of the plugin gets none (the plugin is loaded, its fixtures are opt-in)."""
    pytester.makepyfile(
        test_plain="""
        def test_plain(request):
            assert "messaging_system" not in request.fixturenames
            assert request.config.pluginmanager.has_plugin("container_messaging")
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)
