"""The message-flow picture: drawn from scanning and sending declarations, globs resolved against the events that
exist, rendered as Mermaid and DOT; the README's copy of the example system's picture is kept current."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from container_messaging import HandlerDefinitionError, publishes, sends_command
from container_messaging.cli import main
from container_messaging.docs import MessageFlow, NodeKind, describe_services, message_flow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [ROOT / "configs" / name for name in ("billing.yaml", "ticket.ini", "user.yaml")]
README_BLOCK = re.compile(r"<!-- message-flow:[^\n]*-->\n```mermaid\n(.*?)```", re.DOTALL)


@pytest.fixture
def examples_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))


def edges(flow: MessageFlow) -> set[tuple[str, str, str | None, bool]]:
    """Every arrow as (source's first line, target's first line, label, dashed)."""
    first = {node.id: node.lines[0] for node in flow.nodes}
    return {(first[e.source], first[e.target], e.label, e.local) for e in flow.edges}


def write_config(folder: Path, service: str, scan: str) -> Path:
    path = folder / f"{service}.yaml"
    path.write_text(f"service_name: {service}\nscan: [{scan}]\ntransport:\n  url: memory://\n")
    return path


# -- the example system --------------------------------------------------------------------------------------------


def test_readme_shows_the_current_picture_of_the_example_system(examples_importable: None) -> None:
    """The Mermaid block of the README's Message flow section is exactly what the graph command draws today for
    the example services' configurations."""
    found = README_BLOCK.findall((ROOT / "README.md").read_text())

    assert len(found) == 1, "the README needs one <!-- message-flow: ... --> mermaid block"
    assert found[0] == message_flow(describe_services(EXAMPLES)).mermaid(), (
        "README.md's message-flow picture is stale: replace its mermaid block with the output of "
        "container-messaging graph --config configs/billing.yaml --config configs/ticket.ini --config configs/user.yaml"
    )


def test_example_system_arrows(examples_importable: None) -> None:
    """user sends billing.changeDetails to billing's handler, which publishes billing.detailsWereChanged; the event
    reaches user's handler and, through the glob billing.*, ticket's."""
    flow = message_flow(describe_services(EXAMPLES))

    assert flow.services == ("billing", "ticket", "user")
    assert edges(flow) == {
        ("UserController.change_billing", "billing.changeDetails", "sends", False),
        ("billing.changeDetails", "BillingService.change_details", None, False),
        ("BillingService.change_details", "billing.detailsWereChanged", "publishes", False),
        ("billing.detailsWereChanged", "TicketService.open_ticket", "billing.*", False),
        ("billing.detailsWereChanged", "UserNotifications.on_details_changed", None, False),
    }
    code = {node.lines[0]: node.service for node in flow.nodes if node.kind is NodeKind.CODE}
    assert code == {
        "BillingService.change_details": "billing",
        "TicketService.open_ticket": "ticket",
        "UserController.change_billing": "user",
        "UserNotifications.on_details_changed": "user",
    }
    assert not any(node.missing for node in flow.nodes)


def test_the_picture_does_not_depend_on_the_order_of_the_configs(examples_importable: None) -> None:
    """The same services given in another order draw the same Mermaid and DOT text."""
    forward = message_flow(describe_services(EXAMPLES))
    backward = message_flow(describe_services(reversed(EXAMPLES)))

    assert backward.mermaid() == forward.mermaid()
    assert backward.dot() == forward.dot()


# -- globs, local handlers and what is missing ---------------------------------------------------------------------

SHOP = """
from container_messaging import Headers, command_handler, distributed, event_handler, publishes, sends_command


class Checkout:
    @publishes("shop.orderPlaced", dict)
    @publishes("shop.orderPaid", dict)
    def checkout(self) -> None: ...

    @sends_command("warehouse", "warehouse.reserve", dict)
    @sends_command("warehouse", "warehouse.unknown", dict)
    @sends_command("mail", "mail.send", dict)
    def reserve(self) -> None: ...
"""

WAREHOUSE = """
from container_messaging import command_handler, distributed, event_handler, publishes, service_activator


class Stock:
    @distributed
    @command_handler("warehouse.reserve")
    @publishes("crm.contactAdded", dict)
    def reserve(self, command: dict) -> None: ...

    @distributed
    @event_handler("SHOP.*")
    def on_shop(self, event: dict) -> None: ...

    @event_handler("shop.orderPaid")
    def local_paid(self, event: dict) -> None: ...

    @event_handler("crm.*")
    def local_crm(self, event: dict) -> None: ...

    @distributed
    @event_handler("returns.*")
    def on_return(self, event: dict) -> None: ...

    @distributed
    @service_activator("warehouse.audit")
    def audit(self, payload: dict) -> None: ...
"""


@pytest.fixture
def shop_flow(make_module, tmp_path: Path) -> MessageFlow:
    make_module("shop_service", SHOP)
    make_module("warehouse_service", WAREHOUSE)
    configs = [write_config(tmp_path, "shop", "shop_service"), write_config(tmp_path, "warehouse", "warehouse_service")]
    return message_flow(describe_services(configs))


def test_globs_are_resolved_against_the_events_that_exist(shop_flow: MessageFlow) -> None:
    """The glob SHOP.* gets an arrow from each shop event (case-insensitively) and none from crm.contactAdded."""
    arrows = edges(shop_flow)

    assert ("shop.orderPlaced", "Stock.on_shop", "SHOP.*", False) in arrows
    assert ("shop.orderPaid", "Stock.on_shop", "SHOP.*", False) in arrows
    assert not any(source == "crm.contactAdded" and target == "Stock.on_shop" for source, target, _, _ in arrows)
    events = sorted(node.lines[0] for node in shop_flow.nodes if node.kind is NodeKind.EVENT and not node.missing)
    assert events == ["crm.contactAdded", "shop.orderPaid", "shop.orderPlaced"]


