"""The user service's application code and handlers (``scan: [examples.user]``)."""

from __future__ import annotations

from container_messaging import DistributedBus, Headers, distributed, event_handler, sends_command
from examples.messages import BillingDetailsWereChanged, ChangeBillingDetails, short_id


class UserController:
    """Any application service: it gets the DistributedBus through its constructor."""

    def __init__(self, bus: DistributedBus) -> None:
        self.bus = bus

    @sends_command("billing", "billing.changeDetails", ChangeBillingDetails)  # what it sends: for the docs only
    def change_billing(self, person_id: str, billing_details: str) -> None:
        command = ChangeBillingDetails(person_id, billing_details)
        self.bus.convert_and_send_command("billing", "billing.changeDetails", command)  # JSON, with its type name
        print(f"[user] sent billing.changeDetails for person {person_id}", flush=True)


class UserNotifications:
    @distributed
    @event_handler("billing.detailsWereChanged")
    def on_details_changed(self, event: BillingDetailsWereChanged, metadata: Headers) -> None:
        print(
            f"[user] person {event.person_id} was told: billing details are now {event.billing_details!r} "
            f"(event from {metadata.get('ecotone.distributed.sourceServiceName')}, "
            f"correlation {short_id(metadata['correlationId'])})",
            flush=True,
        )
