"""Billing's handlers, found by module scanning (``scan: [examples.billing]``)."""

from __future__ import annotations

import logging

from container_messaging import DistributedBus, Headers, command_handler, distributed, publishes
from examples.messages import BillingDetailsWereChanged, ChangeBillingDetails, short_id

log = logging.getLogger("examples.billing")


class BillingRepository:
    """An in-memory store; a real service would keep this in its database."""

    def __init__(self) -> None:
        self.details: dict[str, str] = {}


class BillingService:
    def __init__(self, repository: BillingRepository, bus: DistributedBus) -> None:
        self.repository = repository
        self.bus = bus

    @distributed
    @command_handler("billing.changeDetails")
    @publishes("billing.detailsWereChanged", BillingDetailsWereChanged)  # what it sends: for the docs only
    def change_details(self, command: ChangeBillingDetails, metadata: Headers) -> None:
        self.repository.details[command.person_id] = command.billing_details
        print(
            f"[billing] changed details of person {command.person_id} to {command.billing_details!r} "
            f"(from {metadata.get('ecotone.distributed.sourceServiceName')}, "
            f"correlation {short_id(metadata['correlationId'])})",
            flush=True,
        )
        self.bus.convert_and_publish_event(
            "billing.detailsWereChanged", BillingDetailsWereChanged(command.person_id, command.billing_details)
        )
