"""The transport port's contract (every test of tests/test_transport_contract.py) on the in-process transport, with
a real-time clock and waiting receivers, as consumers in threads use it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import test_transport_contract as contract

from container_messaging.transports import EndpointTopology
from container_messaging.transports.inprocess import InProcessBroker, InProcessTransport

globals().update({name: test for name, test in vars(contract).items() if name.startswith("test_")})


@pytest.fixture
def endpoint(unique: str) -> Iterator[contract.Endpoint]:
    """The contract's endpoint on a broker of its own (no transport_kind parameter: one adapter)."""
    transport = InProcessTransport(InProcessBroker(), "contract")
    topology = EndpointTopology(f"test.contract.{unique}", f"test_contract_{unique}", ("billing.#",))
    transport.setup_endpoint(topology)
    built = contract.Endpoint(transport, topology)
    yield built
    for receiver in built.receivers:
        receiver.close()
    transport.close()