def test_local_handlers_run_only_for_events_their_service_receives(shop_flow: MessageFlow) -> None:
    """A local handler gets a dashed arrow from an event its service subscribes to (shop.orderPaid), none from an
    event that never reaches the service (crm.contactAdded: no distributed handler there matches it)."""
    arrows = edges(shop_flow)

    assert ("shop.orderPaid", "Stock.local_paid", "local", True) in arrows
    assert not any(target == "Stock.local_crm" for _, target, _, _ in arrows)


def test_what_is_missing_is_marked(shop_flow: MessageFlow) -> None:
    """A glob matching no event and a command its known destination does not handle are marked missing; a command
    to a service whose configuration was not given (mail) is not."""
    missing = {node.lines[0]: node.lines[-1] for node in shop_flow.nodes if node.missing}

    assert missing == {"returns.*": "no event matches", "warehouse.unknown": "no handler in warehouse"}
    assert ("returns.*", "Stock.on_return", None, False) in edges(shop_flow)
    mermaid = shop_flow.mermaid()
    missing_ids = [node.id for node in shop_flow.nodes if node.missing]
    assert f"    class {','.join(missing_ids)} missing\n" in mermaid
    dot = shop_flow.dot()
    for node_id in missing_ids:
        assert re.search(rf'^    {node_id} \[.*style="[^"]*dashed', dot, re.MULTILINE)


def test_service_activator_channels_are_drawn(shop_flow: MessageFlow) -> None:
    """A distributed service activator appears behind a message node naming its channel and service."""
    message = [node for node in shop_flow.nodes if node.kind is NodeKind.MESSAGE]

    assert [node.lines for node in message] == [("warehouse.audit", "message to warehouse")]
    assert ("warehouse.audit", "Stock.audit", None, False) in edges(shop_flow)


# -- rendering -----------------------------------------------------------------------------------------------------


def test_dot_output_has_a_cluster_per_service_and_every_arrow(examples_importable: None) -> None:
    """The DOT text is one digraph with a cluster per service holding its code, and one line per arrow."""
    flow = message_flow(describe_services(EXAMPLES))
    dot = flow.dot()

    assert dot.startswith("digraph message_flow {\n") and dot.endswith("}\n")
    assert dot.count("subgraph cluster_") == 3
    assert (
        '        label="ticket";\n        ticket__TicketService_open_ticket [label="TicketService.open_ticket"' in dot
    )
    arrows = [line for line in dot.splitlines() if " -> " in line]
    assert len(arrows) == len(flow.edges) == 5
    assert '    event__billing_detailsWereChanged -> ticket__TicketService_open_ticket [label="billing.*"];' in arrows


def test_labels_are_escaped(make_module, tmp_path: Path) -> None:
    """A quote in a routing key does not end a Mermaid or DOT label early."""
    make_module(
        "quoting_service",
        "from container_messaging import publishes\n\n\n@publishes('say.\"hi\"', dict)\ndef f() -> None: ...\n",
    )
    flow = message_flow(describe_services([write_config(tmp_path, "quoting", "quoting_service")]))

    assert "say.#quot;hi#quot;" in flow.mermaid()
    assert '"say.\\"hi\\"\\nevent"' in flow.dot()


# -- the command line ----------------------------------------------------------------------------------------------


def test_cli_graph_writes_dot_to_a_file(examples_importable: None, tmp_path: Path) -> None:
    """``graph --config A --config B --format dot --output FILE`` writes the DOT text of those services."""
    output = tmp_path / "flow.dot"
    configs = [arg for path in EXAMPLES for arg in ("--config", str(path))]

    assert main(["graph", *configs, "--format", "dot", "--output", str(output)]) == 0
    assert output.read_text() == message_flow(describe_services(EXAMPLES)).dot()


def test_cli_graph_prints_mermaid_with_the_config_before_the_command(
    examples_importable: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``--config`` before the command counts as well: it is joined with the ones after it."""
    code = main(["--config", str(EXAMPLES[0]), "graph", "--config", str(EXAMPLES[2])])

    assert code == 0
    assert capsys.readouterr().out == message_flow(describe_services([EXAMPLES[0], EXAMPLES[2]])).mermaid()


def test_cli_graph_of_a_missing_config_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown configuration file is a usage error (exit 2) naming the file, on one line."""
    code = main(["graph", "--config", str(tmp_path / "ghost.yaml")])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "ghost.yaml: no such file" in err


# -- sending declarations ------------------------------------------------------------------------------------------


def test_sending_declarations_attach_metadata_only() -> None:
    """The declarations return the function itself, unchanged in behaviour."""

    def send() -> str:
        return "sent"

    assert publishes("a.b", dict)(sends_command("svc", "svc.do", dict)(send)) is send
    assert send() == "sent"


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda: sends_command("", "billing.change", dict), "destination must be a non-empty service name"),
        (lambda: publishes("  ", dict), "routing key must be a non-empty string"),
        (lambda: publishes("a.b", "ChangeDetails"), "not the string 'ChangeDetails'"),
    ],
    ids=["empty-destination", "blank-key", "string-type"],
)
def test_bad_sending_declarations_are_refused_at_import(declare, message: str) -> None:
    """An empty destination, a blank routing key or a payload type given as a string is refused when the decorator
    is made, naming the problem."""
    with pytest.raises(HandlerDefinitionError, match=re.escape(message)):
        declare()


def test_a_class_cannot_carry_a_sending_declaration() -> None:
    """Decorating a class (not the method that sends) is refused, naming the class."""
    with pytest.raises(HandlerDefinitionError, match=r"got the class \S*Controller"):

        @publishes("a.b", dict)
        class Controller:
            pass
